"""DeepInversion and Adaptive DeepInversion: optimise pixels until the frozen teacher's BatchNorm
statistics and its class predictions look like training data.

Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion", CVPR 2020.
Each batch starts from noise and is optimised with Adam on

    ce_weight * CE(teacher(aug(x)), y) + bn_weight * R_BN + tv_l2 * TV_2 + tv_l1 * TV_1
      + l2 * mean_i ||x_i||^2 [+ competition_weight * (1 - JS(teacher || student))]

where ``aug`` is a random roll by up to ``jitter`` pixels plus a random horizontal flip, drawn
anew each iteration (the paper's "random jitter and flips"), R_BN is
:class:`generators.bn_hooks.BatchNormStatsLoss`, and the last term is Adaptive DeepInversion's
competition (ADI): it rewards images on which a student disagrees with the teacher.

One core (:func:`invert`) serves the three registered variants:

* ``deepinversion`` -- materialising; every ``generate`` call inverts a fresh batch.
* ``adi`` -- the same plus the competition term. A materialising synthesizer runs before any
  student exists, so the student is optional and set with :meth:`AdaptiveDeepInversion.set_student`
  (e.g. the previous round's student in a multi-round pipeline); without one it *is* plain
  DeepInversion (the term needs a student; nothing is silently invented).
* ``adi-online`` -- an online synthesizer: every ``refresh_every`` Distiller steps it inverts a
  fresh batch against the current students and adds it to a FIFO pool that ``sample`` draws from
  (the paper's CIFAR-10 ADI loop alternates inversion and student training in the same way).

Choices (defaults sized for 28/32 px teachers on a CPU; override any of them):

* **Parametrisation** ``param="clamp"``: the pixels in [0, 1] are the optimised variables,
  initialised as ``mean + std * randn`` in the teacher's normalised space (the official code's
  ``randn`` start, mapped through the dataset statistics) and clamped into [0, 1] after every step
  -- the official ImageNet code's ``clip`` after each step. ``param="sigmoid"`` optimises logits
  instead (no clamp, gradients vanish near saturation); at the same 100 iterations it ended with
  2.6x (lr 0.1) or 1.3x (lr 0.3) the BN loss of ``clamp`` on the teacher described below.
* **Adam** with betas (0.5, 0.9) as the official ImageNet script. The official rates are
  0.05--0.1 (CIFAR script, ``di_lr``) and 0.2--0.25 (ImageNet) in *normalised* units; with a std
  of ~0.25--0.3 that is ~0.015--0.07 in [0, 1] pixel units. We use ``lr=0.1`` in pixel units with
  a cosine decay to 0: far fewer iterations than the paper's 2k need a bigger step, and the decay
  removes the residual noise a large step leaves.
* **Iterations** ``iterations=100`` (paper: 2k). Measured on this suite's 2-core CPU machine (1
  thread, shared with other jobs; ``lenet5_bn`` teacher, batch 128 at 28 px): ~30 ms per
  iteration, two thirds of it the teacher's forward + backward, so ~3 s per batch. In a small
  proxy (1024 images from a Fashion-MNIST ``lenet5_bn`` teacher at 83.5 %, a ``lenet5_half``
  student distilled for 300 steps) 50, 100 and 200 iterations gave the same student accuracy
  within seed noise (0.50, 0.53, 0.50; noise images give 0.10), so 100 keeps the cost down.
* **Weights**: ``bn_weight=10`` as the official CIFAR-10 "paper parameters"
  (``--r_feature_weight 10``; in the proxy above 1 was worse, 0.41, and 50, 100, 300 no better
  on average, 0.43-0.63 across seeds); ``first_bn_multiplier=1`` (CIFAR script; the ImageNet script uses 10).
  ``bn_weight=0`` drops the BN term and its hooks (then a teacher without BatchNorm works too).
  BN layers: ``bn_layers="2d"`` (official; see :mod:`generators.bn_hooks` for why the 1-d layers
  stay out by default). TV_2 follows the official 4-direction differences (right, down, two
  diagonals) but takes each image's L2 norm and averages over the batch, where the official code
  takes one norm over the whole batch; ours does not change meaning with the batch size
  (official weight ``w`` at batch ``B`` ~ ``w * sqrt(B)`` here). ``tv_l2=1e-3`` is thus ~6e-5 in
  official units at batch 256, between the paper's 2.5e-5 and the CIFAR README's "better" 1e-3
  (10x more made no difference in the proxy). ``tv_l1=0`` and ``l2=0`` (both official scripts
  leave the L1 TV term at 0; the CIFAR script uses no L2; the ImageNet script's L2 term is the
  unsquared per-image norm, ours the squared one).
* **Jitter** 2 px (official CIFAR script; 30 at 224 px) and random flips on (ImageNet script;
  turn off with ``flip=False`` for data where mirror images are a different class).
* **Targets** are consecutive classes from a random start (:func:`make_targets`), so every batch
  is balanced and depends on its seed only; pass ``targets=`` to ``generate`` or set
  ``targets="random"`` for i.i.d. labels.
* **Mixed targets** (ours, off by default): ``mix_fraction`` of the images are pulled, from the
  middle iteration on, towards a two-class soft target -- weight ``lam ~ U(mix_range)`` on their
  own class and ``1 - lam`` on the class the teacher ranks second on that image at that moment
  (:func:`runner_up_mixture`). Why: inverting to one-hot targets draws class prototypes, while a
  student also needs the regions between classes the teacher confuses (where a soft-label
  distillation carries the most information). The runner-up is chosen by the teacher on the
  half-inverted image, so no data and no class list is needed.
* **Starting images** (ours, off by default): ``start_from`` names one or more transfer sets
  (a path or a comma list) whose images each batch starts from, drawn at random, instead of noise
  (:class:`StartImages`). Why: on a robust teacher without BatchNorm, inversion from noise falls
  into one prototype per class (near-identical images within a class), so the set covers little
  of what the teacher calls that class. Starting from another synthesizer's images (e.g. a DAFL
  set) keeps their diversity while the teacher's gradients pull each towards its target; a lower
  ``lr`` keeps more of the start. Only synthetic sets are read, so the run stays data-free.
* **Within-class diversity** (ours, off by default): ``diversity=w`` adds ``w`` times the mean
  cosine similarity, in the teacher's penultimate features (the input of its last Linear layer,
  :class:`PenultimateFeatures`), between every two images of the batch with the same target
  (:func:`within_class_similarity`). Why: on a teacher without BatchNorm the CE term alone lets
  every image of a class converge to one prototype; the repulsion keeps them apart while CE keeps
  each on its class (unlike ``start_from``, the images still start from noise and keep nearly
  the confidence of one-prototype inversion). CMI's instance discrimination has the same aim with a generator,
  a projection head and a memory bank; this acts on the pixels of one batch and needs neither.
* **Competition** follows the official ADI term at temperature 3 with one difference: we use the
  true Jensen-Shannon divergence in bits (``0.5 KL(P||M) + 0.5 KL(Q||M)`` over ``ln 2``, so it
  lies in [0, 1]) where the official code computes ``KL(M||P)`` terms on clamped probabilities.
  ``competition_weight=0.2`` as the official ImageNet ADI example (``adi_scale 0.2``).
* We return the *final* images, not the lowest-loss iterate the official code keeps.

Gradients are taken with ``torch.autograd.grad`` with respect to the pixels only, so neither the
teacher's nor a student's parameters ever receive ``.grad``; the teacher and students run in
eval mode during inversion and get their previous modes back afterwards.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import ConfigError
from datafree_kd.hooks import HookOwner

from .base import MaterializingSynthesizer, OnlineSynthesizer, TeacherFn, register_synthesizer
from .bn_hooks import BN_LAYER_SETS, BatchNormStatsLoss, NoBatchNormMatching, as_module, bn_matching

PARAMETRISATIONS = ("clamp", "sigmoid")
TARGET_MODES = ("balanced", "random")


# --------------------------------------------------------------------------------------------
# Loss pieces shared with other inversion-style methods (generators.fast uses them too)
# --------------------------------------------------------------------------------------------


def image_prior_losses(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(TV_1, TV_2): mean |difference| and mean per-image L2 norm of neighbouring-pixel differences.

    Four directions as the official code: horizontal, vertical and both diagonals.
    """
    diffs = (
        x[:, :, :, :-1] - x[:, :, :, 1:],
        x[:, :, :-1, :] - x[:, :, 1:, :],
        x[:, :, 1:, :-1] - x[:, :, :-1, 1:],
        x[:, :, :-1, :-1] - x[:, :, 1:, 1:],
    )
    tv_l1 = sum(d.abs().mean() for d in diffs)
    tv_l2 = sum(torch.linalg.vector_norm(d.flatten(1), dim=1).mean() for d in diffs)
    return tv_l1, tv_l2  # type: ignore[return-value]


