"""Exploration KD: distil on points next to each batch image where student and teacher disagree most.

A synthetic transfer set covers the input space only where its generator put images. This term
stretches it without new synthesis: around each batch image x it looks for x' (in an eps-ball,
inside [0, 1]) that maximises the disagreement KL(t(x') ‖ s(x')) — the gradient goes through
*both* networks, w.r.t. the input only — and then distils the student on x' with the teacher's
own soft labels *at x'*:

    loss = T²·KL(softmax(t(x')/T) ‖ softmax(s(x')/T))

It is the idea behind boundary-supporting samples (Heo et al., "Knowledge Distillation with
Adversarial Samples Supporting Decision Boundary", AAAI 2019) and the pixel-space version of the
disagreement search that DFAD and ZSKT do with a generator. Unlike ``ard``/``rslad`` the target
is the teacher's answer at x', not at x, so it teaches the teacher's function near the batch
rather than invariance to the perturbation. Combine it with ``kd`` on the clean batch
(``--objective kd=1,explore=1``).

With ``steps=0`` there is no search: x' is a uniform random point of the ball (a random
neighbour of each image, relabelled by the teacher). That costs no backward pass through the
teacher, and it is the variant the data-free study adopts (README: "random neighbours").

Cost per step: ``steps`` forward+backward passes through teacher and student for the search, plus
one teacher forward and one student forward+backward on x'. Defaults: eps 0.1, one step from a
uniform random start (step size 2.5·eps, i.e. an FGSM-like jump to the ball's surface), T = 4
(the suite's ``kd`` default); the student is searched in eval mode.

``fraction`` (default 1) explores only the first ``ceil(fraction · B)`` images of the batch (a
random subset: batches are shuffled): the term's teacher and student passes shrink with it, for a
teacher so large that a second full pass per step does not fit the CPU budget
(``results/wrn-pair/``, rule R13).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import DistillBatch, register_term
from .robust import _AttackingTerm, _check_temperature, _full, _kl_batchmean


@register_term("explore")
class ExplorationKDLoss(_AttackingTerm):
    """T²·KL(t(x')/T ‖ s(x')/T) with x' = argmax over the eps-ball of KL(t(x') ‖ s(x')) (see module)."""

    default_inner_mode = "eval"

    def __init__(self, eps: float = 0.1, steps: int = 1, step_size: float | None = None, norm: str = "linf",
                 random_start: bool = True, inner_mode: str | None = None, temperature: float = 4.0,
                 fraction: float = 1.0) -> None:
        super().__init__(eps, steps, step_size, norm, random_start, inner_mode)
        self.temperature = _check_temperature(self.name, temperature)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ConfigError(f"{self.name}: fraction (of the batch explored) must be in (0, 1], got {fraction!r}")
        self.fraction = float(fraction)

    @property
    def teacher_gradients(self) -> bool:  # type: ignore[override]
        return self.steps > 0  # the disagreement search backpropagates through the teacher

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        student = self._student(batch)
        teacher = self._teacher(batch)

        def disagreement(z: torch.Tensor) -> torch.Tensor:
            log_t = F.log_softmax(_full(teacher(z)), dim=1)
            log_s = F.log_softmax(_full(student(z)), dim=1)
            return F.kl_div(log_s, log_t, reduction="sum", log_target=True)

        inputs = batch.inputs[:math.ceil(self.fraction * len(batch.inputs))]
        x_explored = self.search(student, inputs, disagreement)
        with torch.no_grad():
            t_explored = _full(teacher(x_explored))
        t = self.temperature
        return t * t * _kl_batchmean(t_explored, _full(student(x_explored)), t)

    def hparams(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "fraction": self.fraction, **self.attack_hparams()}
