"""engine.inspect: a finished run's maps, codes and gains, the report and ``mgd-train inspect``."""

from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.cli import main as train_main
from engine.errors import InputError
from engine.inspect.analysis import inspect_run
from engine.inspect.cam import CamNet, class_activation_maps, feature_index, first_per_class
from engine.inspect.codes import chance_accuracy, knn_accuracy, pca_2d, project
from engine.inspect.gain import compare_predictions
from engine.inspect.load import load_run_models, load_test_set
from engine.inspect.outputs import collect_outputs
from engine.inspect.progress import Cancelled
from engine.inspect.report import write_report
from engine.models import build_model, model_names
from tests.inspect_runs import inspect_runs

pytestmark = pytest.mark.e2e  # trains end to end (tiny models, a few steps)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return inspect_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def mgd(runs):
    models = load_run_models(runs["mgd"])
    return models, load_test_set(models)


@pytest.fixture(scope="module")
def inspection(runs):
    return inspect_run(runs["mgd"], images_per_class=1, compare=runs["kd"])


# ----------------------------------------------------------------------------- loading


def test_loads_every_model_of_a_run(runs, mgd):
    models, test = mgd
    assert models.teacher is not None and models.teacher_heads is not None
    assert models.head_labels == ["d64 T2", "d256 T8"]
    # the student's heads are kept from the student's best epoch: one student for maps and codes
    assert models.student_heads is not None and models.code_student is models.student
    assert models.student_best_epoch == json.loads((runs["mgd"] / "summary.json").read_text())["student"]["best_epoch"]
    assert not any(p.requires_grad for p in models.student.parameters())
    # the loaded best student gives the accuracy the run itself reported
    summary = json.loads((runs["mgd"] / "summary.json").read_text())
    outputs = collect_outputs(models, test)
    assert outputs.accuracy("student") == pytest.approx(summary["student"]["best_acc"], abs=1e-6)
    assert outputs.accuracy("teacher") == pytest.approx(summary["teacher"]["test_acc"], abs=1e-6)
    for head, h in zip(summary["heads"], models.head_labels):
        assert outputs.accuracy(h) == pytest.approx(head["test_acc"], abs=1e-6)
    assert [c.shape for c in outputs.teacher_codes] == [(len(test), 64), (len(test), 256)]
    assert [c.shape for c in outputs.student_codes] == [(len(test), 64), (len(test), 256)]


def test_teacher_from_a_checkpoint_and_no_heads(runs):
    models = load_run_models(runs["kd"])  # MGD off; the teacher came from teacher.checkpoint
    assert not (runs["kd"] / "checkpoints" / "teacher.pt").exists()
    assert models.teacher is not None and models.teacher_arch == "resnet8"
    assert models.teacher_heads is None and models.student_heads is None
    assert any("MGD off" in n for n in models.notes)


def test_student_codes_only_when_the_run_holds_the_student_heads(runs, tmp_path):
    from engine.runfolder import load_checkpoint, save_checkpoint

    copy = tmp_path / "run"
    shutil.copytree(runs["mgd"], copy)
    path = copy / "checkpoints" / "student.pt"
    state = load_checkpoint(path)
    del state["tracker"]["student_heads"]  # as a student checkpoint without heads would be
    save_checkpoint(state, path)
    models = load_run_models(copy)
    assert models.teacher_heads is not None and models.student_heads is None
    assert any("no granularity heads" in n for n in models.notes)
    outputs = collect_outputs(models, load_test_set(models))
    assert len(outputs.teacher_codes) == 2 and outputs.student_codes == []


def test_refuses_what_is_not_a_finished_run(tmp_path, runs):
    with pytest.raises(InputError, match="not a run folder"):
        load_run_models(tmp_path)
    copy = tmp_path / "unfinished"
    shutil.copytree(runs["mgd"], copy)
    (copy / "checkpoints" / "student.pt").unlink()
    with pytest.raises(InputError, match="no trained student"):
        load_run_models(copy)


# ----------------------------------------------------------------------------- maps


