"""Promises of the method's code that mutation testing found unguarded.

mutmut (configured in ``pyproject.toml``) changes ``engine/stages.py``, ``engine/mgd/``,
``engine/evaluate.py`` and the distillers' shared code one small edit at a time; every
edit that changed a result the method or the user sees and that no test noticed got a
test here. Each test names the behaviour and compares against an independent computation
(float64 by hand, written out) or a property, on tiny fake models so the whole file runs
in a few seconds.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.distillers.base import Distiller, DistillerContext
from engine.errors import ConfigError
from engine.mgd import GranularityHeads

F64 = torch.float64
CLASSES = 4
HEADS = [(3, 2.0), (5, 8.0)]


# ----------------------------------------------------------------------------- helpers


class ListLoader:
    """A stand-in for the engine's BatchLoader: fixed batches of ``(x, y, idx)``."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def epoch(self, epoch, start_step=0):
        yield from self.batches[start_step:]


class Tiny(nn.Module):
    """The zoo's model contract in miniature: ``(logits, [input, stage, pooled])``; with
    ``preact=True`` the stage output is the pre-activation, as the zoo's models give for AB."""

    classifier_name = "fc"

    def __init__(self, seed: int, d_in: int = 6, width: int = 5, classes: int = CLASSES):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Linear(d_in, width)
        self.bn = nn.BatchNorm1d(width)
        self.fc = nn.Linear(width, classes)
        self.feature_dim = width

    def forward(self, x, preact: bool = False):
        pre = self.bn(self.body(x))
        f = torch.relu(pre)
        return self.fc(f), [x, pre if preact else f, f]

    def get_classifier(self):
        return self.fc


def batch(seed: int, n: int = 12, d_in: int = 6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g), torch.randint(0, CLASSES, (n,), generator=g), torch.arange(n)


def loader(seeds=(10, 11)):
    return ListLoader([batch(s) for s in seeds])


def ce_by_hand(logits, y):
    z = logits.double()
    return (z.exp().sum(1).log() - z.gather(1, y[:, None]).squeeze(1)).mean()


def kl_by_hand(target_logits, student_logits, t):
    """T^2 * batch mean of sum_c p_c (log p_c - log q_c), float64, written out."""
    a, b = target_logits.double() / t, student_logits.double() / t
    log_p = a - a.exp().sum(1, keepdim=True).log()
    log_q = b - b.exp().sum(1, keepdim=True).log()
    return (log_p.exp() * (log_p - log_q)).sum(1).mean() * t * t


def confusion_by_hand(pairs, classes=CLASSES):
    m = [[0] * classes for _ in range(classes)]
    for true, pred in pairs:
        m[true][pred] += 1
    return m


def accuracy_by_hand(model, data):
    """Percent of correct top-1 predictions and the [true][predicted] matrix, over ``data``."""
    pairs = []
    with torch.no_grad():
        for x, y, _ in data.epoch(0):
            pairs += list(zip(y.tolist(), model(x)[0].argmax(1).tolist()))
    return 100.0 * sum(t == p for t, p in pairs) / len(pairs), confusion_by_hand(pairs)


def approx(value, **kw):
    return pytest.approx(value, rel=kw.get("rel", 1e-5), abs=kw.get("abs", 1e-6))


class Recorder(Distiller):
    """A baseline that records what the student stage hands it and returns one term that
    depends on all of it (student and teacher features, teacher logits, labels, indices)."""

    needs_preact = True

    def __init__(self):
        super().__init__(DistillerContext([], [], CLASSES, 100))
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.calls = []

    def forward(self, student, teacher, labels, indices):
        self.calls.append((student, teacher, labels, indices))
        term = self.scale * ((student.features[1] - teacher.features[1]) ** 2).mean() \
            + (teacher.logits.mean() - labels.float().mean()) ** 2 + 0.01 * indices.float().sum()
        return {"rec": term}


# ----------------------------------------------------------------------------- evaluate.py


def test_accuracy_of_a_single_image_is_all_or_nothing():
    from engine.evaluate import accuracy

    assert accuracy(torch.tensor([[1, 0], [0, 0]])) == 100.0
    assert accuracy(torch.tensor([[0, 1], [0, 0]])) == 0.0
    assert accuracy(torch.zeros(3, 3, dtype=torch.long)) == 0.0  # nothing evaluated: no division by zero


