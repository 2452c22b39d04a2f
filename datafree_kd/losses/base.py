"""An objective is a named, weighted sum of loss terms (DESIGN rule 4).

Each term is an ``nn.Module`` registered by name. It reads what it needs from a ``DistillBatch``
(logits, optional labels, optional hooked features) and returns a scalar. Terms with their own
trainable parts (a FitNets adapter, CRD embeddings) expose them through ``parameters()`` and are
optimised with the student; terms with an adversary of their own (the discriminator) implement
``adversary_step``, which the Distiller calls before each student update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..registry import Registry


@dataclass
class DistillBatch:
    """Everything a loss term may read for one batch.

    ``labels`` are ground truth for real data and ``None`` for synthetic data (terms then use the
    teacher's argmax as pseudo-labels). Feature dicts are keyed by the *term's* feature names.

    ``student_model`` / ``teacher_model`` are the networks themselves, for terms that must run them
    on inputs of their own (ARD-style terms attack the student inside ``forward``). The Distiller
    fills them; hand-built batches may leave them None, and such terms then refuse to run.
    """

    inputs: torch.Tensor
    student_logits: torch.Tensor
    teacher_logits: torch.Tensor
    labels: torch.Tensor | None = None
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)
    index: torch.Tensor | None = None  # dataset indices, for memory-bank terms (CRD)
    student_model: nn.Module | None = None
    teacher_model: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def targets(self) -> torch.Tensor:
        """Ground-truth labels if known, else the teacher's pseudo-labels."""
        return self.labels if self.labels is not None else self.teacher_logits.argmax(1)


class LossTerm(nn.Module):
    """Base class: subclasses set ``name`` and implement ``forward(batch) -> scalar``.

    ``student_layers`` / ``teacher_layers`` name the hooked modules a term needs (module paths);
    the Distiller taps them and fills ``DistillBatch.*_features`` under the same paths.
    """

    name: str = ""
    student_layers: tuple[str, ...] = ()
    teacher_layers: tuple[str, ...] = ()
    #: whether the term differentiates through ``batch.teacher_model`` (an input search through
    #: both networks); such a term needs the float teacher, not an int8 copy
    teacher_gradients: bool = False

    def forward(self, batch: DistillBatch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, batch: DistillBatch) -> None:
        """Build lazily-shaped parts (adapters) from a first batch; default: nothing to build."""

    def student_parameters(self) -> list[nn.Parameter]:
        """Parameters trained together with the student (default: all of the term's own)."""
        return list(self.parameters())

    def adversary_step(self, batch: DistillBatch) -> dict[str, float]:
        """Update an adversary of the term's own (default: none); return figures to log."""
        return {}

    def hparams(self) -> dict[str, Any]:
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hparams().items())


LOSS_TERMS: Registry[Callable[..., LossTerm]] = Registry("loss term")


def register_term(name: str) -> Callable[[type[LossTerm]], type[LossTerm]]:
    def decorator(cls: type[LossTerm]) -> type[LossTerm]:
        cls.name = name
        return LOSS_TERMS.register(name)(cls)

    return decorator