def _manual_grad_cam(backbone, heads, block: int, x: torch.Tensor, classes: list[int], size) -> torch.Tensor:
    """Grad-CAM by hand, without the library or our wrapper: the gradient of the class score on
    the stage output the backbone returns, averaged over space, weights that output's channels;
    ReLU, min-max, bilinear to the image size."""
    index = feature_index(backbone, x)
    maps = []
    with torch.enable_grad():
        for i, c in enumerate(classes):
            xi = x[i:i + 1].clone().requires_grad_(True)  # the models are frozen: a graph through the input
            logits, feats = backbone(xi)
            scores = logits if block == 0 else heads(feats[-1])[1][block - 1]
            (grad,) = torch.autograd.grad(scores[0, c], feats[index])
            cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * feats[index]).sum(dim=1))[0].detach().double()
            span = cam.max() - cam.min()
            cam = (cam - cam.min()) / span if span > 0 else torch.zeros_like(cam)
            maps.append(F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].float())
    return torch.stack(maps)


def test_maps_have_the_image_size_are_finite_and_match_grad_cam_by_hand(mgd):
    models, test = mgd
    indices = first_per_class(test.labels, 1)
    assert len(indices) == 10 and [int(test.labels[i]) for i in indices] == list(range(10))
    cams = class_activation_maps(models, test, indices)
    assert cams.columns == ["teacher", "d64 T2", "d256 T8", "student"]
    for target in ("predicted", "true"):
        maps = cams.maps[target]
        assert maps.shape == (10, 4, 8, 8) == (len(indices), len(cams.columns), *test.image_size)
        assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
        varied = maps.reshape(10 * 4, -1).std(axis=1) > 1e-3
        assert varied.mean() > 0.8, "most maps should not be flat"
    assert not np.allclose(cams.maps["predicted"][:, 0], cams.maps["predicted"][:, 3])  # teacher != student
    # predictions are each model's own
    x = test.normalised(indices)
    with torch.no_grad():
        t_logits, t_feats = models.teacher(x)
        s_logits = models.student(x)[0]
        head_logits = models.teacher_heads(t_feats[-1])[1]
    assert cams.predictions[:, 0].tolist() == t_logits.argmax(1).tolist()
    assert cams.predictions[:, 1].tolist() == head_logits[0].argmax(1).tolist()
    assert cams.predictions[:, 3].tolist() == s_logits.argmax(1).tolist()
    # the library's maps, through our wrapper and tap, equal Grad-CAM computed by hand
    labels = [int(test.labels[i]) for i in indices]
    by_hand = _manual_grad_cam(models.student, None, 0, x, labels, test.image_size)
    assert torch.allclose(torch.from_numpy(cams.maps["true"][:, 3]), by_hand, atol=1e-4)
    by_hand = _manual_grad_cam(models.teacher, models.teacher_heads, 2, x, labels, test.image_size)
    assert torch.allclose(torch.from_numpy(cams.maps["true"][:, 2]), by_hand, atol=1e-4)
    by_hand = _manual_grad_cam(models.teacher, models.teacher_heads, 0, x, cams.predictions[:, 0].tolist(),
                               test.image_size)
    assert torch.allclose(torch.from_numpy(cams.maps["predicted"][:, 0]), by_hand, atol=1e-4)


@pytest.mark.parametrize("size", [8, 32])
def test_every_zoo_model_gets_finite_maps_of_the_image_size(size):
    from engine.inspect.cam import _grad_cam

    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    for name in model_names():
        model = build_model(name, 10, 3).eval()
        with CamNet(model, x) as net:
            with torch.no_grad():
                assert torch.allclose(net(x), model(x)[0], atol=1e-5), name  # the tap changes nothing
            maps, probs = _grad_cam(net, x, 10, torch.tensor([0, 1]), (size, size), lambda: None)
        for cam in maps["predicted"] + maps["true"]:
            assert cam.shape == (2, size, size) and torch.isfinite(cam).all(), name


def test_earlier_stages_give_finer_maps(mgd):
    models, test = mgd
    x = test.normalised([0])
    assert [feature_index(models.student, x, k) for k in (0, 1, 2, 9)] == [3, 2, 1, 1]
    cams = class_activation_maps(models, test, [0, 1], stages_back=2)
    assert all("8x8" in text for text in cams.layers.values()), cams.layers
    assert cams.maps["true"].shape == (2, 4, 8, 8) and np.isfinite(cams.maps["true"]).all()


