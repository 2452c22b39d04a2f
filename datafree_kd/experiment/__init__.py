"""Experiments: a file of registered stages run with caching (see :mod:`.runner`)."""

from .runner import run_experiment, stage_key
from .spec import ExperimentSpec, StageSpec

__all__ = ["ExperimentSpec", "StageSpec", "run_experiment", "stage_key"]
