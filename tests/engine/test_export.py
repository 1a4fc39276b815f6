"""Tests of engine.export: every format reloads and reproduces the model's logits."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat

import pytest
import torch
import yaml
from torch import nn

from engine import export as ex
from engine.errors import CheckpointError, InputError, MGDError

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")]

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnxruntime / onnx not importable")

SHAPE = (3, 8, 8)
CLASSES = ["cat", "dog", "bird", "fish", "frog"]
MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)


class TinyNet(nn.Module):
    """conv-bn-relu, adaptive pool, linear: the zoo's (logits, features) contract."""

    def __init__(self, num_classes: int = 5, in_channels: int = 3, width: int = 8):
        super().__init__()
        self.num_classes = num_classes
        self.feature_dim = width
        self.classifier_name = "fc"
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x, preact=False):
        f0 = self.conv(x)
        pre = self.bn(f0)
        f1 = self.relu(pre)
        pooled = self.pool(f1).flatten(1)
        logits = self.fc(pooled)
        return logits, [f0, pre if preact else f1, pooled]


def trained_like_net(seed: int = 0) -> TinyNet:
    """A TinyNet with non-trivial BN statistics, left in train mode like a live student."""
    torch.manual_seed(seed)
    net = TinyNet()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.2, 0.2)
        net.bn.num_batches_tracked.fill_(123)
    net.train()
    return net


