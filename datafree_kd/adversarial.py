"""The PGD core every piece of *training* code shares (adversarial teachers, ARD-style loss terms).

Evaluation attacks live in ``attacks.py``; this module only holds what training loops need:

* :func:`pgd_maximize` — projected gradient *ascent* on any scalar function of the input, inside an
  L∞ or L2 ball around ``x`` intersected with the image box [0, 1] (DESIGN rule 1: images are in
  [0, 1] at every boundary; models normalise inside). Gradients are taken with
  ``torch.autograd.grad`` w.r.t. the input only, so no ``.grad`` is ever written on a parameter.
* :class:`ModelModeGuard` — put a model in a given train/eval mode (and optionally freeze its
  parameters) for the duration of a ``with`` block, then restore every submodule's mode and every
  parameter's ``requires_grad`` flag exactly as they were, even if the block raises.
"""

from __future__ import annotations

from types import TracebackType
from typing import Callable

import torch
from torch import nn

from .errors import ConfigError

NORMS = ("linf", "l2")


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Project ``x_adv`` onto {z : ||z - x||_norm <= eps} ∩ [0, 1]^d (per sample).

    For L∞ the two sets are boxes, so clamping to the ball then to [0, 1] is the exact Euclidean
    projection onto the intersection. For L2 we project onto the ball and then clamp to the box;
    clamping can only move points towards ``x`` (``x`` itself lies in the box), so the result stays
    in the ball. This is the usual PGD-L2 practice, not the exact projection onto the intersection.
    """
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    elif norm == "l2":
        scale = (eps / _per_sample_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * scale
    else:
        raise ConfigError(f"unknown norm {norm!r}; use one of {NORMS}")
    return (x + delta).clamp(0.0, 1.0)


def _random_delta(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """L∞: uniform in the cube; L2: a uniform random direction times radius U(0, 1)·eps."""
    device = generator.device if generator is not None else x.device
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        return (2 * u - 1) * eps
    direction = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    radius = torch.rand(len(x), generator=generator, device=device, dtype=x.dtype).to(x.device)
    direction = direction / _per_sample_norm(direction).clamp_min(1e-12)
    return direction * (radius * eps).view(-1, *([1] * (x.dim() - 1)))


def pgd_maximize(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    random_start: bool = True,
    generator: torch.Generator | None = None,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return ``x_adv`` in the ``eps``-ball around ``x`` (and in [0, 1]) that locally maximises ``loss_fn``.

    ``loss_fn(z)`` must return a scalar; use a *sum* over the batch so each sample's ascent
    direction does not depend on the batch size (it does not matter for L∞ sign steps or normalised
    L2 steps, but keeps the function meaningful). Steps: L∞ ``z += step_size·sign(g)``; L2
    ``z += step_size·g/||g||₂`` per sample; each followed by :func:`project`.

    Start: ``init`` if given (projected; TRADES/RSLAD start from ``x + 0.001·N(0, 1)``), else a
    random point of the ball when ``random_start`` (drawn from ``generator``, or the global RNG
    when it is None), else ``x``. With ``steps=0`` the (projected) start is returned.

    Gradients flow to the input only (``torch.autograd.grad``): parameter ``.grad`` fields are never
    touched. The model's mode is the caller's business (see :class:`ModelModeGuard`). The result is
    detached. Works under an outer ``torch.no_grad()``.
    """
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; use one of {NORMS}")
    if eps < 0 or step_size < 0 or steps < 0:
        raise ConfigError(f"pgd needs eps, step_size, steps >= 0; got {eps}, {step_size}, {steps}")
    x = x.detach()
    if init is not None:
        x_adv = project(init.detach().to(x.dtype), x, eps, norm)
    elif random_start and eps > 0:
        x_adv = project(x + _random_delta(x, eps, norm, generator), x, eps, norm)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(x_adv)
            if loss.dim() != 0:
                raise ValueError(f"pgd_maximize: loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            (grad,) = torch.autograd.grad(loss, [x_adv])
        with torch.no_grad():
            if norm == "linf":
                x_adv = x_adv + step_size * grad.sign()
            else:
                x_adv = x_adv + step_size * grad / _per_sample_norm(grad).clamp_min(1e-12)
            x_adv = project(x_adv, x, eps, norm)
    return x_adv.detach()


class ModelModeGuard:
    """``with ModelModeGuard(model, train=False, requires_grad=False): ...``

    On entry: ``model.train(train)`` unless ``train`` is None, and every parameter's
    ``requires_grad`` set to ``requires_grad`` unless it is None. On exit (also on error): each
    submodule's ``training`` flag and each parameter's ``requires_grad`` flag are restored to their
    values at entry — submodules may have had mixed modes (a frozen BN inside a training model), and
    those are restored individually, not by one ``model.train(old)`` call.
    """

    def __init__(self, model: nn.Module, train: bool | None = None, requires_grad: bool | None = None) -> None:
        self.model = model
        self.train = train
        self.requires_grad = requires_grad
        self._modes: list[tuple[nn.Module, bool]] = []
        self._flags: list[tuple[nn.Parameter, bool]] = []

    def __enter__(self) -> nn.Module:
        self._modes = [(m, m.training) for m in self.model.modules()]
        self._flags = [(p, p.requires_grad) for p in self.model.parameters()]
        if self.train is not None:
            self.model.train(self.train)
        if self.requires_grad is not None:
            for p, _ in self._flags:
                p.requires_grad_(self.requires_grad)
        return self.model

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for module, mode in self._modes:
            module.training = mode
        for p, flag in self._flags:
            p.requires_grad_(flag)
        self._modes, self._flags = [], []


def model_mode(model: nn.Module, train: bool | None = None, requires_grad: bool | None = None) -> ModelModeGuard:
    """Functional spelling of :class:`ModelModeGuard`."""
    return ModelModeGuard(model, train, requires_grad)
