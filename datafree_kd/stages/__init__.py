"""Registered experiment stages; importing this package registers the built-in kinds."""

from .base import STAGES, Stage, StageOutput, register_stage
from . import distill, evaluate, prior, synthesize, training  # noqa: F401  (register the built-in stages)

__all__ = ["STAGES", "Stage", "StageOutput", "register_stage"]
