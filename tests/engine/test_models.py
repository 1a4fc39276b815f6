"""The CIFAR model zoo: forward contract, parameter counts, registry, checkpoint loading."""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re

import pytest
import torch
from torch import nn

import engine.models as models_pkg
from engine.errors import CheckpointError
from engine.models import MODELS, build_model, model_names
from engine.models import check_compatible
from engine.models.checkpoint import load_weights

NAMES = model_names()

# Parameter counts for 100 classes and 3 input channels, computed once from the zoo and
# cross-checked against the published sizes of RepDistiller's definitions (resnet8x4
# 1.23 M, resnet32x4 7.43 M, resnet56 0.86 M, resnet20 0.28 M, wrn_40_2 2.26 M,
# wrn_16_2 0.70 M, vgg13 9.46 M, MobileNetV2 0.81 M, ShuffleNetV1 0.95 M, ShuffleNetV2
# 1.36 M, ResNet50 23.7 M). resnet110 (1.74 M) and vgg8 (3.97 M) are often quoted as
# 1.73 M / 3.96 M: the first is the 10-class count (90 x 65 fewer classifier weights),
# the second a truncation of 3.965 M.
PARAMETER_COUNTS = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg11": 9_277_284,
    "vgg13": 9_462_180,
    "vgg16": 14_774_436,
    "vgg19": 20_086_692,
    "MobileNetV2": 812_836,
    "ShuffleNetV1": 949_258,
    "ShuffleNetV2": 1_355_528,
    "ResNet50": 23_705_252,
}


