"""The dataset registry: ``load_dataset(name, split, root)`` -> ImageTensors in memory."""

from __future__ import annotations

from typing import Callable

from ..errors import DatasetError
from ..registry import Registry
from .info import DatasetInfo
from .memory import ImageTensors

# loader(split: str, root: str | None, download: bool) -> ImageTensors
DatasetLoader = Callable[..., ImageTensors]
DATASETS: Registry[DatasetLoader] = Registry("dataset")

SPLITS = ("train", "test")


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
    loader = DATASETS.get(name)
    return loader(split=split, root=root, download=download)


def dataset_info(name: str, root: str | None = None, download: bool = False) -> DatasetInfo:
    """The DatasetInfo of a dataset (loads its test split, the smaller one)."""
    return load_dataset(name, "test", root, download).info
