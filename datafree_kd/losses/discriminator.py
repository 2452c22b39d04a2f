"""``discriminator``: adversarial distribution matching between teacher and student outputs.

A small discriminator D learns to tell teacher outputs ("real") from student outputs ("fake");
the student is trained on the generator-side loss, i.e. to make its outputs indistinguishable from
the teacher's (adversarial KD, KDGAN-style; Xu et al., "Training student networks for acceleration
with conditional adversarial networks"). Unlike ``kd`` this matches *distributions*, not
per-sample targets, so it is usually combined with a per-sample term (``kd=1,discriminator=0.1``).

Design choices (why):

* D has its **own Adam optimiser**, created in :meth:`setup` from the first batch (input sizes are
  only known then). ``student_parameters()`` is empty, so the student optimiser never touches D.
  D's weights are a submodule (they are in the term's ``state_dict()``), and its optimiser state is
  exposed through :meth:`optimizer_state_dict` / :meth:`load_optimizer_state_dict`. The number of
  ``adversary_step`` calls (which ``d_every`` depends on) is a buffer, so it resumes exactly too.
  To resume: build the term, call ``setup(batch)``, then load both states.
* **Logits mode** feeds D temperature-softened probabilities by default (``softmax_inputs``): raw
  logits have an unbounded, arbitrary scale (and a free additive constant) that D can exploit to
  separate teacher from student without the student learning anything useful about the teacher's
  predictive distribution; probabilities live on the simplex, where the match is meaningful.
* **Feature mode** (``on="features"`` with ``student_layer`` *and* ``teacher_layer``) requires the two
  layers to have the same number of channels. We deliberately do *not* give D a separate input head
  per side: D would know which side every input came from and could separate them trivially,
  whatever the student does. Use layers of equal width (or put a FitNets-style adapter in the
  student). ``arch="mlp"`` global-average-pools feature maps to vectors; ``arch="conv"`` needs 4-D
  maps and pools the larger map to the smaller spatial size if they differ.
* ``conditional=True`` concatenates a one-hot of ``batch.targets`` (labels, else the teacher's
  argmax) to D's input, for the conv arch as constant channels; the same condition is used for the
  teacher and student sides, so D judges "is this a plausible teacher output *for this class*".
* D uses no batch norm (it would couple the real and fake halves of a batch and break the
  per-sample gradient penalty); LeakyReLU(0.2), optionally spectral norm on every layer.
* All three losses use the decision boundary D(x) = 0 (real > 0): ``lsgan`` uses targets +1 (real)
  and -1 (fake), and +1 for the generator, so ``d_acc`` (threshold at 0) means the same thing for
  every loss.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ..errors import ConfigError
from .base import DistillBatch, LossTerm, register_term

LOSSES = ("nonsaturating", "hinge", "lsgan")
ARCHS = ("mlp", "conv")
MODES = ("logits", "features")


class _MLPDiscriminator(nn.Module):
    """Vector input (+ optional one-hot) -> one real/fake logit."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int, sn: bool) -> None:
        super().__init__()
        wrap = _spectral_norm if sn else (lambda m: m)
        self.net = nn.Sequential(
            wrap(nn.Linear(in_dim + n_classes, hidden)),
            nn.LeakyReLU(0.2),
            wrap(nn.Linear(hidden, hidden)),
            nn.LeakyReLU(0.2),
            wrap(nn.Linear(hidden, 1)),
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if cond is not None:
            x = torch.cat([x, cond], dim=1)
        return self.net(x).squeeze(1)


class _ConvDiscriminator(nn.Module):
    """Feature map (+ optional one-hot as constant channels) -> one real/fake logit.

    Two 3x3 convs (the second strided) and global average pooling, so any spatial size works.
    """

    def __init__(self, in_channels: int, n_classes: int, hidden: int, sn: bool) -> None:
        super().__init__()
        wrap = _spectral_norm if sn else (lambda m: m)
        self.net = nn.Sequential(
            wrap(nn.Conv2d(in_channels + n_classes, hidden, 3, padding=1)),
            nn.LeakyReLU(0.2),
            wrap(nn.Conv2d(hidden, hidden, 3, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = wrap(nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if cond is not None:
            maps = cond[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
            x = torch.cat([x, maps], dim=1)
        return self.head(self.net(x)).squeeze(1)


@register_term("discriminator")
class DiscriminatorLoss(LossTerm):
    """Generator-side adversarial loss; the discriminator trains itself in :meth:`adversary_step`."""

    def __init__(
        self,
        on: str = "logits",
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        arch: str = "mlp",
        hidden: int = 128,
        conditional: bool = False,
        loss: str = "nonsaturating",
        d_steps: int = 1,
        d_every: int = 1,
        lr: float = 2e-4,
        betas: Sequence[float] = (0.5, 0.999),
        spectral_norm: bool = False,
        gradient_penalty: float = 0.0,
        softmax_inputs: bool = True,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if on not in MODES:
            raise ConfigError(f"discriminator: on={on!r} is not one of {', '.join(MODES)}")
        if on == "features" and (not student_layer or not teacher_layer):
            raise ConfigError("discriminator: on='features' needs both student_layer and teacher_layer")
        if on == "logits" and (student_layer or teacher_layer):
            raise ConfigError("discriminator: student_layer/teacher_layer need on='features'")
        if arch not in ARCHS:
            raise ConfigError(f"discriminator: arch={arch!r} is not one of {', '.join(ARCHS)}")
        if arch == "conv" and on == "logits":
            raise ConfigError("discriminator: arch='conv' needs 4-D feature maps (on='features')")
        if loss not in LOSSES:
            raise ConfigError(f"discriminator: loss={loss!r} is not one of {', '.join(LOSSES)}")
        for key, value in (("hidden", hidden), ("d_steps", d_steps), ("d_every", d_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"discriminator: {key} must be a positive integer, got {value!r}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"discriminator: lr must be a positive number, got {lr!r}")
        try:
            beta1, beta2 = (float(b) for b in betas)
        except (TypeError, ValueError):
            raise ConfigError(f"discriminator: betas must be two numbers, got {betas!r}") from None
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ConfigError(f"discriminator: betas must lie in [0, 1), got {betas!r}")
        if not (math.isfinite(gradient_penalty) and gradient_penalty >= 0):
            raise ConfigError(f"discriminator: gradient_penalty must be >= 0, got {gradient_penalty!r}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"discriminator: temperature must be > 0, got {temperature!r}")

        self.on = on
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer
        if on == "features":
            self.student_layers = (student_layer,)  # type: ignore[assignment]
            self.teacher_layers = (teacher_layer,)  # type: ignore[assignment]
        self.arch = arch
        self.hidden = hidden
        self.conditional = bool(conditional)
        self.loss = loss
        self.d_steps = d_steps
        self.d_every = d_every
        self.lr = float(lr)
        self.betas = (beta1, beta2)
        self.spectral_norm = bool(spectral_norm)
        self.gradient_penalty = float(gradient_penalty)
        self.softmax_inputs = bool(softmax_inputs)
        self.temperature = float(temperature)

        self.discriminator: nn.Module | None = None
        self.optimizer: torch.optim.Adam | None = None
        self.n_classes = 0
        # Counts adversary_step calls (d_every depends on it); a buffer so checkpoints carry it.
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ building

    def setup(self, batch: DistillBatch) -> None:
        """Build D and its optimiser from the first batch's shapes; a second call is a no-op."""
        if self.discriminator is not None:
            return
        n_classes = batch.teacher_logits.shape[1]
        teacher, student = self._inputs(batch)
        if self.arch == "conv" and teacher.dim() != 4:
            raise ConfigError(
                f"discriminator: arch='conv' needs 4-D feature maps, layer {self.teacher_layer!r} "
                f"gives shape {tuple(teacher.shape)}"
            )
        if teacher.shape[1:] != student.shape[1:]:
            raise ConfigError(
                f"discriminator: teacher input {tuple(teacher.shape[1:])} and student input "
                f"{tuple(student.shape[1:])} differ; D must see both sides through the same input "
                "(choose layers of equal width)"
            )
        self.n_classes = n_classes
        cond_dim = n_classes if self.conditional else 0
        if self.arch == "mlp":
            d: nn.Module = _MLPDiscriminator(teacher.shape[1], cond_dim, self.hidden, self.spectral_norm)
        else:
            d = _ConvDiscriminator(teacher.shape[1], cond_dim, self.hidden, self.spectral_norm)
        self.discriminator = d.to(device=batch.teacher_logits.device)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas)

    def _inputs(self, batch: DistillBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(teacher, student) as D sees them: softened probabilities, pooled vectors or maps."""
        if self.on == "logits":
            teacher, student = batch.teacher_logits, batch.student_logits
            if teacher.shape[1:] != student.shape[1:]:
                raise ConfigError(
                    f"discriminator: teacher logits {tuple(teacher.shape)} and student logits "
                    f"{tuple(student.shape)} differ in the number of classes"
                )
            if self.softmax_inputs:
                # Scaled by the class count so entries are O(1) (uniform -> all ones), as a
                # Lipschitz-bounded D (spectral norm, gradient penalty) needs input distances of
                # order one to reach its margins.
                scale = teacher.shape[1]
                teacher = F.softmax(teacher / self.temperature, dim=1) * scale
                student = F.softmax(student / self.temperature, dim=1) * scale
            return teacher, student
        try:
            teacher = batch.teacher_features[self.teacher_layer]  # type: ignore[index]
            student = batch.student_features[self.student_layer]  # type: ignore[index]
        except KeyError as exc:
            raise ConfigError(f"discriminator: the batch has no features for layer {exc.args[0]!r}") from None
        if self.arch == "mlp":
            teacher, student = _to_vector(teacher), _to_vector(student)
        elif teacher.dim() == 4 and student.dim() == 4 and teacher.shape[2:] != student.shape[2:]:
            size = (min(teacher.shape[2], student.shape[2]), min(teacher.shape[3], student.shape[3]))
            teacher = F.adaptive_avg_pool2d(teacher, size)
            student = F.adaptive_avg_pool2d(student, size)
        return teacher, student

    def _condition(self, batch: DistillBatch) -> torch.Tensor | None:
        if not self.conditional:
            return None
        return F.one_hot(batch.targets.long(), self.n_classes).float()

    def _d(self) -> nn.Module:
        if self.discriminator is None:
            raise RuntimeError("discriminator term: call setup(batch) first")
        return self.discriminator

    def _d_params(self) -> Iterator[nn.Parameter]:
        return self._d().parameters()

    # ------------------------------------------------------------------ losses

    def _d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Discriminator loss on its outputs for teacher (real) and student (fake) inputs."""
        if self.loss == "nonsaturating":
            return F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + \
                F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        if self.loss == "hinge":
            return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
        return ((real - 1.0) ** 2).mean() + ((fake + 1.0) ** 2).mean()  # lsgan, targets +1 / -1

    def _g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Generator-side loss: the student wants D to call its outputs real."""
        if self.loss == "nonsaturating":
            return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
        if self.loss == "hinge":
            return -fake.mean()
        return ((fake - 1.0) ** 2).mean()

    def _penalty(self, d: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                 cond: torch.Tensor | None) -> torch.Tensor:
        """WGAN-GP: (||grad_x D(x_hat)|| - 1)^2 on random interpolates of teacher and student inputs."""
        alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
        mixed = (alpha * real + (1.0 - alpha) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(d(mixed, cond).sum(), mixed, create_graph=True)
        return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()

    # ------------------------------------------------------------------ adversary

    def adversary_step(self, batch: DistillBatch) -> dict[str, float]:
        """Train D for ``d_steps`` on detached inputs (every ``d_every``-th call); log loss and accuracy.

        ``d_loss`` is the adversarial loss without the penalty (the penalty is logged as ``d_gp`` on
        updating calls); ``d_loss`` and ``d_acc`` describe D's last forward on this batch (before that
        step's update; on skipped calls, a no-grad forward of the current D). Gradients are taken
        with ``autograd.grad`` w.r.t. D's parameters only, so nothing outside D gets a ``.grad``.
        """
        if self.discriminator is None:
            self.setup(batch)
        d, opt = self._d(), self.optimizer
        assert opt is not None
        update = int(self.calls) % self.d_every == 0
        self.calls += 1
        with torch.no_grad():
            teacher, student = self._inputs(batch)
        dtype = next(d.parameters()).dtype
        teacher, student = teacher.detach().to(dtype), student.detach().to(dtype)
        cond = self._condition(batch)
        n = teacher.shape[0]
        params = list(d.parameters())
        was_training = d.training
        flags = [p.requires_grad for p in params]
        logs: dict[str, float] = {}
        try:
            if not update:
                d.eval()
                with torch.no_grad():
                    out = d(torch.cat([teacher, student]), None if cond is None else torch.cat([cond, cond]))
                    real, fake = out[:n], out[n:]
                    return {"d_loss": self._d_loss(real, fake).item(), "d_acc": _accuracy(real, fake)}
            d.train()
            for p in params:
                p.requires_grad_(True)
            with torch.enable_grad():
                for _ in range(self.d_steps):
                    opt.zero_grad(set_to_none=True)
                    out = d(torch.cat([teacher, student]), None if cond is None else torch.cat([cond, cond]))
                    real, fake = out[:n], out[n:]
                    adv = self._d_loss(real, fake)
                    total = adv
                    if self.gradient_penalty > 0:
                        gp = self._penalty(d, teacher, student, cond)
                        total = adv + self.gradient_penalty * gp
                        logs["d_gp"] = gp.item()
                    grads = torch.autograd.grad(total, params, allow_unused=True)
                    for p, g in zip(params, grads):
                        p.grad = g
                    opt.step()
                    self.updates += 1
                    logs["d_loss"] = adv.item()
                    logs["d_acc"] = _accuracy(real.detach(), fake.detach())
            opt.zero_grad(set_to_none=True)
            return logs
        finally:
            d.train(was_training)
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)

    # ------------------------------------------------------------------ student side

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        """Generator-side loss; D is frozen (eval, no param grads) so gradients reach the student only."""
        if self.discriminator is None:
            self.setup(batch)
        d = self._d()
        _, student = self._inputs(batch)
        student = student.to(next(d.parameters()).dtype)
        params = list(d.parameters())
        flags = [p.requires_grad for p in params]
        was_training = d.training
        try:
            # Params left out of the graph now stay out of it at backward time, even after we
            # re-enable them below; eval() stops spectral norm's power iteration from moving.
            for p in params:
                p.requires_grad_(False)
            d.eval()
            return self._g_loss(d(student, self._condition(batch)))
        finally:
            d.train(was_training)
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)

    def student_parameters(self) -> list[nn.Parameter]:
        """None: D is trained by its own optimiser, never by the student's."""
        return []

    # ------------------------------------------------------------------ checkpoints

    def optimizer_state_dict(self) -> dict[str, Any]:
        """D's Adam state (moments, step counts), for exact resume."""
        if self.optimizer is None:
            raise RuntimeError("discriminator term: call setup(batch) first")
        return self.optimizer.state_dict()

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        if self.optimizer is None:
            raise RuntimeError("discriminator term: call setup(batch) before loading optimiser state")
        self.optimizer.load_state_dict(state)

    def hparams(self) -> dict[str, Any]:
        hp: dict[str, Any] = {"on": self.on}
        if self.on == "features":
            hp.update(student_layer=self.student_layer, teacher_layer=self.teacher_layer)
        elif self.softmax_inputs:
            hp["T"] = self.temperature
        else:
            hp["softmax_inputs"] = False
        hp.update(arch=self.arch, hidden=self.hidden, loss=self.loss, lr=self.lr)
        if self.conditional:
            hp["conditional"] = True
        if self.d_steps != 1:
            hp["d_steps"] = self.d_steps
        if self.d_every != 1:
            hp["d_every"] = self.d_every
        if self.spectral_norm:
            hp["spectral_norm"] = True
        if self.gradient_penalty:
            hp["gp"] = self.gradient_penalty
        return hp


def _to_vector(x: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) -> (N, C) by global average pooling; vectors pass through."""
    return x.flatten(2).mean(2) if x.dim() > 2 else x


def _accuracy(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fraction classified correctly at the 0 threshold: teacher real (> 0), student fake (<= 0)."""
    correct = (real > 0).sum() + (fake <= 0).sum()
    return correct.item() / (real.numel() + fake.numel())
