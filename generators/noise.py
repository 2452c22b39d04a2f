"""The floor every method must beat: uniform-noise images, nothing learned."""

from __future__ import annotations

import torch

from .base import OnlineSynthesizer, register_synthesizer


@register_synthesizer("noise")
class UniformNoise(OnlineSynthesizer):
    """i.i.d. uniform pixels in [0, 1]; distilling on these shows what a method must add."""

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        x = torch.rand(batch_size, *self.info.shape, generator=generator)
        return x.to(self._device())

    def _device(self) -> torch.device:
        return getattr(self, "device", torch.device("cpu"))

    def setup(self, device: torch.device) -> None:
        self.device = device
