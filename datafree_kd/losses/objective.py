"""``Objective``: the weighted sum of named loss terms a student is trained on."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import LOSS_TERMS, DistillBatch, LossTerm


def parse_objective(spec: str) -> dict[str, float]:
    """``"kd=1,discriminator=0.1"`` -> ``{"kd": 1.0, "discriminator": 0.1}`` (a bare name means 1)."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, raw = part.partition("=")
        name = name.strip()
        try:
            weight = float(raw) if sep else 1.0
        except ValueError:
            raise ConfigError(f"objective term {part!r}: weight {raw!r} is not a number") from None
        if name in weights:
            raise ConfigError(f"objective names {name!r} twice")
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"objective term {name!r} needs a finite weight >= 0, got {raw!r}")
        weights[name] = weight
    if not weights:
        raise ConfigError("the objective has no terms")
    return weights


class Objective(nn.Module):
    """sum_i w_i * term_i(batch); ``forward`` returns the total and each term's unweighted value."""

    def __init__(self, weights: dict[str, float], options: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        options = options or {}
        unknown = sorted(set(options) - set(weights))
        if unknown:
            raise ConfigError(f"options given for term(s) not in the objective: {', '.join(unknown)}")
        self.weights = dict(weights)
        terms = {}
        for name in weights:
            factory = LOSS_TERMS.get(name)
            try:
                terms[name] = factory(**options.get(name, {}))
            except TypeError as exc:
                raise ConfigError(f"bad options for term {name!r}: {exc}") from None
        self.terms = nn.ModuleDict(terms)

    @classmethod
    def from_spec(cls, spec: str, options: dict[str, dict[str, Any]] | None = None) -> "Objective":
        return cls(parse_objective(spec), options)

    @property
    def student_layers(self) -> list[str]:
        return sorted({layer for term in self.terms.values() for layer in term.student_layers})

    @property
    def teacher_layers(self) -> list[str]:
        return sorted({layer for term in self.terms.values() for layer in term.teacher_layers})

    def setup(self, batch: DistillBatch) -> None:
        for term in self.terms.values():
            term.setup(batch)

    def adversary_step(self, batch: DistillBatch) -> dict[str, float]:
        logs: dict[str, float] = {}
        for name, term in self.terms.items():
            logs.update({f"{name}/{k}": v for k, v in term.adversary_step(batch).items()})
        return logs

    def student_parameters(self) -> list[nn.Parameter]:
        """Trainable parts of terms optimised with the student (adapters, embeddings)."""
        return [p for term in self.terms.values() for p in term.student_parameters()]

    def forward(self, batch: DistillBatch) -> tuple[torch.Tensor, dict[str, float]]:
        total = batch.student_logits.new_zeros(())
        values: dict[str, float] = {}
        for name, term in self.terms.items():
            value = term(batch)
            values[name] = value.item()
            if self.weights[name]:
                total = total + self.weights[name] * value
        values["total"] = total.item()
        return total, values

    def __repr__(self) -> str:
        parts = []
        for name, term in self.terms.items():
            hp = term.extra_repr()
            parts.append(f"{self.weights[name]:g}*{name}" + (f"({hp})" if hp else ""))
        return " + ".join(parts)
