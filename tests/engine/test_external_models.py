"""Library models (torchvision:NAME, timm:NAME) behind the zoo's contract, offline: built
without pretrained weights on tiny images, weights files, the offline error for pretrained
weights, name validation, plan-time refusals, and a whole run on an image folder."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from engine.config import ExperimentConfig, load_config, set_value, validation_errors
from engine.errors import CheckpointError, ConfigError, InputError
from engine.models import build_model, parameter_count, training_memory
from engine.models import sources
from tests.engine.conftest import DEMO

pytestmark = pytest.mark.e2e  # trains end to end (tiny models, a few steps)

pytest.importorskip("timm")

LIBRARY_MODELS = ["timm:resnet10t", "timm:mobilenetv3_small_050", "torchvision:resnet18",
                  "torchvision:mobilenet_v3_small"]


def _library_logits(name: str, model, x):
    """The logits of the library's own model with the same weights (independent of our adapter)."""
    source, arch = sources.split_name(name)
    if source == "timm":
        return model.body(x)
    import torchvision

    plain = torchvision.models.get_model(arch, num_classes=model.num_classes)
    plain.load_state_dict({k.removeprefix("body."): v for k, v in model.state_dict().items()})
    return plain.eval()(x)


@pytest.mark.parametrize("name", LIBRARY_MODELS)
def test_library_models_follow_the_zoo_contract(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, in_channels=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = model(x)
        reference = _library_logits(name, model, x)
    assert logits.shape == (2, 5) and model.num_classes == 5
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-5)  # our graph is the library's forward
    stem, *stages, pooled = feats
    assert stem.shape[1] == model.stem_channels and [s.shape[1] for s in stages] == model.stage_channels
    assert len(stages) >= 3 and all(f.dim() == 4 for f in (stem, *stages))
    sides = [f.shape[-1] for f in (stem, *stages)]
    assert sides == sorted(sides, reverse=True) and len(set(sides)) == len(sides)  # one map per resolution
    assert pooled.shape == (2, model.feature_dim)
    classifier = model.get_classifier()
    assert isinstance(classifier, nn.Linear) and classifier.in_features == model.feature_dim
    with torch.no_grad():
        torch.testing.assert_close(classifier(pooled), logits)  # pooled is the classifier's input
    model.replace_classifier(nn.Linear(model.feature_dim, 3))
    with torch.no_grad():
        assert model(x)[0].shape == (2, 3)
    with pytest.raises(NotImplementedError, match="pre-activation"):
        model(x, preact=True)


@pytest.mark.parametrize("name, stage_modules", [
    ("torchvision:resnet18", ["relu", "layer1", "layer2", "layer3", "layer4"]),
    ("torchvision:mobilenet_v3_small", ["features.0", "features.1", "features.3", "features.8", "features.12"]),
])
def test_torchvision_features_are_the_outputs_of_its_stages(name, stage_modules):
    """The generic graph rule finds the last block of each resolution (checked with hooks on the library model)."""
    import torchvision

    torch.manual_seed(0)
    model = build_model(name, num_classes=4).eval()
    plain = torchvision.models.get_model(sources.split_name(name)[1], num_classes=4).eval()
    plain.load_state_dict({k.removeprefix("body."): v for k, v in model.state_dict().items()})
    seen = {}
    for path in stage_modules:
        plain.get_submodule(path).register_forward_hook(lambda m, i, o, p=path: seen.__setitem__(p, o.clone()))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain(x)
        feats = model(x)[1]
    for path, feat in zip(stage_modules, feats[:-1]):
        torch.testing.assert_close(feat, seen[path], msg=f"{name}: {path}")


def test_timm_features_are_the_maps_timm_lists():
    model = build_model("timm:resnet10t", num_classes=3).eval()
    assert [m["module"] for m in model.body.feature_info] == ["act1", "layer1", "layer2", "layer3", "layer4"]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        feats = model(x)[1]
        expected = model.body.forward_intermediates(x, intermediates_only=True)
    for got, want in zip(feats[:-1], expected):
        torch.testing.assert_close(got, want)


def test_one_channel_data_gets_a_one_channel_first_convolution():
    for name in ("torchvision:resnet18", "timm:resnet10t"):
        model = build_model(name, num_classes=3, in_channels=1).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 1, 32, 32))[0].shape == (2, 3)


def test_parameter_counts_need_no_real_build_and_are_cached():
    parameter_count.cache_clear()
    real = sum(p.numel() for p in build_model("torchvision:mobilenet_v3_small", 7).parameters())
    assert parameter_count("torchvision:mobilenet_v3_small", 7, 3) == real
    assert parameter_count("torchvision:mobilenet_v3_small", 7, 3) == real
    assert parameter_count.cache_info().hits >= 1
    # the estimate grows with the batch by exactly the per-image activations
    one, two = (training_memory("timm:resnet10t", 7, 3, 64, b) for b in (1, 2))
    assert two - one == one - 16 * parameter_count("timm:resnet10t", 7, 3) > 0


