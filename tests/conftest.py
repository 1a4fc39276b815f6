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


#: the test tiers (``pytest -m fast`` etc.; .ci/run runs each in turn and prints its time)
TIERS = ("fast", "e2e", "gui", "multiprocess")


def pytest_collection_modifyitems(config, items):
    """Give every test exactly one tier: ``gui`` (tests/gui), ``multiprocess`` (marked so: several
    processes), ``e2e`` (marked ``e2e`` or ``slow``: runs that train end to end, fault injection),
    else ``fast`` (unit tests: the fast tier runs in under a minute)."""
    import pytest

    for item in items:
        path = Path(str(item.fspath))
        if "gui" in path.parts[-2:-1]:
            tier = "gui"
        elif item.get_closest_marker("multiprocess"):
            tier = "multiprocess"
        elif item.get_closest_marker("e2e") or item.get_closest_marker("slow"):
            tier = "e2e"
        else:
            tier = "fast"
        item.add_marker(getattr(pytest.mark, tier))
