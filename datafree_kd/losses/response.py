"""Response-based terms: they compare the student's logits with the teacher's (or with targets).

Teacher logits are used exactly as given (not detached): the Distiller computes them under
``no_grad`` for the student update, while an adversarial generator (DFAD maximises ``l1``, ZSKT
maximises ``kd``) needs the gradient to flow through the teacher into its synthetic inputs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import DistillBatch, LossTerm, register_term


@register_term("kd")
class KDLoss(LossTerm):
    """Hinton et al. (2015): T² · KL(softmax(t/T) ‖ softmax(s/T)), summed over classes, mean over batch.

    The T² factor keeps the gradient scale independent of the temperature, so ``kd`` can be mixed
    with ``ce`` without retuning weights when T changes.
    """

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"kd: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        t = self.temperature
        log_p_s = F.log_softmax(batch.student_logits / t, dim=1)
        log_p_t = F.log_softmax(batch.teacher_logits / t, dim=1)
        # kl_div(input=log q, target=log p, log_target) = sum p (log p - log q); batchmean: / B
        return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t

    def hparams(self) -> dict[str, Any]:
        return {"temperature": self.temperature}


@register_term("ce")
class CELoss(LossTerm):
    """Cross-entropy against ``batch.targets``: ground truth on real data, the teacher's argmax
    pseudo-labels on synthetic data (the hard-label half of Hinton's objective, and DAFL's one-hot loss
    when applied to generated images)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"ce: label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return F.cross_entropy(batch.student_logits, batch.targets, label_smoothing=self.label_smoothing)

    def hparams(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing}


@register_term("l1")
class L1LogitLoss(LossTerm):
    """Mean absolute logit difference, mean over batch and classes — DFAD's discrepancy (Fang et al.
    2019): unlike KL it does not saturate once the student agrees with the teacher on the argmax, so
    the adversarial generator keeps receiving a useful signal."""

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return F.l1_loss(batch.student_logits, batch.teacher_logits)


@register_term("mse")
class MSELogitLoss(LossTerm):
    """Mean squared logit difference, mean over batch and classes (logit matching, Ba & Caruana 2014):
    the T → ∞ limit of KD, without the softmax squashing the logits' scale."""

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return F.mse_loss(batch.student_logits, batch.teacher_logits)
