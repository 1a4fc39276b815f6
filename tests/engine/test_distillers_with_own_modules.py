"""Baselines VID, CRD, AB, FT and FSP: hand-computed loss values, tiny model pairs, options.

The hand computations below follow the published formulas (and RepDistiller's constants)
in plain torch, independently of the modules under test, in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.distillers import describe_distiller, distiller_class, distiller_names
from engine.distillers._feature_adapt import pair_stages
from engine.distillers.base import DistillerContext, ModelOutput
from engine.errors import ConfigError
from engine.models import build_model

NAMES = ["vid", "crd", "ab", "ft", "fsp"]
PRETRAINED = ["ab", "ft", "fsp"]


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make(name: str, student_shapes, teacher_shapes, train_size: int = 100, **options):
    ctx = DistillerContext(student_shapes=list(student_shapes), teacher_shapes=list(teacher_shapes), num_classes=10,
                           train_size=train_size, options=options)
    return distiller_class(name)(ctx)


def out(features, classes: int = 10) -> ModelOutput:
    return ModelOutput(torch.zeros(features[0].shape[0], classes, dtype=features[0].dtype), list(features))


def rand(*shape, generator) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def avg_pool_blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """Average over non-overlapping blocks down to ``size x size`` (plain reshape)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, size, h // size, size, w // size).mean(dim=(3, 5))


