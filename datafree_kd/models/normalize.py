"""Normalisation inside the model, so every API boundary speaks images in [0, 1] (DESIGN rule 1)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``; mean/std are buffers so they travel with the weights."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError("mean and std need the same length")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = ", ".join(f"{m:.4f}" for m in self.mean.flatten().tolist())
        std = ", ".join(f"{s:.4f}" for s in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"


class NormalizedClassifier(nn.Module):
    """``net(normalize(x))``: the wrapper every registered model is returned in.

    Feature paths of the wrapped network are therefore ``net.<module path>``.
    """

    def __init__(self, net: nn.Module, normalize: Normalize) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))
