"""Baselines fitnet, at, sp, cc, rkd, pkt, nst, kdsvd, dkd.

* Each loss on small fixed tensors against a value computed here by hand from the
  published formula (RepDistiller's definitions; DKD from Zhao et al. 2022), with plain
  loops in float64, not with the modules' helpers.
* Each baseline on tiny pairs of different families (different stage counts, channels
  and spatial sizes): finite loss, gradients reach the student and the baseline's own
  modules and never the teacher, a few SGD steps on one batch lower the loss; the demo's
  1x8x8 inputs work too.
* Options are validated.
"""

from __future__ import annotations

import math

import pytest
import torch

from engine.distillers import describe_distiller, distiller_class, distiller_names
from engine.distillers.base import DistillerContext, ModelOutput
from engine.errors import ConfigError
from engine.models import build_model

F64 = torch.float64
NAMES = ["fitnet", "at", "sp", "cc", "rkd", "pkt", "nst", "kdsvd", "dkd"]
WEIGHTS = {
    "fitnet": (1.0, 1.0, 100.0), "at": (1.0, 1.0, 1000.0), "sp": (1.0, 1.0, 3000.0),
    "cc": (1.0, 1.0, 0.02), "rkd": (1.0, 1.0, 1.0), "pkt": (1.0, 1.0, 30000.0),
    "nst": (1.0, 1.0, 50.0), "kdsvd": (1.0, 1.0, 1.0), "dkd": (1.0, 0.0, 1.0),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shapes(feats):
    return [tuple(f.shape[1:]) for f in feats]


def context(s_feats, t_feats, num_classes=10, **options):
    return DistillerContext(student_shapes=shapes(s_feats), teacher_shapes=shapes(t_feats),
                            num_classes=num_classes, train_size=100, options=options)


def rand(*size, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*size, generator=g, dtype=F64)


def out(feats, logits=None):
    n = feats[0].shape[0]
    return ModelOutput(logits if logits is not None else torch.zeros(n, 10, dtype=F64), feats)


# -- hand computations (lists of floats, loops) ------------------------------------
def pool_to(f, h, w):
    """Average pool a nested-list map [c][i][j] by integer factors to h x w."""
    H, W = len(f[0]), len(f[0][0])
    fh, fw = H // h, W // w
    return [[[sum(f[c][i * fh + a][j * fw + b] for a in range(fh) for b in range(fw)) / (fh * fw)
              for j in range(w)] for i in range(h)] for c in range(len(f))]


def flat(m):
    return [v for row in m for v in row]


def l2n(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / max(n, 1e-12) for x in v]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def smooth_l1(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def softmax(v):
    m = max(v)
    e = [math.exp(x - m) for x in v]
    s = sum(e)
    return [x / s for x in e]


# -- hand-checked losses -----------------------------------------------------------
@pytest.mark.parametrize("kernel", [None, 3])
def test_fitnet_by_hand(kernel):
    """The student's 4x4 hint against the teacher's 2x2: RepDistiller's ConvReg (kernel None) is a
    3x3 convolution with stride 2 and padding 1; kernel 3 average-pools to 2x2, then a 3x3 convolution."""
    s_feats = [rand(2, 2, 8, 8, seed=1), rand(2, 2, 8, 8, seed=2), rand(2, 2, 4, 4, seed=3), rand(2, 2, 2, 2, seed=4), rand(2, 2, seed=5)]
    t_feats = [rand(2, 3, 4, 4, seed=6), rand(2, 3, 4, 4, seed=7), rand(2, 3, 2, 2, seed=8), rand(2, 3, 1, 1, seed=9), rand(2, 3, seed=10)]
    torch.manual_seed(0)
    options = {} if kernel is None else {"kernel_size": kernel}
    d = distiller_class("fitnet")(context(s_feats, t_feats, **options)).double()
    with torch.no_grad():  # non-trivial batch-norm affine parameters
        d.regressor.bn.weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
        d.regressor.bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    loss = d(out(s_feats), out(t_feats), None, None)["fitnet"].item()

    W = d.regressor.conv.weight.tolist()
    b = d.regressor.conv.bias.tolist()
    gamma, beta = d.regressor.bn.weight.tolist(), d.regressor.bn.bias.tolist()
    s, t = s_feats[2].tolist(), t_feats[2].tolist()
    if kernel is None:  # stride 2 over the 4x4 map: output (i, j) reads input rows 2i-1..2i+1
        source, stride, size = s, 2, 4
    else:
        source, stride, size = [pool_to(s[n], 2, 2) for n in range(2)], 1, 2  # pooled to the teacher's 2x2

    def px(n, c, i, j):
        return source[n][c][i][j] if 0 <= i < size and 0 <= j < size else 0.0

    conv = [[[[b[o] + sum(W[o][c][a][e] * px(n, c, stride * i + a - 1, stride * j + e - 1)
                          for c in range(2) for a in range(3) for e in range(3))
               for j in range(2)] for i in range(2)] for o in range(3)] for n in range(2)]
    total, count = 0.0, 0
    for o in range(3):
        vals = [conv[n][o][i][j] for n in range(2) for i in range(2) for j in range(2)]
        mean = sum(vals) / len(vals)
        var = sum((v - mean) ** 2 for v in vals) / len(vals)  # biased, as batch norm in training
        for n in range(2):
            for i in range(2):
                for j in range(2):
                    y = max(0.0, (conv[n][o][i][j] - mean) / math.sqrt(var + 1e-5) * gamma[o] + beta[o])
                    total += (y - t[n][o][i][j]) ** 2
                    count += 1
    assert loss == pytest.approx(total / count, rel=1e-10)


@pytest.mark.parametrize("s_shape, t_shape, params", [
    # RepDistiller's ConvReg (models/util.py): conv weights + bias, then BatchNorm's weight and bias
    ((128, 16, 16), (128, 16, 16), 128 * 128 * 1 * 1 + 128 + 2 * 128),  # same size: 1x1 (resnet32x4 -> resnet8x4)
    ((16, 8, 8), (32, 4, 4), 16 * 32 * 3 * 3 + 32 + 2 * 32),  # twice the teacher's: 3x3, stride 2
    ((16, 4, 4), (32, 8, 8), 16 * 32 * 4 * 4 + 32 + 2 * 32),  # half: 4x4 transposed, stride 2
    ((8, 6, 6), (8, 4, 4), 8 * 8 * 3 * 3 + 8 + 2 * 8),  # larger otherwise: a (1 + 6 - 4) kernel, no padding
])
def test_fitnet_regressor_is_repdistillers_convreg(s_shape, t_shape, params):
    from engine.distillers.fitnet import HintRegressor

    reg = HintRegressor(s_shape, t_shape)
    assert sum(p.numel() for p in reg.parameters()) == params
    out = reg(torch.randn(2, *s_shape))
    assert tuple(out.shape[1:]) == tuple(t_shape)


def test_fitnet_on_the_papers_pair_has_a_1x1_regressor():
    from engine.models import build_model

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        s_feats, t_feats = (build_model(a, 100)(x)[1] for a in ("resnet8x4", "resnet32x4"))
    d = distiller_class("fitnet")(context(s_feats, t_feats, num_classes=100))
    assert d.regressor.conv.kernel_size == (1, 1)
    assert sum(p.numel() for p in d.parameters()) == 16_768  # not the 147,840 of a 3x3 regressor


def hand_attention(f, p):
    return l2n([sum(abs(f[c][i][j]) ** p for c in range(len(f))) / len(f) for i in range(len(f[0])) for j in range(len(f[0][0]))])


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_at_by_hand(p):
    # student: 3 stages, teacher: 2 -> pairs (s2, t1) and (s3, t2), aligned from the end
    s_feats = [rand(2, 2, 8, 8, seed=1), rand(2, 2, 8, 8, seed=2), rand(2, 3, 4, 4, seed=3), rand(2, 2, 2, 2, seed=4), rand(2, 2, seed=5)]
    t_feats = [rand(2, 4, 4, 4, seed=6), rand(2, 2, 2, 2, seed=7), rand(2, 4, 4, 4, seed=8), rand(2, 4, seed=9)]
    d = distiller_class("at")(context(s_feats, t_feats, p=p))
    assert d.pairs == [(2, 1), (3, 2)]
    loss = d(out(s_feats), out(t_feats), None, None)["at"].item()
    expected = 0.0
    for fs, ft in ((s_feats[2], t_feats[1]), (s_feats[3], t_feats[2])):
        fs, ft = fs.tolist(), ft.tolist()
        terms = []
        for n in range(2):
            a, c = fs[n], ft[n]
            if len(a[0]) > 2:
                a = pool_to(a, 2, 2)
            if len(c[0]) > 2:
                c = pool_to(c, 2, 2)
            terms += [(x - y) ** 2 for x, y in zip(hand_attention(a, p), hand_attention(c, p))]
        expected += sum(terms) / len(terms)
    assert loss == pytest.approx(expected, rel=1e-10)


def test_sp_by_hand():
    s_feats = [rand(3, 2, 4, 4, seed=1), rand(3, 2, 4, 4, seed=2), rand(3, 5, 2, 2, seed=3), rand(3, 5, seed=4)]
    t_feats = [rand(3, 4, 4, 4, seed=5), rand(3, 4, 4, 4, seed=6), rand(3, 3, 1, 1, seed=7), rand(3, 3, seed=8)]
    d = distiller_class("sp")(context(s_feats, t_feats))
    loss = d(out(s_feats), out(t_feats), None, None)["sp"].item()
    fs = [f.flatten().tolist() for f in s_feats[-2]]
    ft = [f.flatten().tolist() for f in t_feats[-2]]
    gs = [l2n([dot(a, b) for b in fs]) for a in fs]
    gt = [l2n([dot(a, b) for b in ft]) for a in ft]
    expected = sum((gt[i][j] - gs[i][j]) ** 2 for i in range(3) for j in range(3)) / 9
    assert loss == pytest.approx(expected, rel=1e-10)


def test_cc_by_hand():
    s_feats = [rand(4, 2, 2, 2, seed=1), rand(4, 2, 2, 2, seed=2), rand(4, 5, seed=3)]
    t_feats = [rand(4, 2, 2, 2, seed=4), rand(4, 2, 2, 2, seed=5), rand(4, 7, seed=6)]
    torch.manual_seed(0)
    d = distiller_class("cc")(context(s_feats, t_feats, embed_dim=3)).double()
    loss = d(out(s_feats), out(t_feats), None, None)["cc"].item()

    def embed(lin, x):
        W, b = lin.weight.tolist(), lin.bias.tolist()
        return [[b[k] + dot(W[k], row) for k in range(len(b))] for row in x.tolist()]

    es, et = embed(d.embed_s, s_feats[-1]), embed(d.embed_t, t_feats[-1])
    delta = [[abs(a - b) for a, b in zip(rs, rt)] for rs, rt in zip(es, et)]
    expected = sum(dot(delta[i], delta[i + 1]) for i in range(3)) / 3
    assert loss == pytest.approx(expected, rel=1e-10)


def test_rkd_by_hand():
    s_feats = [rand(4, 2, 2, 2, seed=1), rand(4, 2, 2, 2, seed=2), rand(4, 5, seed=3)]
    t_feats = [rand(4, 2, 2, 2, seed=4), rand(4, 2, 2, 2, seed=5), 3 * rand(4, 7, seed=6)]
    d = distiller_class("rkd")(context(s_feats, t_feats))
    terms = d(out(s_feats), out(t_feats), None, None)
    s, t = s_feats[-1].tolist(), t_feats[-1].tolist()
    n = 4

    def distances(e):
        dist = [[math.sqrt(sum((a - b) ** 2 for a, b in zip(e[i], e[j]))) if i != j else 0.0 for j in range(n)] for i in range(n)]
        mean = sum(dist[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        return [[v / mean for v in row] for row in dist]

    def angle(e, j, i, k):  # at anchor j, between the directions to i and to k
        u = l2n([a - b for a, b in zip(e[i], e[j])]) if i != j else [0.0] * len(e[0])
        w = l2n([a - b for a, b in zip(e[k], e[j])]) if k != j else [0.0] * len(e[0])
        return dot(u, w)

    ds, dt = distances(s), distances(t)
    loss_d = sum(smooth_l1(ds[i][j], dt[i][j]) for i in range(n) for j in range(n)) / n ** 2
    loss_a = sum(smooth_l1(angle(s, j, i, k), angle(t, j, i, k)) for i in range(n) for j in range(n) for k in range(n)) / n ** 3
    assert terms["rkd_distance"].item() == pytest.approx(25 * loss_d, rel=1e-9)
    assert terms["rkd_angle"].item() == pytest.approx(50 * loss_a, rel=1e-9)


def test_pkt_by_hand():
    s_feats = [rand(5, 2, 2, 2, seed=1), rand(5, 2, 2, 2, seed=2), rand(5, 6, seed=3)]
    t_feats = [rand(5, 2, 2, 2, seed=4), rand(5, 2, 2, 2, seed=5), rand(5, 9, seed=6)]
    d = distiller_class("pkt")(context(s_feats, t_feats))
    loss = d(out(s_feats), out(t_feats), None, None)["pkt"].item()
    eps = 1e-7

    def probs(x):
        rows = [[v / (math.sqrt(dot(r, r)) + eps) for v in r] for r in x.tolist()]
        sim = [[(dot(a, b) + 1) / 2 for b in rows] for a in rows]
        return [[v / sum(row) for v in row] for row in sim]

    ps, pt = probs(s_feats[-1]), probs(t_feats[-1])
    expected = sum(pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) for i in range(5) for j in range(5)) / 25
    assert loss == pytest.approx(expected, rel=1e-9)


def test_nst_by_hand():
    # 3 stages each; channels differ, spatial sizes differ in both directions
    s_feats = [rand(2, 2, 4, 4, seed=1), rand(2, 2, 4, 4, seed=2), rand(2, 3, 2, 2, seed=3), rand(2, 4, 2, 2, seed=4), rand(2, 4, seed=5)]
    t_feats = [rand(2, 2, 4, 4, seed=6), rand(2, 3, 2, 2, seed=7), rand(2, 2, 4, 4, seed=8), rand(2, 5, 2, 2, seed=9), rand(2, 5, seed=10)]
    d = distiller_class("nst")(context(s_feats, t_feats))
    loss = d(out(s_feats), out(t_feats), None, None)["nst"].item()

    def kernel_mean(a, b):  # a, b: [n][channel][position]
        vals = [dot(x, y) ** 2 for n in range(len(a)) for x in a[n] for y in b[n]]
        return sum(vals) / len(vals)

    expected = 0.0
    for fs, ft in zip(s_feats[1:-1], t_feats[1:-1]):
        s, t = fs.tolist(), ft.tolist()
        h = min(fs.shape[2], ft.shape[2])
        s = [[l2n(flat(ch)) for ch in (pool_to(m, h, h) if len(m[0]) > h else m)] for m in s]
        t = [[l2n(flat(ch)) for ch in (pool_to(m, h, h) if len(m[0]) > h else m)] for m in t]
        expected += kernel_mean(t, t) + kernel_mean(s, s) - 2 * kernel_mean(s, t)
    assert loss == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("k", [1, 2])
def test_kdsvd_by_hand(k):
    # same channel counts per stage (no connector), different spatial sizes
    s_feats = [rand(2, 3, 4, 4, seed=1), rand(2, 3, 4, 4, seed=2), rand(2, 5, 3, 3, seed=3), rand(2, 4, 2, 3, seed=4), rand(2, 4, seed=5)]
    t_feats = [rand(2, 3, 4, 4, seed=6), rand(2, 3, 4, 4, seed=7), rand(2, 5, 4, 4, seed=8), rand(2, 4, 3, 3, seed=9), rand(2, 4, seed=10)]
    d = distiller_class("kdsvd")(context(s_feats, t_feats, k=k))
    assert all(isinstance(c, torch.nn.Identity) for c in d.connectors)
    loss = d(out(s_feats), out(t_feats), None, None)["kdsvd"].item()

    def decompose(fmap, n_vec):
        """(normalised top singular values, top right singular vectors as lists of columns)."""
        x = fmap.reshape(fmap.shape[0], -1).t()  # (HW, C)
        _, sv, vh = torch.linalg.svd(x, full_matrices=False)
        sv, vh = sv.tolist()[:n_vec], vh.tolist()[:n_vec]
        return l2n(sv), [l2n(row) for row in vh]

    expected = 0.0
    for n in range(2):
        prev = None
        for fs, ft in zip(s_feats[1:-1], t_feats[1:-1]):
            s_t, v_t = decompose(ft[n], k)
            _, v_s = decompose(fs[n], k + 3)
            best = [max(v_s, key=lambda col: abs(dot(col, vt))) for vt in v_t]  # best |cosine| per teacher vector
            v_s = [[x * math.copysign(1.0, dot(col, vt)) for x in col] for col, vt in zip(best, v_t)]  # its sign
            v_t = [[x * s_t[j] for x in v_t[j]] for j in range(k)]
            v_s = [[x * s_t[j] for x in v_s[j]] for j in range(k)]
            if prev is not None:
                ps, pt = prev
                for j in range(k):
                    for c in range(len(v_s[j])):
                        for c2 in range(len(ps[j])):
                            rs = math.exp(-((v_s[j][c] - ps[j][c2]) ** 2) / 8)
                            rt = math.exp(-((v_t[j][c] - pt[j][c2]) ** 2) / 8)
                            expected += (rs - rt) ** 2 / 2  # divided by the batch size
            prev = (v_s, v_t)
    assert loss == pytest.approx(expected, rel=1e-8, abs=1e-14)
    assert loss > 0


def test_dkd_by_hand():
    s_logits = rand(3, 5, seed=1) * 2
    t_logits = rand(3, 5, seed=2) * 3
    labels = torch.tensor([0, 3, 4])
    feats = [rand(3, 2, 2, 2, seed=3), rand(3, 2, 2, 2, seed=4), rand(3, 2, seed=5)]
    d = distiller_class("dkd")(context(feats, feats, num_classes=5, alpha=0.5, beta=2.0, temperature=3.0))
    T = 3.0
    tckd = nckd = 0.0
    for zs, zt, y in zip(s_logits.tolist(), t_logits.tolist(), labels.tolist()):
        ps, pt = softmax([v / T for v in zs]), softmax([v / T for v in zt])
        bs, bt = [ps[y], 1 - ps[y]], [pt[y], 1 - pt[y]]
        tckd += sum(q * math.log(q / p) for q, p in zip(bt, bs)) / 3
        qs = softmax([v / T for c, v in enumerate(zs) if c != y])
        qt = softmax([v / T for c, v in enumerate(zt) if c != y])
        nckd += sum(q * math.log(q / p) for q, p in zip(qt, qs)) / 3
    tckd, nckd = T * T * tckd, T * T * nckd

    def terms():
        r = d(out(feats, s_logits), out(feats, t_logits), labels, None)
        return r["dkd_tckd"].item(), r["dkd_nckd"].item()

    for epoch, ramp in ((0, 1 / 20), (4, 5 / 20), (19, 1.0), (100, 1.0)):
        d.begin_epoch(epoch, 240)
        got = terms()
        assert got[0] == pytest.approx(ramp * 0.5 * tckd, rel=1e-10)
        assert got[1] == pytest.approx(ramp * 2.0 * nckd, rel=1e-10)
    d2 = distiller_class("dkd")(context(feats, feats, num_classes=5, warmup_epochs=0))
    r = d2(out(feats, s_logits), out(feats, t_logits), labels, None)
    assert r["dkd_tckd"].item() + r["dkd_nckd"].item() > 0


def test_dkd_is_stable_for_confident_logits():
    s = torch.tensor([[60.0, -60.0, 0.0]], requires_grad=True)
    t = torch.tensor([[80.0, -80.0, 0.0]])
    feats = [torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), torch.zeros(1, 2)]
    d = distiller_class("dkd")(context(feats, feats, num_classes=3))
    terms = d(ModelOutput(s, feats), ModelOutput(t, feats), torch.tensor([0]), None)
    total = sum(terms.values())
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(s.grad).all()


# -- registry, weights, options ------------------------------------------------------
def test_registered_with_descriptions_and_weights():
    names = distiller_names()
    for name in NAMES:
        assert name in names
        assert len(describe_distiller(name)) > 30
        assert tuple(distiller_class(name).default_weights) == WEIGHTS[name]


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_refused(name):
    feats = [torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 1, 1), torch.zeros(1, 4)]
    with pytest.raises(ConfigError) as err:
        distiller_class(name)(context(feats, feats, no_such_option=1))
    assert "distiller.options.no_such_option" in str(err.value)


@pytest.mark.parametrize("name, key, value", [
    ("fitnet", "hint_layer", 7), ("fitnet", "hint_layer", 4), ("fitnet", "hint_layer", -1), ("fitnet", "hint_layer", 1.5),
    ("fitnet", "kernel_size", 2), ("at", "p", 0), ("at", "p", "two"), ("cc", "embed_dim", 0), ("rkd", "w_angle", -1),
    ("pkt", "eps", 0), ("kdsvd", "k", 0), ("dkd", "beta", -1.0), ("dkd", "temperature", 0), ("dkd", "warmup_epochs", True),
])
def test_bad_option_values_refused(name, key, value):
    feats = [torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 1, 1), torch.zeros(1, 4)]
    with pytest.raises(ConfigError) as err:
        distiller_class(name)(context(feats, feats, **{key: value}))
    assert err.value.field == f"distiller.options.{key}"


