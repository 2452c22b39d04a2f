"""Batch-level augmentation on tensors (vectorised; no per-image Python loop, no workers)."""

from __future__ import annotations

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


def augment_batch(
    x: torch.Tensor, crop_padding: int, hflip: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """Standard light augmentation: random crop with padding, then optional horizontal flip."""
    x = random_crop(x, crop_padding, generator)
    return random_hflip(x, generator) if hflip else x


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