def test_the_backbone_learning_rate_scale_applies_to_all_but_the_classifier(tmp_path):
    from engine.control import RunControl
    from engine.data import load_dataset, make_loader
    from engine.events import EventBus
    from engine.stages import TeacherTask
    from engine.trainer import Trainer

    bundle = load_dataset("demo")
    train = make_loader(bundle, "train", batch_size=256, device="cpu", train=True)
    test = make_loader(bundle, "test", batch_size=512, device="cpu", train=False)
    torch.manual_seed(0)
    model = build_model("resnet8", 10, 1)
    head = {id(p) for p in model.get_classifier().parameters()}
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(bus=EventBus([]), control=RunControl(), checkpoint_dir=tmp_path, train_loader=train,
                      classes=bundle.classes)
    trainer.fit(TeacherTask(model, test, 10, backbone_lr_scale=0.0), epochs=1, lr=0.1, momentum=0.9,
                weight_decay=5e-4, milestones=[], gamma=0.1)
    for p, old in zip(model.parameters(), before):
        assert torch.equal(p, old) != (id(p) in head)  # only the classifier moved


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("name, expected", [
    ("timm:mobilenetv3_smal_100", "timm:mobilenetv3_small_100"),
    ("torchvision:resnet5", "torchvision:resnet50"),
    ("resnet9000", "resnet8"),
])
def test_unknown_names_are_refused_with_close_matches(name, expected):
    errors = {e.field: e.reason for e in validation_errors(set_value(ExperimentConfig(), "student.arch", name))}
    assert expected in errors["student.arch"]


def test_library_names_pass_validation():
    cfg = ExperimentConfig()
    for name in ("torchvision:mobilenet_v3_small", "timm:resnet50.a1_in1k", "timm:convnext_atto"):
        cfg = set_value(cfg, "teacher.arch", name)
        assert not validation_errors(cfg)
    assert "unknown model source" in sources.name_problem("keras:resnet50")


def test_a_missing_timm_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    sources.library_models.cache_clear()
    try:
        problem = sources.name_problem("timm:resnet10t")
    finally:
        sources.library_models.cache_clear()
    assert "pip install timm" in problem


def test_ab_is_refused_for_library_models_at_validation():
    cfg = set_value(set_value(ExperimentConfig(), "student.arch", "timm:resnet10t"), "distiller.name", "ab")
    errors = {e.field: e.reason for e in validation_errors(cfg)}
    assert "pre-activation" in errors["distiller.name"]


# ----------------------------------------------------------------------------- weights


def test_a_library_weights_file_starts_the_model_and_its_classifier_is_replaced(tmp_path):
    import torchvision

    torch.manual_seed(1)
    source = torchvision.models.resnet18(num_classes=7)  # the library's key names, another class count
    path = tmp_path / "resnet18-other.pth"
    torch.save({"model": source.state_dict()}, path)
    model = build_model("torchvision:resnet18", num_classes=3, weights=str(path))
    torch.testing.assert_close(model.body.get_submodule("layer3.1.conv2").weight, source.layer3[1].conv2.weight)
    assert model.get_classifier().out_features == 3
    assert any("7 classes" in note and "new classifier" in note for note in model.init_notes)
    # same class count: the classifier loads too (round trip through our own state dict, as safetensors)
    from safetensors.torch import save_file

    again = tmp_path / "ours.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(again))
    twin = build_model("torchvision:resnet18", num_classes=3, weights=str(again))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[key], value)
    assert twin.init_notes == []