def test_options_accepted_and_fitnet_negative_hint():
    feats = [torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 2, 2), torch.zeros(2, 4, 1, 1), torch.zeros(2, 4)]
    t_feats = [torch.zeros(2, 4, 4, 4), torch.zeros(2, 6, 4, 4), torch.zeros(2, 6, 2, 2), torch.zeros(2, 8, 2, 2), torch.zeros(2, 6, 1, 1), torch.zeros(2, 6)]
    d = distiller_class("fitnet")(context(feats, t_feats, hint_layer=-2, kernel_size=1))
    assert (d.s_index, d.t_index) == (3, 4)  # each model's last stage output
    assert d.regressor.conv.kernel_size == (1, 1)
    assert distiller_class("dkd")(context(feats, feats, beta="2")).beta == 2.0  # numbers given as text


def kdsvd_repdistiller(g_s, g_t, k):
    """RepDistiller's KDSVD loss written out in float64 torch (square maps, as it assumes):
    torch.svd per sample of the (HW, C) matrix, NaNs removed, the first k (teacher) / k + 3
    (student) columns L2-normalised, each teacher vector matched by the student vector of largest
    |cosine| times that cosine's sign (align_rsv's mask), both scaled by the teacher's normalised
    singular values, then the squared difference of RBF correlations of consecutive maps / N."""
    def svd(f, n):
        x = f.reshape(f.shape[0], f.shape[1], -1).transpose(1, 2)
        _, sv, v = torch.svd(x)
        sv, v = torch.nan_to_num(sv), torch.nan_to_num(v)
        return sv[:, :n] / sv[:, :n].norm(dim=1, keepdim=True), v[:, :, :n] / v[:, :, :n].norm(dim=1, keepdim=True)

    total, prev = 0.0, None
    for f_s, f_t in zip(g_s, g_t):
        s_t, v_t = svd(f_t.detach(), k)
        _, v_s = svd(f_s, k + 3)
        cosine = v_s.transpose(1, 2) @ v_t
        peak = cosine.abs().max(dim=1, keepdim=True).values
        mask = torch.where(cosine.abs() == peak, cosine.sign(), torch.zeros_like(cosine)).detach()
        v_s = v_s @ mask
        v_t, v_s = v_t * s_t.unsqueeze(1), v_s * s_t.unsqueeze(1)
        if prev is not None:
            p_s, p_t = prev
            rbf_s = torch.exp(-(v_s.unsqueeze(2) - p_s.unsqueeze(1)) ** 2 / 8)
            rbf_t = torch.exp(-(v_t.unsqueeze(2) - p_t.unsqueeze(1)) ** 2 / 8)
            total = total + ((rbf_s - rbf_t) ** 2).sum()
        prev = (v_s, v_t)
    return total / g_s[0].shape[0]


