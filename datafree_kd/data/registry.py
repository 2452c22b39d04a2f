"""The dataset registry: ``load_dataset(name, split, root)`` -> ImageTensors in memory.

Three splits (DESIGN, "Splits"): ``train`` (teachers and the kd-real baseline; never read by a
data-free run), ``val`` (model selection: which data-free student or recipe to keep) and ``test``
(the reported figure). ``val`` is disjoint from ``test``; see ``builtin`` for where each
dataset's val comes from.
"""

from __future__ import annotations

import inspect
from typing import Callable

from ..errors import ConfigError, DatasetError
from ..registry import Registry
from .guard import active, forbid_training_data  # noqa: F401  (re-exported)
from .info import DatasetInfo
from .memory import ImageTensors

# loader(split: str, root: str | None, download: bool[, val_fraction: float]) -> ImageTensors
DatasetLoader = Callable[..., ImageTensors]
DATASETS: Registry[DatasetLoader] = Registry("dataset")

SPLITS = ("train", "val", "test")
#: share of a user dataset's (``tensors``, ``folder``) train split held out as val when it ships none
DEFAULT_VAL_FRACTION = 0.1


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    return DATASETS.register(name)


def load_dataset(
    name: str, split: str = "train", root: str | None = None, download: bool = False,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> ImageTensors:
    """Load a split into memory. Raises DatasetError (naming the path) if it cannot be found.

    ``download`` is opt-in: nothing is fetched unless asked, so offline machines fail fast.
    ``val_fraction`` reaches only the loaders that take it (user datasets without a val file).
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of {SPLITS}")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    reason = active()
    if split == "train" and reason is not None:
        raise DatasetError(f"refusing to load the {name!r} training split: {reason}")
    loader = DATASETS.get(name)
    extra = {"val_fraction": val_fraction} if _takes(loader, "val_fraction") else {}
    return loader(split=split, root=root, download=download, **extra)


def _takes(loader: DatasetLoader, keyword: str) -> bool:
    """Whether ``loader`` accepts ``keyword`` (so loaders registered before it existed still work)."""
    try:
        params = inspect.signature(loader).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in params)


def dataset_info(name: str, root: str | None = None, download: bool = False) -> DatasetInfo:
    """The DatasetInfo of a dataset (loads its test split, the smaller one)."""
    return load_dataset(name, "test", root, download).info