def test_maps_refuse_images_that_do_not_exist_and_can_be_cancelled(mgd):
    models, test = mgd
    with pytest.raises(InputError, match="does not exist"):
        class_activation_maps(models, test, [len(test)])
    seen = []
    with pytest.raises(Cancelled):
        class_activation_maps(models, test, list(range(40)), batch_size=8,
                              progress=lambda d, t: seen.append((d, t)), cancelled=lambda: len(seen) > 2)
    assert seen and seen[-1][0] < seen[-1][1]  # stopped before the end


# ----------------------------------------------------------------------------- codes


def test_pca_keeps_the_share_of_variance_numpy_finds():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    points, share = pca_2d(x)
    eig = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    assert share == pytest.approx(eig[:2].sum() / eig.sum(), rel=1e-9)
    assert np.var(points[:, 0], ddof=1) == pytest.approx(eig[0], rel=1e-4)


def test_knn_accuracy_separated_and_shuffled():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 50)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    points = centres[labels] + rng.normal(scale=0.5, size=(200, 2))
    assert knn_accuracy(points, labels) == 100.0
    assert knn_accuracy(points, rng.permutation(labels)) < 45.0
    assert chance_accuracy(labels) == 25.0


def test_codes_of_the_demo_separate_the_classes_far_better_than_chance(inspection):
    projections = inspection.projections
    assert [(p.role, p.granularity) for p in projections] == [
        ("teacher", "d64 T2"), ("teacher", "d256 T8"), ("student", "d64 T2"), ("student", "d256 T8")]
    for p in projections:
        assert p.points.shape == (len(inspection.test), 2) and np.isfinite(p.points).all()
        assert 0.0 < p.variance_share <= 1.0
        assert p.chance == pytest.approx(100 * np.bincount(inspection.outputs.labels).max() / len(p.labels))
    for p in projections[:2]:  # the teacher's codes: at least 25 points above chance (10% on the digits)
        assert p.separation > p.chance + 25.0, p.title
        shuffled = project(inspection.outputs.teacher_codes[0], np.random.default_rng(0).permutation(p.labels),
                           granularity="x", role="teacher")
        assert shuffled.separation < p.chance + 10.0  # the separation comes from the classes, not the measure


def test_tsne_projection_when_scikit_learn_is_installed(inspection):
    pytest.importorskip("sklearn")
    p = project(inspection.outputs.teacher_codes[0], inspection.outputs.labels, granularity="d64 T2",
                role="teacher", method="tsne")
    assert p.points.shape == (len(inspection.test), 2) and p.variance_share is None
    assert p.separation > p.chance + 25.0


def test_unavailable_projection_is_refused_in_one_line(monkeypatch, inspection):
    from engine.inspect import codes

    monkeypatch.setattr(codes, "available_methods", lambda: ["pca"])
    with pytest.raises(InputError, match="umap-learn"):
        project(inspection.outputs.teacher_codes[0], inspection.outputs.labels, granularity="g", role="teacher",
                method="umap")


# ----------------------------------------------------------------------------- gain


def test_compare_predictions_by_hand():
    labels = [0, 0, 1, 1, 2]
    gain = compare_predictions(labels, [0, 1, 1, 1, 0], [0, 0, 0, 1, 2], ["a", "b", "c"], ("kd", "mgd"))
    assert gain.a_only == [2] and gain.b_only == [1, 4] and gain.net == 1
    assert [(r["a"], r["b"]) for r in gain.per_class] == [(50.0, 100.0), (100.0, 50.0), (0.0, 100.0)]
    assert gain.accuracy == (60.0, 80.0)


def test_gain_between_two_runs(inspection):
    gain = inspection.gain
    assert gain is not None and gain.names[1].startswith("kd-mgd") and gain.names[0].startswith("kd ")
    labels = inspection.outputs.labels
    assert np.array_equal(gain.pred_b, inspection.outputs.predictions["student"])
    for i in gain.b_only:
        assert gain.pred_b[i] == labels[i] != gain.pred_a[i]
    for i in gain.a_only:
        assert gain.pred_a[i] == labels[i] != gain.pred_b[i]
    assert gain.accuracy[1] - gain.accuracy[0] == pytest.approx(100 * gain.net / len(labels))
    n = sum(r["images"] for r in gain.per_class)
    assert n == len(labels)
    assert sum(r["b"] * r["images"] for r in gain.per_class) / n == pytest.approx(gain.accuracy[1])


