"""Datasets held as tensors in memory, batched without DataLoader workers (cheap on 2 cores)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from .info import DatasetInfo


@dataclass
class ImageTensors:
    """Images (uint8 0..255 or float in [0,1], shape N,C,H,W), int64 labels and their DatasetInfo.

    Images stay uint8 where possible (4x less memory) and become floats in [0,1] per batch.
    """

    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"images must be N,C,H,W; got shape {tuple(self.images.shape)}")
        if self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise ValueError("labels must be 1-D with one label per image")
        if self.images.shape[1:] != torch.Size(self.info.shape):
            raise ValueError(
                f"images have shape {tuple(self.images.shape[1:])}, info says {self.info.shape}"
            )
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def as_float(self, images: torch.Tensor) -> torch.Tensor:
        """Convert a slice of stored images to floats in [0, 1]."""
        if images.dtype == torch.uint8:
            return images.float().div_(255.0)
        return images.float()

    def subset(self, indices: torch.Tensor | list[int]) -> "ImageTensors":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageTensors(self.images[idx], self.labels[idx], self.info)

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` with x float in [0,1] on ``device``; the order is set by ``generator``."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - (n % batch_size) if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            x = self.as_float(self.images[idx]).to(device, non_blocking=True)
            yield x, self.labels[idx].to(device, non_blocking=True)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)
