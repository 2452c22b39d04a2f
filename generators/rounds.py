"""The shared shape of *round-based* generator inversion (Fast-DFKD, CMI, NAYER).

These methods make images in synthesis *rounds*: a round takes a batch of targets, optimises a
generator (a clone, a freshly initialised one, or one with freshly drawn noisy layers) for a few
steps against the frozen teacher, and returns the batch; between rounds they carry state (a
meta-initialisation, a memory bank, a persistent generator, BatchNorm-statistics history).
What differs is the round (``run_round``); what is the same lives here, once:

* :class:`RoundMethod` -- what a method provides (settings, its state, ``begin_fit``, the round);
  the shells below build and drive it.
* :class:`RoundMaterializing` -- ``fit`` runs ``fit_rounds`` rounds that update the state; each
  ``generate`` call is one round from the fitted state *without* updating it
  (``continual=False``), so every batch is a function of the fit and its own seed, which the
  synthesis runner's resume contract needs. ``continual=True`` keeps updating during generation,
  as the papers' loops do (a resumed run then differs after the break).
* :class:`RoundOnline` -- inside the Distiller's loop: a round against the current students every
  ``refresh_every`` steps, its images pushed into a FIFO pool that ``sample`` draws from.
* :class:`BNHistory` -- Fast-DFKD's moving average of BatchNorm batch statistics (``bn_mmt``),
  also used by NAYER, stored as one flat buffer whose size follows the teacher.
* :func:`shift_flip` / :func:`resized_crop` -- per-example augmentations (the papers'
  ``RandomCrop(pad 4)``, ``RandomHorizontalFlip`` and ``RandomResizedCrop``) as one affine
  resampling, drawn from the run's generator so a batch depends on its seed only.
* :class:`BestIterate` -- the lowest-loss iterate of a round, which CMI's and NAYER's official
  code return instead of the last one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import ConfigError

from .base import MaterializingSynthesizer, OnlineSynthesizer, TeacherFn
from .bn_hooks import Stats, batchnorm_layers, update_history
from .networks import draw_seed  # noqa: F401  (re-exported for the round-based methods)
from .deepinversion import TARGET_MODES, ImagePool, InversionResult, _StudentHolder, make_targets


# --------------------------------------------------------------------------------------------
# per-example views
# --------------------------------------------------------------------------------------------


def _resample(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _mirror(n: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    if not flip:
        return torch.ones(n)
    return torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)


def shift_flip(x: torch.Tensor, max_shift: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per example: a shift by a whole number of pixels in [-max_shift, max_shift] with zeros
    shifted in (``RandomCrop(size, padding=max_shift)``) and a coin-flip mirror. Exact: integer
    shifts sample pixel centres, so no interpolation blurs the image."""
    n, _, h, w = x.shape
    if max_shift == 0 and not flip:
        return x
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = _mirror(n, flip, generator)
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 2.0 * shifts[:, 0] / w
    theta[:, 1, 2] = 2.0 * shifts[:, 1] / h
    return _resample(x, theta.to(x.device))


