"""``tv:NAME`` models: any torchvision classifier, randomly initialised (never downloads weights)."""

from __future__ import annotations

import difflib
from collections import OrderedDict
from typing import Any, Callable

import torch
import torchvision
from torch import nn

from ..errors import ConfigError
from .registry import MODELS


class RepeatChannels(nn.Module):
    """Repeat a 1-channel image to ``channels`` channels so RGB architectures accept grey inputs."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 1:
            raise ValueError(f"RepeatChannels expects 1 input channel, got {x.shape[1]}")
        return x.repeat(1, self.channels, 1, 1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def torchvision_names() -> list[str]:
    """Classification models torchvision can build (detection/segmentation/video excluded)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _resolve(name: str) -> Callable[..., nn.Module]:
    """Turn ``NAME`` (from ``tv:NAME``) into a factory, or explain which names exist."""
    known = torchvision_names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = ", ".join(close) if close else ", ".join(known[:8]) + ", ..."
        raise ConfigError(f"unknown torchvision model {name!r}; try: {hint}")

    def factory(num_classes: int, in_channels: int, image_size: int, **kwargs: Any) -> nn.Module:
        if "weights" in kwargs and kwargs["weights"] is not None:
            raise ConfigError("tv: models are built without pretrained weights (no downloads)")
        kwargs.pop("weights", None)
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        if in_channels == 3:
            return net
        if in_channels == 1:
            return nn.Sequential(OrderedDict(to_rgb=RepeatChannels(3), model=net))
        raise ConfigError(f"tv:{name} takes 1 or 3 input channels, got {in_channels}")

    factory.__name__ = f"tv_{name}"
    factory.__doc__ = f"torchvision {name}, weights=None."
    return factory


MODELS.register_prefix("tv:", _resolve)
