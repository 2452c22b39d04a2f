"""Which materialising method ``dfkd synthesize`` uses when no ``--method`` is given, with its
options, its set size and the distillation recipe measured best on its sets.

The choice depends on the teacher, because the strongest methods read the teacher's BatchNorm
statistics and a teacher without BatchNorm offers none:

* teacher with BatchNorm2d layers (running statistics) -> ``fast`` (Fast-DFKD-style
  meta-generator matching those statistics; ``bn_layers="all"`` matches the classifier's
  BatchNorm1d statistics too, which Fast-DFKD's history of statistics makes informative);
* teacher without -> ``dead-leaves`` (``symmetric=0.5``): nothing is fitted; the teacher labels
  ten procedural images of a few large flat shapes (half of them mirrored about the midline) for
  every one the set keeps, class-balanced by its answers. It replaced ``dafl`` (``input_stats=1``,
  800 generator steps, fitted with ``fit_precision=auto`` in channels-last weights) by rule R31;
  that DAFL stays one config away (``configs/synthesize/dafl-plain.yaml``, :data:`MEASURED_OPTIONS`). A BN-free
  chain teacher (the LeNet-5 family) hands its strongest units to the student. The recipe follows
  the set's method: DAFL's near-binary sets are distilled with grey-level copies of each image
  (``configs/distill/transfer-neighbours-grey.yaml`` / ``-grey-init.yaml``); dead-leaves sets,
  which have grey levels of their own, without them (``transfer-neighbours-init.yaml``, rule R34;
  other BN-free teachers keep the grey recipe there, unmeasured).

Explicit ``options`` override these key by key. Every default was chosen by measurement, on the
val split and, since issue 19, across several independently trained teachers; the rules, figures
and commands are in the README and in ``results/`` (``datafree-lenet5*``,
``default-fresh-teachers/``, ``resnet20-pair/``, ``wrn-pair/``), not here, where they would go
stale.

BatchNorm teachers come in tiers by forward FLOPs per image, so that a run stays within about 30
CPU-minutes on a 2-core CPU:

* ``batchnorm`` (LeNet-sized): 20,000 images over 200 meta rounds, the BN recipe
  (``transfer-neighbours.yaml``: kd plus kd at random neighbours);
* ``batchnorm-large`` (>= 10 MFLOPs, e.g. ResNet-20): 5,000 images, each adapted for 15 inner steps
  over 25 meta rounds, fitted in float32 channels-last, distilled by
  ``transfer-neighbours-large.yaml`` (a ResNet-8, int8 teacher passes). Teachers trained as
  ``dfkd teacher train`` trains them are sure of their real images and unsure of images adapted
  briefly; images adapted longer lift their students (rules R25, R27);
* ``batchnorm-xl`` (>= 80 MFLOPs, e.g. WRN-16-2): the same set, distilled with kd alone
  (``transfer-kd-xl.yaml``): one teacher pass per step, where the second pass at a neighbour would
  push a run past the budget (rules R11, R12, R17, R26).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from .bn_hooks import batchnorm_layers

#: a BatchNorm teacher at or past this many forward FLOPs per image takes the ``batchnorm-large``
#: tier: LeNet-5 is 0.83 M, ResNet-20 62 M and WRN-16-2 154 M on 28 px. The LeNet-sized default
#: (20k images, 200 meta rounds, 200 epochs) costs hours of CPU on ResNet-20 (rule R10,
#: results/resnet20-pair/)
LARGE_TEACHER_FLOPS = 10_000_000
#: ... and past this many, the ``batchnorm-xl`` tier (one teacher pass per distillation step; rule
#: R12, results/wrn-pair/)
XL_TEACHER_FLOPS = 80_000_000
#: images ``dfkd synthesize`` makes when ``--n`` is not given and no tier says otherwise
DEFAULT_IMAGES = 20000


@dataclass(frozen=True)
class DefaultChoice:
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    #: the distillation recipe measured best on this kind of teacher's sets (a shipped config)
    recipe: str = "configs/distill/transfer-neighbours.yaml"
    #: the fit's numerics (``dfkd synthesize`` fields ``fit_precision``, ``channels_last``) when the
    #: user leaves them unset; ``auto`` precision is bf16 where the device computes it natively
    fit: dict[str, Any] = field(default_factory=dict)
    #: the set size (``dfkd synthesize --n``) the recipe was measured with
    images: int = DEFAULT_IMAGES


#: Measured defaults (see the module docstring); the keys name the teacher kind.
DEFAULTS: dict[str, DefaultChoice] = {
    "batchnorm": DefaultChoice("fast", {"fit_rounds": 200, "bn_layers": "all"}, "the teacher has BatchNorm layers"),
    #: since rule R31: a procedural set the teacher labels, where DAFL's fit was (MEASURED_OPTIONS)
    "plain": DefaultChoice("dead-leaves", {"oversample": 10, "symmetric": 0.5},
                           "the teacher has no BatchNorm layers to match: procedural shapes it labels",
                           "configs/distill/transfer-neighbours-grey.yaml"),
    #: since rules R25 and R27: 5,000 images each adapted for 15 inner steps over 25 meta rounds
    "batchnorm-large": DefaultChoice("fast", {"fit_rounds": 25, "bn_layers": "all", "inner_steps": 15},
                                     "the teacher has BatchNorm layers and >= 10 MFLOPs per image",
                                     "configs/distill/transfer-neighbours-large.yaml",
                                     {"fit_precision": "float32", "channels_last": True}, images=5000),
}
#: CPU options measured best for methods that are no default now (the plain default until rule R31,
#: with its fit numerics ``fit_precision=auto, channels_last=true``): where a study swapping one in
#: should start
MEASURED_OPTIONS: dict[str, dict[str, Any]] = {
    "dafl": {"fit_steps": 800, "batch_size": 256, "lr": 0.02, "input_stats": 1.0},
}
#: past 80 MFLOPs: the large tier's set (15 inner steps were chosen here first, rule R26) and a
#: recipe with one teacher pass per step (rule R12)
DEFAULTS["batchnorm-xl"] = replace(DEFAULTS["batchnorm-large"], recipe="configs/distill/transfer-kd-xl.yaml",
                                   reason="the teacher has BatchNorm layers and >= 80 MFLOPs per image")


def teacher_flops(teacher: nn.Module, image_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of one ``image_shape`` image through the teacher (what sizes its tier)."""
    from datafree_kd.cost import count_flops

    return count_flops(teacher, tuple(image_shape))