def test_per_class_accuracy_is_hits_over_support():
    from engine.evaluate import per_class_accuracy

    conf = torch.tensor([[2, 2, 0], [0, 3, 0], [0, 0, 0]])
    assert per_class_accuracy(conf) == approx([50.0, 100.0, 0.0])


def test_noise_of_each_sample_is_the_documented_draw():
    """``noise_seed`` s and test sample i draw ``randn`` of one sample's shape from a generator seeded
    ``s * 1_000_003 + i`` (the loader's sample index, else the position): a curve recorded by one run
    (or version, or evaluation batch size) can be reproduced and compared by another."""
    from engine.evaluate import confusion_matrices, noise_robustness

    data = loader((1, 2, 3))
    seen = []

    def forward(x):
        seen.append(x.clone())
        return x[:, :CLASSES]

    confusion_matrices(forward, data, CLASSES, noise_std=0.7, noise_seed=5)
    position = 0
    for (x, _, idx), noisy in zip(data.batches, seen):
        indices = idx.tolist() if idx is not None else list(range(position, position + x.shape[0]))
        expected = torch.stack([torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(5 * 1_000_003 + i))
                                for i in indices])
        assert torch.equal(noisy, x + 0.7 * expected)
        position += x.shape[0]
    # the default noise seed is 0
    w = torch.randn(6, CLASSES, generator=torch.Generator().manual_seed(0))
    curve = noise_robustness(lambda x: x @ w, data, CLASSES, [0.0, 1.0, 3.0])
    assert curve == noise_robustness(lambda x: x @ w, data, CLASSES, [0.0, 1.0, 3.0], seed=0)


def test_two_classes_have_no_output_noise():
    """With C = 2 the only non-top class holds exactly 1 - p_max = b: the noise is zero."""
    from engine.evaluate import output_noise

    logits = torch.tensor([[2.0, -1.0], [0.3, 0.1], [-4.0, 1.0]])
    assert output_noise(lambda x: x, ListLoader([(logits, torch.tensor([0, 1, 1]), None)])) == approx(0.0, abs=1e-15)


def ece_by_hand(confs, hits, bins=15):
    """Equal-width bins (k/bins, (k+1)/bins], in plain Python."""
    groups: dict[int, list[tuple[float, float]]] = {}
    for c, h in zip(confs, hits):
        groups.setdefault(math.ceil(c * bins) - 1, []).append((c, h))
    return 100.0 * sum(len(g) / len(confs) * abs(sum(c for c, _ in g) / len(g) - sum(h for _, h in g) / len(g))
                       for g in groups.values())


def test_ece_bins_confidences_in_fifteen_equal_bins_up_to_one():
    from engine.evaluate import evaluation_report, expected_calibration_error

    g = torch.Generator().manual_seed(3)
    scale = torch.tensor([0.3, 1.0, 3.0, 10.0]).repeat(50)[:, None]  # confidences from ~1/C up to ~1
    logits = (torch.randn(200, CLASSES, generator=g, dtype=F64) * scale)
    y = torch.randint(0, CLASSES, (200,), generator=g)
    p = torch.softmax(logits, 1)
    confs, hits = p.max(1).values.tolist(), (p.argmax(1) == y).double().tolist()
    assert max(confs) > 14 / 15 and min(confs) < 8 / 15  # the first and the last bins are used
    expected = ece_by_hand(confs, hits)
    data = ListLoader([(logits[:120], y[:120], None), (logits[120:], y[120:], None)])
    assert expected_calibration_error(lambda x: x, data) == approx(expected, rel=1e-9)
    assert evaluation_report(lambda x: x, data, CLASSES, [0.0])["ece"] == approx(expected, rel=1e-9)


def test_report_passes_counts_the_batches_evaluation_report_runs():
    from engine.evaluate import evaluation_report, report_passes

    data = loader((1, 2, 3))
    levels = [0.0, 0.1, 0.5]
    ticks = []
    evaluation_report(lambda x: x[:, :CLASSES], data, CLASSES, levels, progress=ticks.append)
    assert report_passes(data, levels) == len(ticks) == 3 * 3  # the clean pass plus one per non-zero level
    assert ticks == list(range(1, 10))  # batches done so far, after each batch
    assert report_passes(data, [0.0]) == 3 and report_passes(data, [2.0, 4.0]) == 9