def reference_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    ref = TinyNet()
    ref.load_state_dict(model.state_dict())
    ref.eval()
    with torch.no_grad():
        return ref(x)[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export of every format (ONNX conversion is the slow part: do it once)."""
    model = trained_like_net()
    out = tmp_path_factory.mktemp("export") / "nested" / "dir"  # does not exist yet
    formats = ex.FORMATS if HAS_ORT else ("weights", "torchscript")
    extra = {
        "accuracy": {"top1": 71.25, "top5": 90.5},
        "noise_curve": [[0.0, 71.25], [0.1, 65.0]],
        "config": {"student": {"arch": "tiny"}, "epochs": 3, "data_dir": out},
        "architecture": "should-not-win",
    }
    paths = ex.export_model(
        model, out, arch="tiny", input_shape=SHAPE, classes=CLASSES, mean=MEAN, std=STD,
        formats=formats, card_extra=extra,
    )
    return model, out, paths


def test_returned_paths_and_no_temp_files(exported):
    _, out, paths = exported
    assert paths["weights"] == out / "student.safetensors"
    assert paths["torchscript"] == out / "student.torchscript.pt"
    assert paths["card"] == out / "model_card.yaml"
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
        assert stat.S_IMODE(p.stat().st_mode) & 0o044  # not left at mkstemp's 0600
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_weights_reload_reproduces_logits(exported):
    model, _, paths = exported
    x = torch.randn(4, *SHAPE)
    fresh = TinyNet()
    assert ex.load_exported_weights(paths["weights"], fresh) is fresh
    fresh.eval()
    with torch.no_grad():
        got = fresh(x)[0]
    assert torch.allclose(got, reference_logits(model, x), atol=1e-5)
    # buffers travel too, under the model's own keys
    assert int(fresh.bn.num_batches_tracked) == 123
    from safetensors import safe_open

    with safe_open(str(paths["weights"]), framework="pt") as f:
        assert set(f.keys()) == set(model.state_dict())
        assert f.metadata()["architecture"] == "tiny"


def test_torchscript_reload_reproduces_logits(exported):
    model, _, paths = exported
    loaded = torch.jit.load(str(paths["torchscript"]), map_location="cpu")
    for batch in (1, 5):
        x = torch.randn(batch, *SHAPE)
        with torch.no_grad():
            got = loaded(x)
        assert isinstance(got, torch.Tensor)
        assert torch.allclose(got, reference_logits(model, x), atol=1e-5)


@needs_ort
def test_onnx_runs_with_dynamic_batch(exported):
    import onnx
    import onnxruntime as ort

    model, _, paths = exported
    proto = onnx.load(str(paths["onnx"]))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, *SHAPE)
        (got,) = session.run(["logits"], {"input": x.numpy()})
        assert got.shape == (batch, len(CLASSES))
        assert torch.allclose(torch.from_numpy(got), reference_logits(model, x), atol=1e-4)


def test_model_card(exported):
    _, out, paths = exported
    card = yaml.safe_load(paths["card"].read_text(encoding="utf-8"))
    assert card["architecture"] == "tiny"  # the card's own field beats card_extra's
    assert card["num_classes"] == 5
    assert card["classes"] == CLASSES
    assert card["input_shape"] == list(SHAPE)
    norm = card["normalization"]
    assert norm["mean"] == pytest.approx(list(MEAN)) and norm["std"] == pytest.approx(list(STD))
    assert "[0, 1]" in norm["value_range"] and "(x - mean) / std" in norm["value_range"]
    assert card["torch_version"] == torch.__version__
    assert "T" in card["export_date"]  # ISO 8601
    # files: size and SHA-256 of what is on disk
    for fmt, path in paths.items():
        if fmt == "card":
            continue
        entry = card["files"][path.name]
        assert entry["format"] == fmt
        data = path.read_bytes()
        assert entry["size_bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    if HAS_ORT:
        onnx_entry = card["files"]["student.onnx"]
        assert onnx_entry["exporter"] in ("dynamo", "torchscript")
        assert onnx_entry["opset"] >= 17
    # card_extra merged in, made plain (the Path became a string)
    assert card["accuracy"] == {"top1": 71.25, "top5": 90.5}
    assert card["noise_curve"] == [[0.0, 71.25], [0.1, 65.0]]
    assert card["config"]["student"] == {"arch": "tiny"}
    assert card["config"]["data_dir"] == str(out)


def test_caller_model_unchanged():
    model = trained_like_net()
    model.bn.eval()  # a mixed-mode model: one submodule frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ex.export_model(model, d, arch="tiny", input_shape=SHAPE, classes=CLASSES, mean=MEAN, std=STD,
                        formats=("weights", "torchscript"))
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == grads
    assert all(p.device.type == "cpu" for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_unknown_format(tmp_path):
    with pytest.raises(InputError) as err:
        ex.export_model(TinyNet(), tmp_path, arch="tiny", input_shape=SHAPE, classes=CLASSES,
                        mean=MEAN, std=STD, formats=("weights", "tflite"))
    msg = str(err.value)
    assert "tflite" in msg and all(f in msg for f in ex.FORMATS)
    assert not list(tmp_path.iterdir())  # nothing written


def test_bad_arguments(tmp_path):
    kw = dict(arch="tiny", input_shape=SHAPE, classes=CLASSES, mean=MEAN, std=STD, formats="weights")
    with pytest.raises(InputError, match="classes"):
        ex.export_model(TinyNet(), tmp_path, **{**kw, "classes": ["a", "b"]})
    with pytest.raises(InputError, match="mean"):
        ex.export_model(TinyNet(), tmp_path, **{**kw, "mean": (0.5, 0.5)})
    with pytest.raises(InputError, match="input_shape"):
        ex.export_model(TinyNet(), tmp_path, **{**kw, "input_shape": (3, 8)})
    with pytest.raises(InputError, match="std"):
        ex.export_model(TinyNet(), tmp_path, **{**kw, "std": 0.0})
    # a scalar mean / std is broadcast to every channel
    paths = ex.export_model(TinyNet(), tmp_path, **{**kw, "mean": 0.5, "std": 0.25})
    card = yaml.safe_load(paths["card"].read_text())
    assert card["normalization"]["mean"] == [0.5, 0.5, 0.5]


def test_model_rejecting_input_shape_is_a_clear_error(tmp_path):
    with pytest.raises(ex.ExportError, match="input of shape"):
        ex.export_model(TinyNet(in_channels=1), tmp_path, arch="tiny", input_shape=SHAPE, classes=CLASSES,
                        mean=MEAN, std=STD, formats="torchscript")


def test_trace_failure_is_a_clear_error(tmp_path, monkeypatch):
    def broken_trace(*args, **kwargs):
        raise RuntimeError("cannot trace this")

    monkeypatch.setattr(torch.jit, "trace", broken_trace)
    with pytest.raises(ex.ExportError, match="TorchScript trace.*cannot trace this") as err:
        ex.export_model(TinyNet(), tmp_path, arch="tiny", input_shape=SHAPE, classes=CLASSES,
                        mean=MEAN, std=STD, formats=("weights", "torchscript"))
    assert isinstance(err.value, MGDError)
    assert not list(tmp_path.iterdir())  # the weights were not written either


def test_write_failure_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ex.ExportError, match="file"):
        ex.export_model(TinyNet(), blocker / "out", arch="tiny", input_shape=SHAPE, classes=CLASSES,
                        mean=MEAN, std=STD, formats="weights")
    # an existing file in the way of a final name: os.replace over a directory fails
    out = tmp_path / "out"
    (out / "student.safetensors").mkdir(parents=True)
    with pytest.raises(ex.ExportError) as err:
        ex.export_model(TinyNet(), out, arch="tiny", input_shape=SHAPE, classes=CLASSES,
                        mean=MEAN, std=STD, formats="weights")
    assert str(out / "student.safetensors") in str(err.value)
    assert [p.name for p in out.iterdir()] == ["student.safetensors"]  # no temp file left


def test_load_exported_weights_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        ex.load_exported_weights(tmp_path / "missing.safetensors", TinyNet())
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        ex.load_exported_weights(bad, TinyNet())
    paths = ex.export_model(TinyNet(num_classes=5), tmp_path, arch="tiny", input_shape=SHAPE, classes=CLASSES,
                            mean=MEAN, std=STD, formats="weights")
    with pytest.raises(CheckpointError, match="does not fit"):
        ex.load_exported_weights(paths["weights"], TinyNet(num_classes=7))


def test_wrapped_model_exports_plain_keys(tmp_path):
    model = trained_like_net()
    paths = ex.export_model(nn.DataParallel(model), tmp_path, arch="tiny", input_shape=SHAPE, classes=CLASSES,
                            mean=MEAN, std=STD, formats="weights")
    fresh = ex.load_exported_weights(paths["weights"], TinyNet()).eval()
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(fresh(x)[0], reference_logits(model, x), atol=1e-5)


def test_logits_only():
    net = TinyNet().eval()
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.equal(ex.LogitsOnly(net)(x), net(x)[0])


@needs_ort
def test_onnx_legacy_fallback(tmp_path, monkeypatch):
    """If the dynamo exporter fails, the legacy exporter still gives a working dynamic-batch file."""
    import onnxruntime as ort

    def broken(*args, **kwargs):
        raise RuntimeError("dynamo says no")

    monkeypatch.setattr(ex, "_onnx_dynamo", broken)
    model = trained_like_net(1)
    paths = ex.export_model(model, tmp_path, arch="tiny", input_shape=SHAPE, classes=CLASSES,
                            mean=MEAN, std=STD, formats="onnx")
    card = yaml.safe_load(paths["card"].read_text())
    assert card["files"]["student.onnx"]["exporter"] == "torchscript"
    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, *SHAPE)
        (got,) = session.run(["logits"], {"input": x.numpy()})
        assert torch.allclose(torch.from_numpy(got), reference_logits(model, x), atol=1e-4)


def _resnet8_or_skip():
    try:
        from engine.models import build_model

        return build_model("resnet8", 10, 1)
    except (KeyError, ImportError, NotImplementedError) as e:  # the zoo is not there yet
        pytest.skip(f"resnet8 not available: {e}")


def test_export_real_resnet8(tmp_path):
    from engine.models import build_model

    torch.manual_seed(0)
    model = _resnet8_or_skip()
    model.eval()
    formats = ex.FORMATS if HAS_ORT else ("weights", "torchscript")
    paths = ex.export_model(model, tmp_path, arch="resnet8", input_shape=(1, 8, 8),
                            classes=[str(i) for i in range(10)], mean=(0.5,), std=(0.25,), formats=formats)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        ref = model(x)[0]
    fresh = ex.load_exported_weights(paths["weights"], build_model("resnet8", 10, 1)).eval()
    with torch.no_grad():
        assert torch.allclose(fresh(x)[0], ref, atol=1e-5)
        assert torch.allclose(torch.jit.load(str(paths["torchscript"]))(x), ref, atol=1e-5)
    if HAS_ORT:
        import onnxruntime as ort

        session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
        (got,) = session.run(["logits"], {"input": x.numpy()})
        assert torch.allclose(torch.from_numpy(got), ref, atol=1e-4)