def teacher_kind(teacher: nn.Module, image_shape: tuple[int, ...] | None = None) -> str:
    """``plain``, ``batchnorm``, ``batchnorm-large`` or ``batchnorm-xl`` (the key of
    :data:`DEFAULTS`). The size tier needs the teacher's input shape (a checkpoint's
    ``info.shape``); without one it is not told and a BN teacher counts as LeNet-sized."""
    # the BN layers fast matches by default (BatchNorm2d with running statistics)
    if not batchnorm_layers(teacher):
        return "plain"
    flops = teacher_flops(teacher, image_shape) if image_shape is not None else 0
    if flops >= XL_TEACHER_FLOPS:
        return "batchnorm-xl"
    return "batchnorm-large" if flops >= LARGE_TEACHER_FLOPS else "batchnorm"


def choose_default(teacher: nn.Module, options: dict[str, Any] | None = None,
                   image_shape: tuple[int, ...] | None = None) -> tuple[str, dict[str, Any], str]:
    """``(method, options, reason)`` for this teacher; ``options`` given by the user win."""
    choice = DEFAULTS[teacher_kind(teacher, image_shape)]
    return choice.method, {**choice.options, **(options or {})}, choice.reason


def default_fit(teacher: nn.Module, image_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """The fit numerics measured with this teacher kind's default method (may be empty)."""
    return dict(DEFAULTS[teacher_kind(teacher, image_shape)].fit)


def default_images(teacher: nn.Module, image_shape: tuple[int, ...] | None = None) -> int:
    """The set size this teacher kind's default was measured with."""
    return DEFAULTS[teacher_kind(teacher, image_shape)].images


def measured_options(method: str) -> dict[str, Any]:
    """The CPU options measured best for ``method`` where it is or was a default (e.g. dafl's 800
    steps at lr 0.02), else none: what a study that swaps in ``method`` should start from."""
    current = next((dict(c.options) for c in DEFAULTS.values() if c.method == method), None)
    return current if current is not None else dict(MEASURED_OPTIONS.get(method, {}))


#: for a BN-free *chain* teacher (the LeNet-5 family) whose sets go to a narrower copy of it: the
#: grey recipe with the student started from the teacher's strongest units (``student_init``)
CHAIN_RECIPE = "configs/distill/transfer-neighbours-grey-init.yaml"
#: the same without grey copies, for sets of these methods: their images have grey levels of their
#: own, and the copies cost the students val accuracy (rule R34)
GREY_FREE_METHODS = ("dead-leaves",)
GREY_FREE_CHAIN_RECIPE = "configs/distill/transfer-neighbours-init.yaml"


#: the teacher kind each recipe was measured on, as ``dfkd distill`` prints it
RECIPE_KINDS = {"batchnorm": "a BatchNorm teacher", "plain": "a BN-free teacher", "chain": "a BN-free chain teacher",
                "batchnorm-large": "a BatchNorm teacher of >= 10 MFLOPs",
                "batchnorm-xl": "a BatchNorm teacher of >= 80 MFLOPs"}


def recipe_choice(teacher: nn.Module, single: bool = True, image_shape: tuple[int, ...] | None = None,
                  methods: tuple[str, ...] = ()) -> tuple[str, str]:
    """``(recipe, the teacher kind it was measured best for)``. ``single=False`` (an ensemble)
    skips the chain recipe, whose ``student_init=teacher`` needs one teacher to slice. ``methods``:
    the synthesizers of the set(s) to be distilled; when all are grey-free, so is the chain recipe."""
    kind = teacher_kind(teacher, image_shape)
    if kind == "plain" and single and getattr(getattr(teacher, "net", teacher), "is_chain", False):
        if methods and all(m in GREY_FREE_METHODS for m in methods):
            return GREY_FREE_CHAIN_RECIPE, RECIPE_KINDS["chain"] + " (a procedural set)"
        return CHAIN_RECIPE, RECIPE_KINDS["chain"]
    return DEFAULTS[kind].recipe, RECIPE_KINDS[kind]


def distill_recipe(teacher: nn.Module, image_shape: tuple[int, ...] | None = None, method: str | None = None) -> str:
    """The shipped ``dfkd distill --config`` measured best for sets of ``method`` (None: unknown)
    from this kind of teacher: grey-level copies (blur, brightness) help near-binary DAFL images of
    a BN-free teacher and hurt BN-matched and procedural ones; a chain teacher (LeNet-5 family) also
    hands its strongest units to the student (figures in the README). A path relative to the
    repository root; ``dfkd distill`` applies it by itself to ``transfer:`` sources."""
    return recipe_choice(teacher, image_shape=image_shape, methods=(method,) if method else ())[0]