def test_evaluation_report_is_the_single_measures_in_one_pass():
    """Same accuracy, integer confusion counts, noise curve (default seed 0 in both) and output
    noise as the separate functions; a single test image is a test set, none is refused."""
    from engine.evaluate import confusion_matrices, evaluation_report, noise_robustness, output_noise

    w = torch.randn(6, CLASSES, generator=torch.Generator().manual_seed(1))
    forward = lambda x: x @ w  # noqa: E731
    data = loader((4, 5))
    report = evaluation_report(forward, data, CLASSES, [0.0, 0.5, 2.0])
    (conf,) = confusion_matrices(forward, data, CLASSES)
    assert conf.dtype == torch.long and report["confusion"] == conf.tolist()
    assert all(type(v) is int for row in report["confusion"] for v in row)  # counts, also in the JSON files
    assert report["noise_curve"] == noise_robustness(forward, data, CLASSES, [0.0, 0.5, 2.0])
    assert report["output_noise"] == approx(output_noise(forward, data), rel=1e-12)
    one = ListLoader([(data.batches[0][0][:1], data.batches[0][1][:1], None)])
    single = evaluation_report(forward, one, CLASSES, [0.0])
    assert single["test_acc"] in (0.0, 100.0) and single["output_noise"] == approx(output_noise(forward, one))
    p = torch.softmax(forward(one.batches[0][0]).double(), 1)[0].tolist()  # one image's noise, by hand
    top = max(range(CLASSES), key=p.__getitem__)
    b = (1 - p[top]) / (CLASSES - 1)
    assert output_noise(forward, one) == approx(sum(abs(p[c] - b) for c in range(CLASSES) if c != top), rel=1e-12)
    empty = ListLoader([])
    for measure in (lambda: evaluation_report(forward, empty, CLASSES, [0.0]),
                    lambda: confusion_matrices(forward, empty, CLASSES)):
        with pytest.raises(ValueError, match=r"^the test set is empty$"):
            measure()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_evaluation_on_a_gpu_gives_the_cpus_numbers():
    """Noise drawn on the CPU is moved to the input's device; CPU latency is measured on a CPU copy."""
    from engine.evaluate import cpu_latency_ms, evaluation_report

    w = torch.randn(6, CLASSES, generator=torch.Generator().manual_seed(1), dtype=F64)
    data = ListLoader([tuple(t.double() if t.is_floating_point() else t for t in batch(s)) for s in (4, 5)])
    on_gpu = ListLoader([tuple(t.cuda() for t in b) for b in data.batches])
    levels = [0.0, 0.5, 2.0]
    cpu = evaluation_report(lambda x: x @ w, data, CLASSES, levels, seed=2)
    gpu = evaluation_report(lambda x: x @ w.cuda(), on_gpu, CLASSES, levels, seed=2)
    assert gpu["noise_curve"] == cpu["noise_curve"] and gpu["confusion"] == cpu["confusion"]
    model = Tiny(0).cuda()
    assert cpu_latency_ms(model, (6,), repeats=3, warmup=1) > 0 and model.fc.weight.is_cuda


# ----------------------------------------------------------------------------- mgd/


def test_code_losses_refuses_mismatched_lists_and_says_what_it_got():
    from engine.mgd import code_losses

    with pytest.raises(ValueError, match=r"one student code, teacher code and temperature per head; got 1, 2 and 1"):
        code_losses([torch.zeros(1, 2)], [torch.zeros(1, 2), torch.zeros(1, 2)], [1.0])


def test_head_names_match_the_heads_loss_names():
    from types import SimpleNamespace

    from engine.mgd import head_names

    granularities = [(64, 2.0), SimpleNamespace(dim=256, temperature=8.0), [8, 1.0]]  # pairs or config objects
    assert head_names(granularities) == GranularityHeads(4, 3, granularities).names() == \
        ["code1_d64", "code2_d256", "code3_d8"]


# ----------------------------------------------------------------------------- base.py


def test_a_baselines_pretraining_defaults_to_its_own_parameters_for_no_epochs():
    distiller = Recorder()
    assert [id(p) for p in distiller.pretrain_parameters(Tiny(0))] == [id(distiller.scale)]
    assert distiller.pretrain_epochs() == 0 and distiller.pretrain_lr(0.05) == 0.05


