"""Wide ResNets (Zagoruyko & Komodakis, 2016): the WRN-40-2 -> WRN-16-1 pairs of DFKD papers."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .init import init_conv_bn

from .registry import register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 with an identity or 1x1 projection shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == planes and stride == 1
        self.shortcut: nn.Module | None = (
            None if self.equal_in_out else nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not in-place: x (or its activation) is reused by the shortcut and may be a feature tap.
        act = F.relu(self.bn1(x))
        out = self.conv1(act)
        out = F.relu(self.bn2(out))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        # Projection takes the pre-activated input, as in the reference implementation.
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(nn.Module):
    """WRN-d-k: 3x3 stem of 16 channels, 3 groups of (d-4)/6 blocks with 16k/32k/64k channels."""

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        in_planes = widths[0]
        for g, (w, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
            blocks = [PreActBlock(in_planes if i == 0 else w, w, stride if i == 0 else 1, drop_rate) for i in range(n)]
            self.add_module(f"block{g + 1}", nn.Sequential(*blocks))
            in_planes = w
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_conv_bn(self, zero_linear_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.block3(self.block2(self.block1(x)))
        x = self.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _make_factory(name: str, depth: int, widen: int) -> Callable[..., nn.Module]:
    def factory(num_classes: int, in_channels: int, image_size: int, **kwargs: Any) -> nn.Module:
        return WideResNet(depth, widen, num_classes, in_channels, image_size, **kwargs)

    factory.__name__ = name
    factory.__doc__ = f"Wide ResNet {name}: depth {depth}, widen factor {widen}."
    return factory


for _depth, _widen in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _name = f"wrn_{_depth}_{_widen}"
    register_model(_name)(_make_factory(_name, _depth, _widen))
