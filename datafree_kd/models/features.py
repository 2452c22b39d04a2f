"""Forward-hook feature taps, so hint/attention losses and BN-matching read intermediate layers."""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import ConfigError
from ..hooks import HookOwner


def feature_names(model: nn.Module) -> list[str]:
    """Module paths that can be tapped (e.g. ``net.layer1``), excluding the root and ``normalize``."""
    return [
        name
        for name, _ in model.named_modules()
        if name and name != "normalize" and not name.startswith("normalize.")
    ]


class FeatureExtractor(HookOwner):
    """Record the outputs of named submodules during a forward pass, keeping their autograd graphs.

    Use as a context manager (hooks are removed on exit) or call :meth:`remove` yourself.
    ``extractor(x)`` returns ``(logits, {name: output})``. A module called more than once per
    forward (e.g. a shared ReLU) reports its last output.
    """

    def __init__(self, model: nn.Module, names: Iterable[str], forward: nn.Module | None = None) -> None:
        self.model = model
        self.forward = forward if forward is not None else model  # e.g. a DDP wrapper of model
        self.names = list(names)
        modules = dict(model.named_modules())
        valid = feature_names(model)
        for name in self.names:
            if name not in valid:
                close = difflib.get_close_matches(name, valid, n=5)
                hint = f"; did you mean {', '.join(close)}?" if close else f"; e.g. {', '.join(valid[:5])}"
                raise ConfigError(f"unknown feature layer {name!r}{hint}")
        self._features: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = [
            modules[name].register_forward_hook(self._make_hook(name)) for name in self.names
        ]

    def _make_hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self._features[name] = output  # no detach: features feed losses

        return hook

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self._handles and self.names:
            raise RuntimeError("FeatureExtractor hooks were removed; create a new one")
        self._features = {}
        try:
            logits = self.forward(x)
            features = {name: self._features[name] for name in self.names if name in self._features}
        finally:
            self._features = {}  # drop references so graphs are not kept alive between calls
        missing = [name for name in self.names if name not in features]
        if missing:
            raise RuntimeError(f"layers not run during forward: {', '.join(missing)}")
        return logits, features

    def __repr__(self) -> str:
        state = "active" if self._handles else "removed"
        return f"FeatureExtractor({type(self.model).__name__}, {self.names}, {state})"