# ----------------------------------------------------------------------------- _feature_adapt.py


def test_models_without_usable_stage_maps_are_refused_naming_side_baseline_and_shape():
    from engine.distillers._feature_adapt import feature_map, stage_maps

    with pytest.raises(ConfigError) as err:
        stage_maps([(4, 8, 8), (8,)], "student", "AB")
    assert err.value.field == "distiller.name"
    assert str(err.value) == "distiller.name: AB needs the student's stage outputs, but its feature list has none"
    with pytest.raises(ConfigError) as err:
        stage_maps([(4, 8, 8), (6,), (8, 4, 4), (8,)], "teacher", "VID")
    assert err.value.field == "distiller.name"
    assert str(err.value) == "distiller.name: VID needs teacher stage outputs shaped (C, H, W), got (6,)"
    with pytest.raises(ConfigError) as err:
        feature_map((16,), "teacher", "FT", "last stage output")
    assert err.value.field == "distiller.name"
    assert str(err.value) == "distiller.name: FT needs the teacher's last stage output shaped (C, H, W), got (16,)"


def test_common_size_is_the_smaller_height_and_the_smaller_width_separately():
    from engine.distillers._feature_adapt import common_size, pool_to_common

    assert common_size((4, 8, 6), (16, 4, 10)) == (4, 6)  # per-sample (C, H, W) shapes, as AB uses them
    assert common_size((4, 3, 9), (16, 5, 2)) == (3, 2)
    a, b = torch.randn(2, 3, 8, 6), torch.randn(2, 5, 4, 10)
    pa, pb = pool_to_common(a, b)
    assert pa.shape == (2, 3, 4, 6) and pb.shape == (2, 5, 4, 6)
    assert torch.allclose(pb, F.adaptive_avg_pool2d(b, (4, 6)))


def test_no_stage_pairs_when_a_model_has_no_stages():
    from engine.distillers._feature_adapt import pair_stages

    assert pair_stages(0, 3) == [] and pair_stages(3, 0) == [] and pair_stages(0, 0) == []


def test_backbone_parameters_leave_out_only_the_classifier():
    from engine.distillers._feature_adapt import backbone_parameters

    plain = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))  # no get_classifier: everything is backbone
    assert [id(p) for p in backbone_parameters(plain)] == [id(p) for p in plain.parameters()]
    model = Tiny(0)
    kept = {id(p) for p in backbone_parameters(model)}
    assert kept == {id(p) for m in (model.body, model.bn) for p in m.parameters()}


# ----------------------------------------------------------------------------- stages.py: teacher, heads


def test_teacher_step_is_cross_entropy_named_ce_with_the_batch_hits():
    from engine.stages import TeacherTask

    model = Tiny(1)
    x, y, idx = batch(20)
    result = TeacherTask(model, loader(), CLASSES).step(x, y, idx)
    logits = model(x)[0].detach()
    assert set(result.losses) == {"ce"}
    assert float(result.losses["ce"]) == approx(float(ce_by_hand(logits, y)))
    assert float(result.total.detach()) == approx(float(ce_by_hand(logits, y)))
    assert int(result.correct) == sum(int(p == t) for p, t in zip(logits.argmax(1).tolist(), y.tolist()))


def test_teacher_evaluation_reports_accuracy_confusion_and_best_so_far():
    from engine.stages import TeacherTask

    model, data = Tiny(2), loader()
    task = TeacherTask(model, data, CLASSES)
    first = task.evaluate(1)
    acc, conf = accuracy_by_hand(model, data)
    assert first == {"test_acc": approx(acc), "confusion": conf, "best_acc": approx(acc)}
    with torch.no_grad():
        model.fc.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 50.0]))  # every image predicted as class 3
    second = task.evaluate(2)
    acc2, conf2 = accuracy_by_hand(model, data)
    assert second == {"test_acc": approx(acc2), "confusion": conf2, "best_acc": approx(max(acc, acc2))}
    assert [row[3] for row in conf2] == [sum(row) for row in conf2] and acc2 != acc


