"""The dataset registry: ``load_dataset(name, split, root)`` -> ImageTensors in memory."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from ..errors import DatasetError
from ..registry import Registry
from .info import DatasetInfo
from .memory import ImageTensors

# loader(split: str, root: str | None, download: bool) -> ImageTensors
DatasetLoader = Callable[..., ImageTensors]
DATASETS: Registry[DatasetLoader] = Registry("dataset")

SPLITS = ("train", "test")


_guard = threading.local()


@contextmanager
def forbid_training_data(reason: str = "this run is data-free") -> Iterator[None]:
    """Inside this block, loading any dataset's *train* split raises (DESIGN rule 8).

    Data-free runs wrap everything they do in it, so no component (a synthesizer, a source, an
    evaluation helper) can reach real training images by accident; test splits stay available.
    """
    previous = getattr(_guard, "reason", None)
    _guard.reason = reason
    try:
        yield
    finally:
        _guard.reason = previous


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    return DATASETS.register(name)


def load_dataset(
    name: str, split: str = "train", root: str | None = None, download: bool = False
) -> ImageTensors:
    """Load a split into memory. Raises DatasetError (naming the path) if it cannot be found.

    ``download`` is opt-in: nothing is fetched unless asked, so offline machines fail fast.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of {SPLITS}")
    reason = getattr(_guard, "reason", None)
    if split == "train" and reason is not None:
        raise DatasetError(f"refusing to load the {name!r} training split: {reason}")
    loader = DATASETS.get(name)
    return loader(split=split, root=root, download=download)


def dataset_info(name: str, root: str | None = None, download: bool = False) -> DatasetInfo:
    """The DatasetInfo of a dataset (loads its test split, the smaller one)."""
    return load_dataset(name, "test", root, download).info