def kdsvd_feats(seed, flip=()):
    """Pre-activation (signed) stage maps of a 3-stage model; the student's maps are a noisy,
    partly sign-flipped copy of the teacher's (stages in ``flip`` negated)."""
    t_feats = [rand(3, 4, 4, 4, seed=seed), rand(3, 4, 4, 4, seed=seed + 1), rand(3, 6, 3, 3, seed=seed + 2),
               rand(3, 5, 2, 2, seed=seed + 3), rand(3, 5, seed=seed + 4)]
    s_feats = [t + 0.3 * rand(*t.shape, seed=seed + 10 + i) for i, t in enumerate(t_feats)]
    s_feats = [-f if i in flip else f for i, f in enumerate(s_feats)]
    return [f.requires_grad_() for f in s_feats], t_feats


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("flip", [(), (1,), (2, 3), (1, 2, 3)])
def test_kdsvd_loss_and_gradient_are_repdistillers(k, flip):
    s_feats, t_feats = kdsvd_feats(20 * k, flip)
    d = distiller_class("kdsvd")(context(s_feats, t_feats, k=k))
    loss = d(out(s_feats), out(t_feats), None, None)["kdsvd"]
    grads = torch.autograd.grad(loss, s_feats[1:-1])
    ref_feats = [f.detach().clone().requires_grad_() for f in s_feats[1:-1]]
    expected = kdsvd_repdistiller(ref_feats, t_feats[1:-1], k)
    ref_grads = torch.autograd.grad(expected, ref_feats)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-14)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-7, atol=1e-12)