def test_a_runs_teacher_checkpoint_loads_as_a_teacher_checkpoint(tmp_path):
    """teacher.pt of one run is a valid ``teacher.checkpoint`` of the next (its weights are
    found under modules/model)."""
    from engine.models import build_model
    from engine.models.checkpoint import load_weights
    from engine.runfolder import save_checkpoint
    from engine.stages import TeacherTask
    from engine.trainer import stage_state

    torch.manual_seed(4)
    trained = build_model("resnet8", 10, 1)
    path = save_checkpoint(stage_state(TeacherTask(trained, loader(), 10), [], 1.0), tmp_path / "teacher.pt")
    fresh = build_model("resnet8", 10, 1)
    load_weights(fresh, str(path), "resnet8")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values()))


def heads_for(model, seed=5):
    torch.manual_seed(seed)
    heads = GranularityHeads(model.feature_dim, CLASSES, HEADS)
    with torch.no_grad():  # decoders far apart, so each head predicts differently
        for p in heads.parameters():
            p.mul_(3.0)
    return heads


def test_self_analysis_step_sums_each_heads_loss_under_its_name():
    from engine.stages import HeadsTask

    teacher = Tiny(3).eval()
    heads = heads_for(teacher)
    x, y, idx = batch(21)
    result = HeadsTask(teacher, heads, loader(), CLASSES).step(x, y, idx)
    with torch.no_grad():
        t_logits, t_feats = teacher(x)
        decoded = heads(t_feats[-1])[1]
    by_hand = [kl_by_hand(t_logits, r, t) + ce_by_hand(r, y) for r, (_, t) in zip(decoded, HEADS)]
    assert {k: float(v) for k, v in result.losses.items()} == {"head1_d3": approx(float(by_hand[0])),
                                                                  "head2_d5": approx(float(by_hand[1]))}
    assert float(result.total.detach()) == approx(float(sum(by_hand)))
    hits = [int((r.argmax(1) == y).sum()) for r in decoded]
    assert hits[0] != hits[1] and float(result.correct) == approx(sum(hits) / 2)


def test_self_analysis_evaluation_reports_each_heads_accuracy_under_its_name():
    from engine.stages import HeadsTask

    teacher, data = Tiny(3).eval(), loader((12, 13, 14))
    heads = heads_for(teacher)
    task = HeadsTask(teacher, heads, data, CLASSES)
    metrics = task.evaluate(1)
    accs = [accuracy_by_hand(lambda x, h=h: (h(teacher(x)[1][-1])[1],), data)[0] for h in heads.heads]
    assert accs[0] != accs[1]
    assert metrics == {"test_acc": approx(sum(accs) / 2), "head1_d3": approx(accs[0]), "head2_d5": approx(accs[1]),
                       "head_accs": approx(accs)}
    assert task.best_acc == approx(accs) and task.best_epoch == [1, 1]


# ----------------------------------------------------------------------------- stages.py: student


def student_task(mode="granularity", distiller=None, weights=(0.7, 0.9, 1.3), data=None, **kw):
    from engine.stages import StudentTask

    teacher, student = Tiny(7).eval(), Tiny(6)
    args = dict(student=student, teacher=teacher, distiller=distiller if distiller is not None else Recorder(),
                mode=mode, teacher_heads=heads_for(teacher, 8), student_heads=heads_for(student, 9), weights=weights,
                temperature=4.0, test_loader=data if data is not None else loader(), num_classes=CLASSES)
    args.update(kw)
    return StudentTask(**args)


