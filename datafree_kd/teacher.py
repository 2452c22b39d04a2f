"""Frozen teachers (DESIGN rule 2): eval mode, no parameter gradients, input gradients still flow."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from .checkpoint import LoadedModel, load_model
from .data.info import DatasetInfo


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode and stop gradients to its parameters (not to its inputs)."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
        parameter.grad = None  # stale gradients from training would be mistaken for leaks
    return model


def is_frozen(model: nn.Module) -> bool:
    return not model.training and not any(p.requires_grad for p in model.parameters())


def load_teacher(
    path: str | os.PathLike,
    arch: str | None = None,
    info: DatasetInfo | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    torchscript: bool = False,
) -> LoadedModel:
    """Load any supported checkpoint (ours, a plain state_dict + ``arch``, TorchScript) frozen.

    The result is callable like the model; ``.model`` is the frozen module, ``.info`` its data
    description and ``.fingerprint`` the weight hash that transfer sets and students record.
    A TorchScript file is loaded only when asked for (``torchscript=True`` or a path spelt
    ``torchscript:FILE``, see :func:`~datafree_kd.checkpoint.load_model`).
    """
    loaded = load_model(path, arch=arch, info=info, arch_kwargs=arch_kwargs, torchscript=torchscript)
    freeze(loaded.model)
    return loaded
