"""Fast-DFKD: a meta-learned generator that needs only a few steps per synthetic batch.

Fang et al., "Up to 100x Faster Data-free Knowledge Distillation", AAAI 2022 (official code:
zju-vipa/Fast-Datafree, ``datafree/synthesis/fast_meta.py``).

**Why this method for a CPU.** DeepInversion optimises every batch from noise for thousands of
iterations (100 here, 2k in the paper), and nothing learned for one batch helps the next. Fast-DFKD
observes that batches share most of their structure ("common features"), so it keeps a generator
whose weights are a *meta-initialisation*: each synthesis round clones it, adapts the clone and a
fresh set of latent codes with only ``inner_steps`` (5) Adam steps on the same inversion loss,
and then moves the shared initialisation towards the adapted weights. Later rounds therefore
start close to a good solution. Per batch that is 5 generator+teacher steps instead of 100+
pixel steps. Measured on this suite's 2-core CPU machine (1 thread, shared with other jobs;
Fashion-MNIST ``lenet5_bn`` teacher, batch 128 at 28 px): ~1.0 s per batch after a ~53 s ``fit``
(50 rounds), against ~3 s per batch for ``deepinversion`` at its 100 iterations; in a small proxy
(1024 images, a ``lenet5_half`` student distilled 300 steps) the students reached 0.59-0.64 test
accuracy from ``fast`` images against 0.53 from ``deepinversion`` images (3 seeds each; noise
images: 0.10). With meta updates switched off (``meta_lr=0``) the loss after the inner steps
stays flat over rounds; with ``meta_lr=0.5`` it halves within a dozen rounds (see the tests).

**Round.** With a clone ``G'`` of the meta generator ``G`` and ``z ~ N(0, I)`` (learnable):

    loss = ce_weight * CE(t(aug(G'(z))), y) + bn_weight * R_BN + adv_weight * L_adv

(plus DeepInversion's TV/L2 image priors when ``tv_l1``, ``tv_l2`` or ``l2`` is set; all 0 by
default, as in the official code) minimised for ``inner_steps`` steps of one Adam over ``G'`` (``lr_g``) and ``z`` (``lr_z``); the
batch is ``G'(z)`` after the last step. ``R_BN`` is DeepInversion's BN-statistics loss with
Fast-DFKD's ``bn_mmt``: the statistics compared with the running ones are
``(1 - m) * batch + m * history`` where ``history`` is a moving average over previous rounds
(:mod:`generators.bn_hooks`). ``L_adv = -mean(KL(t || s) * [argmax s == argmax t])`` is the
official "decision adversarial" term that seeks inputs where a student that still agrees with
the teacher can be pushed apart; it needs a student, so it is off in the materialising variant
unless :meth:`FastMeta.set_student` gave one. Meta update (Reptile, Nichol et al. 2018):
``theta <- theta + meta_lr * (theta' - theta)``.

``bn_weight=0`` removes ``R_BN`` and its hooks, so the method also runs on a teacher without
BatchNorm (class term and priors only; measured weaker than DAFL there, see
``results/datafree-lenet5/closing-the-gap.md``).

**Defaults and where they come from.** From the official CIFAR scripts (``scripts/fast_cifar.sh``,
5-step setting): ``inner_steps=5``, ``lr_g=3e-3``, ``lr_z=0.01``, Adam betas (0.5, 0.999),
``bn_weight=10``, ``ce_weight=0.5`` (``--oh``), ``bn_momentum=0.9`` (``--bn_mmt``), ``adv_weight``
1.1 (``--adv``, WRN teachers; the online variant's default) and ``warmup=20`` rounds before the
adversarial term starts. Ours: ``meta_lr`` (see below), augmentation = DeepInversion's random
roll (2 px) + flip instead of the official random-crop(pad 4) + flip, balanced targets instead of
uniform random ones, and the generator is the suite's shared
:class:`~generators.networks.DCGANGenerator` (latent 256 as the official ``nz``; width 64, the CPU
default of that module, where the official generator is 64 wide but doubles it in its first block).

**What is simplified, stated plainly.**

* The official default meta-update is first-order MAML (``is_maml=1``: the fast weights'
  gradients of all inner steps are summed and applied to the meta generator by an Adam
  "meta optimiser" with learning rate ``lr_g * inner_steps``); its Reptile mode feeds
  ``theta - theta'`` (scaled by a constant) into that Adam. We use plain Reptile interpolation,
  which keeps no optimiser state (exact resume needs only weights, BN history, counters, pool).
* The official code resets the generator's first layer once, after ``120 + warmup`` epochs
  (``--reset_l0``); we do not.
* The official code keeps the lowest-loss iterate of each round (seen *before* each step); we
  return the images after the last step.
* Materialising use (``fast``): ``fit`` runs ``fit_rounds`` meta rounds; by default ``generate``
  then adapts from the fitted initialisation *without* moving it (``continual=False``), so every
  batch is a function of the fitted state and its own seed -- what the synthesis runner's resume
  contract needs. ``continual=True`` keeps meta-learning during generation as the paper does
  (each batch then depends on all batches before it, so a resumed run differs after the break).
* Online use (``fast-online``) matches the paper's loop more closely: a round (with meta update
  and the adversarial term against the current students after ``warmup`` rounds) every
  ``refresh_every`` distillation steps; the students train on a FIFO pool of the rounds' images
  (the official pool keeps every image; ours keeps the last ``pool_size``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import ConfigError

from .base import TeacherFn, register_synthesizer
from .bn_hooks import BN_LAYER_SETS, BatchNormStatsLoss, NoBatchNormMatching, as_module, bn_matching
from .deepinversion import InversionResult, PriorSettings, add_image_priors, eval_mode, jitter_flip, make_targets
from .rounds import BNHistory, RoundMaterializing, RoundMethod, RoundOnline, apply_grads
from .networks import DCGANGenerator, sample_latent


@dataclass
class FastSettings(PriorSettings):
    """Hyperparameters of Fast-DFKD rounds (see the module docstring for their sources)."""

    inner_steps: int = 5
    lr_g: float = 3e-3
    lr_z: float = 0.01
    betas: tuple[float, float] = (0.5, 0.999)
    meta_lr: float = 0.5
    ce_weight: float = 0.5
    bn_weight: float = 10.0
    bn_momentum: float = 0.9
    adv_weight: float = 0.0
    warmup: int = 20
    latent_dim: int = 256
    base_channels: int = 64

    def __post_init__(self) -> None:
        self._check_priors()
        if self.inner_steps < 1:
            raise ConfigError(f"inner_steps must be >= 1, got {self.inner_steps}")
        if self.lr_g <= 0 or self.lr_z < 0:
            raise ConfigError(f"lr_g must be > 0 and lr_z >= 0, got {self.lr_g}, {self.lr_z}")
        if not 0.0 <= self.meta_lr <= 1.0:
            raise ConfigError(f"meta_lr must be in [0, 1], got {self.meta_lr}")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ConfigError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0, got {self.warmup}")
        for name in ("ce_weight", "bn_weight", "adv_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")


def split_fast_settings(options: Mapping[str, Any], **defaults: Any) -> tuple[FastSettings, dict[str, Any]]:
    names = {f.name for f in fields(FastSettings)}
    merged = {**defaults, **options}
    mine = {k: v for k, v in merged.items() if k in names}
    return FastSettings(**mine), {k: v for k, v in merged.items() if k not in names}


def decision_adversarial_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Fast-DFKD's ``-(KL(t || s) * mask).mean()``, mask = student and teacher agree on the class.

    Minimising it *raises* the divergence on images the student still gets right (by the teacher's
    decision), without rewarding images that are already ambiguous.
    """
    t_log = F.log_softmax(teacher_logits.float(), dim=1)
    s_log = F.log_softmax(student_logits.float(), dim=1)
    kl = (t_log.exp() * (t_log - s_log)).sum(1)
    mask = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
    return -(kl * mask).mean()