@pytest.mark.parametrize("mode", ["granularity", "stable"])
def test_student_stage_hands_the_baseline_pre_activations_the_soft_target_labels_and_indices(mode):
    """A baseline that asks for pre-activations (AB) gets them from both models; it sees the
    MGD soft target as the teacher's logits, the batch's labels and sample indices; its term
    enters the loss times w_kd and is logged under its own name."""
    task = student_task(mode)
    task.begin_epoch(2, 9)
    assert (task.distiller.epoch, task.distiller.epochs) == (2, 9)
    task.train_mode()
    x, y, idx = batch(22)
    result = task.step(x, y, idx)
    s, t = task.student, task.teacher
    with torch.no_grad():
        s_logits, s_feats = s(x, preact=True)
        t_logits, t_feats = t(x, preact=True)
        t_codes, t_decoded = task.teacher_heads(t_feats[-1])
        s_codes = task.student_heads.encode(s_feats[-1])
    q = torch.stack([t_logits, *t_decoded]).mean(0) if mode == "stable" else t_logits
    (student_out, teacher_out, labels, indices), = task.distiller.calls
    assert torch.allclose(student_out.logits, s_logits) and torch.allclose(teacher_out.logits, q)
    assert torch.allclose(student_out.features[1], s_feats[1]) and (s_feats[1] < 0).any()  # not ReLU'd
    assert torch.allclose(teacher_out.features[1], t_feats[1]) and (t_feats[1] < 0).any()
    assert torch.equal(labels, y) and torch.equal(indices, idx)
    rec = 1.5 * ((s_feats[1].double() - t_feats[1].double()) ** 2).mean() \
        + (q.double().mean() - y.double().mean()) ** 2 + 0.01 * idx.double().sum()
    codes = [kl_by_hand(tc, sc, temp) for tc, sc, (_, temp) in zip(t_codes, s_codes, HEADS)]
    assert float(result.losses["rec"]) == approx(float(rec))
    expected = 0.7 * ce_by_hand(s_logits, y) + 0.9 * kl_by_hand(q, s_logits, 4.0) + 1.3 * rec + sum(codes)
    assert float(result.total.detach()) == approx(float(expected))
    assert set(result.losses) == {"ce", "kd", "rec", "code1_d3", "code2_d5"}


def test_mgd_uses_the_teacher_even_when_the_baseline_alone_would_not():
    """The student-alone reference skips the teacher only with MGD off; a baseline that uses
    the teacher (KD) always gets its logit term."""
    from engine.distillers import distiller_class

    x, y, idx = batch(23)
    alone = distiller_class("none")(DistillerContext([], [], CLASSES, 100))
    kd = distiller_class("kd")(DistillerContext([], [], CLASSES, 100))
    assert set(student_task("granularity", alone).step(x, y, idx).losses) == {"ce", "kd", "code1_d3", "code2_d5"}
    assert set(student_task("off", kd).step(x, y, idx).losses) == {"ce", "kd"}
    off_alone = student_task("off", alone, weights=(1.0, 0.0, 0.0))
    result = off_alone.step(x, y, idx)
    assert set(result.losses) == {"ce"}
    assert float(result.total.detach()) == approx(float(ce_by_hand(off_alone.student(x)[0].detach(), y)))


def test_student_stage_refuses_an_unknown_mode_or_missing_heads_by_name():
    with pytest.raises(ValueError, match=r"^unknown MGD mode 'bogus'$"):
        student_task("bogus")
    for missing in ("teacher_heads", "student_heads"):
        with pytest.raises(ValueError, match=r"^MGD mode 'stable' needs teacher and student granularity heads$"):
            student_task("stable", **{missing: None})
    assert student_task("off", teacher_heads=None, student_heads=None).student_heads is None


def test_student_stage_trains_backbone_baseline_and_encoders_only():
    task = student_task("granularity")
    ids = {id(p) for p in task.parameters()}
    wanted = [*task.student.parameters(), *task.distiller.parameters(),
              *(p for h in task.student_heads.heads for p in h.encoder.parameters())]
    assert ids == {id(p) for p in wanted} and len(ids) == len(wanted)


def test_student_evaluation_reports_accuracy_confusion_and_best_so_far():
    data = loader((30, 31))
    task = student_task("granularity", data=data)
    first = task.evaluate(1)
    acc, conf = accuracy_by_hand(task.student, data)
    assert first == {"test_acc": approx(acc), "confusion": conf, "best_acc": approx(acc)}
    with torch.no_grad():
        task.student.fc.bias.copy_(torch.tensor([0.0, 40.0, 0.0, 0.0]))
    second = task.evaluate(2)
    acc2, conf2 = accuracy_by_hand(task.student, data)
    assert acc2 != acc and second == {"test_acc": approx(acc2), "confusion": conf2, "best_acc": approx(max(acc, acc2))}


# ----------------------------------------------------------------------------- stages.py: pre-training


class WithPretraining(Recorder):
    def pretrain_parameters(self, student):
        return [self.scale, *student.body.parameters()]

    def pretrain_loss(self, student, teacher):
        self.calls.append((student, teacher))
        return {"match": self.scale * ((student.features[1] - teacher.features[1]) ** 2).mean(),
                "logits": ((student.logits - teacher.logits) ** 2).mean()}