def test_kdsvd_ignores_the_sign_of_the_students_maps():
    """A singular vector is defined up to its sign: negating a student map changes nothing."""
    s_feats, t_feats = kdsvd_feats(3)
    flipped, _ = kdsvd_feats(3, flip=(1, 2, 3))
    d = distiller_class("kdsvd")(context(s_feats, t_feats, k=2))
    loss = d(out(s_feats), out(t_feats), None, None)["kdsvd"].item()
    assert loss > 0
    assert d(out(flipped), out(t_feats), None, None)["kdsvd"].item() == pytest.approx(loss, rel=1e-9)
    negated = [-f.detach() for f in t_feats]  # the teacher's own maps, negated: nothing to learn
    assert d(out(negated), out(t_feats), None, None)["kdsvd"].item() == pytest.approx(0.0, abs=1e-20)


def test_kdsvd_refuses_a_single_stage():
    feats = [torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 4), torch.zeros(1, 4)]
    with pytest.raises(ConfigError) as err:
        distiller_class("kdsvd")(context(feats, feats))
    assert err.value.field == "distiller.name" and "two stages" in str(err.value)


def test_stage_pairing_from_the_end():
    from engine.distillers._feature_adapt import stage_pairs
    s = [(1, 1, 1)] * 6 + [(1,)]  # 5 stages
    t = [(1, 1, 1)] * 4 + [(1,)]  # 3 stages
    assert stage_pairs(s, t) == [(3, 1), (4, 2), (5, 3)]
    assert stage_pairs(t, s) == [(1, 3), (2, 4), (3, 5)]


