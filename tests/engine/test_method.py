"""MGD inside its stages, checked against independent computations (METHOD.md).

Each test names one promise of the method and would fail if the stage broke it: the
student's loss per mode equals a hand computation from the same batch; the frozen teacher
and its heads do not move; the student's encoders learn while its decoders play no part;
the self-analysis stage keeps each head's best epoch; the noise curve falls with noise.
"""

from __future__ import annotations

import math

import pytest
import torch

from engine.control import RunControl
from engine.distillers import distiller_class
from engine.distillers.base import DistillerContext, ModelOutput
from engine.events import EventBus
from engine.mgd import GranularityHeads
from engine.models import build_model
from engine.stages import HeadsTask, StudentTask, TeacherTask
from engine.tracker import cpu_state
from engine.trainer import Trainer

pytestmark = pytest.mark.e2e  # trains end to end (tiny models, a few steps)

HEADS = [(8, 2.0), (16, 8.0)]


@pytest.fixture(scope="module")
def demo():
    from engine.data import load_dataset, make_loader

    bundle = load_dataset("demo")
    train = make_loader(bundle, "train", batch_size=64, device=torch.device("cpu"), train=True, crop_padding=1,
                        flip=False, seed=0)
    test = make_loader(bundle, "test", batch_size=128, device=torch.device("cpu"), train=False)
    return train, test


def models(seed=0):
    torch.manual_seed(seed)
    teacher, student = build_model("resnet8", 10, 1), build_model("resnet8", 10, 1)
    t_heads = GranularityHeads(teacher.feature_dim, 10, HEADS)
    s_heads = GranularityHeads(student.feature_dim, 10, HEADS)
    return teacher, student, t_heads, s_heads


def trainer(loader, tmp_path):
    return Trainer(bus=EventBus(), control=RunControl(), checkpoint_dir=tmp_path, train_loader=loader,
                   classes=[str(i) for i in range(10)])


def kl_by_hand(target_logits, student_logits, t):
    """T^2 * mean over the batch of sum_c p_c (log p_c - log q_c), in float64, written out."""
    target, student = target_logits.double() / t, student_logits.double() / t
    log_p = target - target.exp().sum(1, keepdim=True).log()
    log_q = student - student.exp().sum(1, keepdim=True).log()
    return (log_p.exp() * (log_p - log_q)).sum(1).mean() * t * t


def ce_by_hand(logits, y):
    z = logits.double()
    return (z.exp().sum(1).log() - z.gather(1, y[:, None]).squeeze(1)).mean()


@pytest.mark.parametrize("mode", ["off", "granularity", "stable"])
def test_student_loss_per_mode_equals_a_hand_computation(demo, mode):
    train, test = demo
    teacher, student, t_heads, s_heads = models()
    with torch.no_grad():  # heads that decode something far from the teacher's own logits
        for p in t_heads.parameters():
            p.add_(0.3 * torch.randn_like(p))
    context = DistillerContext([], [], 10, 1442, options={"warmup_epochs": 0, "beta": 3.0})
    dkd = distiller_class("dkd")(context)  # a baseline whose term depends on the teacher logits it is given
    w_ce, w_div, w_kd, temperature = 0.7, 0.9, 1.3, 4.0
    task = StudentTask(student=student, teacher=teacher, distiller=dkd, mode=mode, teacher_heads=t_heads,
                       student_heads=s_heads, weights=(w_ce, w_div, w_kd), temperature=temperature,
                       test_loader=test, num_classes=10)
    task.begin_epoch(0, 1)
    task.train_mode()
    x, y, idx = next(iter(train.epoch(0)))
    torch.manual_seed(1)
    result = task.step(x, y, idx)

    with torch.no_grad():  # the same forward passes, then the method's formula by hand
        torch.manual_seed(1)
        s_logits, s_feats = student(x)
        t_logits, t_feats = teacher(x)
        t_codes, t_decoded = t_heads(t_feats[-1])
        s_codes = [head.encoder(s_feats[-1]) for head in s_heads.heads]
        q = torch.stack([t_logits, *t_decoded]).mean(0) if mode == "stable" else t_logits
        terms = dkd(ModelOutput(s_logits, s_feats), ModelOutput(q, t_feats), y, idx)
        baseline = sum(t.double() for t in terms.values())
        expected = w_ce * ce_by_hand(s_logits, y) + w_div * kl_by_hand(q, s_logits, temperature) + w_kd * baseline
        codes = [kl_by_hand(tc, sc, t) for tc, sc, (_, t) in zip(t_codes, s_codes, HEADS)]
        if mode != "off":
            expected = expected + sum(codes)
    # float32 in the stage, float64 by hand: KL terms near zero carry absolute rounding of ~1e-6
    assert float(result.total.detach()) == pytest.approx(float(expected), rel=1e-5, abs=1e-5)
    assert float(result.losses["kd"]) == pytest.approx(float(kl_by_hand(q, s_logits, temperature)), rel=1e-5,
                                                      abs=1e-5)
    names = {"code1_d8", "code2_d16"}
    if mode == "off":
        assert not names & set(result.losses)
    else:
        assert [float(result.losses[n]) for n in sorted(names)] == pytest.approx([float(c) for c in codes], rel=1e-5,
                                                                                abs=1e-5)
    if mode == "stable":  # the stable target is far from the teacher's logits here: the test tells them apart
        assert abs(float(kl_by_hand(q, s_logits, temperature) - kl_by_hand(t_logits, s_logits, temperature))) > 1e-2