def add_image_priors(terms: dict[str, torch.Tensor], x: torch.Tensor, settings: "PriorSettings") -> torch.Tensor:
    """The weighted TV and L2 image priors that ``settings`` switches on (0 when all are off);
    each active term is also recorded in ``terms`` for logging."""
    total = x.new_zeros(())
    if settings.tv_l1 > 0 or settings.tv_l2 > 0:
        terms["tv_l1"], terms["tv_l2"] = image_prior_losses(x)
        total = total + settings.tv_l1 * terms["tv_l1"] + settings.tv_l2 * terms["tv_l2"]
    if settings.l2 > 0:
        terms["l2"] = x.flatten(1).pow(2).sum(1).mean()
        total = total + settings.l2 * terms["l2"]
    return total


def competition_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    """ADI's ``1 - JS(teacher || student)``, JS in bits: 1 when they agree, 0 when disjoint."""
    p = F.softmax(teacher_logits.float() / temperature, dim=1)
    q = F.softmax(student_logits.float() / temperature, dim=1)
    m = 0.5 * (p + q)
    tiny = torch.finfo(p.dtype).tiny
    kl_pm = (p * (p.clamp_min(tiny).log() - m.clamp_min(tiny).log())).sum(1)
    kl_qm = (q * (q.clamp_min(tiny).log() - m.clamp_min(tiny).log())).sum(1)
    js_bits = (0.5 * (kl_pm + kl_qm)).mean() / math.log(2.0)
    return 1.0 - js_bits.clamp(0.0, 1.0)