# -- real pairs of the zoo ------------------------------------------------------------
PAIRS = [("resnet8", "vgg8"), ("MobileNetV2", "ShuffleNetV1")]  # (teacher, student)
_MODELS: dict = {}


def models(teacher_arch, student_arch, channels):
    key = (teacher_arch, student_arch, channels)
    if key not in _MODELS:
        torch.manual_seed(0)
        teacher, student = build_model(teacher_arch, 10, channels).eval(), build_model(student_arch, 10, channels)
        _MODELS[key] = (teacher, student, {k: v.clone() for k, v in student.state_dict().items()})
    return _MODELS[key]


def build_pair(name, teacher_arch, student_arch, channels=3, size=32, batch=8):
    teacher, student, initial = models(teacher_arch, student_arch, channels)
    student.load_state_dict(initial)  # the models are shared between tests: start from the same weights
    teacher.zero_grad(set_to_none=True)
    student.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, channels, size, size, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    with torch.no_grad():
        probe_s = student.eval()(x[:2])[1]
        probe_t = teacher(x[:2])[1]
    ctx = DistillerContext(shapes(probe_s), shapes(probe_t), 10, 100, student_arch, teacher_arch, {})
    torch.manual_seed(2)
    distiller = distiller_class(name)(ctx)
    distiller.begin_epoch(30, 240)  # past any warm-up
    return teacher, student, distiller, x, y


