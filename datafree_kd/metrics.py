"""Accuracy-type metrics on logits: top-1, per class, calibration, agreement."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item() if len(labels) else float("nan")


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """Accuracy on each class's examples (NaN for a class with no examples)."""
    correct = (logits.argmax(1) == labels).float()
    totals = torch.bincount(labels, minlength=num_classes).float()
    hits = torch.bincount(labels, weights=correct, minlength=num_classes)
    return [h / t if t > 0 else float("nan") for h, t in zip(hits.tolist(), totals.tolist())]


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| x bin share."""
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    probs = F.softmax(logits.float(), dim=1)
    confidence, prediction = probs.max(1)
    correct = (prediction == labels).float()
    # bins are (lo, hi]; confidence is always > 0 so every sample lands in one
    bin_index = torch.clamp((confidence * n_bins).ceil().long() - 1, 0, n_bins - 1)
    ece = torch.zeros(())
    for b in range(n_bins):
        mask = bin_index == b
        if mask.any():
            ece += mask.float().mean() * (correct[mask].mean() - confidence[mask].mean()).abs()
    return ece.item()


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return F.cross_entropy(logits.float(), labels).item()


def agreement(logits: torch.Tensor, reference_logits: torch.Tensor) -> float:
    """Share of inputs where two models predict the same class."""
    return (logits.argmax(1) == reference_logits.argmax(1)).float().mean().item()