def resized_crop(
    x: torch.Tensor, scale: tuple[float, float], flip: bool, generator: torch.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Per example: a crop of a random area fraction in ``scale`` and aspect ratio in ``ratio``,
    resized back to full size (bilinear), plus a coin-flip mirror (``RandomResizedCrop``)."""
    n = x.shape[0]
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_ratio.exp()
    width = (area * aspect).sqrt().clamp(max=1.0)
    height = (area / aspect).sqrt().clamp(max=1.0)
    centre = (torch.rand(n, 2, generator=generator) * 2 - 1) * torch.stack([1 - width, 1 - height], 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width * _mirror(n, flip, generator)
    theta[:, 1, 1] = height
    theta[:, :, 2] = centre
    return _resample(x, theta.to(x.device))


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------


@dataclass
class RoundSettings:
    """Fields CMI and NAYER share: the generator's Adam, the class / BN / adversarial weights,
    the per-example shift-and-flip view, the targets and the generator width."""

    lr_g: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    ce_weight: float = 0.5
    bn_weight: float = 1.0
    adv_weight: float = 0.0
    shift: int = 4
    flip: bool = True
    targets: str = "balanced"
    base_channels: int = 64

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.lr_g <= 0:
            raise ConfigError(f"lr_g must be > 0, got {self.lr_g}")
        for name in ("ce_weight", "bn_weight", "adv_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.shift < 0:
            raise ConfigError(f"shift must be >= 0, got {self.shift}")
        if self.targets not in TARGET_MODES:
            raise ConfigError(f"targets must be one of {TARGET_MODES}, got {self.targets!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def split(cls, options: Mapping[str, Any], **defaults: Any) -> tuple[Any, dict[str, Any]]:
        """(settings from the keys that are fields, the rest); ``options`` win over ``defaults``."""
        names = {f.name for f in fields(cls)}
        merged = {**defaults, **options}
        return cls(**{k: v for k, v in merged.items() if k in names}), {k: v for k, v in merged.items() if k not in names}


# --------------------------------------------------------------------------------------------
# round pieces
# --------------------------------------------------------------------------------------------


class BestIterate:
    """Keeps the images (and anything else) of the lowest-loss step of a round."""

    def __init__(self) -> None:
        self.loss = math.inf
        self.kept: tuple[torch.Tensor, ...] | None = None

    def offer(self, loss: torch.Tensor, *tensors: torch.Tensor) -> None:
        value = float(loss.detach())
        if self.kept is None or value < self.loss:
            self.loss = value
            self.kept = tuple(t.detach().clone() for t in tensors)


class BNHistory(nn.Module):
    """Fast-DFKD's ``bn_mmt`` history of the teacher's BatchNorm batch statistics, as one flat
    buffer (its size depends on the teacher, so a loaded state brings its own size)."""

    def _init_history(self) -> None:
        self.register_buffer("bn_history", torch.zeros(0))

    def past_stats(self, module: nn.Module, layer_types: Sequence[type]) -> list[Stats] | None:
        """The history as (mean, var) per matched layer; None on the first round or another teacher."""
        sizes = [int(m.running_mean.numel()) for _, m in batchnorm_layers(module, layer_types)]
        flat = self.bn_history
        if flat.numel() != 2 * sum(sizes) or not sizes:
            return None
        parts = list(torch.split(flat, [n for n in sizes for _ in (0, 1)]))
        return [(parts[2 * i], parts[2 * i + 1]) for i in range(len(sizes))]

    def push_stats(self, past: list[Stats] | None, last: list[Stats] | None, momentum: float) -> None:
        """Blend a round's last batch statistics into the history."""
        if last is None or momentum <= 0:
            return
        merged = update_history(past, last, momentum)
        self.bn_history = torch.cat([t for pair in merged for t in pair]).to(self.bn_history.device)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        key = prefix + "bn_history"
        if key in state_dict:
            self.bn_history = torch.zeros_like(state_dict[key], device=self.bn_history.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def apply_grads(total: torch.Tensor, params: Sequence[torch.Tensor], *optimizers: torch.optim.Optimizer) -> None:
    """Gradients of ``total`` for ``params`` only (never the teacher's or a student's ``.grad``),
    then one step of each optimiser."""
    grads = torch.autograd.grad(total, list(params), allow_unused=True)
    for p, g in zip(params, grads):
        p.grad = g
    for optimizer in optimizers:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def inversion_terms(settings: "RoundSettings", teacher_logits: torch.Tensor, targets: torch.Tensor, bn: Any,
                    competitors: Sequence[nn.Module], view: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CMI's and NAYER's shared inversion loss: class CE, BN statistics (of the forward that made
    ``teacher_logits``) and the decision-adversarial term against ``competitors`` on ``view``."""
    from .fast import decision_adversarial_loss  # here: generators.fast imports this module

    s = settings
    terms = {"ce": F.cross_entropy(teacher_logits.float(), targets)}
    total = s.ce_weight * terms["ce"]
    if s.bn_weight > 0:
        terms["bn"] = bn.loss()
        total = total + s.bn_weight * terms["bn"]
    if competitors:
        terms["adv"] = torch.stack([decision_adversarial_loss(teacher_logits, st(view)) for st in competitors]).mean()
        total = total + s.adv_weight * terms["adv"]
    return total, terms


def reject_unknown(cls: type, rest: dict[str, Any]) -> None:
    """A synthesizer's options that none of its settings took are a mistake, not a no-op."""
    if rest:
        raise TypeError(f"unexpected options for {cls.__name__}: {', '.join(sorted(rest))}")


# --------------------------------------------------------------------------------------------
# the two shells
# --------------------------------------------------------------------------------------------


SettingsSplitter = Callable[..., "tuple[Any, dict[str, Any]]"]


class RoundMethod(nn.Module):
    """What a round-based method provides to both shells (mixed in before them):
    ``settings_from`` (options -> its settings and what it did not take), ``_build_core``,
    ``begin_fit(generator)`` (draw the initial state from the run's seed) and ``run_round``."""

    settings_from: ClassVar[SettingsSplitter]
    settings: Any

    def _build_core(self) -> None:
        raise NotImplementedError

    def begin_fit(self, generator: torch.Generator) -> None:
        raise NotImplementedError

    def run_round(self, teacher: TeacherFn, batch_size: int, generator: torch.Generator,
                  students: Sequence[nn.Module] = (), update: bool = True,
                  targets: torch.Tensor | None = None) -> InversionResult:
        raise NotImplementedError

    def _take_options(self, options: dict[str, Any], **defaults: Any) -> None:
        self.settings, rest = type(self).settings_from(options, **defaults)
        reject_unknown(type(self), rest)

    def _settings_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.to_dict().items())


class RoundMaterializing(_StudentHolder, MaterializingSynthesizer):
    """A round-based method as a materialising synthesizer (see the module docstring). Options:
    the method's settings plus ``fit_rounds`` (the class's ``default_fit_rounds``),
    ``fit_batch_size`` (128) and ``continual`` (False)."""

    default_fit_rounds: ClassVar[int] = 50

    def __init__(self, info: DatasetInfo, fit_rounds: int | None = None, fit_batch_size: int = 128,
                 continual: bool = False, student: nn.Module | None = None, **options: Any) -> None:
        MaterializingSynthesizer.__init__(self, info)
        self._take_options(options)  # type: ignore[attr-defined]
        fit_rounds = self.default_fit_rounds if fit_rounds is None else fit_rounds
        if fit_rounds < 0 or fit_batch_size < 1:
            raise ConfigError(f"fit_rounds must be >= 0 and fit_batch_size >= 1, got {fit_rounds}, {fit_batch_size}")
        self.fit_rounds, self.fit_batch_size, self.continual = int(fit_rounds), int(fit_batch_size), bool(continual)
        self.set_student(student)
        self._build_core()  # type: ignore[attr-defined]

    def _students(self) -> list[nn.Module]:
        return [self.student] if self.student is not None else []

    def fit(self, teacher: TeacherFn, generator: torch.Generator, device: torch.device) -> dict[str, float]:
        self.begin_fit(generator)  # type: ignore[attr-defined]
        self.to(device)
        logs: dict[str, float] = {}
        for _ in range(self.fit_rounds):
            logs = self.run_round(teacher, self.fit_batch_size, generator,  # type: ignore[attr-defined]
                                  self._students(), update=True).summary()
        return logs

    def generate(self, teacher: TeacherFn, batch_size: int, generator: torch.Generator, device: torch.device,
                 targets: torch.Tensor | None = None) -> torch.Tensor:
        if targets is not None and targets.numel() != batch_size:
            raise ValueError(f"got {targets.numel()} targets for a batch of {batch_size}")
        self.to(device)
        return self.run_round(teacher, batch_size, generator, self._students(),  # type: ignore[attr-defined]
                              update=self.continual, targets=targets).images

    def extra_repr(self) -> str:
        head = f"fit_rounds={self.fit_rounds}, fit_batch_size={self.fit_batch_size}, continual={self.continual}"
        return head + ", " + self._settings_repr()  # type: ignore[attr-defined]


class RoundOnline(OnlineSynthesizer):
    """A round-based method inside the Distiller's loop (see the module docstring): a round every
    ``refresh_every`` steps (the first included, after ``begin_fit``) into a FIFO pool of
    ``pool_size``. ``online_defaults`` are the method's settings that differ online (e.g. its
    adversarial weight). State beyond weights and buffers (an optimiser's) belongs in the module's
    ``get_extra_state``, so it is part of ``state_dict``."""

    online_defaults: ClassVar[dict[str, Any]] = {}
    default_refresh_every: ClassVar[int] = 10
    default_pool_size: ClassVar[int] = 4096

    def __init__(self, info: DatasetInfo, refresh_every: int | None = None, pool_size: int | None = None,
                 **options: Any) -> None:
        OnlineSynthesizer.__init__(self, info)
        self._take_options(options, **self.online_defaults)  # type: ignore[attr-defined]
        refresh_every = self.default_refresh_every if refresh_every is None else refresh_every
        if refresh_every < 1:
            raise ConfigError(f"refresh_every must be >= 1, got {refresh_every}")
        self.refresh_every = int(refresh_every)
        self.pool = ImagePool(self.default_pool_size if pool_size is None else pool_size)
        self.steps = 0
        self._build_core()  # type: ignore[attr-defined]

    def synthesizer_step(self, teacher: TeacherFn, students: Sequence[nn.Module], batch_size: int,
                         generator: torch.Generator) -> dict[str, float]:
        logs: dict[str, float] = {}
        if self.steps % self.refresh_every == 0:
            if self.steps == 0:
                self.begin_fit(generator)  # type: ignore[attr-defined]
            result = self.run_round(teacher, batch_size, generator, students, update=True)  # type: ignore[attr-defined]
            self.pool.add(result.images)
            logs = dict(result.history[-1])
        self.steps += 1
        return logs

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return self.pool.sample(batch_size, generator).to(self._device())

    def _device(self) -> torch.device:
        tensor = next(iter(self.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def training_state(self) -> dict[str, Any]:
        return {"module": self.state_dict(), "steps": self.steps, "pool": self.pool.state_dict()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["module"])
        self.steps = int(state["steps"])
        self.pool.load_state_dict(state["pool"], self._device())

    def extra_repr(self) -> str:
        head = f"refresh_every={self.refresh_every}, pool_size={self.pool.capacity}"
        return head + ", " + self._settings_repr()  # type: ignore[attr-defined]


def class_targets(mode: str, batch_size: int, info: DatasetInfo, generator: torch.Generator,
                  targets: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    if targets is None:
        targets = make_targets(mode, batch_size, info.num_classes, generator)
    return targets.to(device)