def distill_loss(name, teacher, student, distiller, x, y):
    # the teacher forward runs WITH autograd on: the baseline itself must not let gradient reach it
    t_logits, t_feats = teacher(x)
    s_logits, s_feats = student(x)
    terms = distiller(ModelOutput(s_logits, s_feats), ModelOutput(t_logits, t_feats), y, torch.arange(len(y)))
    assert terms and all(t.dim() == 0 for t in terms.values())
    return distiller_class(name).default_weights[2] * sum(terms.values())


@pytest.mark.e2e
@pytest.mark.parametrize("teacher_arch, student_arch", PAIRS)
@pytest.mark.parametrize("name", NAMES)
def test_pair_gradients_and_descent(name, teacher_arch, student_arch):
    teacher, student, distiller, x, y = build_pair(name, teacher_arch, student_arch)
    student.train()
    distiller.train()
    loss = distill_loss(name, teacher, student, distiller, x, y)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    s_grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert s_grads and all(torch.isfinite(g).all() for g in s_grads)
    assert sum(g.abs().sum().item() for g in s_grads) > 0
    own = list(distiller.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in own)
    assert all(p.grad.abs().sum() > 0 for p in own if p.dim() > 1)  # every weight matrix / kernel learns

    # plain SGD, gradients clipped to norm 1: the loss scales differ by 10^5 between
    # baselines and a freshly initialised ShuffleNetV1 has gradient norms in the hundreds
    params = list(student.parameters()) + own
    opt = torch.optim.SGD(params, lr=0.05)
    start = loss.item()
    for _ in range(4):
        opt.zero_grad()
        distill_loss(name, teacher, student, distiller, x, y).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    with torch.no_grad():
        end = distill_loss(name, teacher, student, distiller, x, y).item()
    assert math.isfinite(end) and end < start


