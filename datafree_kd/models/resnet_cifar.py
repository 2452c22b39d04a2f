"""CIFAR-style ResNets (3x3 stride-1 stem, no max-pool): the standard DFKD teacher/student pairs."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from .init import init_conv_bn

from .registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 projection shortcut when shape changes."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem, one stage per entry of ``widths`` (first stride 1, then 2), global pooling, linear.

    Adaptive pooling makes the net independent of ``image_size`` (28 px works as well as 32 px).
    """

    def __init__(
        self,
        num_blocks: Sequence[int],
        widths: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        if len(num_blocks) != len(widths):
            raise ValueError("num_blocks and widths need the same length")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        in_planes = widths[0]
        for i, (n, w) in enumerate(zip(num_blocks, widths)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, w, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = w
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _make_factory(name: str, num_blocks: Sequence[int], widths: Sequence[int]) -> Callable[..., nn.Module]:
    def factory(num_classes: int, in_channels: int, image_size: int, **kwargs: Any) -> nn.Module:
        return CifarResNet(num_blocks, widths, num_classes, in_channels, image_size, **kwargs)

    factory.__name__ = name
    factory.__doc__ = f"CIFAR-style {name}: BasicBlocks {list(num_blocks)}, widths {list(widths)}."
    return factory


# Depth 6n+2 ResNets of He et al. (2016), section 4.2: n blocks in each of 3 stages, with 1x1
# projection shortcuts where the shape changes (option B; the paper uses parameter-free option A)
# as the distillation literature's code does (RepDistiller / CRD): ResNet-20 has 272,474 parameters.
for _depth in (8, 20, 32, 56):
    _n = (_depth - 2) // 6
    register_model(f"resnet{_depth}")(_make_factory(f"resnet{_depth}", (_n, _n, _n), (16, 32, 64)))

# ImageNet-depth ResNets with a CIFAR stem (3x3 stride 1, no max-pool), as in DAFL/DFAD.
for _depth, _blocks in ((18, (2, 2, 2, 2)), (34, (3, 4, 6, 3))):
    register_model(f"resnet{_depth}")(_make_factory(f"resnet{_depth}", _blocks, (64, 128, 256, 512)))