def test_pretraining_minimises_the_sum_of_the_baselines_terms_on_pre_activations():
    from engine.stages import PretrainTask

    teacher, student, data = Tiny(7), Tiny(6), loader((40, 41))
    distiller = WithPretraining()
    task = PretrainTask(student=student, teacher=teacher, distiller=distiller, test_loader=data, num_classes=CLASSES)
    assert [id(p) for p in task.parameters()] == [id(p) for p in distiller.pretrain_parameters(student)]
    teacher.train()
    task.train_mode()
    assert not teacher.training and student.training and distiller.training
    x, y, idx = batch(24)
    result = task.step(x, y, idx)
    with torch.no_grad():
        s_logits, s_feats = student(x, preact=True)
        t_logits, t_feats = teacher(x, preact=True)
    (s_out, t_out), = distiller.calls
    assert torch.allclose(s_out.features[1], s_feats[1]) and torch.allclose(t_out.features[1], t_feats[1])
    assert (s_feats[1] < 0).any() and (t_feats[1] < 0).any()  # pre-activations, not ReLU outputs
    match = 1.5 * ((s_feats[1].double() - t_feats[1].double()) ** 2).mean()
    logit = ((s_logits.double() - t_logits.double()) ** 2).mean()
    assert {k: float(v) for k, v in result.losses.items()} == {"match": approx(float(match)),
                                                                  "logits": approx(float(logit))}
    assert float(result.total.detach()) == approx(float(match + logit))
    assert int(result.correct) == int((s_logits.argmax(1) == y).sum())
    assert task.evaluate(1) == {"test_acc": approx(accuracy_by_hand(student, data)[0])}
    assert set(task.modules()) == {"student", "distiller"}


# ----------------------------------------------------------------------------- stages.py: online


def online(n=3, heads=True, data=None):
    from engine.stages import OnlineTask

    peers = [Tiny(50 + i) for i in range(n)]
    peer_heads = [heads_for(p, 60 + i) for i, p in enumerate(peers)] if heads else None
    return OnlineTask(peers=peers, heads=peer_heads, test_loader=data if data is not None else loader(),
                      num_classes=CLASSES)


def test_online_loss_of_three_peers_equals_the_formula_by_hand():
    """Each peer: CE + 1/(N-1) sum_{j != k} [KL(z_j || z_k) + sum_g T_g^2 KL(e_j,g || e_k,g)]; with
    three peers 1/(N-1) = 1/2 matters. Logged terms are means over the peers; the training
    accuracy is the first peer's."""
    task = online(3)
    task.train_mode()
    x, y, idx = batch(25)
    result = task.step(x, y, idx)
    with torch.no_grad():
        outs = [p(x) for p in task.peers]
        codes = [h.encode(o[1][-1]) for h, o in zip(task.heads, outs)]
    n = 3
    ce = sum(ce_by_hand(o[0], y) for o in outs)
    dml = sum(kl_by_hand(outs[j][0], outs[k][0], 1.0) for k in range(n) for j in range(n) if j != k) / (n - 1)
    per_head = [sum(kl_by_hand(codes[j][g], codes[k][g], HEADS[g][1]) for k in range(n) for j in range(n) if j != k)
                / (n - 1) for g in range(len(HEADS))]
    assert float(result.total.detach()) == approx(float(ce + dml + sum(per_head)))
    assert {k: float(v) for k, v in result.losses.items()} == {
        "ce": approx(float(ce / n)), "dml": approx(float(dml / n)),
        "code1_d3": approx(float(per_head[0] / n)), "code2_d5": approx(float(per_head[1] / n))}
    hits = [int((o[0].argmax(1) == y).sum()) for o in outs]
    assert hits[0] != hits[1] and int(result.correct) == hits[0]


def test_online_evaluation_reports_every_peer_and_the_first_peers_confusion():
    data = loader((32, 33, 34))
    task = online(3, heads=False, data=data)
    metrics = task.evaluate(1)
    by_hand = [accuracy_by_hand(p, data) for p in task.peers]
    accs = [a for a, _ in by_hand]
    assert len(set(accs)) == 3
    assert metrics == {"test_acc": approx(accs[0]), "confusion": by_hand[0][1], "peer1": approx(accs[0]),
                       "peer2": approx(accs[1]), "peer3": approx(accs[2])}


