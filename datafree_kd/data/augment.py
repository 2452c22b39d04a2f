"""Batch-level augmentation on tensors (vectorised; no per-image Python loop, no workers)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """Zero-pad by ``padding`` and take a random crop of the original size for each image."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])  # n, h
    cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])  # n, w
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def random_hflip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_blur(x: torch.Tensor, max_sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian blur with a per-image sigma ~ U(0, ``max_sigma``) pixels (separable, borders
    replicated); sigma near 0 leaves the image as it is. Grey edges the teacher then labels."""
    if max_sigma <= 0:
        return x
    n, c = x.shape[:2]
    radius = max(1, math.ceil(2 * max_sigma))
    sigma = (torch.rand(n, generator=generator) * max_sigma).clamp_min(1e-3)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(device=x.device, dtype=x.dtype).repeat_interleave(c, 0)
    flat = x.reshape(1, n * c, *x.shape[2:])  # one group per image channel
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=n * c)
    return flat.reshape_as(x)


def random_invert(x: torch.Tensor, probability: float, generator: torch.Generator | None) -> torch.Tensor:
    """Replace each image by its negative ``1 - x`` with ``probability``: both polarities of a set.

    An inversion generator with no image prior settles on one polarity by chance of the teacher
    (dark blobs on white, or white on dark); the teacher's answers on the other polarity are where
    real images of the opposite kind lie."""
    if probability <= 0:
        return x
    flip = (torch.rand(x.shape[0], generator=generator) < probability).to(x.device)
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), 1 - x, x)


def random_brightness(x: torch.Tensor, max_drop: float, generator: torch.Generator | None) -> torch.Tensor:
    """Scale each image by a factor ~ U(1 - ``max_drop``, 1): darker copies stay in [0, 1]."""
    if max_drop <= 0:
        return x
    factor = 1 - torch.rand(x.shape[0], generator=generator) * max_drop
    return x * factor.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))


def augment_batch(
    x: torch.Tensor, crop_padding: int, hflip: bool, generator: torch.Generator | None,
    blur: float = 0.0, brightness: float = 0.0, invert: float = 0.0,
) -> torch.Tensor:
    """Random crop with padding, optional horizontal flip, negatives with probability ``invert``,
    then the photometric pair (blur up to ``blur`` sigma, darkening by up to ``brightness``), each
    off at 0 (and then drawing nothing, so the other draws are as without it).

    The photometric pair is for distillation from synthetic sets: inversion images of a teacher
    without BatchNorm are near-binary, and blurred, dimmed copies that the teacher labels afresh
    add the grey levels real images have (measured in ``results/datafree-lenet5/``)."""
    x = random_crop(x, crop_padding, generator)
    x = random_hflip(x, generator) if hflip else x
    x = random_invert(x, invert, generator)
    x = random_blur(x, blur, generator)
    return random_brightness(x, brightness, generator)


def mixup_images(x: torch.Tensor, alpha: float, generator: torch.Generator | None) -> torch.Tensor:
    """Blend each image with another of the batch: ``lam * x + (1 - lam) * x[perm]``.

    Meant for distillation, where the teacher labels the *blended* image, so no label mixing is
    needed: every blend is a new input the teacher can answer for, which multiplies the variety
    of a small synthetic set. ``lam ~ Beta(alpha, alpha)`` per image, folded to ``lam >= 0.5`` so
    each blend stays dominated by its own image (whose label, if any, it keeps). ``alpha = 0``
    disables it. Draws come from ``generator`` only (a seed taken from it drives the Beta draw),
    so a resumed run repeats them.
    """
    if alpha <= 0 or x.shape[0] < 2:
        return x
    n = x.shape[0]
    perm = torch.randperm(n, generator=generator).to(x.device)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lam = torch.distributions.Beta(float(alpha), float(alpha)).sample((n,))
    lam = torch.maximum(lam, 1 - lam).to(device=x.device, dtype=x.dtype).view(n, *([1] * (x.dim() - 1)))
    return lam * x + (1 - lam) * x[perm]
