"""Feature-based terms: the student imitates the teacher's intermediate representations.

Teacher features are regression *targets*, so they are detached here even if a caller hands them
over with a graph: nothing in these terms may push gradient into the teacher or its inputs.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import DistillBatch, LossTerm, register_term


def get_feature(features: dict[str, torch.Tensor], layer: str, side: str, term: str) -> torch.Tensor:
    """``features[layer]`` or a RuntimeError that says which tap is missing (a Distiller bug)."""
    try:
        return features[layer]
    except KeyError:
        have = ", ".join(sorted(features)) or "none"
        raise RuntimeError(
            f"{term}: the batch has no {side} feature {layer!r} (has: {have}); "
            f"tap every layer listed in the term's {side}_layers"
        ) from None


def match_spatial(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool whichever 4-D map is larger down to the smaller one's (H, W)."""
    if s.dim() != 4 or t.dim() != 4 or s.shape[2:] == t.shape[2:]:
        return s, t
    size = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
    if tuple(s.shape[2:]) != size:
        s = F.adaptive_avg_pool2d(s, size)
    if tuple(t.shape[2:]) != size:
        t = F.adaptive_avg_pool2d(t, size)
    return s, t


def _layer_list(value: str | Sequence[str], what: str, term: str) -> tuple[str, ...]:
    """Accept one path or a list of paths (a bare string must not be split into characters)."""
    layers = (value,) if isinstance(value, str) else tuple(value)
    if not layers or not all(isinstance(layer, str) and layer for layer in layers):
        raise ConfigError(f"{term}: {what} must be a non-empty list of module paths, got {value!r}")
    return layers


@register_term("hint")
class HintLoss(LossTerm):
    """FitNets (Romero et al. 2015): MSE between adapter(student feature) and the teacher's feature.

    The student's "guided" layer is usually thinner than the teacher's "hint" layer, so a trainable
    adapter maps student channels to teacher channels: a 1x1 conv for 4-D maps, a Linear for 2-D
    vectors. Its shape is only known from real features, so it is built in :meth:`setup` from the
    first batch and trained together with the student (it is part of ``student_parameters()``).
    When the two maps differ in spatial size, the larger one is adaptive-average-pooled down to the
    smaller one's size before the MSE (mean over all elements).
    """

    def __init__(self, student_layer: str, teacher_layer: str) -> None:
        super().__init__()
        self.student_layer = _layer_list(student_layer, "student_layer", "hint")[0]
        self.teacher_layer = _layer_list(teacher_layer, "teacher_layer", "hint")[0]
        self.student_layers = (self.student_layer,)
        self.teacher_layers = (self.teacher_layer,)
        self.adapter: nn.Module | None = None

    def setup(self, batch: DistillBatch) -> None:
        if self.adapter is not None:
            return  # already built (e.g. setup called again after resuming)
        s = get_feature(batch.student_features, self.student_layer, "student", "hint")
        t = get_feature(batch.teacher_features, self.teacher_layer, "teacher", "hint")
        if s.dim() != t.dim() or s.dim() not in (2, 4):
            raise ConfigError(
                f"hint: needs two 4-D maps or two 2-D vectors, got student {self.student_layer!r} "
                f"{tuple(s.shape)} and teacher {self.teacher_layer!r} {tuple(t.shape)}"
            )
        cs, ct = s.shape[1], t.shape[1]
        adapter: nn.Module = nn.Conv2d(cs, ct, kernel_size=1) if s.dim() == 4 else nn.Linear(cs, ct)
        self.adapter = adapter.to(device=s.device, dtype=s.dtype)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        if self.adapter is None:
            raise RuntimeError("hint: call setup(batch) first; the adapter's shape comes from the first batch")
        s = get_feature(batch.student_features, self.student_layer, "student", "hint")
        t = get_feature(batch.teacher_features, self.teacher_layer, "teacher", "hint").detach()
        s, t = match_spatial(s, t)  # pooling commutes with the 1x1 conv, so pool first (cheaper)
        return F.mse_loss(self.adapter(s), t)

    def hparams(self) -> dict[str, Any]:
        return {"student_layer": self.student_layer, "teacher_layer": self.teacher_layer}


def attention_map(f: torch.Tensor, p: float) -> torch.Tensor:
    """Zagoruyko & Komodakis' spatial attention: mean_c |f|^p, flattened, L2-normalised per sample."""
    return F.normalize(f.abs().pow(p).mean(1).flatten(1), dim=1)


@register_term("attention")
class AttentionLoss(LossTerm):
    """Attention transfer (Zagoruyko & Komodakis 2017): match *where* the networks look.

    Per (student, teacher) layer pair, with ``a = attention_map(f, p)`` of shape (B, H*W):
    ``(a_s - a_t).pow(2).mean()`` exactly as the authors' code does — the mean over batch *and*
    positions, i.e. (1/B) Σ_b ‖a_s,b − a_t,b‖² / (H·W). The term is the mean over pairs. Maps of
    different sizes are compared after adaptive-average-pooling the larger *feature* map to the
    smaller's (H, W) (as RepDistiller does), before taking the attention map.
    The reference weights the per-layer sum by β = 1000 (β/2 in the paper's code), so this mean over
    ``n`` pairs needs an objective weight of about 1000·n to match RepDistiller's setting.
    """

    def __init__(
        self,
        student_layers: str | Sequence[str],
        teacher_layers: str | Sequence[str],
        p: float = 2,
    ) -> None:
        super().__init__()
        self.student_layers = _layer_list(student_layers, "student_layers", "attention")
        self.teacher_layers = _layer_list(teacher_layers, "teacher_layers", "attention")
        if len(self.student_layers) != len(self.teacher_layers):
            raise ConfigError(
                f"attention: {len(self.student_layers)} student layers but {len(self.teacher_layers)} "
                "teacher layers; they are matched pairwise"
            )
        if not p > 0:
            raise ConfigError(f"attention: p must be > 0, got {p}")
        self.p = p

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        losses = []
        for s_name, t_name in zip(self.student_layers, self.teacher_layers):
            s = get_feature(batch.student_features, s_name, "student", "attention")
            t = get_feature(batch.teacher_features, t_name, "teacher", "attention").detach()
            if s.dim() != 4 or t.dim() != 4:
                raise ConfigError(
                    f"attention: needs 4-D (B, C, H, W) maps, got student {s_name!r} {tuple(s.shape)} "
                    f"and teacher {t_name!r} {tuple(t.shape)}"
                )
            s, t = match_spatial(s, t)
            losses.append((attention_map(s, self.p) - attention_map(t, self.p)).pow(2).mean())
        return torch.stack(losses).mean()

    def hparams(self) -> dict[str, Any]:
        return {"student_layers": list(self.student_layers), "teacher_layers": list(self.teacher_layers), "p": self.p}
