"""LeNet-5 family: the small MNIST-scale teachers/students used by DAFL and its successors."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from .registry import register_model


class LeNet5(nn.Module):
    """LeNet-5 with configurable widths, so the full, half-width and BN variants share one body.

    ``widths`` is ``(conv1, conv2, fc1, fc2)``. The flattened size is computed from ``image_size``
    so the same class serves 28 px (MNIST-like) and 32 px (CIFAR-like) inputs.
    """

    #: every parametrised layer feeds the next (no skips), so a narrower LeNet-5 can be sliced from
    #: a wider one (``student_init=teacher``, :mod:`datafree_kd.models.slicing`)
    is_chain = True

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 32,
        widths: Sequence[int] = (6, 16, 120, 84),
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        c1, c2, f1, f2 = widths

        def conv(cin: int, cout: int, padding: int) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 5, padding=padding, bias=not batchnorm)]
            if batchnorm:
                layers.append(nn.BatchNorm2d(cout))
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            return layers

        def fc(cin: int, cout: int) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Linear(cin, cout, bias=not batchnorm)]
            if batchnorm:
                layers.append(nn.BatchNorm1d(cout))
            layers.append(nn.ReLU())
            return layers

        self.features = nn.Sequential(*conv(in_channels, c1, 2), *conv(c1, c2, 0))
        side = ((image_size // 2) - 4) // 2  # conv1 keeps size (padding 2), conv2 shrinks by 4
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for LeNet-5 (needs >= 12)")
        self.flat_features = c2 * side * side
        self.classifier = nn.Sequential(*fc(self.flat_features, f1), *fc(f1, f2))
        self.fc = nn.Linear(f2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.classifier(torch.flatten(x, 1))
        return self.fc(x)


_VARIANTS: dict[str, dict[str, Any]] = {
    "lenet5": {"widths": (6, 16, 120, 84), "batchnorm": False},
    "lenet5_half": {"widths": (3, 8, 60, 42), "batchnorm": False},
    "lenet5_bn": {"widths": (6, 16, 120, 84), "batchnorm": True},
}


def _make_factory(name: str, spec: dict[str, Any]) -> Callable[..., nn.Module]:
    def factory(num_classes: int, in_channels: int, image_size: int, **kwargs: Any) -> nn.Module:
        return LeNet5(num_classes, in_channels, image_size, **{**spec, **kwargs})

    factory.__name__ = name
    factory.__doc__ = f"LeNet-5 variant {name!r}: widths {spec['widths']}, batchnorm={spec['batchnorm']}."
    return factory


for _name, _spec in _VARIANTS.items():
    register_model(_name)(_make_factory(_name, _spec))
