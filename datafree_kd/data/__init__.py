"""Datasets by name; every one yields images in [0, 1] and a DatasetInfo."""

from .info import DatasetInfo
from .memory import ImageTensors
from .registry import DATASETS, load_dataset, register_dataset, dataset_info, forbid_training_data
from . import builtin  # noqa: F401  (registers the built-in datasets)

__all__ = [
    "DatasetInfo",
    "ImageTensors",
    "DATASETS",
    "load_dataset",
    "register_dataset",
    "dataset_info",
    "forbid_training_data",
]
