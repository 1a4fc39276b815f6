import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.chdir(ROOT)  # presets and resources are referred to relative to the repository

# Tiny models on 8x8 images gain nothing from intra-op threads, and two threads per
# process on a shared 2-core machine slow every test down many times over.
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a dependency
    pass
