"""Evaluate a classifier on a test set: accuracy, per-class accuracy, calibration, cost, agreement."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from . import cost, metrics
from .data.memory import ImageTensors


@torch.no_grad()
def predict(
    model: Callable[[torch.Tensor], torch.Tensor],
    data: ImageTensors,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Logits for every example, in order, gathered on the CPU (the model's mode is kept)."""
    outputs = [model(x).float().cpu() for x, _ in data.batches(batch_size, device=device)]
    return torch.cat(outputs) if outputs else torch.empty(0, data.info.num_classes)


def evaluate_classifier(
    model: nn.Module,
    data: ImageTensors,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
    reference: nn.Module | None = None,
    latency_runs: int = 30,
    ece_bins: int = 15,
    split: str = "test",
) -> dict[str, Any]:
    """All clean-data figures for ``model``; accuracies are fractions in [0, 1]. ``split`` names
    the accuracy and count keys (``val_accuracy``, ``num_val``), so a val figure is never read as test."""
    was_training = model.training
    model.eval()
    try:
        logits = predict(model, data, batch_size, device)
        labels = data.labels
        names = data.info.names()
        per_class = metrics.per_class_accuracy(logits, labels, data.info.num_classes)
        results: dict[str, Any] = {
            f"{split}_accuracy": metrics.top1_accuracy(logits, labels),
            "per_class_accuracy": dict(zip(names, per_class)),
            "ece": metrics.expected_calibration_error(logits, labels, ece_bins),
            "nll": metrics.negative_log_likelihood(logits, labels),
            f"num_{split}": len(labels),
            "params": cost.count_parameters(model),
            "flops": cost.count_flops(model, data.info.shape),
        }
        if latency_runs > 0:
            results["latency"] = cost.measure_latency(model, data.info.shape, 1, runs=latency_runs)
            results["latency_ms_per_image"] = results["latency"]["ms_per_image"]
            throughput = cost.measure_latency(model, data.info.shape, 256, warmup=2, runs=max(3, latency_runs // 5))
            results["throughput_images_per_s"] = 1000.0 / throughput["ms_per_image"]
        if reference is not None:
            reference_was_training = reference.training
            reference.eval()
            ref_logits = predict(reference, data, batch_size, device)
            reference.train(reference_was_training)
            results["agreement"] = metrics.agreement(logits, ref_logits)
            results["reference_accuracy"] = metrics.top1_accuracy(ref_logits, labels)
        return results
    finally:
        model.train(was_training)
