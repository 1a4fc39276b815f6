"""The public MGD API against values computed by hand from METHOD.md's formulas."""

from __future__ import annotations

import math

import pytest
import torch

from engine.mgd import GranularityHeads, code_loss, code_losses, head_loss, stable_target


def softmax(v):
    e = [math.exp(x) for x in v]
    s = sum(e)
    return [x / s for x in e]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_head_loss_by_hand():
    r = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], dtype=torch.float64)
    z = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([1, 2])
    T = 2.0
    expected = 0.0
    for ri, zi, yi in zip(r.tolist(), z.tolist(), y.tolist()):
        p_t = softmax([v / T for v in zi])
        p_s = softmax([v / T for v in ri])
        expected += T * T * kl(p_t, p_s) / 2  # batchmean
        expected += -math.log(softmax(ri)[yi]) / 2  # cross-entropy, mean
    assert head_loss(r, z, y, T).item() == pytest.approx(expected, rel=1e-9)


def test_code_loss_sums_heads_by_hand():
    f64 = torch.float64
    s = [torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=f64), torch.tensor([[1.0, -1.0]], dtype=f64)]
    t = [torch.tensor([[0.4, 0.3, 0.2, 0.1]], dtype=f64), torch.tensor([[0.0, 2.0]], dtype=f64)]
    temps = [2.0, 8.0]
    expected = []
    for si, ti, T in zip(s, t, temps):
        expected.append(T * T * kl(softmax([v / T for v in ti[0].tolist()]), softmax([v / T for v in si[0].tolist()])))
    parts = code_losses(s, t, temps)
    assert [p.item() for p in parts] == pytest.approx(expected, rel=1e-9)
    assert code_loss(s, t, temps).item() == pytest.approx(sum(expected), rel=1e-9)


def test_code_loss_needs_matching_lists():
    with pytest.raises(ValueError):
        code_loss([torch.zeros(1, 2)], [torch.zeros(1, 2), torch.zeros(1, 2)], [1.0])


def test_stable_target_is_mean_of_teacher_and_decoded():
    z = torch.tensor([[3.0, 0.0]])
    r1 = torch.tensor([[0.0, 3.0]])
    r2 = torch.tensor([[6.0, 6.0]])
    assert stable_target(z, [r1, r2]).tolist() == [[3.0, 3.0]]


def test_gradients_do_not_reach_targets():
    s = torch.randn(4, 8, requires_grad=True)
    t = torch.randn(4, 8, requires_grad=True)
    code_loss([s], [t], [2.0]).backward()
    assert s.grad is not None and t.grad is None


def test_heads_structure_and_shapes():
    heads = GranularityHeads(feature_dim=32, num_classes=10, granularities=[(64, 2.0), (256, 8.0), (8, 1.0)])
    f = torch.randn(5, 32)
    codes, decoded = heads(f)
    assert [c.shape for c in codes] == [(5, 64), (5, 256), (5, 8)]
    assert all(d.shape == (5, 10) for d in decoded)
    assert heads.temperatures == [2.0, 8.0, 1.0]
    h = heads.heads[0]
    # encoder Linear(F, F) -> ReLU -> Linear(F, d); decoder Linear(d, F) -> ReLU -> Linear(F, C)
    assert [type(m).__name__ for m in h.encoder] == ["Linear", "ReLU", "Linear"]
    assert (h.encoder[0].in_features, h.encoder[0].out_features, h.encoder[2].out_features) == (32, 32, 64)
    assert (h.decoder[0].in_features, h.decoder[0].out_features, h.decoder[2].out_features) == (64, 32, 10)
    enc = heads.encode(f)
    assert all(torch.equal(a, b) for a, b in zip(enc, codes))


def test_default_granularities_are_the_papers():
    heads = GranularityHeads(16, 10)
    assert heads.dims == [64, 256] and heads.temperatures == [2.0, 8.0]
