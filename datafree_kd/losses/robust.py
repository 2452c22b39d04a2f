"""Robustness-transfer terms: the student is attacked inside ``forward`` and distilled on the attack.

Each term reads ``batch.student_model`` (and, for ``iad``, ``batch.teacher_model``), which the
Distiller fills; a hand-built batch without them is refused with a RuntimeError. The attack is
:func:`datafree_kd.adversarial.pgd_maximize` — gradients w.r.t. the input only, the student's
parameters frozen and its mode set to ``inner_mode`` during the attack, then every module's mode and
every ``requires_grad`` flag restored. The teacher is never differentiated: its clean logits are
taken from the batch and detached, and ``iad`` runs it on x' under ``no_grad``. The returned scalar
carries gradient to the student's parameters (through student(x') and ``batch.student_logits``).

Conventions shared by the three terms
-------------------------------------
* KL(p ‖ q) = Σ_c p_c (log p_c − log q_c), summed over classes and averaged over the batch
  ("batchmean"), like ``kd``. The reference implementations of ARD and RSLAD average over batch
  *and* classes (``nn.KLDivLoss()``'s default ``mean`` reduction; RSLAD's ``torch.mean`` of the
  element-wise KL), so their loss is 1/C of ours (C = number of classes); weight a term by 1/C to
  reproduce their scale. IAD's reference code already uses batchmean.
* ``eps`` is in [0, 1] pixel units. Terms do not know the dataset, so the default is 0.1 — the
  usual L∞ budget for Fashion-MNIST, the suite's main dataset. Give ``eps`` explicitly elsewhere:
  0.3 for MNIST, 8/255 for CIFAR/SVHN (``term_options: {ard: {eps: 0.0313725}}``).
* ``step_size`` None means 2.5·eps/steps, which for eps = 8/255 and 10 steps is exactly the
  2/255 all three reference codes use. ``steps`` defaults to their 10.
* Inner losses are sums over the batch (per-example ascent directions independent of batch size);
  with the L∞ sign step this is equivalent to the references' sums/means.
* ``batch.targets`` is ground truth on real data and the teacher's argmax on synthetic data, so
  the label-based pieces (ARD's CE attack and clean CE, IAD's trust) work data-free.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..adversarial import NORMS, ModelModeGuard, pgd_maximize
from ..errors import ConfigError
from .base import DistillBatch, LossTerm, register_term

INNER_LOSSES = ("ce", "kl")


def _full(t: torch.Tensor) -> torch.Tensor:
    """Half-precision (autocast) outputs to float32; float32/float64 stay as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
INNER_MODES = ("train", "eval")


def _kl_batchmean(p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(p/T) ‖ softmax(q/T)), summed over classes, mean over the batch."""
    log_p = F.log_softmax(p_logits / temperature, dim=1)
    log_q = F.log_softmax(q_logits / temperature, dim=1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


def _kl_per_sample(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) ‖ softmax(q)) per sample (shape B)."""
    log_p = F.log_softmax(p_logits, dim=1)
    log_q = F.log_softmax(q_logits, dim=1)
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(1)


