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