@pytest.mark.parametrize("name", NAMES)
def test_demo_sized_inputs(name):
    """The demo's 1x8x8 digits: maps of 1x1 (ShuffleNetV1's last stage) and 2x2 must work."""
    for teacher_arch, student_arch in (("resnet8", "ShuffleNetV1"), ("vgg8", "wrn_16_1")):
        teacher, student, distiller, x, y = build_pair(name, teacher_arch, student_arch, channels=1, size=8)
        student.train()
        loss = distill_loss(name, teacher, student, distiller, x, y)
        assert torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is None for p in teacher.parameters())
        assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
        student.zero_grad()


def test_kdsvd_survives_a_degenerate_spectrum():
    """Dead channels give repeated zero singular values, where the SVD's backward is inf/NaN."""
    s_feats = [torch.zeros(2, 8, 4, 4) for _ in range(4)] + [torch.zeros(2, 8)]
    for f in s_feats[1:-1]:
        f[:, 0] = torch.rand(2, 4, 4)
        f[:, 1] = 1.0
    s_feats = [f.requires_grad_() for f in s_feats]
    t_feats = [rand(2, 8, 4, 4, seed=i).float() for i in range(4)] + [torch.zeros(2, 8)]
    d = distiller_class("kdsvd")(context(s_feats, t_feats))
    loss = d(out(s_feats), out(t_feats), None, None)["kdsvd"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(f.grad).all() for f in s_feats[1:-1])


