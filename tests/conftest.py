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


def save_student_checkpoint(run_dir, model, *, best_acc: float, best_epoch: int, final_acc: float) -> Path:
    """Write ``model`` as a finished student stage of ``run_dir`` in the engine's checkpoint
    format (format 2: modules, best-weights tracker, epoch history), as a run would."""
    from engine.runfolder import CHECKPOINT_FORMAT, checkpoint_path, save_checkpoint

    state = model.state_dict()
    return save_checkpoint({
        "format": CHECKPOINT_FORMAT, "stage": "student", "modules": {"student": state},
        "tracker": {"student": {"metric": best_acc, "epoch": best_epoch, "state": state}},
        "history": [{"epoch": best_epoch, "test_acc": final_acc, "metrics": {}}], "seconds": 1.0,
    }, checkpoint_path(run_dir, "student"))