def test_a_weights_file_of_another_architecture_is_refused_naming_keys(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(build_model("timm:mobilenetv3_small_050", 3).body.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit torchvision:resnet18.*missing keys"):
        build_model("torchvision:resnet18", 3, weights=str(path))


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network, and empty library caches in tmp_path."""
    monkeypatch.setattr(sources, "_reachable", lambda *a, **k: False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def test_pretrained_without_network_names_what_to_download_and_where(offline):
    with pytest.raises(InputError) as err:
        build_model("torchvision:resnet18", 3, pretrained=True)
    text = str(err.value)
    assert "\n" not in text and "offline" in text
    assert "https://download.pytorch.org/models/resnet18-" in text
    assert str(offline / "torch" / "hub" / "checkpoints") in text
    with pytest.raises(InputError) as err:
        build_model("timm:resnet10t", 3, pretrained=True)
    text = str(err.value)
    assert "\n" not in text and "https://huggingface.co/timm/resnet10t" in text and str(offline / "hf") in text


def test_pretrained_weights_in_the_cache_need_no_network(offline):
    import torchvision

    torch.manual_seed(2)
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    cached = offline / "torch" / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    library = torchvision.models.resnet18()  # 1000 classes, as the real file
    torch.save(library.state_dict(), cached)
    model = build_model("torchvision:resnet18", 4, pretrained=True)
    torch.testing.assert_close(model.body.get_submodule("conv1").weight, library.conv1.weight)
    assert any("1000 classes" in note for note in model.init_notes)


# ----------------------------------------------------------------------------- runs


def _image_folder(root, size=(40, 52), per_class=(6, 2)):
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class):
        for c, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
                pixels[:, :, c] = 255  # a learnable colour cue
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _folder_config(root, **settings):
    cfg = load_config(DEMO)
    base = {"data.dataset": "imagefolder", "data.root": str(root), "data.image_size": 32, "data.batch_size": 4,
            "teacher.arch": "timm:resnet10t", "student.arch": "torchvision:mobilenet_v3_small",
            "teacher.schedule.epochs": 1, "teacher.schedule.milestones": [],
            "granularity.schedule.epochs": 1, "granularity.schedule.milestones": [],
            "student.schedule.epochs": 1, "student.schedule.milestones": [],
            "export.formats": ["weights", "torchscript"], "evaluation.noise_levels": [0.0, 0.1]}
    base.update(settings)
    for key, value in base.items():
        cfg = set_value(cfg, key, value)
    return cfg


def test_teacher_heads_student_and_export_with_library_models(tmp_path, monkeypatch):
    from engine import export
    from engine.run import run_experiment

    def no_torchscript(*args, **kwargs):  # a model TorchScript cannot trace: reported, not fatal
        raise export.ExportError("TorchScript trace of the model failed: unsupported")

    monkeypatch.setattr(export, "_torchscript_bytes", no_torchscript)
    root = _image_folder(tmp_path / "images")
    weights = tmp_path / "teacher-start.pth"
    torch.save(build_model("timm:resnet10t", 10).body.state_dict(), weights)  # 10 classes: replaced
    cfg = _folder_config(root, **{"data.augment": "resized_crop_flip", "teacher.weights": str(weights)})
    from engine.control import RunControl

    control = RunControl()
    stop_in_the_teacher = lambda e: control.stop() if e.type == "StepLosses" else None  # noqa: E731
    stopped = run_experiment(cfg, run_dir=tmp_path / "run", subscribers=[stop_in_the_teacher], control=control)
    assert stopped["status"] == "stopped"
    # the teacher trains with two optimiser groups: backbone at a tenth of the classifier's rate
    groups = torch.load(tmp_path / "run" / "checkpoints" / "teacher_last.pt", weights_only=True)["optimizer"][
        "param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([0.005, 0.05])
    events = []
    summary = run_experiment(None, run_dir=tmp_path / "run", subscribers=[events.append], resume=True)
    assert summary["status"] == "finished"
    assert [e.stage for e in events if e.type == "StageFinished"] == ["teacher", "heads", "student", "evaluate",
                                                                       "export"]
    assert summary["teacher"]["arch"] == "timm:resnet10t" and summary["data"]["input_shape"] == [3, 32, 32]
    resolved = load_config(tmp_path / "run" / "config.yaml")
    assert resolved.data.normalize == "imagenet" and resolved.teacher.backbone_lr_scale == 0.1
    logs = [e.message for e in events if e.type == "Log"]
    assert any("new classifier for 2 classes" in m for m in logs)
    assert any("torchscript skipped" in m for m in logs)
    assert summary["export"]["failed"]["torchscript"].startswith("TorchScript trace")
    assert (tmp_path / "run" / "export" / "student.safetensors").is_file()
    card = (tmp_path / "run" / "export" / "model_card.yaml").read_text()
    assert "torchvision:mobilenet_v3_small" in card and "0.485" in card  # ImageNet normalisation
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "finished"


def test_pretrained_offline_is_refused_before_any_training(tmp_path, offline):
    from engine.cli import main

    root = _image_folder(tmp_path / "images", per_class=(2, 1))
    cfg = _folder_config(root, **{"student.pretrained": True})
    path = tmp_path / "exp.yaml"
    from engine.config import save_config

    save_config(cfg, path)
    code = main([str(path), "--out", str(tmp_path / "run"), "-q"])
    assert code == 2
    assert not (tmp_path / "run").exists()  # refused at plan time: no half-made run folder


def test_a_baseline_that_cannot_use_the_pair_is_refused_at_plan_time(tmp_path):
    from engine.run import run_experiment

    root = _image_folder(tmp_path / "images", per_class=(2, 1))
    cfg = _folder_config(root, **{"distiller.name": "fitnet", "distiller.options": {"hint_layer": 9}})
    events = []
    with pytest.raises(ConfigError, match="hint_layer"):
        run_experiment(cfg, run_dir=tmp_path / "run", subscribers=[events.append])
    assert not [e for e in events if e.type == "StageStarted"]