@pytest.mark.parametrize("teacher, student, beta", [
    # mdistiller, configs/cifar100/dkd/<pair>.yaml (DKD.BETA), and its default CFG.DKD.BETA = 8.0
    ("resnet56", "resnet20", 2.0), ("resnet110", "resnet32", 2.0), ("wrn_40_2", "wrn_16_2", 6.0),
    ("wrn_40_2", "wrn_40_1", 6.0), ("vgg13", "vgg8", 6.0), ("resnet32x4", "resnet8x4", 8.0),
    ("resnet110", "resnet20", 8.0),  # no mdistiller entry: its default
])
def test_dkd_beta_is_mdistillers_for_the_pair(teacher, student, beta):
    from engine.config import ExperimentConfig, resolve, set_value

    cfg = ExperimentConfig()
    for key, value in (("distiller.name", "dkd"), ("teacher.arch", teacher), ("student.arch", student)):
        cfg = set_value(cfg, key, value)
    assert resolve(cfg).distiller.options["beta"] == beta  # written out in the run's config.yaml
    feats = [torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 2, 2), torch.zeros(1, 4)]
    ctx = DistillerContext(shapes(feats), shapes(feats), 100, 10, student_arch=student, teacher_arch=teacher)
    assert distiller_class("dkd")(ctx).beta == beta
    ctx.options = {"beta": 1.5}  # a value the user sets wins
    assert distiller_class("dkd")(ctx).beta == 1.5
