"""Data-parallel training under ``torchrun`` on PyTorch's own runtime (gloo on CPU, NCCL on GPU).

One rule makes a DDP run equal to a single-process run at the same *global* batch: every rank
draws the same global batch (same seed, same generator, same augmentation) and trains on its own
slice of it. DDP averages the slices' gradients, which for the mean losses used here is the
gradient of the whole batch, so the weights, optimiser states and RNG states stay identical on
every rank and a checkpoint written by rank 0 resumes any rank, at any world size. The cost is
that each rank prepares (and, for an online generator, synthesises) the whole global batch; the
teacher and student passes, the expensive part, are split.

Rank 0 alone writes (config, metrics, checkpoints, models, results); the other ranks read the
same run directory to resume. Figures logged each step are averaged over ranks, so a NaN on one
rank stops every rank at the same step instead of leaving the others waiting.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the job: ``rank`` of ``world_size`` (1: no distribution)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def share(self, global_batch: int) -> slice:
        """This rank's rows of a global batch (equal slices: the gradient mean is the batch's)."""
        if global_batch % self.world_size:
            raise ConfigError(f"batch_size {global_batch} is the global batch and must divide among "
                              f"{self.world_size} processes")
        size = global_batch // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each figure averaged over ranks (every rank logs the same keys, in any order)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(packed)
        return dict(zip(keys, (packed / self.world_size).tolist()))

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (results that only rank 0 computed)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """All-reduce the gradients of trainable parts outside the DDP-wrapped model (adapters)."""
        if not self.enabled:
            return
        for parameter in parameters:
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad)
                parameter.grad /= self.world_size

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module a training forward goes through: DDP over ``model`` when distributed."""
        if not self.enabled:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)


SINGLE = Ranks()


def ranks() -> Ranks:
    """This process's place in an initialised process group, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return SINGLE


def launched_world_size() -> int:
    """The world size ``torchrun`` (or another launcher) announced, 1 without one."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def init_from_launcher(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group ``torchrun`` set up (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` in the
    environment), gloo on CPU and NCCL on CUDA, each rank on its own GPU; a plain process is
    returned as it is. Idempotent: a second call reuses the group."""
    if launched_world_size() <= 1:
        return SINGLE, device
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave)
    return ranks(), device


def _leave() -> None:
    """Leave the group cleanly at exit: a process that exits with the group's threads alive can
    abort (SIGABRT) after its work is done."""
    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def check_supported(objective: Any) -> None:
    """Terms that train adversaries of their own (a discriminator) would need their updates
    synchronised too; refuse them under DDP rather than let the ranks' discriminators drift."""
    owned = [name for name, term in objective.terms.items() if hasattr(term, "optimizer_state_dict")]
    if owned:
        raise ConfigError(f"objective term(s) {', '.join(owned)} train their own adversary, which DDP "
                          "distillation does not synchronise yet; run them in one process")


def summary(r: Ranks) -> dict[str, Any]:
    """What results.json records of the job's shape."""
    return {"world_size": r.world_size,
            "backend": dist.get_backend() if r.enabled else None}
