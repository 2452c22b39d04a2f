"""Several frozen teachers acting as one: averaged or confidence-weighted soft targets."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .errors import ConfigError

ENSEMBLE_MODES = ("mean", "confidence")


class TeacherEnsemble(nn.Module):
    """Returns log of the combined class probabilities (valid logits for every KD term).

    ``mean`` averages the teachers' softmax outputs; ``confidence`` weights each teacher per
    example by its max-probability, so a teacher that is unsure of an input says less about it.
    """

    def __init__(self, teachers: Sequence[nn.Module], mode: str = "mean") -> None:
        super().__init__()
        if mode not in ENSEMBLE_MODES:
            raise ConfigError(f"unknown ensemble mode {mode!r}; use one of {ENSEMBLE_MODES}")
        if len(teachers) < 2:
            raise ConfigError("an ensemble needs at least two teachers")
        self.members = nn.ModuleList(teachers)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).float().softmax(1) for m in self.members])  # T, B, K
        if self.mode == "mean":
            combined = probs.mean(0)
        else:
            weights = probs.max(2).values  # T, B
            weights = weights / weights.sum(0, keepdim=True)
            combined = (weights.unsqueeze(2) * probs).sum(0)
        return combined.clamp_min(1e-12).log()
