"""Relation-based terms: the student matches how the teacher arranges the *batch*, not each sample.

Each term reads one representation per network: a hooked layer (flattened per sample) or, when the
layer is ``None``, the logits. Teacher representations are targets and are always detached.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import DistillBatch, LossTerm, register_term
from .feature import get_feature


def _check_layer(value: str | None, what: str, term: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{term}: {what} must be a module path or None (logits), got {value!r}")
    return value


class _RelationTerm(LossTerm):
    """Shared plumbing: which representation each side uses, and reading it flattened."""

    def __init__(self, student_layer: str | None, teacher_layer: str | None) -> None:
        super().__init__()
        self.student_layer = _check_layer(student_layer, "student_layer", self.name)
        self.teacher_layer = _check_layer(teacher_layer, "teacher_layer", self.name)
        self.student_layers = () if student_layer is None else (student_layer,)
        self.teacher_layers = () if teacher_layer is None else (teacher_layer,)

    def student_repr(self, batch: DistillBatch) -> torch.Tensor:
        if self.student_layer is None:
            return batch.student_logits.flatten(1)
        return get_feature(batch.student_features, self.student_layer, "student", self.name).flatten(1)

    def teacher_repr(self, batch: DistillBatch) -> torch.Tensor:
        if self.teacher_layer is None:
            return batch.teacher_logits.detach().flatten(1)
        return get_feature(batch.teacher_features, self.teacher_layer, "teacher", self.name).detach().flatten(1)

    def hparams(self) -> dict[str, Any]:
        return {"student_layer": self.student_layer, "teacher_layer": self.teacher_layer}


def pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(N, D) -> (N, N) Euclidean distances with an exact zero diagonal (Gram form, as the RKD code:
    O(N²) memory instead of the O(N²·D) of explicit differences)."""
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    off_diagonal = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    return d * off_diagonal


def normalized_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pairwise distances divided by their mean over the N(N-1) off-diagonal pairs (scale-free)."""
    d = pairwise_distances(e)
    n = len(e)
    return d / (d.sum() / (n * (n - 1))).clamp(min=eps)


def triplet_angles(e: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N, N, N): entry [i, j, k] = cos of the angle at e_i between e_j and e_k
    (0 where j == i or k == i, as unit(0) = 0)."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # [i, j] = unit(e_j - e_i)
    return torch.bmm(diff, diff.transpose(1, 2))


@register_term("rkd")
class RKDLoss(_RelationTerm):
    """Relational KD (Park et al., CVPR 2019): distance-wise plus angle-wise structure matching.

    distance: smooth-L1 between the student's and the teacher's pairwise-distance matrices, each
    normalised by its mean off-diagonal distance (so the student's scale is free); angle: smooth-L1
    between the cosines of all triplet angles. Reductions follow the authors' code: the mean over
    all N² (resp. N³) entries, degenerate entries (zero on both sides) included. The total is
    ``distance_weight * distance + angle_weight * angle`` with the paper's 25 and 50. Needs N >= 2.
    """

    def __init__(
        self,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
    ) -> None:
        super().__init__(student_layer, teacher_layer)
        if distance_weight < 0 or angle_weight < 0:
            raise ConfigError("rkd: distance_weight and angle_weight must be >= 0")
        self.distance_weight = float(distance_weight)
        self.angle_weight = float(angle_weight)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        s = self.student_repr(batch)
        if len(s) < 2:
            raise RuntimeError("rkd: relations need a batch of at least 2 samples")
        # Gram-form distances cancel catastrophically in float16, so never run them under autocast.
        with torch.autocast(s.device.type, enabled=False):
            dtype = torch.promote_types(s.dtype, torch.float32)
            s = s.to(dtype)
            with torch.no_grad():
                t = self.teacher_repr(batch).to(dtype)
                t_dist = normalized_distances(t)
                t_angle = triplet_angles(t)
            loss = s.new_zeros(())
            if self.distance_weight:
                loss = loss + self.distance_weight * F.smooth_l1_loss(normalized_distances(s), t_dist)
            if self.angle_weight:
                loss = loss + self.angle_weight * F.smooth_l1_loss(triplet_angles(s), t_angle)
        return loss

    def hparams(self) -> dict[str, Any]:
        return {"distance_weight": self.distance_weight, "angle_weight": self.angle_weight, **super().hparams()}


@register_term("crd")
class CRDLoss(_RelationTerm):
    """Contrastive representation distillation, in-batch variant of CRD (Tian et al., ICLR 2020).

    Both representations are embedded by a linear head (student dim -> ``feat_dim``, teacher dim ->
    ``feat_dim``; both heads train with the student, as in CRD) and L2-normalised. With
    ``S = z_s @ z_t.T / nce_temperature``, the loss is the InfoNCE cross-entropy with the diagonal
    as positives, averaged over the student->teacher (rows) and teacher->student (columns)
    directions. CRD proper draws 16384 negatives from a memory bank indexed by dataset position;
    synthetic transfer data is regenerated every step and has no stable indices, so the other
    samples of the batch serve as negatives instead (B-1 per anchor; larger batches give a tighter
    bound). The heads are sized in :meth:`setup` from the first batch.
    """

    def __init__(
        self,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        feat_dim: int = 128,
        nce_temperature: float = 0.07,
    ) -> None:
        super().__init__(student_layer, teacher_layer)
        if int(feat_dim) < 1:
            raise ConfigError(f"crd: feat_dim must be >= 1, got {feat_dim}")
        if not nce_temperature > 0:
            raise ConfigError(f"crd: nce_temperature must be > 0, got {nce_temperature}")
        self.feat_dim = int(feat_dim)
        self.nce_temperature = float(nce_temperature)
        self.embed_s: nn.Linear | None = None
        self.embed_t: nn.Linear | None = None

    def setup(self, batch: DistillBatch) -> None:
        if self.embed_s is not None:
            return  # already built
        s, t = self.student_repr(batch), self.teacher_repr(batch)
        self.embed_s = nn.Linear(s.shape[1], self.feat_dim).to(device=s.device, dtype=s.dtype)
        self.embed_t = nn.Linear(t.shape[1], self.feat_dim).to(device=s.device, dtype=s.dtype)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        if self.embed_s is None or self.embed_t is None:
            raise RuntimeError("crd: call setup(batch) first; the heads' shapes come from the first batch")
        z_s = F.normalize(self.embed_s(self.student_repr(batch)), dim=1)
        z_t = F.normalize(self.embed_t(self.teacher_repr(batch)), dim=1)
        logits = z_s @ z_t.t() / self.nce_temperature
        positives = torch.arange(len(logits), device=logits.device)
        return 0.5 * (F.cross_entropy(logits, positives) + F.cross_entropy(logits.t(), positives))

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "feat_dim": self.feat_dim, "nce_temperature": self.nce_temperature}