def balanced_targets(batch_size: int, num_classes: int, offset: int = 0) -> torch.Tensor:
    """Labels ``offset, offset+1, ...`` modulo ``num_classes``: balanced within and across batches."""
    return (torch.arange(batch_size) + offset) % num_classes


def jitter_flip(x: torch.Tensor, jitter: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """DeepInversion's augmentation: one random roll (|shift| <= ``jitter``) and a coin-flip mirror
    for the whole batch, drawn from ``generator`` so runs are reproducible."""
    draws = torch.randint(-jitter, jitter + 1, (2,), generator=generator) if jitter > 0 else None
    mirror = bool(torch.rand((), generator=generator) < 0.5) if flip else False
    if draws is not None:
        dy, dx = int(draws[0]), int(draws[1])
        if dy or dx:
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if mirror:
        x = torch.flip(x, dims=(3,))
    return x


def cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine decay from ``base`` (step 0) towards 0 (step ``total``)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Run ``modules`` in eval mode (no BN running-stat updates, no dropout); restore each
    submodule's own mode afterwards, also on error."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, training in saved:
            m.training = training


# --------------------------------------------------------------------------------------------
# The shared inversion core
# --------------------------------------------------------------------------------------------


@dataclass
class PriorSettings:
    """Image-prior and BN-matching fields shared by DeepInversion and Fast-DFKD settings."""

    first_bn_multiplier: float = 1.0
    bn_layers: str = "2d"
    jitter: int = 2
    flip: bool = True
    targets: str = "balanced"
    tv_l2: float = 0.0
    tv_l1: float = 0.0
    l2: float = 0.0

    def _check_priors(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.bn_layers not in BN_LAYER_SETS:
            raise ConfigError(f"bn_layers must be one of {tuple(BN_LAYER_SETS)}, got {self.bn_layers!r}")
        if self.targets not in TARGET_MODES:
            raise ConfigError(f"targets must be one of {TARGET_MODES}, got {self.targets!r}")
        if self.jitter < 0:
            raise ConfigError(f"jitter must be >= 0, got {self.jitter}")
        if self.first_bn_multiplier < 0:
            raise ConfigError(f"first_bn_multiplier must be >= 0, got {self.first_bn_multiplier}")
        for name in ("tv_l2", "tv_l1", "l2"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values for YAML/JSON: tuples (``betas``, ``mix_range``) become lists."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class InversionSettings(PriorSettings):
    """Hyperparameters of one DeepInversion run (see the module docstring for the defaults)."""

    iterations: int = 100
    lr: float = 0.1
    betas: tuple[float, float] = (0.5, 0.9)
    cosine: bool = True
    param: str = "clamp"
    ce_weight: float = 1.0
    bn_weight: float = 10.0
    tv_l2: float = 1e-3  # DeepInversion's own default; the shared prior default is 0
    competition_weight: float = 0.0
    temperature: float = 3.0
    mix_fraction: float = 0.0
    mix_range: tuple[float, float] = (0.4, 0.7)
    diversity: float = 0.0

    def __post_init__(self) -> None:
        self._check_priors()
        if not isinstance(self.mix_range, (tuple, list)) or len(self.mix_range) != 2:
            raise ConfigError(f"mix_range must be two numbers (low, high), got {self.mix_range!r}")
        self.mix_range = (float(self.mix_range[0]), float(self.mix_range[1]))
        if isinstance(self.mix_fraction, bool) or not isinstance(self.mix_fraction, (int, float)) \
                or not 0.0 <= self.mix_fraction <= 1.0:
            raise ConfigError(f"mix_fraction must be a number in [0, 1], got {self.mix_fraction!r}")
        low, high = self.mix_range
        if not 0.0 <= low <= high <= 1.0:
            raise ConfigError(f"mix_range must be (low, high) with 0 <= low <= high <= 1, got {self.mix_range}")
        if self.iterations < 1:
            raise ConfigError(f"iterations must be >= 1, got {self.iterations}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.param not in PARAMETRISATIONS:
            raise ConfigError(f"param must be one of {PARAMETRISATIONS}, got {self.param!r}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        weights = ("ce_weight", "bn_weight", "competition_weight", "diversity")
        for name in weights:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")


def split_settings(options: dict[str, Any]) -> tuple[InversionSettings, dict[str, Any]]:
    """Separate :class:`InversionSettings` keys from a variant's own options."""
    names = {f.name for f in fields(InversionSettings)}
    mine = {k: v for k, v in options.items() if k in names}
    return InversionSettings(**mine), {k: v for k, v in options.items() if k not in names}


@dataclass
class InversionResult:
    """Final images in [0, 1], their targets, and the per-iteration loss terms (floats).

    ``soft_targets`` holds the class-probability rows the images ended on when mixing was on."""

    images: torch.Tensor
    targets: torch.Tensor
    history: list[dict[str, float]] = field(default_factory=list)
    soft_targets: torch.Tensor | None = None

    def summary(self) -> dict[str, float]:
        """First and last values of each logged term (what a synthesis runner logs)."""
        if not self.history:
            return {}
        first, last = self.history[0], self.history[-1]
        out = dict(last)
        out.update({f"{k}_start": v for k, v in first.items()})
        return out


def inversion_objective(
    teacher: TeacherFn,
    bn: BatchNormStatsLoss | NoBatchNormMatching,
    x: torch.Tensor,
    targets: torch.Tensor,
    settings: InversionSettings,
    generator: torch.Generator,
    students: Sequence[nn.Module] = (),
    features: PenultimateFeatures | None = None,
    classes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DeepInversion's loss for images ``x`` in [0, 1] (augmented here); returns (total, terms).

    ``targets`` are class indices, or rows of class probabilities (mixed targets); the diversity
    term groups images by ``classes`` (the class indices; ``targets`` when not given) and reads
    the teacher's penultimate features from ``features``."""
    x_aug = jitter_flip(x, settings.jitter, settings.flip, generator)
    logits = teacher(x_aug)
    terms: dict[str, torch.Tensor] = {"ce": F.cross_entropy(logits.float(), targets)}
    total = settings.ce_weight * terms["ce"]
    if settings.bn_weight > 0:
        terms["bn"] = bn.loss()
        total = total + settings.bn_weight * terms["bn"]
    total = total + add_image_priors(terms, x_aug, settings)
    if settings.diversity > 0:
        if features is None:
            raise ValueError("diversity > 0 needs the teacher's penultimate features (PenultimateFeatures)")
        groups = targets if classes is None else classes
        if groups.dim() != 1:
            raise ValueError("diversity groups images by class index: pass classes= with soft (mixed) targets")
        terms["diversity"] = within_class_similarity(features.take(), groups)
        total = total + settings.diversity * terms["diversity"]
    if settings.competition_weight > 0 and students:
        terms["competition"] = torch.stack(
            [competition_loss(logits, s(x_aug), settings.temperature) for s in students]
        ).mean()
        total = total + settings.competition_weight * terms["competition"]
    terms["total"] = total
    return total, terms


class PenultimateFeatures(HookOwner):
    """The flattened input of a model's last ``nn.Linear`` at the latest forward (graph kept):
    the penultimate features that ``diversity`` spreads apart."""

    def __init__(self, model: nn.Module) -> None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(f"diversity needs a teacher with a final Linear layer; {type(model).__name__} has none")
        self.value: torch.Tensor | None = None
        self._handles = [linears[-1].register_forward_hook(self._keep)]

    def _keep(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.value = inputs[0].flatten(1)

    def take(self) -> torch.Tensor:
        if self.value is None:
            raise RuntimeError("the teacher's last Linear layer did not run in the last forward")
        value, self.value = self.value, None
        return value

    def _after_remove(self) -> None:
        self.value = None


def within_class_similarity(features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over all pairs of distinct images with the same target (0 when no
    class has two images in the batch)."""
    unit = F.normalize(features.float(), dim=1)
    same = targets.view(-1, 1) == targets.view(1, -1)
    same.fill_diagonal_(False)
    if not bool(same.any()):
        return unit.new_zeros(())
    return (unit @ unit.T)[same].mean()


@dataclass
class MixPlan:
    """Which images of a batch get a mixed target and their own-class weights (drawn once per batch)."""

    mixed: torch.Tensor  # bool, one per image
    own_weight: torch.Tensor  # lam in mix_range, one per image

    @classmethod
    def draw(cls, settings: InversionSettings, batch_size: int, generator: torch.Generator) -> "MixPlan":
        mixed = torch.rand(batch_size, generator=generator) < settings.mix_fraction
        low, high = settings.mix_range
        own_weight = low + (high - low) * torch.rand(batch_size, generator=generator)
        return cls(mixed, own_weight)


def runner_up_mixture(teacher_logits: torch.Tensor, targets: torch.Tensor, plan: MixPlan) -> torch.Tensor:
    """Soft targets: one-hot rows, except the planned images, which put ``lam`` on their class and
    ``1 - lam`` on the class with the teacher's highest logit among the others."""
    num_classes = teacher_logits.shape[1]
    others = teacher_logits.detach().float().clone()
    others.scatter_(1, targets.view(-1, 1), float("-inf"))
    partner = others.argmax(1)
    soft = F.one_hot(targets, num_classes).float()
    rows = plan.mixed.to(targets.device).nonzero().flatten()
    lam = plan.own_weight.to(soft.device)[rows]
    soft[rows, targets[rows]] = lam
    soft[rows, partner[rows]] = 1.0 - lam
    return soft


def _initial_pixels(
    info: DatasetInfo, batch_size: int, param: str, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    noise = torch.randn(batch_size, *info.shape, generator=generator)
    if param == "sigmoid":
        return noise.to(device)
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    return (mean + std * noise).clamp_(0.0, 1.0).to(device)


def _starting_pixels(start: torch.Tensor, info: DatasetInfo, batch_size: int, param: str,
                     device: torch.device) -> torch.Tensor:
    """Given images in [0, 1] as the optimised variables (logits under ``param="sigmoid"``)."""
    if tuple(start.shape) != (batch_size, *info.shape):
        raise ValueError(f"start images must have shape {(batch_size, *info.shape)}, got {tuple(start.shape)}")
    x = start.detach().float().clamp(0.0, 1.0).to(device)
    return torch.logit(x, eps=1e-3) if param == "sigmoid" else x.clone()


class StartImages:
    """Images from one or more transfer sets that inversion batches start from instead of noise.

    ``paths`` is a path or a comma list (the same form as ``dfkd distill --source transfer:``).
    Held as stored (uint8 or float16); :meth:`draw` picks a batch at random from the caller's
    generator, so a batch stays a function of its seed (what resuming a synthesis relies on).
    """

    def __init__(self, paths: str | Sequence[str], info: DatasetInfo) -> None:
        from datafree_kd.transfer_set import open_transfer_set

        names = [p.strip() for p in paths.split(",")] if isinstance(paths, str) else [str(p) for p in paths]
        names = [p for p in names if p]
        if not names:
            raise ConfigError("start_from names no transfer set")
        loaded = [open_transfer_set(name).load() for name in names]
        for name, part in zip(names, loaded):
            if tuple(part.images.shape[1:]) != tuple(info.shape):
                raise ConfigError(f"start_from set {name} holds images of shape {tuple(part.images.shape[1:])}, "
                                  f"but the teacher takes {tuple(info.shape)}")
        same_dtype = len({part.images.dtype for part in loaded}) == 1
        self.images = torch.cat([part.images if same_dtype else part.as_float(part.images) for part in loaded])
        if len(self.images) == 0:
            raise ConfigError(f"start_from sets {', '.join(names)} hold no images")
        self._as_float = loaded[0].as_float  # uint8 -> [0, 1]; float16 -> float32
        self.paths = names

    def __len__(self) -> int:
        return len(self.images)

    def draw(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``batch_size`` images in [0, 1], drawn with replacement."""
        return self._as_float(self.images[torch.randint(0, len(self.images), (batch_size,), generator=generator)])


def invert(
    teacher: TeacherFn,
    info: DatasetInfo,
    targets: torch.Tensor,
    settings: InversionSettings,
    generator: torch.Generator,
    device: torch.device,
    students: Sequence[nn.Module] = (),
    start: torch.Tensor | None = None,
) -> InversionResult:
    """Optimise a batch of pixels (one per target) against the frozen teacher, from noise or
    from ``start`` (images in [0, 1], one per target).

    ``students`` only matter when ``settings.competition_weight > 0`` (Adaptive DeepInversion).
    """
    module = as_module(teacher)
    targets = targets.to(device)
    batch_size = targets.numel()
    if start is None:
        var = _initial_pixels(info, batch_size, settings.param, generator, device)
    else:
        var = _starting_pixels(start, info, batch_size, settings.param, device)
    var.requires_grad_(True)
    optimizer = torch.optim.Adam([var], lr=settings.lr, betas=settings.betas)
    competitors = list(students) if settings.competition_weight > 0 else []
    # drawn only when mixing is on, so the default's random stream (and images) stay as before
    plan = MixPlan.draw(settings, batch_size, generator) if settings.mix_fraction > 0 else None
    objective_targets = targets
    history: list[dict[str, float]] = []
    with eval_mode(module, *competitors), bn_matching(
        module, settings.bn_weight, first_bn_multiplier=settings.first_bn_multiplier,
        layer_types=BN_LAYER_SETS[settings.bn_layers],
    ) as bn, (PenultimateFeatures(module) if settings.diversity > 0 else nullcontext()) as features:
        for it in range(settings.iterations):
            if settings.cosine:
                for group in optimizer.param_groups:
                    group["lr"] = cosine_lr(settings.lr, it, settings.iterations)
            x = torch.sigmoid(var) if settings.param == "sigmoid" else var
            if plan is not None and it == settings.iterations // 2:
                with torch.no_grad():
                    objective_targets = runner_up_mixture(teacher(x), targets, plan)
                bn.reset()  # that forward is not part of the objective
            total, terms = inversion_objective(teacher, bn, x, objective_targets, settings, generator, competitors,
                                               features=features, classes=targets)
            (grad,) = torch.autograd.grad(total, [var])
            var.grad = grad
            optimizer.step()
            var.grad = None
            if settings.param == "clamp":
                with torch.no_grad():
                    var.clamp_(0.0, 1.0)
            history.append({k: float(v.detach()) for k, v in terms.items()})
            bn.reset()
    with torch.no_grad():
        images = torch.sigmoid(var) if settings.param == "sigmoid" else var.clamp(0.0, 1.0)
    soft = objective_targets.detach() if plan is not None else None
    return InversionResult(images.detach(), targets.detach(), history, soft)


def make_targets(mode: str, batch_size: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Targets for one batch. ``balanced``: consecutive classes from a random starting class, so
    each batch is balanced to within one image and, over many batches, exactly balanced in
    expectation; ``random``: i.i.d. uniform classes. Both depend only on ``generator``, so a batch
    is a function of its seed (what the synthesis runner's resume relies on)."""
    if mode == "random":
        return torch.randint(0, num_classes, (batch_size,), generator=generator)
    offset = int(torch.randint(0, num_classes, (1,), generator=generator))
    return balanced_targets(batch_size, num_classes, offset)


class ImagePool:
    """A FIFO pool of the most recent ``capacity`` synthetic images that batches are drawn from
    (with replacement, from the caller's generator). Part of an online synthesizer's state."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ConfigError(f"pool capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.images: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.images is None else len(self.images)

    def add(self, images: torch.Tensor) -> None:
        images = images.detach()
        merged = images if self.images is None else torch.cat([self.images.to(images.device), images])
        self.images = merged[-self.capacity :].clone()

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        if self.images is None:
            raise RuntimeError("the image pool is empty: call synthesizer_step before sample")
        idx = torch.randint(0, len(self.images), (batch_size,), generator=generator)
        return self.images[idx.to(self.images.device)]

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "images": None if self.images is None else self.images.cpu()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        self.capacity = int(state["capacity"])
        images = state["images"]
        self.images = None if images is None else images.to(device or images.device)


# --------------------------------------------------------------------------------------------
# Registered variants
# --------------------------------------------------------------------------------------------


class _StudentHolder:
    """Mixin for materialising methods with an optional student (ADI, Fast-DFKD's adversarial
    term). Kept outside ``nn.Module`` registration so the student's weights never end up in the
    synthesizer's ``state_dict``."""

    _student: nn.Module | None = None

    def set_student(self, model: nn.Module | None) -> None:
        """The student whose disagreement with the teacher the next batches should maximise."""
        object.__setattr__(self, "_student", model)

    @property
    def student(self) -> nn.Module | None:
        return self._student


@register_synthesizer("deepinversion")
class DeepInversion(MaterializingSynthesizer):
    """DeepInversion (Yin et al., CVPR 2020): every ``generate`` inverts a fresh batch from noise.

    Options are the fields of :class:`InversionSettings`. After each call ``last_result`` holds the
    batch's targets and per-iteration losses.
    """

    #: the paper's 2k pixel iterations per batch (ours: 100)
    paper_options = {"iterations": 2000}
    smoke_options = {"iterations": 2}

    def __init__(self, info: DatasetInfo, start_from: str | Sequence[str] | None = None, **options: Any) -> None:
        super().__init__(info)
        self.settings, rest = split_settings(options)
        if rest:
            raise TypeError(f"unexpected options for {type(self).__name__}: {', '.join(sorted(rest))}")
        self.start_images = StartImages(start_from, info) if start_from else None
        self.last_result: InversionResult | None = None

    def _students(self) -> list[nn.Module]:
        return []

    def generate(
        self,
        teacher: TeacherFn,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if targets is None:
            targets = make_targets(self.settings.targets, batch_size, self.info.num_classes, generator)
        elif targets.numel() != batch_size:
            raise ValueError(f"got {targets.numel()} targets for a batch of {batch_size}")
        start = self.start_images.draw(batch_size, generator) if self.start_images is not None else None
        self.last_result = invert(teacher, self.info, targets, self.settings, generator, device,
                                  self._students(), start=start)
        return self.last_result.images

    def extra_repr(self) -> str:
        starts = f"start_from={','.join(self.start_images.paths)}, " if self.start_images is not None else ""
        return starts + ", ".join(f"{k}={v}" for k, v in self.settings.to_dict().items())


@register_synthesizer("adi")
class AdaptiveDeepInversion(_StudentHolder, DeepInversion):
    """Adaptive DeepInversion: DeepInversion plus the teacher-student competition term.

    Without a student (``set_student`` not called, or ``None``) this is plain DeepInversion.
    """

    def __init__(self, info: DatasetInfo, student: nn.Module | None = None, **options: Any) -> None:
        options.setdefault("competition_weight", 0.2)
        super().__init__(info, **options)
        self.set_student(student)

    def _students(self) -> list[nn.Module]:
        return [self.student] if self.student is not None else []


@register_synthesizer("adi-online")
class AdaptiveDeepInversionOnline(OnlineSynthesizer):
    """Adaptive DeepInversion inside the Distiller's loop.

    Every ``refresh_every`` calls of ``synthesizer_step`` it inverts one fresh batch (of the
    Distiller's batch size) against the current students and pushes it into a FIFO pool of
    ``pool_size`` images; ``sample`` draws from that pool. Inversion options as
    :class:`InversionSettings` (``competition_weight`` defaults to 0.2 here).
    """

    #: the paper's 2k pixel iterations per batch (ours: 100)
    paper_options = {"iterations": 2000}
    smoke_options = {"iterations": 2}

    def __init__(self, info: DatasetInfo, refresh_every: int = 10, pool_size: int = 4096, **options: Any) -> None:
        super().__init__(info)
        options.setdefault("competition_weight", 0.2)
        self.settings, rest = split_settings(options)
        if rest:
            raise TypeError(f"unexpected options for {type(self).__name__}: {', '.join(sorted(rest))}")
        if refresh_every < 1:
            raise ConfigError(f"refresh_every must be >= 1, got {refresh_every}")
        self.refresh_every = refresh_every
        self.pool = ImagePool(pool_size)
        self.steps = 0
        self.rounds = 0
        self.device = torch.device("cpu")

    def setup(self, device: torch.device) -> None:
        super().setup(device)
        self.device = torch.device(device)

    def synthesizer_step(
        self, teacher: TeacherFn, students: Sequence[nn.Module], batch_size: int, generator: torch.Generator
    ) -> dict[str, float]:
        logs: dict[str, float] = {}
        if self.steps % self.refresh_every == 0:
            targets = make_targets(self.settings.targets, batch_size, self.info.num_classes, generator)
            result = invert(teacher, self.info, targets, self.settings, generator, self.device, students)
            self.pool.add(result.images)
            self.rounds += 1
            logs = {k: v for k, v in result.history[-1].items()}
        self.steps += 1
        return logs

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return self.pool.sample(batch_size, generator).to(self.device)

    def training_state(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "rounds": self.rounds,
            "pool": self.pool.state_dict(),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.rounds = int(state["rounds"])
        self.pool.load_state_dict(state["pool"], self.device)

    def extra_repr(self) -> str:
        head = f"refresh_every={self.refresh_every}, pool_size={self.pool.capacity}, "
        return head + ", ".join(f"{k}={v}" for k, v in self.settings.to_dict().items())