def test_student_stage_moves_only_what_it_trains(demo, tmp_path):
    train, test = demo
    teacher, student, t_heads, s_heads = models()
    before = {name: cpu_state(m) for name, m in
              (("teacher", teacher), ("teacher_heads", t_heads), ("student", student), ("student_heads", s_heads))}
    task = StudentTask(student=student, teacher=teacher, distiller=distiller_class("kd")(DistillerContext([], [], 10, 1)),
                       mode="stable", teacher_heads=t_heads, student_heads=s_heads, weights=(0.2, 0.8, 0.0),
                       temperature=4.0, test_loader=test, num_classes=10)
    trainer(train, tmp_path).fit(task, epochs=1, lr=0.05, momentum=0.9, weight_decay=5e-4, milestones=[], gamma=0.1)

    def same(a: dict, b: dict, prefix: str = "") -> bool:
        return all(torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))

    # the frozen teacher and its heads are bit-identical, batch-norm statistics included
    assert same(cpu_state(teacher), before["teacher"])
    assert same(cpu_state(t_heads), before["teacher_heads"])
    # the student's weights moved (not only its batch-norm statistics, which move in training mode anyway)
    assert not any(torch.equal(p, before["student"][name]) for name, p in student.named_parameters())
    after = cpu_state(s_heads)
    for i in range(len(HEADS)):  # every encoder learned; no decoder was touched
        assert not same(after, before["student_heads"], f"heads.{i}.encoder.")
        assert same(after, before["student_heads"], f"heads.{i}.decoder.")
    assert all(p.grad is None for h in s_heads.heads for p in h.decoder.parameters())
    # and the decoders play no part in the loss: changing them changes nothing
    task.train_mode()
    x, y, idx = next(iter(train.epoch(1)))
    torch.manual_seed(3)
    first = task.step(x, y, idx).total.detach()
    with torch.no_grad():
        for h in s_heads.heads:
            for p in h.decoder.parameters():
                p.mul_(-3.0)
    torch.manual_seed(3)
    assert torch.equal(task.step(x, y, idx).total.detach(), first)


