"""Where a student's training batches come from: real data, a transfer set, or an online generator.

Every source is resumable (``state_dict``), so a killed run continues with the same batches.
Only ``RealDataSource`` touches real training images, and it exists only for the ``kd-real``
baseline (DESIGN rule 8). Every source says where its batches come from (``provenance``), which a
distillation's results.json carries; ``synthetic`` is true only for batches that a registered
synthesizer made under the data-free guard.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .data.memory import ImageTensors


class BatchSource:
    """Yields ``(images in [0,1], labels or None)``; labels are None for synthetic data."""

    uses_real_training_data = False
    description = ""
    #: extra facts about the batches' origin, merged into ``provenance()`` (e.g. a transfer set's)
    origin: dict[str, Any] = {}

    @property
    def synthetic(self) -> bool:
        """Every batch made by a registered synthesizer while no training file could be read."""
        return bool(self.origin.get("synthetic", False)) and not self.uses_real_training_data

    def provenance(self) -> dict[str, Any]:
        """Where the batches come from, for results.json and the students' checkpoints."""
        return {"description": self.description, "uses_real_training_data": self.uses_real_training_data,
                **self.origin, "synthetic": self.synthetic}

    def setup(self, device: torch.device) -> None:
        self.device = device

    def next_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def before_student_step(
        self, teacher: Any, students: Sequence[nn.Module], batch_size: int, generator: torch.Generator
    ) -> dict[str, float]:
        """Hook for online synthesizers to update against the students; default: nothing."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class TensorSetSource(BatchSource):
    """Reshuffles an in-memory set each pass; the permutation and cursor are part of the state.

    ``class_balance``: each pass instead draws ``len(data)`` indices with replacement, every class of
    ``data.labels`` (a transfer set's: the teacher's argmax) equally likely, so classes a generator
    rarely hits are seen as often as the rest."""

    def __init__(self, data: ImageTensors, with_labels: bool, description: str,
                 origin: dict[str, Any] | None = None, class_balance: bool = False) -> None:
        if len(data) == 0:
            raise ValueError("cannot train from an empty set")
        self.data = data
        self.weights = None
        if class_balance:
            counts = torch.bincount(data.labels)
            self.weights = 1.0 / counts[data.labels].double()
        self.with_labels = with_labels
        self.description = description
        self.origin = dict(origin or {})
        self.order = torch.empty(0, dtype=torch.long)
        self.cursor = 0
        self.passes = 0

    def next_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.cursor + batch_size > len(self.order):  # drop the ragged tail, start a new pass
            self.order = (torch.randperm(len(self.data), generator=generator) if self.weights is None else
                          torch.multinomial(self.weights, len(self.data), replacement=True, generator=generator))
            self.cursor = 0
            self.passes += 1
        idx = self.order[self.cursor : self.cursor + batch_size]
        self.cursor += batch_size
        x = self.data.as_float(self.data.images[idx]).to(self.device)
        y = self.data.labels[idx].to(self.device) if self.with_labels else None
        return x, y

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "cursor": self.cursor, "passes": self.passes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.cursor, self.passes = state["order"], int(state["cursor"]), int(state["passes"])


class RealDataSource(TensorSetSource):
    """The ``kd-real`` baseline: the teacher's real training set, with ground-truth labels."""

    uses_real_training_data = True

    def __init__(self, data: ImageTensors) -> None:
        super().__init__(data, with_labels=True, description=f"real:{data.info.name}",
                         origin={"kind": "real", "dataset": data.info.name, "images": len(data)})


class OnlineSource(BatchSource):
    """Batches drawn from an online synthesizer that is updated against the students each step."""

    def __init__(self, synthesizer: Any, description: str, origin: dict[str, Any] | None = None) -> None:
        self.synthesizer = synthesizer
        self.description = description
        self.origin = dict(origin or {})

    def setup(self, device: torch.device) -> None:
        super().setup(device)
        self.synthesizer.setup(device)

    def before_student_step(
        self, teacher: Any, students: Sequence[nn.Module], batch_size: int, generator: torch.Generator
    ) -> dict[str, float]:
        return self.synthesizer.synthesizer_step(teacher, students, batch_size, generator)

    def next_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, None]:
        with torch.no_grad():
            x = self.synthesizer.sample(batch_size, generator)
        if not torch.isfinite(x).all():
            from .errors import DivergenceError

            raise DivergenceError(f"generator output of {self.description} holds NaN or Inf")
        return x.detach().clamp_(0.0, 1.0), None

    def state_dict(self) -> dict[str, Any]:
        return self.synthesizer.training_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.synthesizer.load_training_state(state)
