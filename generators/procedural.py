"""Procedural transfer sets: images drawn by a program, not fitted to the teacher, then chosen by it.

``dead-leaves``: each image stacks a few random rectangles and ellipses, each one flat grey level
(one colour per shape on RGB data), on a black ground; later shapes occlude earlier ones, as in
the dead-leaves model of natural images that Baradad et al. (NeurIPS 2021, "Learning to See by
Looking at Noise") use as a procedural dataset. Nothing is learned, so the synthesis costs only the
teacher's passes. The teacher scores ``oversample`` candidates per kept image and the batch keeps
a class-balanced share of them, each class's most probable first (Nayak et al., WACV 2021: an
arbitrary transfer set works for distillation once it is balanced over the teacher's classes).

Why a teacher-free image model at all: a generator fitted to a teacher's outputs (DAFL) can reach
its classes through pixel patterns no real image has, and leaves the teacher's function on real
objects undetermined; large flat shapes ask it about silhouettes. ``symmetric`` mirrors the left
half of a share of the candidates onto the right (bilateral symmetry, common to garments and many
objects: a bar beside the midline becomes a pair of legs, a slanted edge a trapezoid).
``textured`` fills a share of the shapes with a sinusoidal grating instead of one flat level
(Baradad et al.'s textured dead-leaves variant taught more than flat shapes): flat silhouettes say
nothing about the stripes, seams and knit that tell a shirt from a pullover or a coat.
"""

from __future__ import annotations

from typing import Callable

import torch

from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import ConfigError

from .base import MaterializingSynthesizer, TeacherFn, register_synthesizer