def test_self_analysis_keeps_each_heads_best_epoch(demo, tmp_path, monkeypatch):
    train, test = demo
    teacher, _, t_heads, _ = models()
    teacher.eval()
    scripted = iter([[50.0, 10.0], [20.0, 30.0], [40.0, 25.0]])  # head 1 best at epoch 1, head 2 at epoch 2
    import engine.stages as stages

    real_eval = stages.HeadsTask.evaluate

    def evaluate(self, epoch):
        accs = next(scripted)
        calls = iter(accs)
        monkeypatch.setattr(stages, "accuracy", lambda conf: next(calls))
        try:
            return real_eval(self, epoch)
        finally:
            monkeypatch.undo()
            monkeypatch.setattr(stages.HeadsTask, "evaluate", evaluate)

    monkeypatch.setattr(stages.HeadsTask, "evaluate", evaluate)
    snapshots = []
    task = HeadsTask(teacher, t_heads, test, 10)
    t = trainer(train, tmp_path)
    t.bus.subscribe(lambda e: snapshots.append([cpu_state(h) for h in t_heads.heads]) if e.type == "EpochEnd" else None)
    t.fit(task, epochs=3, lr=0.05, momentum=0.9, weight_decay=5e-4, milestones=[], gamma=0.1)
    last = [cpu_state(h) for h in t_heads.heads]
    task.finish()
    assert task.best_acc == [50.0, 30.0] and task.best_epoch == [1, 2]
    for head, epoch in ((0, 0), (1, 1)):
        restored = cpu_state(t_heads.heads[head])
        assert all(torch.equal(restored[k], snapshots[epoch][head][k]) for k in restored)
        assert not all(torch.equal(restored[k], last[head][k]) for k in restored)


def test_the_heads_checkpoint_holds_each_heads_best_weights(tmp_path):
    from engine.run import run_experiment
    from engine.runfolder import load_checkpoint
    from tests.engine.conftest import tiny_config

    cfg = tiny_config(**{"granularity.schedule.epochs": 3, "student.schedule.epochs": 1, "export.enabled": False})
    summary = run_experiment(cfg, run_dir=tmp_path / "r")
    state = load_checkpoint(tmp_path / "r" / "checkpoints" / "heads.pt")
    for i, head in enumerate(summary["heads"]):
        best = state["tracker"][f"head{i + 1}"]
        assert (best["metric"], best["epoch"]) == (head["test_acc"], head["epoch"])
        saved = {k[len(f"heads.{i}."):]: v for k, v in state["modules"]["heads"].items() if k.startswith(f"heads.{i}.")}
        assert all(torch.equal(saved[k], best["state"][k]) for k in best["state"])


def test_noise_curve_falls_with_noise_and_matches_the_single_measures(demo, tmp_path):
    from engine.evaluate import (evaluate_model, evaluation_report, expected_calibration_error, noise_robustness,
                                 output_noise)

    train, test = demo
    torch.manual_seed(0)
    model = build_model("resnet8", 10, 1)
    trainer(train, tmp_path).fit(TeacherTask(model, test, 10), epochs=3, lr=0.05, momentum=0.9, weight_decay=5e-4,
                                 milestones=[], gamma=0.1)
    model.eval()
    forward = lambda x: model(x)[0]  # noqa: E731
    levels = [0.0, 0.5, 1.0, 2.0, 4.0]
    report = evaluation_report(forward, test, 10, levels, seed=3)
    accs = [a for _, a in report["noise_curve"]]
    assert accs[0] > 60.0  # a model that learned something
    assert all(b <= a + 1.0 for a, b in zip(accs, accs[1:]))  # falls (within a few images) as noise grows
    assert accs[-1] < accs[0] - 30.0
    # one pass computes what the separate measures compute
    assert report["noise_curve"] == noise_robustness(forward, test, 10, levels, seed=3)
    assert (report["test_acc"], report["confusion"]) == evaluate_model(forward, test, 10)
    assert report["output_noise"] == pytest.approx(output_noise(forward, test), rel=1e-9)
    assert report["ece"] == pytest.approx(expected_calibration_error(forward, test), rel=1e-9)
    # and the calibration error is the 15-bin one, recomputed here from the softmax outputs
    with torch.no_grad():
        p = torch.cat([torch.softmax(forward(x).double(), 1) for x, _, _ in test.epoch(0)])
    y = torch.cat([y for _, y, _ in test.epoch(0)])
    bins: dict[int, list[tuple[float, float]]] = {}
    for c, hit in zip(p.max(1).values.tolist(), (p.argmax(1) == y).tolist()):
        bins.setdefault(math.ceil(c * 15) - 1, []).append((c, float(hit)))
    ece = 100 * sum(len(b) / len(y) * abs(sum(c for c, _ in b) / len(b) - sum(h for _, h in b) / len(b))
                    for b in bins.values())
    assert len(bins) > 3 and report["ece"] == pytest.approx(ece, rel=1e-9)
