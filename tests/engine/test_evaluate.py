"""Evaluation helpers: confusion matrices, the noise-robustness curve and output noise."""

from __future__ import annotations

import math

import pytest
import torch

from engine.evaluate import accuracy, confusion_matrices, noise_robustness, output_noise, per_class_accuracy


class ListLoader:
    """A stand-in for BatchLoader: fixed batches of (x, y, idx)."""

    def __init__(self, batches):
        self.batches = batches

    def epoch(self, epoch, start_step=0):
        yield from self.batches[start_step:]


def test_confusion_and_accuracy():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0]])
    y = torch.tensor([0, 1, 1, 2])
    loader = ListLoader([(logits[:2], y[:2], None), (logits[2:], y[2:], None)])
    (conf,) = confusion_matrices(lambda x: x, loader, 3)
    assert conf.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert accuracy(conf) == pytest.approx(75.0)
    assert per_class_accuracy(conf) == pytest.approx([100.0, 50.0, 100.0])


def test_output_noise_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 3.0]])
    loader = ListLoader([(logits, torch.tensor([0, 3]), None)])
    expected = 0.0
    for row in logits.tolist():
        e = [math.exp(v) for v in row]
        p = [v / sum(e) for v in e]
        top = max(range(4), key=lambda i: p[i])
        b = (1 - p[top]) / 3
        expected += sum(abs(p[c] - b) for c in range(4) if c != top)
    assert output_noise(lambda x: x, loader) == pytest.approx(expected / 2, rel=1e-9)
    # a model that spreads its remaining probability evenly has no output noise
    even = ListLoader([(torch.tensor([[3.0, 0.0, 0.0, 0.0]]), torch.tensor([0]), None)])
    assert output_noise(lambda x: x, even) == pytest.approx(0.0, abs=1e-12)


def test_noise_curve_is_repeatable_and_falls():
    torch.manual_seed(0)
    w = torch.randn(16, 4)
    x = torch.randn(64, 16)
    y = (x @ w).argmax(1)
    loader = ListLoader([(x[:32], y[:32], None), (x[32:], y[32:], None)])
    forward = lambda inp: inp @ w  # noqa: E731
    a = noise_robustness(forward, loader, 4, [0.0, 0.5, 5.0], seed=7)
    b = noise_robustness(forward, loader, 4, [0.0, 0.5, 5.0], seed=7)
    assert a == b
    assert a[0] == [0.0, 100.0]
    assert a[2][1] < a[0][1]
    assert noise_robustness(forward, loader, 4, [5.0], seed=8) != a[2:]


def test_ece_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right): bins (0.8667, 0.9333] and (0.5333, 0.6]
    import math as m

    def logits_for(conf):  # two classes: softmax top probability = conf
        return [m.log(conf / (1 - conf)), 0.0]

    logits = torch.tensor([logits_for(0.9), logits_for(0.9), logits_for(0.6)], dtype=torch.float64)
    y = torch.tensor([0, 1, 0])
    from engine.evaluate import expected_calibration_error

    ece = expected_calibration_error(lambda x: x, ListLoader([(logits, y, None)]))
    expected = (2 / 3) * abs(0.9 - 0.5) + (1 / 3) * abs(0.6 - 1.0)
    assert ece == pytest.approx(100 * expected, rel=1e-9)


def test_a_noise_curve_does_not_depend_on_the_evaluation_batch_size():
    from engine.data import load_dataset, make_loader

    bundle = load_dataset("demo")
    torch.manual_seed(0)
    w = torch.randn(64, 10)
    forward = lambda x: x.flatten(1) @ w  # noqa: E731  a fixed linear model of the 8x8 digits
    curves = [noise_robustness(forward, make_loader(bundle, "test", batch_size=b, device=torch.device("cpu"),
                                                    train=False), 10, [0.0, 0.3, 1.0], seed=5)
              for b in (7, 64, 1000)]
    assert curves[0] == curves[1] == curves[2]
    assert curves[0][2][1] != curves[0][0][1]  # the noise does change the predictions
