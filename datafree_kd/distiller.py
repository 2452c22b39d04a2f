"""The distillation loop: one teacher (or ensemble), one or more students, any batch source.

Per step: the source may update itself against the students (online synthesizers), yields a
batch, the frozen teacher labels it once, and every student takes one optimiser step on its own
weighted objective (after that objective's adversaries, e.g. a discriminator, take theirs).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .data.augment import augment_batch, mixup_images
from .distributed import SINGLE, Ranks, check_supported
from .losses import DistillBatch, Objective
from .models.features import FeatureExtractor
from .sources import BatchSource


@dataclass
class StudentSlot:
    """A student with its own objective, optimiser and schedule."""

    name: str
    model: nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    tap: FeatureExtractor | None = None

    def parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters()) + self.objective.student_parameters()


@dataclass
class LoopSettings:
    batch_size: int
    grad_clip: float = 0.0
    amp: bool = False
    crop_padding: int = 0
    hflip: bool = False
    mixup: float = 0.0
    blur: float = 0.0
    brightness: float = 0.0
    invert: float = 0.0
    #: bf16 autocast for the teacher and student passes, on any device (``amp`` is CUDA float16)
    bfloat16: bool = False


class _Tapped:
    """Runs a model (through ``forward``, its DDP wrapper, if given) and returns (logits,
    features) whether or not any layer is tapped."""

    def __init__(self, model: nn.Module, layers: list[str], forward: nn.Module | None = None) -> None:
        self.model = forward if forward is not None else model
        self.extractor = FeatureExtractor(model, layers, forward) if layers else None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.extractor is None:
            return self.model(x), {}
        return self.extractor(x)

    def remove(self) -> None:
        if self.extractor is not None:
            self.extractor.remove()


@dataclass
class Distiller:
    teacher: nn.Module
    students: list[StudentSlot]
    source: BatchSource
    settings: LoopSettings
    device: torch.device
    #: under DDP each rank trains on its slice of the same global batch (see datafree_kd.distributed)
    ranks: Ranks = SINGLE
    scaler: torch.amp.GradScaler = field(init=False)

    def __post_init__(self) -> None:
        amp = self.settings.amp and self.device.type == "cuda" and not self.settings.bfloat16
        self.amp = amp  # float16 with loss scaling; bf16 needs no scaler
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp)
        if self.ranks.enabled:
            for slot in self.students:
                check_supported(slot.objective)
            self.ranks.share(self.settings.batch_size)  # the global batch divides among the ranks
        self.teacher_tap = _Tapped(self.teacher, sorted({l for s in self.students for l in s.objective.teacher_layers}))
        self.student_taps = [_Tapped(s.model, s.objective.student_layers, self.ranks.wrap(s.model, self.device))
                             for s in self.students]

    def _autocast(self):
        if self.settings.bfloat16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()

    def setup_objectives(self, example_shape: tuple[int, ...]) -> None:
        """Let terms build shape-dependent parts (adapters, heads) before optimisers exist."""
        probe = torch.rand(2, *example_shape, generator=torch.Generator().manual_seed(0)).to(self.device)
        with torch.no_grad():
            t_logits, t_feats = self.teacher_tap(probe)
        for slot, tap in zip(self.students, self.student_taps):
            was_training = slot.model.training
            slot.model.eval()
            with torch.no_grad():
                s_logits, s_feats = tap(probe)
            slot.model.train(was_training)
            slot.objective.setup(DistillBatch(probe, s_logits, t_logits, None, s_feats, t_feats,
                                              student_model=slot.model, teacher_model=self.teacher))
            slot.objective.to(self.device)

    def step(self, generator: torch.Generator) -> dict[str, float]:
        """One training step for every student; returns the figures to log."""
        logs: dict[str, float] = {}
        models = [s.model for s in self.students]
        logs.update({f"source/{k}": v for k, v in
                     self.source.before_student_step(self.teacher, models, self.settings.batch_size, generator).items()})
        x, labels = self.source.next_batch(self.settings.batch_size, generator)
        x = augment_batch(x, self.settings.crop_padding, self.settings.hflip, generator,
                          self.settings.blur, self.settings.brightness, self.settings.invert)
        x = mixup_images(x, self.settings.mixup, generator)
        if self.ranks.enabled:  # every rank drew the same global batch; each trains on its share
            mine = self.ranks.share(len(x))
            x, labels = x[mine], (labels[mine] if labels is not None else None)
        with torch.no_grad(), self._autocast():
            t_logits, t_feats = self.teacher_tap(x)
        t_logits = t_logits.float()
        for slot, tap in zip(self.students, self.student_taps):
            slot.model.train()
            with self._autocast():
                s_logits, s_feats = tap(x)
            batch = DistillBatch(x, s_logits.float(), t_logits, labels, s_feats, t_feats,
                                 student_model=slot.model, teacher_model=self.teacher)
            adversary = slot.objective.adversary_step(batch)
            with self._autocast():
                loss, values = slot.objective(batch)
            slot.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(slot.optimizer)
            self.ranks.average_gradients(slot.objective.student_parameters())  # DDP averaged the model's
            # measured every step (clipping at infinity when grad_clip is 0) so a NaN or Inf gradient
            # stops the run (loop.check_finite); under AMP an overflow is the scaler's to skip
            grad_norm = float(nn.utils.clip_grad_norm_(slot.parameters(), self.settings.grad_clip or math.inf))
            if math.isfinite(grad_norm) or not self.amp:
                values["grad_norm"] = grad_norm
            self.scaler.step(slot.optimizer)
            self.scaler.update()
            slot.scheduler.step()
            values["lr"] = slot.scheduler.get_last_lr()[0]
            values["train_agreement"] = (s_logits.argmax(1) == t_logits.argmax(1)).float().mean().item()
            logs.update({f"{slot.name}/{k}": v for k, v in {**values, **adversary}.items()})
        return self.ranks.mean(logs)

    def close(self) -> None:
        self.teacher_tap.remove()
        for tap in self.student_taps:
            tap.remove()

    def stateful(self) -> dict[str, Any]:
        """Everything that must be saved for an exact resume, by name."""
        objects: dict[str, Any] = {"source": self.source, "scaler": self.scaler}
        for slot in self.students:
            objects[f"{slot.name}.model"] = slot.model
            objects[f"{slot.name}.objective"] = slot.objective
            objects[f"{slot.name}.optimizer"] = slot.optimizer
            objects[f"{slot.name}.scheduler"] = slot.scheduler
            for term_name, term in slot.objective.terms.items():
                if hasattr(term, "optimizer_state_dict"):
                    objects[f"{slot.name}.{term_name}.optimizer"] = _TermOptimizer(term)
        return objects


class _TermOptimizer:
    """Adapts a term's own optimiser (a discriminator's) to the state_dict protocol."""

    def __init__(self, term: Any) -> None:
        self.term = term

    def state_dict(self) -> dict[str, Any]:
        return self.term.optimizer_state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.term.load_optimizer_state_dict(state)