def batch_norm_train(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def conv1x1_hand(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.einsum("oi,nihw->nohw", weight[:, :, 0, 0], x)


# ----------------------------------------------------------------------------- registry, options


def test_registered_with_a_description():
    names = distiller_names()
    for name in NAMES:
        assert name in names
        assert len(describe_distiller(name)) > 30


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_refused(name):
    shapes = [(4, 8, 8), (4, 8, 8), (8, 4, 4), (8,)]
    with pytest.raises(ConfigError) as err:
        make(name, shapes, shapes, bogus=1)
    assert err.value.field == "distiller.options.bogus"


@pytest.mark.parametrize("name, key, value", [
    ("vid", "init_pred_var", -1.0), ("vid", "eps", "x"),
    ("crd", "nce_k", 0), ("crd", "nce_t", 0.0), ("crd", "nce_m", 1.5), ("crd", "feat_dim", 2.5),
    ("ab", "margin", -1.0), ("ab", "init_epochs", -1), ("ab", "main_stage_loss", "yes"),
    ("ft", "rate", 0.0), ("ft", "init_epochs", 1.5), ("ft", "p", 0),
    ("fsp", "init_epochs", True), ("fsp", "main_stage_loss", 1), ("crd", "nce_k", "many"),
])
def test_bad_option_values_are_refused(name, key, value):
    shapes = [(4, 8, 8), (4, 8, 8), (8, 4, 4), (8,)]
    with pytest.raises(ConfigError) as err:
        make(name, shapes, shapes, **{key: value})
    assert err.value.field == f"distiller.options.{key}"


def test_defaults_and_weights():
    assert distiller_class("vid").default_weights == (1.0, 1.0, 1.0)
    assert distiller_class("crd").default_weights == (1.0, 1.0, 0.8)
    assert distiller_class("ab").default_weights == (1.0, 1.0, 1.0)
    assert distiller_class("ft").default_weights == (1.0, 1.0, 200.0)
    assert distiller_class("fsp").default_weights == (1.0, 1.0, 50.0)
    crd = distiller_class("crd").resolve_options({})
    assert (crd["feat_dim"], crd["nce_k"], crd["nce_t"], crd["nce_m"]) == (128, 16384, 0.07, 0.5)
    assert distiller_class("ab").needs_preact
    for name in PRETRAINED:
        cls = distiller_class(name)
        assert cls.pretrain_epochs_option == "init_epochs" and cls.resolve_options({})["init_epochs"] == 30
    assert distiller_class("ft").resolve_options({})["rate"] == 0.5
    assert distiller_class("ab").resolve_options({})["margin"] == 1.0


def test_stage_pairing():
    assert pair_stages(3, 3) == [(0, 0), (1, 1), (2, 2)]
    assert pair_stages(3, 4) == [(0, 1), (1, 2), (2, 3)]
    assert pair_stages(4, 3) == [(1, 0), (2, 1), (3, 2)]
    assert pair_stages(1, 4) == [(0, 3)]
    # stage_pairs gives the same pairs as indices into the whole feature lists
    from engine.distillers._feature_adapt import stage_pairs

    for ks in range(1, 5):
        for kt in range(1, 5):
            shapes_s, shapes_t = [None] * (ks + 2), [None] * (kt + 2)
            assert [(i + 1, j + 1) for i, j in pair_stages(ks, kt)] == stage_pairs(shapes_s, shapes_t)


def test_model_without_stage_maps_is_refused():
    good = [(4, 8, 8), (4, 8, 8), (8, 4, 4), (8,)]
    flat = [(4, 8, 8), (8,)]
    for name in ("vid", "ab", "fsp"):
        with pytest.raises(ConfigError) as err:
            make(name, good, flat)
        assert err.value.field == "distiller.name"
    with pytest.raises(ConfigError):
        make("ft", [(4, 8, 8), (16,), (8,)], good)


# ----------------------------------------------------------------------------- hand-computed values


def test_vid_value_by_hand():
    g = torch.Generator().manual_seed(0)
    s_shapes = [(2, 4, 4), (3, 4, 4), (4, 2, 2), (4,)]
    t_shapes = [(2, 4, 4), (5, 2, 2), (6, 2, 2), (6,)]
    d = make("vid", s_shapes, t_shapes).double()
    # initial variance is init_pred_var
    for reg in d.regressors:
        assert torch.allclose(reg.variance(), torch.full_like(reg.variance(), 5.0), atol=1e-9)
        reg.log_scale.data = rand(reg.log_scale.numel(), generator=g)
    s = [rand(2, *sh, generator=g) for sh in s_shapes]
    t = [rand(2, *sh, generator=g) for sh in t_shapes]
    got = d(out(s), out(t), None, None)["vid"]

    expected = 0.0
    for k, (src, tgt) in enumerate([(s[1], t[1]), (s[2], t[2])]):
        reg = d.regressors[k]
        w1, w2, w3 = (m.weight for m in reg.regressor if isinstance(m, torch.nn.Conv2d))
        if src.shape[-1] > tgt.shape[-1]:
            src = avg_pool_blocks(src, tgt.shape[-1])
        mu = conv1x1_hand(torch.relu(conv1x1_hand(torch.relu(conv1x1_hand(src, w1)), w2)), w3)
        var = torch.log(1 + torch.exp(reg.log_scale)) + 1e-5
        var = var.view(1, -1, 1, 1)
        expected = expected + torch.mean(0.5 * ((mu - tgt) ** 2 / var + torch.log(var)))
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


def _crd_hand(f_s, f_t, idx, mem_s, mem_t, w_s, b_s, w_t, b_t, z, n_data, T, m):
    def embed(f, w, b):
        y = f @ w.t() + b
        return y / torch.sqrt((y * y).sum(1, keepdim=True))

    v_s, v_t = embed(f_s, w_s, b_s), embed(f_t, w_t, b_t)
    B, K1 = idx.shape
    p_s = torch.empty(B, K1, dtype=torch.float64)
    p_t = torch.empty(B, K1, dtype=torch.float64)
    for n in range(B):
        for k in range(K1):
            p_s[n, k] = math.exp(float(mem_t[idx[n, k]] @ v_s[n]) / T)
            p_t[n, k] = math.exp(float(mem_s[idx[n, k]] @ v_t[n]) / T)
    if z is None:
        z = (float(p_s.mean()) * n_data, float(p_t.mean()) * n_data)
    p_s, p_t = p_s / z[0], p_t / z[1]
    K = K1 - 1
    c = K / n_data

    def one(p):
        total = 0.0
        for n in range(B):
            total += math.log(float(p[n, 0]) / (float(p[n, 0]) + c + 1e-7))
            for k in range(1, K1):
                total += math.log(c / (float(p[n, k]) + c + 1e-7))
        return -total / B

    loss = one(p_s) + one(p_t)
    new_s, new_t = mem_s.clone(), mem_t.clone()
    for n in range(B):
        i = int(idx[n, 0])
        for mem, v in ((new_s, v_s), (new_t, v_t)):
            row = mem[i] * m + v[n] * (1 - m)
            mem[i] = row / torch.sqrt((row * row).sum())
    return loss, z, new_s, new_t


@pytest.mark.parametrize("dense", [False, True])
def test_crd_value_by_hand(dense):
    g = torch.Generator().manual_seed(1)
    s_shapes = [(2, 4, 4), (3, 4, 4), (5,)]
    t_shapes = [(2, 4, 4), (3, 4, 4), (7,)]
    n_data, T, m = 6, 0.07, 0.5
    d = make("crd", s_shapes, t_shapes, train_size=n_data, feat_dim=4, nce_k=3).double()
    d.dense_scores = dense
    assert d.num_negatives == 3 and d.memory_s.shape == (6, 4)
    indices = torch.tensor([1, 4])
    negatives = torch.tensor([[0, 2, 3], [5, 0, 1]])
    idx = torch.cat([indices.view(-1, 1), negatives], 1)
    z = None
    for step in range(2):  # the second step reuses Z and the updated bank
        f_s, f_t = rand(2, 5, generator=g), rand(2, 7, generator=g)
        mem_s, mem_t = d.memory_s.clone(), d.memory_t.clone()
        expected, z, new_s, new_t = _crd_hand(
            f_s, f_t, idx, mem_s, mem_t, d.embed_s.linear.weight.detach(), d.embed_s.linear.bias.detach(),
            d.embed_t.linear.weight.detach(), d.embed_t.linear.bias.detach(), z, n_data, T, m)
        feats_s = [torch.zeros(2, 2, 4, 4, dtype=torch.float64), torch.zeros(2, 3, 4, 4, dtype=torch.float64), f_s]
        feats_t = [torch.zeros(2, 2, 4, 4, dtype=torch.float64), torch.zeros(2, 3, 4, 4, dtype=torch.float64), f_t]
        got = d(out(feats_s), out(feats_t), None, indices, negatives=negatives)["crd"]
        assert math.isclose(got.item(), expected, rel_tol=1e-9)
        assert torch.allclose(d.z, torch.tensor(z, dtype=torch.float64))
        assert torch.allclose(d.memory_s, new_s) and torch.allclose(d.memory_t, new_t)


def test_crd_small_training_set_and_sampling():
    shapes = [(2, 4, 4), (3, 4, 4), (5,)]
    d = make("crd", shapes, shapes, train_size=10)  # far fewer than nce_k = 16384
    assert d.num_negatives == 9
    torch.manual_seed(0)
    indices = torch.arange(10)
    neg = d.sample_negatives(indices)
    assert neg.shape == (10, 9)
    assert int(neg.min()) >= 0 and int(neg.max()) <= 9
    assert not bool((neg == indices.view(-1, 1)).any())  # never the anchor itself
    feats = [torch.randn(4, *s) for s in shapes]
    loss = d(out(feats), out([f.clone() for f in feats]), None, torch.tensor([0, 3, 7, 9]))["crd"]
    assert torch.isfinite(loss)
    with pytest.raises(ConfigError) as err:
        make("crd", shapes, shapes, train_size=1)
    assert err.value.field == "distiller.name"


def _crd_with_labels(labels, nce_k):
    shapes = [(2, 4, 4), (3, 4, 4), (5,)]
    ctx = DistillerContext(shapes, shapes, num_classes=int(max(labels)) + 1, train_size=len(labels),
                           options={"nce_k": nce_k}, train_labels=torch.tensor(labels))
    return distiller_class("crd")(ctx)


def test_crd_draws_negatives_from_other_classes_without_replacement():
    """RepDistiller (dataset/cifar100.py, mode "exact"): np.random.choice(cls_negative[target], k,
    replace=k > len(cls_negative[target])): other classes only, no repeats when there are enough."""
    labels = [i % 4 for i in range(40)]  # 4 classes of 10: 30 negatives per anchor
    d = _crd_with_labels(labels, nce_k=25)
    assert d.num_negatives == 25
    torch.manual_seed(0)
    indices = torch.arange(40)
    neg = d.sample_negatives(indices, torch.tensor(labels))
    assert neg.shape == (40, 25)
    own = torch.tensor(labels)
    assert not bool((own[neg] == own.view(-1, 1)).any())  # never the anchor's class
    assert all(len(set(row.tolist())) == 25 for row in neg)  # without replacement
    seen = set(neg[0].tolist())
    for _ in range(20):
        seen |= set(d.sample_negatives(indices[:1], own[:1])[0].tolist())
    assert seen == {i for i in range(40) if labels[i] != 0}  # every other-class sample can be drawn


def test_crd_draws_with_replacement_when_there_are_too_few_negatives():
    labels = [0] * 6 + [1] * 3 + [2] * 1  # class 0 has 4 negatives, class 2 has 9
    d = _crd_with_labels(labels, nce_k=8)
    torch.manual_seed(1)
    own = torch.tensor(labels)
    neg = d.sample_negatives(torch.tensor([0, 9]), torch.tensor([0, 2]))  # one row short, one with enough
    assert neg.shape == (2, 8)
    assert set(neg[0].tolist()) <= {6, 7, 8, 9} and len(neg[0].tolist()) == 8  # repeats: only 4 exist
    assert not bool((own[neg[1]] == 2).any()) and len(set(neg[1].tolist())) == 8
    with pytest.raises(ConfigError, match="one"):
        _crd_with_labels([3] * 5, nce_k=2)  # a single class has no negatives at all


def test_crd_memory_is_a_saved_buffer():
    shapes = [(2, 4, 4), (3, 4, 4), (5,)]
    d = make("crd", shapes, shapes, train_size=20, feat_dim=8)
    names = {n for n, _ in d.named_parameters()}
    assert not any("memory" in n for n in names)
    state = d.state_dict()
    assert state["memory_s"].shape == (20, 8) and state["memory_t"].shape == (20, 8) and "z" in state
    feats = [torch.randn(3, *s) for s in shapes]
    d(out(feats), out(feats), None, torch.tensor([0, 1, 2]))
    fresh = make("crd", shapes, shapes, train_size=20, feat_dim=8)
    fresh.load_state_dict(d.state_dict())
    assert torch.equal(fresh.memory_s, d.memory_s) and torch.equal(fresh.z, d.z)
    assert float(d.z.min()) > 0
    assert d.double().memory_s.dtype == torch.float64  # moves with the module


def test_ab_value_by_hand():
    g = torch.Generator().manual_seed(2)
    s_shapes = [(2, 8, 8), (3, 4, 4), (4, 2, 2), (4,)]
    t_shapes = [(2, 8, 8), (5, 2, 2), (4, 2, 2), (4,)]
    d = make("ab", s_shapes, t_shapes).double()
    assert isinstance(d.connectors[1], torch.nn.Identity)  # same shape: no connector (RepDistiller)
    conv, bn = d.connectors[0]
    bn.weight.data = rand(5, generator=g)
    bn.bias.data = rand(5, generator=g)
    s = [rand(4, *sh, generator=g) for sh in s_shapes]
    t = [rand(4, *sh, generator=g) for sh in t_shapes]
    d.train()
    got = d.pretrain_loss(out(s), out(t))["ab"]
    assert d(out(s), out(t), None, None) == {}  # RepDistiller: no AB term after the initialisation

    margin, B = 1.0, 4
    src1 = batch_norm_train(conv1x1_hand(avg_pool_blocks(s[1], 2), conv.weight), bn.weight, bn.bias)
    expected = 0.0
    for w, src, tgt in ((0.5, src1, t[1]), (1.0, s[2], t[2])):
        loss = 0.0
        for a, b in zip(src.flatten().tolist(), tgt.flatten().tolist()):
            if a > -margin and b <= 0:
                loss += (a + margin) ** 2
            if a <= margin and b > 0:
                loss += (a - margin) ** 2
        expected += w * loss / B / 1000 * 3
    assert math.isclose(got.item(), expected, rel_tol=1e-9)
    d2 = make("ab", s_shapes, t_shapes, main_stage_loss=True).double()
    d2.load_state_dict(d.state_dict())
    assert math.isclose(d2(out(s), out(t), None, None)["ab"].item(), expected, rel_tol=1e-9)


def test_ft_value_by_hand():
    g = torch.Generator().manual_seed(3)
    s_shapes = [(2, 8, 8), (3, 4, 4), (6, 4, 4), (6,)]
    t_shapes = [(2, 8, 8), (3, 4, 4), (4, 2, 2), (4,)]
    d = make("ft", s_shapes, t_shapes).double()
    assert d.paraphraser.encoder[-2].out_channels == 2  # rate 0.5 of 4 channels
    s = [rand(2, *sh, generator=g) for sh in s_shapes]
    t = [rand(2, *sh, generator=g).relu() for sh in t_shapes]

    # pre-training: mean squared reconstruction error of the paraphraser
    enc = [m for m in d.paraphraser.encoder if isinstance(m, torch.nn.Conv2d)]
    dec = [m for m in d.paraphraser.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    h = t[2]
    for m in enc:
        h = F.leaky_relu(F.conv2d(h, m.weight, m.bias, padding=1), 0.1)
    factor_t = h
    for m in dec:
        h = F.leaky_relu(F.conv_transpose2d(h, m.weight, m.bias, padding=1), 0.1)
    rec = ((h - t[2]) ** 2).mean().item()
    assert math.isclose(d.pretrain_loss(out(s), out(t))["ft_rec"].item(), rec, rel_tol=1e-9)

    # main term: the translator's factor against the paraphraser's, p = 1 on normalised maps
    d.train()
    got = d(out(s), out(t), None, None)["ft"]
    layers = list(d.translator.encoder)
    x = s[2]
    for i in range(0, len(layers), 3):
        conv, bn = layers[i], layers[i + 1]
        x = F.leaky_relu(batch_norm_train(F.conv2d(x, conv.weight, conv.bias, padding=1), bn.weight, bn.bias), 0.1)
    factor_s = avg_pool_blocks(x, 2)  # student 4x4, teacher 2x2

    def att(f):
        a = (f ** 2).mean(1).reshape(f.shape[0], -1)
        return a / torch.sqrt((a * a).sum(1, keepdim=True))

    expected = (att(factor_s) - att(factor_t)).abs().mean()
    assert math.isclose(got.item(), expected.item(), rel_tol=1e-9)


def test_fsp_value_by_hand():
    g = torch.Generator().manual_seed(4)
    s_shapes = [(2, 4, 4), (3, 4, 4), (4, 2, 2), (4,)]
    t_shapes = [(2, 4, 4), (3, 4, 4), (4, 2, 2), (4,)]
    d = make("fsp", s_shapes, t_shapes).double()
    assert all(isinstance(c, torch.nn.Identity) for c in d.connectors)  # RepDistiller's FSP exactly
    s = [rand(3, *sh, generator=g) for sh in s_shapes]
    t = [rand(3, *sh, generator=g) for sh in t_shapes]
    got = d.pretrain_loss(out(s), out(t))["fsp"]
    assert d(out(s), out(t), None, None) == {}

    def fsp(bot, top):
        if bot.shape[-1] > top.shape[-1]:
            bot = avg_pool_blocks(bot, top.shape[-1])
        n, cb, h, w = bot.shape
        ct = top.shape[1]
        gm = torch.zeros(n, ct, cb, dtype=torch.float64)
        for i in range(ct):
            for j in range(cb):
                gm[:, i, j] = (top[:, i] * bot[:, j]).sum(dim=(1, 2)) / (h * w)
        return gm

    expected = sum(((fsp(s[k], s[k + 1]) - fsp(t[k], t[k + 1])) ** 2).mean() for k in range(2))
    assert math.isclose(got.item(), expected.item(), rel_tol=1e-9)
    d2 = make("fsp", s_shapes, t_shapes, main_stage_loss=True).double()
    assert math.isclose(d2(out(s), out(t), None, None)["fsp"].item(), float(expected), rel_tol=1e-9)


# ----------------------------------------------------------------------------- tiny model pairs

PAIRS = [("resnet8", "vgg8"), ("wrn_16_1", "ShuffleNetV1"), ("vgg8", "MobileNetV2")]
BATCH = 4


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    built = {}
    for i, name in enumerate(sorted({n for pair in PAIRS for n in pair})):
        torch.manual_seed(i)
        model = build_model(name, 10, 3)
        # calibrate the batch-norm statistics so that the eval-mode teacher's features have a
        # trained network's scale (an untrained eval-mode network's activations blow up with depth)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # cumulative average
        model.train()
        with torch.no_grad():
            for _ in range(2):
                model(torch.randn(16, 3, 32, 32))
        built[name] = model.eval()
    return built


def setup_pair(models, teacher_name, student_name, name, preact, **options):
    torch.manual_seed(0)
    teacher = models[teacher_name]
    student = build_model(student_name, 10, 3)  # fresh: the steps below change it
    for p in teacher.parameters():
        p.requires_grad_(False)
    x = torch.randn(BATCH, 3, 32, 32)
    y = torch.arange(BATCH) % 10
    idx = torch.arange(BATCH) * 3
    teacher.eval()
    with torch.no_grad():
        t_logits, t_feats = teacher(x, preact=preact)
    student.eval()
    with torch.no_grad():
        s_feats = student(x[:2], preact=preact)[1]
    ctx = DistillerContext(student_shapes=[tuple(f.shape[1:]) for f in s_feats],
                           teacher_shapes=[tuple(f.shape[1:]) for f in t_feats], num_classes=10,
                           train_size=50, student_arch=student_name, teacher_arch=teacher_name, options=options)
    distiller = distiller_class(name)(ctx)
    return teacher, student, distiller, x, y, idx, ModelOutput(t_logits, t_feats)


MAIN_OPTIONS = {"vid": {}, "crd": {"nce_k": 16}, "ab": {"main_stage_loss": True}, "ft": {},
                "fsp": {"main_stage_loss": True}}


@pytest.mark.e2e
@pytest.mark.parametrize("teacher_name, student_name", PAIRS)
@pytest.mark.parametrize("name", NAMES)
def test_main_term_on_tiny_pair(models, name, teacher_name, student_name):
    cls = distiller_class(name)
    teacher, student, d, x, y, idx, t_out = setup_pair(models, teacher_name, student_name, name, cls.needs_preact,
                                                      **MAIN_OPTIONS[name])
    if name == "crd":
        assert d.num_negatives == 16
    params = list(student.parameters()) + list(d.parameters())
    opt = torch.optim.SGD(params, lr=0.01)
    student.train()
    d.train()
    extra = {}
    if name == "crd":
        # fixed negatives outside the batch: the steps see the same contrast and only the
        # positives' bank rows move (a negative that is also a batch anchor would get its row
        # pulled towards that anchor's embedding, a rare event with a real training set)
        pool = torch.tensor([i for i in range(50) if i not in idx.tolist()])
        g = torch.Generator().manual_seed(1)
        extra["negatives"] = pool[torch.randint(0, len(pool), (BATCH, 16), generator=g)]
    values = []
    for step in range(6):
        s_logits, s_feats = student(x, preact=cls.needs_preact)
        terms = d(ModelOutput(s_logits, s_feats), t_out, y, idx, **extra)
        assert list(terms) == [name]
        loss = terms[name]
        assert torch.isfinite(loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0:
            assert all(p.grad is None for p in teacher.parameters())
            assert sum(float(p.grad.abs().sum()) for p in student.parameters() if p.grad is not None) > 0
            trainable = [p for p in d.parameters()]
            if name == "ft":  # the pre-trained paraphraser stays frozen in the main stage
                assert all(p.grad is None for p in d.paraphraser.parameters())
                trainable = list(d.translator.parameters())
            assert trainable, "the baseline should own trainable modules"
            assert all(p.grad is not None for p in trainable)
            assert sum(float(p.grad.abs().sum()) for p in trainable) > 0
        opt.step()
        values.append(loss.item())
    assert values[-1] < values[0], values


@pytest.mark.e2e
@pytest.mark.parametrize("teacher_name, student_name", PAIRS[:2])
@pytest.mark.parametrize("name", PRETRAINED)
def test_pretrain_on_tiny_pair(models, name, teacher_name, student_name):
    cls = distiller_class(name)
    teacher, student, d, x, y, idx, t_out = setup_pair(models, teacher_name, student_name, name, cls.needs_preact)
    assert d.pretrain_epochs() == 30
    assert d(ModelOutput(*student(x, preact=cls.needs_preact)), t_out, y, idx) == {} or name == "ft"
    params = d.pretrain_parameters(student)
    ids = {id(p) for p in params}
    classifier = {id(p) for p in student.get_classifier().parameters()}
    assert not ids & classifier
    assert not ids & {id(p) for p in teacher.parameters()}
    if name == "ft":
        assert ids == {id(p) for p in d.paraphraser.parameters()}
    else:
        assert {id(p) for p in student.parameters()} - classifier <= ids
        assert {id(p) for p in d.connectors.parameters()} <= ids
    opt = torch.optim.SGD(params, lr=0.01 if name != "ft" else 0.05)
    student.train()
    d.train()
    values = []
    for _ in range(6):
        s_logits, s_feats = student(x, preact=cls.needs_preact)
        terms = d.pretrain_loss(ModelOutput(s_logits, s_feats), t_out)
        loss = torch.stack(list(terms.values())).sum()
        assert torch.isfinite(loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        assert all(p.grad is None for p in teacher.parameters())
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in params)
        opt.step()
        values.append(loss.item())
    assert values[-1] < values[0], values


@pytest.mark.parametrize("name", NAMES)
def test_tiny_digits_shapes(name):
    """8x8 single-channel inputs (the demo set): stage maps shrink to 1x1 and must still work."""
    torch.manual_seed(0)
    cls = distiller_class(name)
    teacher, student = build_model("vgg8", 10, 1).eval(), build_model("resnet8", 10, 1)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        t_logits, t_feats = teacher(x, preact=cls.needs_preact)
    s_logits, s_feats = student(x, preact=cls.needs_preact)
    ctx = DistillerContext([tuple(f.shape[1:]) for f in s_feats], [tuple(f.shape[1:]) for f in t_feats], 10,
                           train_size=30, options=MAIN_OPTIONS[name] if name != "crd" else {})
    d = cls(ctx)
    terms = d(ModelOutput(s_logits, s_feats), ModelOutput(t_logits, t_feats), None, torch.arange(4))
    if cls.pretrain_epochs_option:
        terms.update(d.pretrain_loss(ModelOutput(s_logits, s_feats), ModelOutput(t_logits, t_feats)))
    assert terms and all(torch.isfinite(v) for v in terms.values())


def test_ft_pretrain_rate_follows_repdistiller():
    shapes = [(4, 8, 8), (4, 8, 8), (8, 4, 4), (8,)]
    ctx = DistillerContext(shapes, shapes, 10, 100, student_arch="resnet8x4", teacher_arch="resnet32x4")
    assert distiller_class("ft")(ctx).pretrain_lr(0.05) == 0.01
    ctx = DistillerContext(shapes, shapes, 10, 100, student_arch="vgg8", teacher_arch="vgg13")
    assert distiller_class("ft")(ctx).pretrain_lr(0.05) == 0.05


def test_options_written_as_text_are_read():
    shapes = [(4, 8, 8), (4, 8, 8), (8, 4, 4), (8,)]
    d = make("ab", shapes, shapes, init_epochs="2", margin="0.5", main_stage_loss=True)
    assert d.pretrain_epochs() == 2 and d.margin == 0.5 and d.main_stage_loss is True
    d = make("crd", shapes, shapes, train_size=100, nce_k="10")
    assert d.num_negatives == 10
