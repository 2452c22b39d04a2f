"""The model registry and ``create_model``: every model comes back wrapped with its normalisation."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import nn

from ..registry import Registry
from .normalize import Normalize, NormalizedClassifier

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory(num_classes, in_channels, image_size, **kwargs) -> nn.Module``."""
    return MODELS.register(name)


def create_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: Any,
) -> NormalizedClassifier:
    """Build a registered model that takes images in [0, 1] and normalises them itself."""
    factory = MODELS.get(name)
    net = factory(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)
    mean = tuple(mean) if mean is not None else (0.5,) * in_channels
    std = tuple(std) if std is not None else (0.5,) * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std need {in_channels} entries for {in_channels} channels")
    return NormalizedClassifier(net, Normalize(mean, std))
