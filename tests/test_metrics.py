from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from datafree_kd import cost, metrics


def test_accuracy_and_per_class_on_hand_case():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 1, 0])
    assert metrics.top1_accuracy(logits, labels) == pytest.approx(0.8)
    assert metrics.per_class_accuracy(logits, labels, 3)[:2] == pytest.approx([1.0, 2 / 3])
    assert math.isnan(metrics.per_class_accuracy(logits, labels, 3)[2])


def test_ece_hand_computed():
    # confidences 0.9 (correct), 0.9 (wrong), 0.6 (correct) -> bins: {0.9: acc 0.5}, {0.6: acc 1}
    p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4]])
    logits = p.log()
    labels = torch.tensor([0, 1, 0])
    expected = (2 / 3) * abs(0.5 - 0.9) + (1 / 3) * abs(1.0 - 0.6)
    assert metrics.expected_calibration_error(logits, labels, n_bins=10) == pytest.approx(expected, abs=1e-6)


def test_ece_zero_for_perfectly_calibrated_certain_model():
    logits = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    assert metrics.expected_calibration_error(logits, torch.tensor([0, 1])) == pytest.approx(0.0, abs=1e-6)


def test_agreement_and_nll():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert metrics.agreement(a, b) == pytest.approx(2 / 3)
    uniform = torch.zeros(4, 2)
    assert metrics.negative_log_likelihood(uniform, torch.tensor([0, 1, 0, 1])) == pytest.approx(math.log(2))


def test_parameter_and_flop_counts_on_known_layers():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.Flatten(), nn.Linear(2 * 2 * 2, 3))
    assert cost.count_parameters(model) == 2 * 9 + 8 * 3 + 3
    # conv: 2 out ch x 2x2 positions x 9 MACs; linear: 8 x 3 MACs; 2 FLOPs per MAC
    assert cost.count_flops(model, (1, 4, 4)) == 2 * (2 * 4 * 9 + 8 * 3)


def test_latency_reports_positive_times_and_restores_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).train()
    out = cost.measure_latency(model, (1, 4, 4), batch_size=4, warmup=1, runs=3)
    assert out["ms_per_image"] > 0 and out["ms_per_batch"] == pytest.approx(4 * out["ms_per_image"])
    assert model.training
