"""DFAD — Data-Free Adversarial Distillation (Fang et al., arXiv:1912.11006, 2019).

A min-max game on the mean absolute logit discrepancy ``L1 = mean |t(G(z)) - s(G(z))|``: the
generator *maximises* it (minimises ``-L1``) to find inputs where the student still disagrees
with the teacher, and the student minimises it on those inputs. The student side is the
Distiller's ordinary objective, so the paper's student loss is ``--objective l1=1`` (the ``l1``
term: mean over batch and classes, the same reduction as here).

Schedule: the official code takes 5 student steps per generator step; ``update_every=5`` updates
the generator on every 5th distillation step (``g_steps`` updates each time). Generator: Adam,
lr 1e-3 (the paper's generator rate). With several students the generator maximises the mean
discrepancy over them.

Students stay in the mode the Distiller put them in (training: BatchNorm uses batch statistics,
as in the reference code); their buffers are restored after the update
(:func:`~generators.networks.preserved_buffers`) and only the generator receives gradients.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from datafree_kd.data.info import DatasetInfo

from .base import TeacherFn, register_synthesizer
from .networks import OnlineGeneratorSynthesizer

Discrepancy = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def l1_discrepancy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean absolute logit difference over batch and classes (the ``l1`` loss term)."""
    return F.l1_loss(student_logits, teacher_logits)


class AdversarialGenerator(OnlineGeneratorSynthesizer):
    """A generator that maximises ``discrepancy(student, teacher)`` averaged over the students.

    Subclasses set ``discrepancy`` and ``figure`` (the name its value is logged under).
    """

    discrepancy: Discrepancy = staticmethod(l1_discrepancy)
    figure = "l1"

    def generator_loss(
        self, images: torch.Tensor, teacher: TeacherFn, students: Sequence[nn.Module]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if not students:
            raise ValueError(f"{self.name}: the adversarial generator needs at least one student")
        t_logits = teacher(images).float()
        gaps = torch.stack([self.discrepancy(s(images).float(), t_logits) for s in students])
        gap = gaps.mean()
        return -gap, {self.figure: float(gap.detach())}


@register_synthesizer("dfad")
class DFAD(AdversarialGenerator):
    """DFAD's generator (see the module doc); student objective ``l1=1``."""

    #: the published generator is 128 channels wide at its seed (official MNIST: ngf 64, doubled in
    #: the first block; ours defaults to 64 on a CPU). Student side of that run, set on the
    #: distillation: batch 512, SGD lr 0.01, 40 epochs x 50 generator steps.
    paper_options = {"base_channels": 128}
    smoke_options = {"base_channels": 8}

    discrepancy = staticmethod(l1_discrepancy)
    figure = "l1"

    def __init__(
        self,
        info: DatasetInfo,
        lr: float = 1e-3,
        update_every: int = 5,
        g_steps: int = 1,
        latent_dim: int = 100,
        base_channels: int = 64,
    ) -> None:
        super().__init__(info, latent_dim, base_channels, lr, update_every=update_every, g_steps=g_steps)