def dead_leaves(n: int, channels: int, size: int, generator: torch.Generator, max_shapes: int = 6,
                symmetric: float = 0.0, textured: float = 0.0) -> torch.Tensor:
    """``n`` images ``(n, channels, size, size)`` in [0, 1] drawn on the CPU from ``generator``:
    1 to ``max_shapes`` occluding shapes with soft (about one pixel) edges, centred near the middle,
    half-axes 1.5 px to 0.45 of the side, any orientation; a share ``textured`` of the shapes
    striped (a grating of period 2 to 8 px, any orientation, darkening by 30-80 % at its troughs);
    a share ``symmetric`` of the images mirrored about the vertical midline. ``textured=0`` draws
    exactly the images it drew before the option existed (no extra random numbers)."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    img = torch.zeros(n, channels, size, size)
    shapes = torch.randint(1, max_shapes + 1, (n,), generator=generator)
    middle = (size - 1) / 2

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, *shape, 1, 1, generator=generator)

    for k in range(max_shapes):
        active = (shapes > k).float().view(n, 1, 1)
        cx = middle + size / 7 * torch.randn(n, 1, 1, generator=generator)
        cy = middle + size / 7 * torch.randn(n, 1, 1, generator=generator)
        a, b = uniform(1.5, size * 0.45), uniform(1.5, size * 0.45)
        angle = uniform(0, torch.pi)
        dx, dy = xs - cx, ys - cy
        u, v = dx * angle.cos() + dy * angle.sin(), -dx * angle.sin() + dy * angle.cos()
        ellipse = (torch.rand(n, 1, 1, generator=generator) < 0.5).float()
        distance = ellipse * ((u / a) ** 2 + (v / b) ** 2).sqrt() + (1 - ellipse) * torch.maximum(u.abs() / a, v.abs() / b)
        mask = (((1 - distance) * torch.minimum(a, b) + 0.5).clamp(0, 1) * active).unsqueeze(1)
        level = uniform(0.1, 1.0, channels) if channels > 1 else uniform(0.1, 1.0).unsqueeze(1)
        if textured > 0:
            level = level * _stripes(u, v, textured, uniform).unsqueeze(1)
        img = img * (1 - mask) + level * mask
    if symmetric > 0:
        mirrored = torch.cat([img[..., : size // 2], img[..., : (size + 1) // 2].flip(-1)], dim=-1)
        chosen = torch.rand(n, 1, 1, 1, generator=generator) < symmetric
        img = torch.where(chosen, mirrored, img)
    return img


def _stripes(u: torch.Tensor, v: torch.Tensor, share: float,
             uniform: Callable[[float, float], torch.Tensor]) -> torch.Tensor:
    """Per-pixel factors ``(n, size, size)`` in (0, 1]: a grating on a share ``share`` of the shapes
    (in each shape's own coordinates ``u, v``), 1 elsewhere; ``uniform(low, high)`` draws one value
    per image from :func:`dead_leaves`'s generator."""
    period, orientation, phase, depth = uniform(2.0, 8.0), uniform(0, torch.pi), uniform(0, 2 * torch.pi), uniform(0.3, 0.8)
    striped = (uniform(0.0, 1.0) < share).float()
    wave = 0.5 + 0.5 * torch.sin(2 * torch.pi * (u * orientation.cos() + v * orientation.sin()) / period + phase)
    return 1 - striped * depth * wave


def class_balanced(probabilities: torch.Tensor, keep: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``keep`` rows of ``probabilities`` (candidates x classes), ``keep // classes`` per
    class (the remainder to classes drawn at random), each class taking the not yet taken
    candidates it is most probable for, classes in a random order."""
    count, classes = probabilities.shape
    if keep > count:
        raise ConfigError(f"dead-leaves: cannot keep {keep} of {count} candidates")
    quota = torch.full((classes,), keep // classes, dtype=torch.long)
    quota[torch.randperm(classes, generator=generator)[: keep % classes]] += 1
    taken = torch.zeros(count, dtype=torch.bool)
    chosen = []
    for k in torch.randperm(classes, generator=generator).tolist():
        score = probabilities[:, k].masked_fill(taken, -1.0)
        best = score.topk(int(quota[k])).indices
        taken[best] = True
        chosen.append(best)
    return torch.cat(chosen)[torch.randperm(keep, generator=generator)]


@register_synthesizer("dead-leaves")
class DeadLeaves(MaterializingSynthesizer):
    """Procedural dead-leaves images, ``oversample`` candidates per kept image, class-balanced by
    the teacher (module docstring). ``oversample=1`` keeps every candidate as drawn."""

    #: Baradad et al. use the procedural images as drawn, with no teacher-side selection
    paper_options = {"oversample": 1}
    smoke_options = {"oversample": 2, "max_shapes": 2}

    def __init__(self, info: DatasetInfo, oversample: int = 10, max_shapes: int = 6, symmetric: float = 0.0,
                 textured: float = 0.0) -> None:
        super().__init__(info)
        if oversample < 1 or max_shapes < 1 or not 0.0 <= symmetric <= 1.0 or not 0.0 <= textured <= 1.0:
            raise ConfigError(f"dead-leaves: need oversample >= 1, max_shapes >= 1, 0 <= symmetric <= 1 and "
                              f"0 <= textured <= 1; got {oversample}, {max_shapes}, {symmetric}, {textured}")
        self.oversample, self.max_shapes, self.symmetric = int(oversample), int(max_shapes), float(symmetric)
        self.textured = float(textured)

    @torch.no_grad()
    def generate(
        self, teacher: TeacherFn, batch_size: int, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        candidates = dead_leaves(batch_size * self.oversample, self.info.in_channels, self.info.image_size,
                                 generator, self.max_shapes, self.symmetric, self.textured).to(device)
        if self.oversample == 1:
            return candidates
        probabilities = torch.cat([teacher(chunk).float().softmax(1).cpu() for chunk in candidates.split(1024)])
        if probabilities.shape[1] != self.info.num_classes:
            raise ConfigError(f"dead-leaves: the teacher gives {probabilities.shape[1]} classes, the dataset has "
                              f"{self.info.num_classes}")
        return candidates[class_balanced(probabilities, batch_size, generator).to(device)]

    def extra_repr(self) -> str:
        return (f"oversample={self.oversample}, max_shapes={self.max_shapes}, symmetric={self.symmetric}, "
                f"textured={self.textured}")
