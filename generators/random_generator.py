"""The untrained-generator baseline: DAFL/DFAD/ZSKT's generator at random initialisation.

Between the ``noise`` floor (i.i.d. pixels) and the trained generators: images with the
generator's spatial structure but no knowledge of the teacher. A method that does not beat it has
learned nothing from the teacher (an ablation implicit in Chen et al. 2019 and Fang et al. 2019).
"""

from __future__ import annotations

import torch

from datafree_kd.data.info import DatasetInfo

from .base import MaterializingSynthesizer, TeacherFn, register_synthesizer
from .networks import DCGANGenerator, sample_latent


@register_synthesizer("random-generator")
class RandomGenerator(MaterializingSynthesizer):
    """A :class:`DCGANGenerator` that is never trained; ``fit`` only draws its weights from the
    run's seeded generator (so the set is fixed by the seed), ``generate`` samples it."""

    #: the untrained twin of DAFL's paper-sized generator
    paper_options = {"base_channels": 128}
    smoke_options = {"base_channels": 8}

    def __init__(self, info: DatasetInfo, latent_dim: int = 100, base_channels: int = 64) -> None:
        super().__init__(info)
        self.generator = DCGANGenerator.for_info(info, latent_dim, base_channels)

    def fit(self, teacher: TeacherFn, generator: torch.Generator, device: torch.device) -> dict[str, float]:
        self.to(device)
        self.generator.reinitialise(generator)
        return {}

    def generate(
        self, teacher: TeacherFn, batch_size: int, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        self.to(device)
        return self.generator.sample(batch_size, generator, device)
