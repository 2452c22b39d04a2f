"""ZSKT — Zero-Shot Knowledge Transfer via adversarial belief matching (Micaelli & Storkey,
NeurIPS 2019).

The generator maximises the forward KL divergence at temperature 1,
``KL(p_t || p_s) = sum_k p_t (log p_t - log p_s)`` (mean over the batch), to find inputs on which
the student's beliefs differ most from the teacher's; with several students, the mean over them.

Schedule: the paper alternates n_G = 1 generator step with n_S = 10 student steps, hence
``update_every=10``, ``g_steps=1``. Generator: Adam, lr 1e-3 (the paper also cosine-anneals it;
not done here — the Distiller schedules only students).

Student objective (paper): KL at T = 1 plus beta = 250 times the attention-transfer loss summed
over matched block outputs. Our ``kd`` term is that KL (times T² = 1) and our ``attention`` term is
the *mean* over layer pairs of the same per-pair quantity, so for n pairs the weight is 250·n, e.g.
with three WRN groups::

    --objective kd=1,attention=750 term_options.kd.temperature=1 \
        "term_options.attention.student_layers=[net.block1,net.block2,net.block3]" \
        "term_options.attention.teacher_layers=[net.block1,net.block2,net.block3]"

Students are handled as in DFAD: current mode kept, buffers restored, no parameter gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from datafree_kd.data.info import DatasetInfo

from .base import register_synthesizer
from .dfad import AdversarialGenerator


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(t) || softmax(s)) at T = 1, summed over classes, mean over the batch."""
    return F.kl_div(F.log_softmax(student_logits, dim=1), F.log_softmax(teacher_logits, dim=1),
                    reduction="batchmean", log_target=True)


@register_synthesizer("zskt")
class ZSKT(AdversarialGenerator):
    """ZSKT's adversarial generator (see the module doc)."""

    #: the published generator is 128 channels wide at its seed (ours defaults to 64 on a CPU)
    paper_options = {"base_channels": 128}
    smoke_options = {"base_channels": 8}

    discrepancy = staticmethod(forward_kl)
    figure = "kl"

    def __init__(
        self,
        info: DatasetInfo,
        lr: float = 1e-3,
        update_every: int = 10,
        g_steps: int = 1,
        latent_dim: int = 100,
        base_channels: int = 64,
    ) -> None:
        super().__init__(info, latent_dim, base_channels, lr, update_every=update_every, g_steps=g_steps)
