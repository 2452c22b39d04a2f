"""Which materialising method ``dfkd synthesize`` uses when no ``--method`` is given.

The choice depends on the teacher, because the strongest methods read the teacher's BatchNorm
statistics and a teacher without BatchNorm offers none:

* teacher with BatchNorm2d layers (running statistics) -> ``fast`` (Fast-DFKD-style
  meta-generator matching those statistics);
* teacher without -> ``dafl`` (needs only the teacher's outputs and features).

Each comes with the options that measured best per CPU-minute on Fashion-MNIST (README,
``results/datafree-lenet5*``); explicit ``options`` override them key by key. Measured on the
``lenet5_bn`` teacher (0.9204) -> ``lenet5_half``, 20k images, 200 epochs of kd with mixup, seed 0,
1 torch thread: ``fast`` (200 meta rounds) 0.8342 in 12.0 CPU-min, ``deepinversion`` (100
iterations) 0.8082 in 13.1, ``dafl`` 0.4942 in 13.2 — DAFL's losses ignore the BN statistics
that the other two match. On the plain ``lenet5`` teacher ``dafl`` (0.8215) beat what else
runs there: ``fast`` with ``bn_weight=0`` (0.69-0.72 against 0.77 in a 40-epoch proxy), DAFL with
TV or L2 image priors, and ZSKD-style data impressions (``results/datafree-lenet5/closing-the-gap.md``).

Sets from the plain teacher are then best distilled with grey-level copies of each image
(``configs/distill/transfer-neighbours-grey.yaml``: 0.8345 ± 0.0116 over seeds 0-2, 0.914 × the
teacher, against 0.7907 with the plain neighbours recipe); :func:`distill_recipe` names the
recipe per teacher kind. DAFL at lr 0.005 and 400 steps moved single seeds by several points
either way, so 800 steps at lr 0.02 stay. A BN-free *chain* teacher (the LeNet-5 family) also
hands its strongest units to the student (``student_init=teacher``, fine-tuned at lr 0.001:
``configs/distill/transfer-neighbours-grey-init.yaml``): 0.8505 ± 0.0017 over seeds 0-4, 0.931 ×
the plain LeNet-5 (lr chosen on seed 1; seeds 3 and 4 held out: results/datafree-lenet5/).

``input_stats=1`` (DAFL also matches the pixel mean and std in the teacher's input
normalisation) became part of the plain default in session 18: without it DAFL settles on black
objects on a white ground for some teachers, and their students lose several points. Chosen on
val over three fresh plain teachers never used for tuning, with the weight fixed at 1 beforehand
(``results/default-fresh-teachers/``).

The plain default fits its DAFL generator with ``fit_precision=auto`` (bf16 autocast for the
generator, the teacher kept float32, where the CPU or GPU computes bf16 natively) and
channels-last weights, and its chain recipe distils 100 epochs, not 200 (session 23, rule R8 in
``results/default-fresh-teachers/``): over five teacher/set pairs of three fresh teachers it tied
the float32 / 200-epoch pipeline on val (mean -0.1 point; teacher 6 -3.3 and +1.3 on its two
draws) at 0.50 x its CPU on an AMX Xeon. The BN default keeps a float32 fit (not measured).

``bn_layers="all"`` (match the classifier's BatchNorm1d statistics too, not only the conv layers'
as the official code does): seeds 0 / 1 / 2 gave 0.8582 / 0.8580 / 0.8305 against 0.8342 /
0.8331 / 0.8271 with ``"2d"`` (same seeds, same recipe; 13.5 CPU-min on average). DeepInversion
keeps ``"2d"``: without Fast-DFKD's BN-statistics history the 1-d terms are mostly batch noise
(see :mod:`generators.bn_hooks`). Distilled with ``configs/distill/transfer-neighbours.yaml``
(kd plus kd at random neighbours) the default sets of seeds 0-4 give 0.8572 ± 0.0034 (0.931 × the
teacher; kd alone 0.8477 ± 0.0127): most of kd's spread is the distillation run's.

A BatchNorm teacher of >= 10 MFLOPs per image (``batchnorm-large``: ResNet-20 is 62 M, LeNet-5
0.83 M) would cost hours of CPU at the LeNet sizes, so its default is sized to ~30 CPU-minutes a
run (rule R10, ``results/resnet20-pair/``): a float32 channels-last fit (what was measured;
``fit_precision=auto`` is an option) and
``configs/distill/transfer-neighbours-large.yaml`` (the BN recipe on a ResNet-8, float32
channels-last; since rule R19, int8 teacher passes and 2,418 steps instead of 1,872). Chosen on the kept ResNet-20's val over 100 rounds with 20 epochs (a tie
inside 0.5 point, settled beforehand for the 50 rounds) and reported on three fresh teachers
(figures there). A WRN-16-2 (154 MFLOPs) takes the same tier; measured once, its run costs more
than 30 CPU-minutes with that recipe (39.6, ``results/wrn-pair/``), mostly in the teacher's two
passes per step (kd on the image and at a random neighbour). Since rule R25 the tier's set is the
xl tier's below (5,000 images, 10 inner steps, 25 meta rounds, distilled for 62 epochs, the same
2,418 steps): on teachers trained 12 epochs, as ``dfkd teacher train`` trains them, R21's 10k images
of 5 inner steps left the teacher unsure of its own images, and the student with them.

So a BatchNorm teacher of >= 80 MFLOPs per image (``batchnorm-xl``; where the two-pass run's
measured cost, interpolated between ResNet-20 and WRN-16-2, crosses 30 CPU-minutes) takes the
large tier's synthesis (its images adapted longer since R26, below) but distils with kd alone (``configs/distill/transfer-kd-xl.yaml``): one
teacher pass per step (rule R12, chosen on the WRN-16-2 teacher's val against kd at the neighbour
alone and against cutting steps, which lost 8 points: R11), made by an int8 copy of the teacher on
CPU, whose saved CPU pays for 32 epochs instead of 24 (rule R17). Its synthesis was the first to
make half the images (5,000), each adapted for 10 inner steps instead of 5 over 25 meta rounds
instead of 50 (rule R20: the same fit budget, slightly cheaper; the large tier's since R25). On a
WRN-16-2 trained as ``dfkd teacher train`` trains it (15 epochs) that set left the teacher unsure of
its own images and the student under the issue's bar (R23); since rule R26 the xl tier adapts each image for
15 inner steps and the recipe distils the set for 102 epochs (3,978 steps): each lever alone gained
val, together most, within 30 CPU-minutes a run on a 2-core CPU (results/wrn-pair/). The large tier
keeps 10 steps until rule R27 (results/resnet20-pair/) has judged 15 on new ResNet-20 teachers.
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
    "plain": DefaultChoice("dafl", {"fit_steps": 800, "batch_size": 256, "lr": 0.02, "input_stats": 1.0},
                           "the teacher has no BatchNorm layers to match",
                           "configs/distill/transfer-neighbours-grey.yaml",
                           {"fit_precision": "auto", "channels_last": True}),
    #: since rule R25 (R20's set for the xl tier first): 5,000 images each adapted for 10 inner
    #: steps over 25 meta rounds, the fit budget of 10k images at 5 steps and 50 rounds
    "batchnorm-large": DefaultChoice("fast", {"fit_rounds": 25, "bn_layers": "all", "inner_steps": 10},
                                     "the teacher has BatchNorm layers and >= 10 MFLOPs per image",
                                     "configs/distill/transfer-neighbours-large.yaml",
                                     {"fit_precision": "float32", "channels_last": True}, images=5000),
}
#: past 80 MFLOPs: the large tier's set with images adapted for 15 inner steps (rule R26), and a
#: recipe with one teacher pass per step (rule R12)
DEFAULTS["batchnorm-xl"] = replace(DEFAULTS["batchnorm-large"], recipe="configs/distill/transfer-kd-xl.yaml",
                                   options={**DEFAULTS["batchnorm-large"].options, "inner_steps": 15},
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
    """The CPU options measured best for ``method`` where it is a default (e.g. dafl's 800 steps at
    lr 0.02), else none: what a study that swaps in ``method`` should start from."""
    return next((dict(c.options) for c in DEFAULTS.values() if c.method == method), {})


#: for a BN-free *chain* teacher (the LeNet-5 family) whose sets go to a narrower copy of it: the
#: grey recipe with the student started from the teacher's strongest units (``student_init``)
CHAIN_RECIPE = "configs/distill/transfer-neighbours-grey-init.yaml"


#: the teacher kind each recipe was measured on, as ``dfkd distill`` prints it
RECIPE_KINDS = {"batchnorm": "a BatchNorm teacher", "plain": "a BN-free teacher", "chain": "a BN-free chain teacher",
                "batchnorm-large": "a BatchNorm teacher of >= 10 MFLOPs",
                "batchnorm-xl": "a BatchNorm teacher of >= 80 MFLOPs"}


def recipe_choice(teacher: nn.Module, single: bool = True, image_shape: tuple[int, ...] | None = None
                  ) -> tuple[str, str]:
    """``(recipe, the teacher kind it was measured best for)``. ``single=False`` (an ensemble)
    skips the chain recipe, whose ``student_init=teacher`` needs one teacher to slice."""
    kind = teacher_kind(teacher, image_shape)
    if kind == "plain" and single and getattr(getattr(teacher, "net", teacher), "is_chain", False):
        return CHAIN_RECIPE, RECIPE_KINDS["chain"]
    return DEFAULTS[kind].recipe, RECIPE_KINDS[kind]


def distill_recipe(teacher: nn.Module, image_shape: tuple[int, ...] | None = None) -> str:
    """The shipped ``dfkd distill --config`` measured best for sets from this kind of teacher:
    grey-level copies (blur, brightness) help near-binary DAFL images of a BN-free teacher (0.914 x
    against 0.866 x over three seeds) and hurt BN-matched ones (-3.6 points on one seed); a chain
    teacher (LeNet-5 family) also hands its strongest units to the student (README). A path
    relative to the repository root; ``dfkd distill`` applies it by itself to ``transfer:`` sources."""
    return recipe_choice(teacher, image_shape=image_shape)[0]