@pytest.fixture(scope="module", autouse=True)
def one_thread_and_cleanup():
    """Run this file's forwards on one intra-op thread; free the cached models after.

    On a 2-core machine shared with other jobs, torch's default of one OpenMP thread per
    core spin-waits on the busy core: this file took 60-120 s that way against ~5 s on
    one thread, for tensors this small one thread loses nothing.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    cifar100_model.cache_clear()


@functools.lru_cache(maxsize=None)
def cifar100_model(name: str) -> nn.Module:
    """One eval-mode 100-class model per name, shared by the tests of this file."""
    torch.manual_seed(0)
    return build_model(name, num_classes=100).eval()


def run_with_classifier_input(model: nn.Module, x: torch.Tensor, preact: bool = False):
    """Forward, also capturing the tensor the final linear layer received."""
    seen = []
    handle = model.get_classifier().register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    try:
        with torch.no_grad():
            logits, feats = model(x, preact=preact)
    finally:
        handle.remove()
    return logits, feats, seen[0]


# -- forward contract -------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_forward_contract_on_cifar_input(name):
    model = cifar100_model(name)
    x = torch.randn(2, 3, 32, 32)
    logits, feats, classifier_input = run_with_classifier_input(model, x)

    assert isinstance(model.get_classifier(), nn.Linear)
    assert model.num_classes == 100 and logits.shape == (2, 100)
    assert len(feats) == len(model.stage_channels) + 2
    assert feats[-1].shape == (2, model.feature_dim)
    assert torch.equal(feats[-1], classifier_input)
    assert [f.shape[1] for f in feats] == model.feature_channels
    assert all(f.dim() == 4 for f in feats[:-1])

    pre_logits, pre_feats, _ = run_with_classifier_input(model, x, preact=True)
    assert torch.equal(pre_logits, logits)
    assert len(pre_feats) == len(feats)
    assert [f.shape for f in pre_feats] == [f.shape for f in feats]
    assert torch.equal(pre_feats[0], feats[0]) and torch.equal(pre_feats[-1], feats[-1])
    if name != "MobileNetV2":  # its stage outputs are linear bottlenecks: already pre-activation
        assert any(not torch.equal(a, b) for a, b in zip(pre_feats[1:-1], feats[1:-1]))


@pytest.mark.parametrize("name", NAMES)
def test_tiny_one_channel_input(name):
    # The bundled digits are 1x8x8: every down-sampling must keep at least a 1x1 map.
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=1).train()  # batch statistics too
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        logits, feats = model(x)
        _, pre_feats = model(x, preact=True)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert len(feats) == len(pre_feats) == len(model.stage_channels) + 2
    assert feats[-1].shape == (2, model.feature_dim)
    assert [f.shape[1] for f in feats] == model.feature_channels
    assert all(min(f.shape[2:]) >= 1 for f in feats[:-1])


def test_replace_classifier_follows_module_path():
    model = build_model("MobileNetV2", num_classes=100)
    assert model.classifier_name == "classifier.0"  # RepDistiller's Sequential wrapper
    model.replace_classifier(nn.Linear(model.feature_dim, 10))
    assert model.num_classes == 10 and model.get_classifier().out_features == 10
    with torch.no_grad():
        logits, _ = model.eval()(torch.randn(1, 3, 32, 32))
    assert logits.shape == (1, 10)


# -- sizes and names ---------------------------------------------------------------------
def test_every_model_has_a_pinned_parameter_count():
    assert set(NAMES) == set(PARAMETER_COUNTS)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count(name):
    model = cifar100_model(name)
    count = sum(p.numel() for p in model.parameters())
    assert count == PARAMETER_COUNTS[name]
    # the description quotes the same size, rounded to 0.01 M
    quoted = re.search(r"([\d.]+) M parameters", MODELS.describe(name))
    assert quoted and float(quoted.group(1)) == round(count / 1e6, 2)


def test_listed_names_equal_registered_names():
    # Import every module of the package, not only the listed ones, so that a decorator
    # the source scan cannot read would show up as a difference.
    for info in pkgutil.iter_modules(models_pkg.__path__):
        importlib.import_module(f"engine.models.{info.name}")
    assert set(MODELS._objects) == set(NAMES)
    assert len(NAMES) == len(set(NAMES))
    for name in NAMES:
        assert MODELS.describe(name).strip(), f"{name} has no description"


def test_state_dict_names_follow_repdistiller():
    # Spot checks of the names RepDistiller's checkpoints carry.
    expected = {
        "resnet8x4": ["conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "fc.weight"],
        "wrn_40_2": ["conv1.weight", "block1.layer.0.bn1.weight", "block2.layer.0.convShortcut.weight", "bn1.bias", "fc.bias"],
        "vgg8": ["block0.0.weight", "block0.0.bias", "block0.1.running_mean", "block4.1.weight", "classifier.weight"],
        "MobileNetV2": ["conv1.0.weight", "blocks.6.0.conv.7.weight", "conv2.1.weight", "classifier.0.weight"],
        "ShuffleNetV1": ["layer1.0.conv1.weight", "layer3.3.bn3.weight", "linear.weight"],
        "ShuffleNetV2": ["layer1.0.conv5.weight", "layer1.3.bn3.weight", "conv2.weight", "bn2.weight", "linear.weight"],
        "ResNet50": ["layer1.0.shortcut.0.weight", "layer4.2.bn3.weight", "linear.weight"],
    }
    for name, keys in expected.items():
        state = cifar100_model(name).state_dict()
        missing = [k for k in keys if k not in state]
        assert not missing, f"{name} lacks {missing}"


def test_unknown_model_name():
    with pytest.raises(KeyError, match="unknown model 'resnet9'"):
        build_model("resnet9", num_classes=10)


# -- checkpoints -------------------------------------------------------------------------
@pytest.fixture
def trained_resnet8x4():
    torch.manual_seed(1)
    model = build_model("resnet8x4", num_classes=100)
    with torch.no_grad():  # move the batch-norm statistics away from their defaults
        model.train()(torch.randn(4, 3, 32, 32))
    return model.eval()


def outputs_equal(a: nn.Module, b: nn.Module) -> bool:
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return torch.equal(a.eval()(x)[0], b.eval()(x)[0])


def test_load_repdistiller_checkpoint_with_dataparallel_prefix(tmp_path, trained_resnet8x4):
    path = tmp_path / "ckpt_epoch_240.pth"
    state = {f"module.{k}": v for k, v in trained_resnet8x4.state_dict().items()}
    torch.save({"model": state, "epoch": 240, "accuracy": torch.tensor(72.5)}, path)
    fresh = build_model("resnet8x4", num_classes=100)
    load_weights(fresh, path, "resnet8x4")
    assert outputs_equal(fresh, trained_resnet8x4)
    check_compatible(path, "resnet8x4", 100, 3)


def test_load_plain_state_dict_file_and_mapping(tmp_path, trained_resnet8x4):
    path = tmp_path / "plain.pt"
    torch.save(trained_resnet8x4.state_dict(), path)
    fresh = build_model("resnet8x4", num_classes=100)
    load_weights(fresh, path, "resnet8x4")
    assert outputs_equal(fresh, trained_resnet8x4)
    again = build_model("resnet8x4", num_classes=100)
    load_weights(again, {"state_dict": trained_resnet8x4.state_dict()}, "resnet8x4")
    assert outputs_equal(again, trained_resnet8x4)


def test_load_legacy_serialization_format(tmp_path, trained_resnet8x4):
    # RepDistiller's published teachers predate torch 1.6's zip format.
    path = tmp_path / "legacy.pth"
    torch.save({"model": trained_resnet8x4.state_dict()}, path, _use_new_zipfile_serialization=False)
    fresh = build_model("resnet8x4", num_classes=100)
    load_weights(fresh, path, "resnet8x4")
    assert outputs_equal(fresh, trained_resnet8x4)


def test_load_old_checkpoint_without_batch_counters(tmp_path, trained_resnet8x4):
    state = {k: v for k, v in trained_resnet8x4.state_dict().items() if "num_batches_tracked" not in k}
    fresh = build_model("resnet8x4", num_classes=100)
    load_weights(fresh, {"net": state}, "resnet8x4")
    assert outputs_equal(fresh, trained_resnet8x4)


def test_student_part_of_a_distiller_state_dict(tmp_path, trained_resnet8x4):
    path = tmp_path / "distiller.pth"
    state = {f"module.student.{k}": v for k, v in trained_resnet8x4.state_dict().items()}
    state["module.head.weight"] = torch.zeros(4, 4)
    torch.save({"model": state}, path)
    fresh = build_model("resnet8x4", num_classes=100)
    load_weights(fresh, path, "resnet8x4")
    assert outputs_equal(fresh, trained_resnet8x4)


def test_checkpoint_for_another_architecture_is_refused(tmp_path, trained_resnet8x4):
    path = tmp_path / "resnet8x4.pth"
    torch.save({"model": trained_resnet8x4.state_dict(), "epoch": 240}, path)
    with pytest.raises(CheckpointError) as info:
        load_weights(build_model("resnet32x4", num_classes=100), path, "resnet32x4")
    message = str(info.value)
    assert "does not fit resnet32x4" in message and "missing keys" in message
    assert "resnet8x4 with 100 classes" in message  # the guess
    assert "\n" not in message


def test_checkpoint_with_other_class_count_names_the_shapes(tmp_path, trained_resnet8x4):
    path = tmp_path / "resnet8x4.pth"
    torch.save({"model": trained_resnet8x4.state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        check_compatible(path, "resnet8x4", 10, 3)
    message = str(info.value)
    assert "2 shape mismatches" in message
    assert "fc.weight: checkpoint [100, 256] vs model [10, 256]" in message
    assert "resnet8x4 with 100 classes" in message


def test_non_torch_file_is_refused(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a torch checkpoint .*begins with b'this is '"):
        check_compatible(path, "resnet8", 100, 3)
    path.write_bytes(bytes(range(7, 200)))  # random bytes: said to be no torch file, not "unsafe objects"
    with pytest.raises(CheckpointError, match="is not a torch checkpoint") as info:
        check_compatible(path, "resnet8", 100, 3)
    assert "safe loading" not in str(info.value)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="it is empty"):
        check_compatible(path, "resnet8", 100, 3)
    path.write_bytes(b"PK\x03\x04 but a broken archive")  # looks like one, is not: still a clear refusal
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        check_compatible(path, "resnet8", 100, 3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_checkpoint_with_non_finite_weights_is_refused(tmp_path, bad):
    model = build_model("resnet8", num_classes=10, in_channels=1)
    state = model.state_dict()
    state["fc.weight"][0, 0] = bad
    path = tmp_path / "diverged.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match="'fc.weight' holds NaN or infinite values"):
        check_compatible(path, "resnet8", 10, 1)


def test_pickled_module_is_refused_by_safe_loading(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(build_model("resnet8", num_classes=10), path)
    with pytest.raises(CheckpointError, match="safe loading refuses"):
        check_compatible(path, "resnet8", 10, 3)


def test_missing_file_and_empty_checkpoint_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        check_compatible(tmp_path / "nowhere.pth", "resnet8", 100, 3)
    path = tmp_path / "meta_only.pth"
    torch.save({"epoch": 3, "accuracy": 1.0}, path)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        check_compatible(path, "resnet8", 100, 3)


def test_check_compatible_with_unknown_architecture(tmp_path, trained_resnet8x4):
    path = tmp_path / "plain.pt"
    torch.save(trained_resnet8x4.state_dict(), path)
    with pytest.raises(CheckpointError, match="unknown model"):
        check_compatible(path, "resnet9", 100, 3)
