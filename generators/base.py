"""Synthesizer interfaces shared by every method in ``generators``.

Two shapes (DataFree's split between synthesis and training): a *materialising* synthesizer writes
a transfer set before training; an *online* synthesizer is a generator updated adversarially
against the student inside the Distiller's loop. The Distiller only needs the online interface.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import ConfigError
from datafree_kd.registry import Registry

TeacherFn = Callable[[torch.Tensor], torch.Tensor]


class OnlineSynthesizer(nn.Module):
    """A batch maker trained inside the distillation loop.

    Per step the Distiller calls ``synthesizer_step`` (update the generator against the students,
    e.g. maximise their disagreement with the teacher), then ``sample`` for the students' batch.
    Images are floats in [0, 1] with the teacher's shape (``info.shape``).
    """

    name: str = ""
    online: bool = True
    #: options that restore the paper's sizes (``preset=paper``); the defaults are sized for a CPU
    paper_options: ClassVar[dict[str, Any]] = {}
    #: options that shrink the method to seconds (``preset=smoke``)
    smoke_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, info: DatasetInfo) -> None:
        super().__init__()
        self.info = info

    def setup(self, device: torch.device) -> None:
        """Move to ``device`` and build optimisers (called once, before any step)."""
        self.to(device)

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def synthesizer_step(
        self, teacher: TeacherFn, students: Sequence[nn.Module], batch_size: int, generator: torch.Generator
    ) -> dict[str, float]:
        """Update the synthesizer; return figures to log. Default: nothing to learn."""
        return {}

    def training_state(self) -> dict[str, Any]:
        """Weights plus optimiser states, for exact resume."""
        return {"module": self.state_dict()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["module"])


SYNTHESIZERS: Registry[Any] = Registry("synthesizer")

#: ``cpu``: the class defaults, sized for accuracy per CPU-minute on two cores; ``paper``: each
#: method's ``paper_options`` on top (the published generator width, iterations, batch), for GPUs;
#: ``smoke``: each method's ``smoke_options`` (a few steps, a narrow generator) for seconds-long
#: checks of a pipeline (``dfkd run --smoke``), never for figures.
PRESETS = ("cpu", "paper", "smoke")


def check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    return preset


def preset_options(factory: Any, preset: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options a synthesizer is built with: the preset's first, the user's on top, key by key."""
    base = {} if check_preset(preset) == "cpu" else dict(getattr(factory, f"{preset}_options", {}))
    return {**base, **options}


def register_synthesizer(name: str) -> Callable[[type], type]:
    def decorator(cls: type) -> type:
        cls.name = name
        return SYNTHESIZERS.register(name)(cls)

    return decorator


class MaterializingSynthesizer(nn.Module):
    """Makes a transfer set before any student exists: ``fit`` (learn, if the method learns
    anything up front, e.g. DAFL's generator) then ``generate`` batches of images in [0, 1].

    ``datafree_kd``'s synthesis runner calls ``fit`` once, then ``generate`` until ``n`` images are
    written, labelling each batch with the teacher's logits; both take the run's seeded generator.
    """

    name: str = ""
    online: bool = False
    #: options that restore the paper's sizes (``preset=paper``); the defaults are sized for a CPU
    paper_options: ClassVar[dict[str, Any]] = {}
    #: options that shrink the method to seconds (``preset=smoke``)
    smoke_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, info: DatasetInfo) -> None:
        super().__init__()
        self.info = info

    def fit(self, teacher: TeacherFn, generator: torch.Generator, device: torch.device) -> dict[str, float]:
        """Learn whatever the method learns before sampling; return figures to log. Default: nothing."""
        self.to(device)
        return {}

    def generate(
        self, teacher: TeacherFn, batch_size: int, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        raise NotImplementedError
