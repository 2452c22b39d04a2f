"""Optimisers, schedules and resumable training state shared by every training loop."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from .checkpoint import read_checkpoint
from .errors import CheckpointError, ConfigError
from .io import atomic_torch_save
from .registry import Registry

OPTIMIZERS: Registry[Any] = Registry("optimizer")
OPTIMIZERS.register("sgd")(
    lambda params, lr, momentum, weight_decay: torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0
    )
)
OPTIMIZERS.register("adam")(
    lambda params, lr, momentum, weight_decay: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
)
OPTIMIZERS.register("adamw")(
    lambda params, lr, momentum, weight_decay: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
)


@dataclass
class OptimizerSettings:
    """The optimiser/schedule fields every training config shares (one definition, not copies)."""

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"


@dataclass
class RuntimeSettings:
    """Seed, device and thread fields every run config shares."""

    seed: int = 0
    device: str = "auto"
    threads: int = 0


def build_optimizer(
    name: str, params: Iterable[nn.Parameter], lr: float, momentum: float = 0.9, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    if lr <= 0:
        raise ConfigError(f"lr must be positive, got {lr}")
    return OPTIMIZERS.get(name)(params, lr, momentum, weight_decay)


def lr_factor(schedule: str, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based), stepped once per batch."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "step":  # x0.1 at 50 % and 75 % of training, the classic CIFAR recipe
        return 0.1 ** (int(progress >= 0.5) + int(progress >= 0.75))
    if schedule == "constant":
        return 1.0
    raise ConfigError(f"unknown schedule {schedule!r}; use cosine, step or constant")


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(schedule, 0, max(total_steps, 1), warmup_steps)  # validate the name now
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(schedule, step, total_steps, warmup_steps)
    )


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(
    path: str | os.PathLike,
    modules: dict[str, nn.Module | torch.optim.Optimizer | Any],
    generator: torch.Generator,
    progress: dict[str, Any],
) -> None:
    """Atomically save everything needed for an exact resume (weights, optimiser, RNGs, step)."""
    atomic_torch_save(
        {
            "format": "datafree_kd.training_state",
            "states": {name: obj.state_dict() for name, obj in modules.items()},
            "rng": rng_state(generator),
            "progress": progress,
        },
        path,
    )


def load_training_state(
    path: str | os.PathLike,
    modules: dict[str, nn.Module | torch.optim.Optimizer | Any],
    generator: torch.Generator,
) -> dict[str, Any]:
    """Restore what ``save_training_state`` wrote; return its ``progress`` dict."""
    data = read_checkpoint(path)
    if not isinstance(data, dict) or data.get("format") != "datafree_kd.training_state":
        raise CheckpointError("not a datafree_kd training state", Path(path))
    try:
        for name, obj in modules.items():
            obj.load_state_dict(data["states"][name])
        restore_rng_state(data["rng"], generator)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"training state does not fit this run ({str(exc).splitlines()[0][:160]})", Path(path)
        ) from None
    return dict(data["progress"])


RESUME_IGNORED_KEYS = frozenset({"device", "threads", "data_root", "download", "latency_runs"})


def check_same_config(saved: dict[str, Any], current: dict[str, Any], path: str | os.PathLike) -> None:
    """Resuming under a different recipe would silently mix two runs: refuse it."""
    keys = (set(saved) | set(current)) - RESUME_IGNORED_KEYS
    changed = sorted(k for k in keys if saved.get(k) != current.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:4])
        raise ConfigError(f"cannot resume with a different config ({detail})", Path(path))