def test_online_trains_every_peer_and_its_encoders_only():
    task = online(3)
    wanted = [p for peer in task.peers for p in peer.parameters()] + \
        [p for hs in task.heads for h in hs.heads for p in h.encoder.parameters()]
    assert {id(p) for p in task.parameters()} == {id(p) for p in wanted} and len(task.parameters()) == len(wanted)
    with pytest.raises(ValueError, match=r"^online MGD needs at least two peers$"):
        online(1)


def test_online_checkpoint_gives_the_best_peer_with_its_architecture(tmp_path):
    """load_trained_student (export, compare) finds peer k of the checkpoint as the k-th
    architecture of online.peers, from the tracker (best weights) or, never evaluated, the modules."""
    from engine.config import save_config
    from engine.models import build_model
    from engine.runfolder import checkpoint_path, save_checkpoint, write_json
    from engine.runs import load_trained_student
    from engine.stages import OnlineTask
    from engine.trainer import stage_state
    from tests.engine.conftest import tiny_config

    archs = ["resnet8", "wrn_16_1", "resnet14"]
    cfg = tiny_config(**{"online.enabled": True, "online.peers": archs})
    torch.manual_seed(0)
    peers = [build_model(a, 10, 1) for a in archs]
    task = OnlineTask(peers=peers, heads=None, test_loader=loader(), num_classes=10)
    for run, best in (("evaluated", 2), ("never", 0)):
        run_dir = tmp_path / run
        save_config(cfg, run_dir / "config.yaml")
        write_json(run_dir / "summary.json", {"data": {"input_shape": [1, 8, 8], "classes": 10}})
        if run == "evaluated":
            for key, acc in zip(task.keys, (10.0, 20.0, 30.0)):
                task.tracker.update(key, acc, 1)
        save_checkpoint(stage_state(task, [], 1.0), checkpoint_path(run_dir, "online"))
        task = OnlineTask(peers=peers, heads=None, test_loader=loader(), num_classes=10)  # a fresh tracker
        model, info = load_trained_student(run_dir)
        assert info["arch"] == archs[best]
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), peers[best].state_dict().values()))


# ----------------------------------------------------------------------------- stages.py: transfer


@pytest.mark.parametrize("adapt", [True, False])
def test_transfer_trains_only_the_new_classifier_and_adapts_batchnorm_on_request(adapt):
    from engine.stages import TransferTask

    model = Tiny(70)
    task = TransferTask(model, loader(), CLASSES, adapt_batchnorm=adapt)
    assert [id(p) for p in task.parameters()] == [id(p) for p in model.fc.parameters()]
    assert not any(p.requires_grad for m in (model.body, model.bn) for p in m.parameters())  # frozen backbone
    before = {k: v.clone() for k, v in model.state_dict().items()}
    task.train_mode()
    x, y, idx = batch(26)
    result = task.step(x, y, idx)
    result.total.backward()
    assert all(p.grad is None for m in (model.body, model.bn) for p in m.parameters())
    assert torch.equal(model.bn.running_mean, before["bn.running_mean"]) != adapt  # statistics follow the new data
    acc, _ = accuracy_by_hand(model.eval(), task.test_loader)
    assert task.evaluate(1) == {"test_acc": approx(acc), "best_acc": approx(acc)}


def test_cpu_latency_is_the_median_of_the_timed_calls_after_the_warm_up(monkeypatch):
    """Five untimed warm-up calls, then the median of 30 timed single-image calls, in ms, on a
    copy of the model (the model itself stays where and how it was)."""
    import random
    import time

    from engine.evaluate import cpu_latency_ms

    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    durations = [100.0] * 5 + random.Random(0).sample([k / 1000 for k in range(1, 31)], 30)  # seconds
    calls = []

    class Timed(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(1)

        def forward(self, x):
            calls.append(tuple(x.shape))
            clock[0] += durations[len(calls) - 1]
            return x

    model = Timed().train()
    assert cpu_latency_ms(model, (1, 8, 8)) == approx(16.0)  # 1..30 ms sorted: element 30 // 2, i.e. 16 ms
    assert calls == [(1, 1, 8, 8)] * 35 and model.training and model.bn.training  # measured on a (deep) copy