class _AttackingTerm(LossTerm):
    """Shared options and the inner maximisation of the robust terms."""

    default_inner_mode = "train"

    def __init__(self, eps: float = 0.1, steps: int = 10, step_size: float | None = None, norm: str = "linf",
                 random_start: bool = True, inner_mode: str | None = None) -> None:
        super().__init__()
        inner_mode = self.default_inner_mode if inner_mode is None else inner_mode
        if not eps >= 0:
            raise ConfigError(f"{self.name}: eps must be >= 0 (in [0, 1] pixel units), got {eps}")
        if int(steps) != steps or steps < 0:
            raise ConfigError(f"{self.name}: steps must be an integer >= 0, got {steps}")
        if step_size is not None and not step_size >= 0:
            raise ConfigError(f"{self.name}: step_size must be >= 0, got {step_size}")
        if norm not in NORMS:
            raise ConfigError(f"{self.name}: norm must be one of {NORMS}, got {norm!r}")
        if inner_mode not in INNER_MODES:
            raise ConfigError(f"{self.name}: inner_mode must be one of {INNER_MODES}, got {inner_mode!r}")
        self.eps = float(eps)
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else (2.5 * self.eps / self.steps if self.steps else 0.0)
        self.norm = norm
        self.random_start = bool(random_start)
        self.inner_mode = inner_mode

    def _student(self, batch: DistillBatch) -> nn.Module:
        if batch.student_model is None:
            raise RuntimeError(
                f"loss term {self.name!r} attacks the student inside forward and needs DistillBatch.student_model; "
                "the Distiller supplies it (a hand-built batch must pass student_model=...)")
        return batch.student_model

    def _teacher(self, batch: DistillBatch) -> Callable[[torch.Tensor], torch.Tensor]:
        if batch.teacher_model is None:
            raise RuntimeError(
                f"loss term {self.name!r} runs the teacher on adversarial inputs and needs DistillBatch.teacher_model; "
                "the Distiller supplies it (a hand-built batch must pass teacher_model=...)")
        return batch.teacher_model

    def _start(self, x: torch.Tensor) -> torch.Tensor | None:
        """Start of the attack; None lets pgd_maximize draw a uniform point of the ball (or use x)."""
        return None

    def attack(self, student: nn.Module, x: torch.Tensor,
               inner: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """x' maximising ``inner(student(x'))`` with the student in ``inner_mode`` and frozen."""
        return self.search(student, x, lambda z: inner(_full(student(z))))

    def search(self, student: nn.Module, x: torch.Tensor,
               objective: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """x' in the term's ball maximising any scalar ``objective(x')`` (which may also run the
        teacher), with the student in ``inner_mode`` and frozen meanwhile."""
        init = self._start(x) if self.random_start else None
        with ModelModeGuard(student, train=self.inner_mode == "train", requires_grad=False):
            return pgd_maximize(objective, x, self.eps, self.step_size, self.steps,
                                norm=self.norm, random_start=self.random_start, init=init)

    def attack_hparams(self) -> dict[str, Any]:
        return {"eps": self.eps, "steps": self.steps, "step_size": self.step_size, "norm": self.norm,
                "random_start": self.random_start, "inner_mode": self.inner_mode}


def _check_unit(name: str, option: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}: {option} must be in [0, 1], got {value}")
    return float(value)


def _check_temperature(name: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(f"{name}: temperature must be > 0, got {value}")
    return float(value)


@register_term("ard")
class ARDLoss(_AttackingTerm):
    """Adversarially Robust Distillation (Goldblum et al., AAAI 2020).

        loss = α·T²·KL(softmax(t(x)/T) ‖ softmax(s(x')/T)) + (1 − α)·CE(s(x), y)

    with t(x) the teacher's clean logits (``batch.teacher_logits``), s(x) the student's clean logits
    (``batch.student_logits``; only computed into the loss when α < 1), y = ``batch.targets``, and
    x' = PGD on the student from a uniform random start in the eps-ball:

    * ``inner_loss="ce"`` (default): x' maximises CE(s(x'), y). This is what the official code
      (goldblum/AdversariallyRobustDistillation, ``AttackPGD``) does — a label-based attack on the
      student, *not* a KL against the teacher.
    * ``inner_loss="kl"``: x' maximises KL(softmax(t(x)) ‖ softmax(s(x'))) at T = 1 (the RSLAD-style
      teacher-anchored attack; in PyTorch terms ``kl_div(log_softmax(s(x')), softmax(t(x)))``).

    ``inner_mode="train"`` (default) attacks the student in train mode as the official code does
    (``net.train()`` wraps the attack, so BN statistics also see the attack's forward passes); use
    ``"eval"`` for the TRADES/RSLAD practice. Defaults α = 1 and T = 30 are the official code's
    ``--alpha``/``--temp`` defaults (its CIFAR-10 setting); eps/steps/step size as in the module
    docstring (the code's 8/255, 10, 2/255 on CIFAR). Reduction: batchmean, where the official
    ``nn.KLDivLoss()`` also divides by the number of classes C (so ours is C times larger; with
    T = 30 and lr tuned for the original, consider weight 1/C or gradient clipping).
    """

    default_inner_mode = "train"

    def __init__(self, eps: float = 0.1, steps: int = 10, step_size: float | None = None, norm: str = "linf",
                 random_start: bool = True, inner_loss: str = "ce", inner_mode: str | None = None,
                 alpha: float = 1.0, temperature: float = 30.0) -> None:
        super().__init__(eps, steps, step_size, norm, random_start, inner_mode)
        if inner_loss not in INNER_LOSSES:
            raise ConfigError(f"{self.name}: inner_loss must be one of {INNER_LOSSES}, got {inner_loss!r}")
        self.inner_loss = inner_loss
        self.alpha = _check_unit(self.name, "alpha", alpha)
        self.temperature = _check_temperature(self.name, temperature)

    def _inner(self, batch: DistillBatch, teacher_logits: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.inner_loss == "ce":
            targets = batch.targets.detach()
            return lambda logits: F.cross_entropy(logits, targets, reduction="sum")
        log_p_t = F.log_softmax(teacher_logits, dim=1)
        return lambda logits: F.kl_div(F.log_softmax(logits, dim=1), log_p_t, reduction="sum", log_target=True)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        student = self._student(batch)
        teacher_logits = _full(batch.teacher_logits.detach())
        x_adv = self.attack(student, batch.inputs, self._inner(batch, teacher_logits))
        s_adv = _full(student(x_adv))
        t = self.temperature
        loss = self.alpha * t * t * _kl_batchmean(teacher_logits, s_adv, t)
        if self.alpha < 1.0:
            loss = loss + (1.0 - self.alpha) * F.cross_entropy(batch.student_logits, batch.targets)
        return loss

    def hparams(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "temperature": self.temperature, "inner_loss": self.inner_loss,
                **self.attack_hparams()}


@register_term("rslad")
class RSLADLoss(_AttackingTerm):
    """Robust Soft Label Adversarial Distillation (Zi et al., ICCV 2021): the teacher's clean soft
    labels replace hard labels everywhere.

        loss = w·T²·KL(softmax(t(x)/T) ‖ softmax(s(x')/T)) + (1 − w)·T²·KL(softmax(t(x)/T) ‖ softmax(s(x)/T))

    with ``adv_weight`` w = 5/6 and T = 1 — the official script's ``5/6.0*kl_Loss1 + 1/6.0*kl_Loss2``
    (zibojia/RSLAD, ``resnet18_rslad_cifar10.py``); T is an extension (T² keeps the scale, T = 1 is
    the paper). x' maximises KL(softmax(t(x)) ‖ softmax(s(x'))) (summed) with the student in eval
    mode (``inner_mode="eval"``, as ``rslad_inner_loss``), starting from x + 0.001·N(0, 1) (projected
    at once; ``random_start=False`` starts from x). s(x) is ``batch.student_logits`` (train mode in
    the Distiller, as the official code's ``nat_logits``).

    Differences from the official code: batchmean instead of its mean over batch × classes (1/C of
    ours; its README multiplies by 10 on CIFAR-100 to compensate), and exact log-probabilities instead
    of its ``log(p + 1e-5)``.
    """

    default_inner_mode = "eval"

    def __init__(self, eps: float = 0.1, steps: int = 10, step_size: float | None = None, norm: str = "linf",
                 random_start: bool = True, inner_mode: str | None = None, adv_weight: float = 5.0 / 6.0,
                 temperature: float = 1.0) -> None:
        super().__init__(eps, steps, step_size, norm, random_start, inner_mode)
        self.adv_weight = _check_unit("rslad", "adv_weight", adv_weight)
        self.temperature = _check_temperature("rslad", temperature)

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.001 * torch.randn_like(x)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        student = self._student(batch)
        teacher_logits = _full(batch.teacher_logits.detach())
        log_p_t = F.log_softmax(teacher_logits, dim=1)
        x_adv = self.attack(student, batch.inputs,
                            lambda logits: F.kl_div(F.log_softmax(logits, dim=1), log_p_t, reduction="sum",
                                                    log_target=True))
        s_adv = _full(student(x_adv))
        t = self.temperature
        loss = self.adv_weight * t * t * _kl_batchmean(teacher_logits, s_adv, t)
        if self.adv_weight < 1.0:
            loss = loss + (1.0 - self.adv_weight) * t * t * _kl_batchmean(teacher_logits, batch.student_logits, t)
        return loss

    def hparams(self) -> dict[str, Any]:
        return {"adv_weight": round(self.adv_weight, 6), "temperature": self.temperature, **self.attack_hparams()}


@register_term("iad")
class IADLoss(ARDLoss):
    """Introspective Adversarial Distillation, IAD-I (Zhu et al., ICLR 2022, "Reliable Adversarial
    Distillation with Unreliable Teachers"): ARD, plus student introspection where the teacher is
    not trusted on the attack.

        a_i   = softmax(t(x'_i))[y_i] ^ β                       (trust; no gradient)
        loss  = α·T²·KL(softmax(t(x)/T) ‖ softmax(s(x')/T))
              + γ·(1/B)·Σ_i (1 − a_i)·KL(softmax(s(x_i)) ‖ softmax(s(x'_i)))
              + (1 − α)·CE(s(x), y)

    x' is ARD's attack (``inner_loss``/``inner_mode`` as ``ard``: CE on y, train mode, uniform
    start). The teacher term is *not* down-weighted by a_i: only the introspection term is gated,
    by 1 − a_i — this follows the official IAD-I script (where γ is its ``--alpha``). Defaults
    α = 1, T = 1, β = 0.1 are that script's; γ None means γ = α as there. The introspection target
    s(x) is ``batch.student_logits`` and, as in that script, is not detached.

    Simplified relative to the paper/code:
    * the script runs plain ARD for the first ``--begin`` = 60 of 200 epochs; a loss term does not
      know epochs, so ``warmup_steps`` counts this term's forward calls instead (default 0: the
      introspection is on from the start; ~30 % of the run's steps reproduces the schedule). The
      counter is a buffer, so it is saved and resumed with the objective;
    * only IAD-I (the ARD-based variant) is provided, not IAD-II (built on AKD);
    * with synthetic data y is the teacher's clean argmax, so a_i is the teacher's probability, at
      x', of its own clean prediction.
    """

    default_inner_mode = "train"

    def __init__(self, eps: float = 0.1, steps: int = 10, step_size: float | None = None, norm: str = "linf",
                 random_start: bool = True, inner_loss: str = "ce", inner_mode: str | None = None,
                 alpha: float = 1.0, temperature: float = 1.0, beta: float = 0.1, gamma: float | None = None,
                 warmup_steps: int = 0) -> None:
        super().__init__(eps, steps, step_size, norm, random_start, inner_loss, inner_mode, alpha, temperature)
        if not beta >= 0:
            raise ConfigError(f"iad: beta must be >= 0, got {beta}")
        if gamma is not None and not gamma >= 0:
            raise ConfigError(f"iad: gamma must be >= 0, got {gamma}")
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ConfigError(f"iad: warmup_steps must be an integer >= 0, got {warmup_steps}")
        self.beta = float(beta)
        self.gamma = float(gamma) if gamma is not None else self.alpha
        self.warmup_steps = int(warmup_steps)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        student = self._student(batch)
        teacher = self._teacher(batch)
        teacher_logits = _full(batch.teacher_logits.detach())
        targets = batch.targets.detach()
        x_adv = self.attack(student, batch.inputs, self._inner(batch, teacher_logits))
        s_adv = _full(student(x_adv))
        t = self.temperature
        loss = self.alpha * t * t * _kl_batchmean(teacher_logits, s_adv, t)
        introspect = int(self.calls) >= self.warmup_steps and self.gamma > 0
        self.calls += 1
        if introspect:
            with torch.no_grad():
                p_t_adv = F.softmax(_full(teacher(x_adv)), dim=1)
                trust = p_t_adv.gather(1, targets.view(-1, 1)).squeeze(1).pow(self.beta)
            per_sample = _kl_per_sample(batch.student_logits, s_adv)
            loss = loss + self.gamma * ((1.0 - trust) * per_sample).mean()
        if self.alpha < 1.0:
            loss = loss + (1.0 - self.alpha) * F.cross_entropy(batch.student_logits, targets)
        return loss

    def hparams(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "temperature": self.temperature, "beta": self.beta, "gamma": self.gamma,
                "warmup_steps": self.warmup_steps, "inner_loss": self.inner_loss, **self.attack_hparams()}