# ----------------------------------------------------------------------------- report and CLI


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.headings, self.circles, self.scripts = [], [], [], []
        self._script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img" and a.get("data-file"):
            self.images.append(a)
        elif tag == "circle":
            self.circles.append(a)
        elif tag == "script":
            self._script = a.get("id") or "code"

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = False

    def handle_data(self, data):
        if self._script:
            self.scripts.append((self._script, data))


def test_report_page_opens_and_holds_every_figure(inspection, tmp_path):
    files = write_report(inspection, tmp_path / "report")
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert {"maps_predicted.png", "maps_true.png", "codes_1_d64-t2.png", "codes_2_d256-t8.png",
            "gain_per_class.png", "gap_per_class.png"} <= set(pngs)
    page = _Page()
    page.feed(files["html"].read_text(encoding="utf-8"))
    page.close()
    assert sorted(a["data-file"] for a in page.images) == pngs  # every PNG, once
    for a in page.images:  # embedded: the page needs no other file
        prefix = "data:image/png;base64,"
        assert a["src"].startswith(prefix)
        assert base64.b64decode(a["src"][len(prefix):]) == (tmp_path / "report" / a["data-file"]).read_bytes()
    thumbs = json.loads(dict(page.scripts)["thumbs"])
    assert len(page.circles) == 4 * len(inspection.test)  # four code plots of every test image
    assert {c["data-i"] for c in page.circles} == set(thumbs)  # each point's image is there for the hover


def test_cli_writes_the_report_and_exit_codes(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert train_main(["inspect", str(runs["mgd"]), "--images", "2", "--out", str(out), "--compare",
                       str(runs["kd"]), "-q"]) == 0
    text = capsys.readouterr().out
    assert "5-NN in 2-D" in text and "index.html" in text
    assert (out / "index.html").is_file() and (out / "gain_per_class.png").is_file()
    from PIL import Image

    assert Image.open(out / "maps_true.png").size[1] > Image.open(out / "gap_per_class.png").size[1]  # 20 rows

    def one_line(code_args) -> str:
        assert train_main(code_args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    assert "not a run folder" in one_line(["inspect", str(tmp_path)])
    copy = tmp_path / "unfinished"
    shutil.copytree(runs["kd"], copy)
    (copy / "checkpoints" / "student.pt").unlink()
    assert "no trained student" in one_line(["inspect", str(copy)])
    assert "--frobnicate" in one_line(["inspect", str(runs["mgd"]), "--frobnicate"])
    assert "--images" in one_line(["inspect", str(runs["mgd"]), "--images", "0"])
    assert "RUN_DIR" in one_line(["inspect"])


def test_cli_checks_its_output_folder_heads_and_device_before_any_work(runs, tmp_path, capsys, monkeypatch):
    import os

    import torch

    import engine.inspect.analysis as analysis
    from engine.runfolder import load_checkpoint, save_checkpoint

    def no_work(*args, **kwargs):
        raise AssertionError("the test set was run through the models")

    monkeypatch.setattr(analysis, "collect_outputs", no_work)

    def refused(*args) -> str:
        assert train_main(["inspect", str(runs["mgd"]), *args, "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    assert "--device: 'bogus' is not allowed" in refused("--device", "bogus")
    assert "--device: 'cuda:x' is not allowed" in refused("--device", "cuda:x")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert "--out" in refused("--out", str(a_file / "report"))
    if os.geteuid() != 0:  # chmod does not stop root
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            assert "--out" in refused("--out", str(locked / "report"))
            assert "--out" in refused("--out", str(locked))
        finally:
            locked.chmod(0o755)

    nan_run = tmp_path / "nan-heads"
    shutil.copytree(runs["mgd"], nan_run)
    heads_file = nan_run / "checkpoints" / "heads.pt"
    state = load_checkpoint(heads_file)
    state["modules"]["heads"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                 for k, v in state["modules"]["heads"].items()}
    save_checkpoint(state, heads_file)
    assert train_main(["inspect", str(nan_run), "--out", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{heads_file}: holds NaN or infinite weights" in err, err