class _FastCore(BNHistory, RoundMethod):
    """The meta generator, the BN-statistics history and one synthesis round, shared by the
    materialising and the online variant (mixed into both)."""

    settings: FastSettings
    info: DatasetInfo
    settings_from = staticmethod(split_fast_settings)

    def _build_core(self) -> None:
        self.generator = DCGANGenerator.for_info(self.info, self.settings.latent_dim, self.settings.base_channels)
        self._init_history()
        self.register_buffer("rounds", torch.zeros((), dtype=torch.long))
        self.last_result: InversionResult | None = None

    def begin_fit(self, generator: torch.Generator) -> None:
        self.generator.reinitialise(generator)  # the run's seed alone fixes the initialisation

    def _objective(
        self,
        teacher: TeacherFn,
        bn: BatchNormStatsLoss | NoBatchNormMatching,
        images: torch.Tensor,
        targets: torch.Tensor,
        students: Sequence[nn.Module],
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s = self.settings
        x = jitter_flip(images, s.jitter, s.flip, generator)
        t_logits = teacher(x)
        terms = {"ce": F.cross_entropy(t_logits.float(), targets)}
        total = s.ce_weight * terms["ce"] + add_image_priors(terms, x, s)
        if s.bn_weight > 0:
            terms["bn"] = bn.loss()
            total = total + s.bn_weight * terms["bn"]
        if s.adv_weight > 0 and students:
            terms["adv"] = torch.stack([decision_adversarial_loss(t_logits, st(x)) for st in students]).mean()
            total = total + s.adv_weight * terms["adv"]
        terms["total"] = total
        return total, terms

    def run_round(
        self,
        teacher: TeacherFn,
        batch_size: int,
        generator: torch.Generator,
        students: Sequence[nn.Module] = (),
        update: bool = True,
        targets: torch.Tensor | None = None,
    ) -> InversionResult:
        """One Fast-DFKD round: adapt a clone of the meta generator (and fresh latents) for
        ``inner_steps`` steps; optionally move the meta generator and BN history towards it."""
        s = self.settings
        module = as_module(teacher)
        device = self.bn_history.device
        if targets is None:
            targets = make_targets(s.targets, batch_size, self.info.num_classes, generator)
        targets = targets.to(device)
        use_adv = s.adv_weight > 0 and bool(students) and int(self.rounds) >= s.warmup
        competitors = list(students) if use_adv else []
        fast = copy.deepcopy(self.generator).train()
        z = sample_latent(targets.numel(), s.latent_dim, generator, device).requires_grad_(True)
        params = [p for p in fast.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(
            [{"params": params}, {"params": [z], "lr": s.lr_z}], lr=s.lr_g, betas=s.betas
        )
        history: list[dict[str, float]] = []
        last_stats: list[Stats] | None = None
        with eval_mode(module, *competitors):
            layers = BN_LAYER_SETS[s.bn_layers]
            # None on the first round, for another teacher, or without BN matching
            past = self.past_stats(module, layers) if s.bn_weight > 0 else None
            with bn_matching(
                module, s.bn_weight, first_bn_multiplier=s.first_bn_multiplier,
                momentum=s.bn_momentum if past is not None else 0.0, history=past, layer_types=layers,
            ) as bn:
                for _ in range(s.inner_steps):
                    total, terms = self._objective(teacher, bn, fast(z), targets, competitors, generator)
                    apply_grads(total, params + [z], optimizer)
                    history.append({k: float(v.detach()) for k, v in terms.items()})
                    last_stats = bn.batch_stats() or None
                    bn.reset()
            with torch.no_grad():
                images = fast(z).clamp(0.0, 1.0)
        if update:
            with torch.no_grad():
                for p, q in zip(self.generator.parameters(), fast.parameters()):
                    p.add_(q.detach() - p, alpha=s.meta_lr)
            self.push_stats(past, last_stats, s.bn_momentum)
            self.rounds += 1
        self.last_result = InversionResult(images.detach(), targets.detach(), history)
        return self.last_result


@register_synthesizer("fast")
class FastMeta(_FastCore, RoundMaterializing):
    """Fast-DFKD as a materialising synthesizer: ``fit`` = ``fit_rounds`` (50) meta rounds of
    ``fit_batch_size`` images; ``generate`` = one round from the (fitted) meta-initialisation.
    Options: the fields of :class:`FastSettings` plus the shell's (:class:`RoundMaterializing`)."""

    #: the official generator's width (64, doubled in its first block; ours defaults to 64 there)
    paper_options = {"base_channels": 128}
    smoke_options = {"fit_rounds": 1, "fit_batch_size": 16, "base_channels": 8}


@register_synthesizer("fast-online")
class FastMetaOnline(_FastCore, RoundOnline):
    """Fast-DFKD inside the Distiller's loop: a meta round against the current students every
    ``refresh_every`` (10) steps into a FIFO pool of ``pool_size`` (4096); ``adv_weight`` 1.1
    (official). Reptile interpolation and a fresh inner Adam per round: no optimiser state persists.
    """

    paper_options = {"base_channels": 128}
    smoke_options = {"base_channels": 8}
    online_defaults = {"adv_weight": 1.1}
