"""CMI: contrastive model inversion.

Fang et al., "Contrastive Model Inversion for Data-Free Knowledge Distillation", IJCAI 2021
(official code: zju-vipa/CMI, ``datafree/synthesis/contrastive.py``; read, then written here).

**Why.** Inversion methods (DeepInversion, DAFL) tend to *mode-collapse*: many synthetic images
look alike to the teacher, so a large set teaches little more than a small one. CMI adds an
instance-discrimination term: every synthetic image should be told apart from every other one
-- in its batch and in a memory bank of earlier batches -- by a small projection head on the
teacher's features, in the way SimCLR tells augmented views of one image from other images.

**Round.** With a generator ``G`` re-initialised for the round (DCGAN init, N(0, 0.02)), fresh
latents ``z`` and balanced targets ``y``, for ``iterations`` Adam steps on ``G`` and ``z``:

    x = G(z);  g = global_view(x) (shift by up to 4 px + flip);  l = local_view(x)
        (resized crop of 25-100 % of the area + flip)
    loss = bn_weight * R_BN(t(g)) + ce_weight * CE(t(g), y) + adv_weight * L_adv(t(g), s(g))
         + cr_weight * L_cr

``R_BN`` is DeepInversion's BN-statistics loss on the global view; ``L_adv`` the decision-
adversarial term (only with a student). For ``L_cr`` the instance feature ``f`` of an image is
the spatial mean of the input of every BatchNorm2d layer of the teacher (concatenated);
``f_l``/``f_g`` for the local/global views, ``N`` the batch and ``N'`` = ``negatives`` entries
drawn from the bank (which stores ``[f_l, f_g]`` of earlier images). A head ``h`` (MLP, output
L2-normalised, ``head_dim`` wide, its own Adam at ``lr_g``, persistent across rounds) projects
``[f_l; bank_l]`` and ``[f_g; bank_g]``; the logits are ``h(local) h(global).detach()^T /
cr_temperature``, each row's positive its own image, and ``L_cr`` = the mean cross-entropy of
the batch rows plus the mean of the bank rows (split, as the official code does, so the bank's
many rows do not dilute the batch's gradient). The round returns the lowest-loss iterate and
adds its features to the FIFO bank (``bank_size``).

**Materialising (``cmi``) vs online (``cmi-online``)**: see :mod:`generators.rounds`. ``fit``
runs ``fit_rounds`` rounds that fill the bank and train the head; each ``generate`` contrasts
its batch with that bank (and within itself). ``continual=True`` lets every batch join the bank,
as the paper's loop does. ``cmi-online`` runs a round against the live students every
``refresh_every`` steps with ``adv_weight`` 0.5 (official ``adv_cmi`` script).

**Defaults.** Official CIFAR-10 script (``scripts/cmi/adv_cmi_cifar10_wrn402_wrn161.sh``):
``bn 1, oh 0.5, cr 0.8, cr_T 0.1, adv 0.5, lr_g 1e-3, g_steps 200``, bank 40960, 4096
negatives, head 128, latent 256, generator width 64, Adam betas (0.5, 0.999). The CPU defaults
keep every weight and shrink the round: 30 steps at width 32 (a step at width 64 costs about
twice as much), and, since a generator drawn afresh for each round gets only 30 steps, ``lr_g``
1e-2 -- chosen over the official 1e-3 on val (two BN LeNet-5 teachers; ``results/generators-bn/``).
``paper_options`` restore the published sizes.
Differences: the views are drawn per example from the run's seeded generator (one affine
resampling per view) instead of kornia; images are [0, 1] (normalisation inside the teacher);
targets are balanced consecutive classes (official: uniform random, sorted); a teacher without
BatchNorm2d layers needs ``bn_weight=0`` and then the features come from the Conv2d outputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import ConfigError
from datafree_kd.hooks import HookOwner

from .base import TeacherFn, register_synthesizer
from .bn_hooks import BN_LAYER_SETS, as_module, bn_matching
from .deepinversion import InversionResult, eval_mode
from .networks import DCGANGenerator, sample_latent
from .rounds import (
    BestIterate,
    RoundMaterializing,
    RoundMethod,
    RoundOnline,
    RoundSettings,
    apply_grads,
    inversion_terms,
    class_targets,
    draw_seed,
    resized_crop,
    shift_flip,
)


@dataclass
class CMISettings(RoundSettings):
    """Hyperparameters of a CMI round (module docstring: sources); shared fields: RoundSettings."""

    iterations: int = 30
    lr_g: float = 1e-2
    base_channels: int = 32
    cr_weight: float = 0.8
    cr_temperature: float = 0.1
    bank_size: int = 40960
    negatives: int = 4096
    head_dim: int = 128
    local_scale: tuple[float, float] = (0.25, 1.0)
    latent_dim: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        self.local_scale = (float(self.local_scale[0]), float(self.local_scale[1]))
        if self.iterations < 1:
            raise ConfigError(f"iterations must be >= 1, got {self.iterations}")
        if self.cr_temperature <= 0 or self.cr_weight < 0:
            raise ConfigError(f"need cr_temperature > 0 and cr_weight >= 0, got {self.cr_temperature}, {self.cr_weight}")
        if self.bank_size < 1 or self.negatives < 0 or self.head_dim < 1:
            raise ConfigError("bank_size and head_dim must be >= 1, negatives >= 0")
        if not 0 < self.local_scale[0] <= self.local_scale[1] <= 1:
            raise ConfigError(f"local_scale must satisfy 0 < low <= high <= 1, got {self.local_scale}")


class InstanceFeatures(HookOwner):
    """Per-image feature of a teacher forward: the spatial mean of the input of each BatchNorm2d
    layer (CMI's ``InstanceMeanHook``), or of the output of each Conv2d layer for a teacher
    without BatchNorm2d; concatenated in module order."""

    def __init__(self, model: nn.Module) -> None:
        bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        if not (bn or convs):
            raise ConfigError(f"CMI needs convolutional features; {type(model).__name__} has no Conv2d layer")
        self._values: dict[int, torch.Tensor] = {}
        self.count = len(bn or convs)
        self._handles = [m.register_forward_hook(self._hook(i, use_input=bool(bn))) for i, m in enumerate(bn or convs)]

    def _hook(self, index: int, use_input: bool) -> Any:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self._values[index] = (inputs[0] if use_input else output).float().mean(dim=(2, 3))

        return hook

    def take(self) -> torch.Tensor:
        """The features of the last forward (keeping the graph)."""
        if len(self._values) != self.count:
            raise RuntimeError("not every hooked layer ran in the last forward")
        out = torch.cat([self._values[i] for i in range(self.count)], dim=1)
        self._values = {}
        return out

    def _after_remove(self) -> None:
        self._values = {}


class ProjectionHead(nn.Module):
    """CMI's MLP head: Linear(d, d) -> ReLU -> Linear(d, head_dim), L2-normalised output."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(), nn.Linear(dim_in, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


def dcgan_init(module: nn.Module, seed: int) -> None:
    """CMI's ``reset_model``: conv / linear weights ~ N(0, 0.02), biases 0, BN scales ~ N(1, 0.02),
    drawn from ``seed`` without touching the global RNG."""
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=rng) * 0.02)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                m.weight.copy_(1.0 + torch.randn(m.weight.shape, generator=rng) * 0.02)
                m.bias.zero_()


def contrastive_loss(local: torch.Tensor, global_: torch.Tensor, batch: int, temperature: float) -> torch.Tensor:
    """Instance discrimination between views: row i's positive is column i. ``local``/``global_``
    are projected (N + N') x d with the current batch first; batch rows and bank rows are
    averaged separately and summed (official split)."""
    logits = local @ global_.detach().T / temperature
    per_row = F.cross_entropy(logits, torch.arange(len(logits), device=logits.device), reduction="none")
    if len(per_row) > batch:
        return per_row[:batch].mean() + per_row[batch:].mean()
    return per_row.mean()


class _CMICore(RoundMethod):
    """Generator, memory bank, projection head and one CMI round (mixed into both shells)."""

    settings: CMISettings
    info: DatasetInfo
    settings_from = CMISettings.split

    def _build_core(self) -> None:
        s = self.settings
        self.generator = DCGANGenerator.for_info(self.info, s.latent_dim, s.base_channels)
        self.register_buffer("bank", torch.zeros(0))  # [f_local, f_global] of earlier images, oldest first
        self.register_buffer("rounds", torch.zeros((), dtype=torch.long))
        self.head: ProjectionHead | None = None
        self.head_optimizer: torch.optim.Optimizer | None = None
        self.last_result: InversionResult | None = None

    def begin_fit(self, generator: torch.Generator) -> None:
        self.bank = torch.zeros(0, device=self.bank.device)
        self.head, self.head_optimizer = None, None
        self._head_seed = draw_seed(generator)

    def _ensure_head(self, dim: int, device: torch.device) -> None:
        if self.head is not None and self.head.net[0].in_features == dim:
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(getattr(self, "_head_seed", 0))
            self.head = ProjectionHead(dim, self.settings.head_dim).to(device)
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=self.settings.lr_g, betas=self.settings.betas)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # the head and the bank are sized by the teacher's features: build them from the stored shapes
        weight = state_dict.get(prefix + "head.net.0.weight")
        if weight is not None:
            self.head = None
            self._ensure_head(int(weight.shape[1]), self.bank.device)
        if prefix + "bank" in state_dict:
            self.bank = torch.zeros_like(state_dict[prefix + "bank"], device=self.bank.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def get_extra_state(self) -> dict[str, Any]:
        # the head's Adam moments travel with the weights, so a reloaded fit generates the same images
        return {"head_seed": getattr(self, "_head_seed", 0),
                "head_optimizer": None if self.head_optimizer is None else self.head_optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._head_seed = int(state.get("head_seed", 0))
        if state.get("head_optimizer") is not None and self.head_optimizer is not None:
            self.head_optimizer.load_state_dict(copy.deepcopy(state["head_optimizer"]))

    def _negatives(self, generator: torch.Generator) -> torch.Tensor:
        k = min(self.settings.negatives, len(self.bank))
        if k == 0:
            return self.bank[:0]
        index = torch.randperm(len(self.bank), generator=generator)[:k]
        return self.bank[index.to(self.bank.device)]

    def _add_to_bank(self, features: torch.Tensor) -> None:
        """FIFO: the newest ``bank_size`` entries are kept (the bank holds only what was added)."""
        merged = features if self.bank.numel() == 0 else torch.cat([self.bank, features.to(self.bank.device)])
        self.bank = merged[-self.settings.bank_size:].detach().clone()

    def run_round(
        self, teacher: TeacherFn, batch_size: int, generator: torch.Generator, students: Sequence[nn.Module] = (),
        update: bool = True, targets: torch.Tensor | None = None,
    ) -> InversionResult:
        s = self.settings
        module = as_module(teacher)
        device = self.bank.device
        targets = class_targets(s.targets, batch_size, self.info, generator, targets, device)
        competitors = list(students) if s.adv_weight > 0 else []
        gen = copy.deepcopy(self.generator).train()
        dcgan_init(gen, draw_seed(generator))
        z = sample_latent(len(targets), s.latent_dim, generator, device).requires_grad_(True)
        optimizer = torch.optim.Adam([{"params": list(gen.parameters())}, {"params": [z]}], lr=s.lr_g, betas=s.betas)
        best, history = BestIterate(), []
        with eval_mode(module, *competitors), InstanceFeatures(module) as feats, bn_matching(
            module, s.bn_weight, layer_types=BN_LAYER_SETS["2d"]
        ) as bn:
            with torch.no_grad():
                module(torch.zeros(1, *self.info.shape, device=device))
                self._ensure_head(feats.take().shape[1], device)
                bn.reset()
            head, head_opt = self.head, self.head_optimizer
            if not update:  # generate from the fitted state without moving it
                head = copy.deepcopy(self.head)
                head_opt = torch.optim.Adam(head.parameters(), lr=s.lr_g, betas=s.betas)
                head_opt.load_state_dict(copy.deepcopy(self.head_optimizer.state_dict()))  # no shared moments
            for _ in range(s.iterations):
                x = gen(z)
                global_view = shift_flip(x, s.shift, s.flip, generator)
                local_view = resized_crop(x, s.local_scale, s.flip, generator)
                t_logits = module(global_view)
                f_global = feats.take()
                total, terms = inversion_terms(s, t_logits, targets, bn, competitors, global_view)
                module(local_view)
                f_local = feats.take()
                bn.reset()
                cached = self._negatives(generator)
                cached_local, cached_global = cached.chunk(2, dim=1) if len(cached) else (cached, cached)
                proj = head(torch.cat([f_local, cached_local, f_global, cached_global]))
                proj_local, proj_global = proj.chunk(2)
                terms["cr"] = contrastive_loss(proj_local, proj_global, len(targets), s.cr_temperature)
                total = total + s.cr_weight * terms["cr"]
                terms["total"] = total
                best.offer(total, x, torch.cat([f_local, f_global], dim=1))
                apply_grads(total, list(gen.parameters()) + [z] + list(head.parameters()), optimizer, head_opt)
                history.append({k: float(v.detach()) for k, v in terms.items()})
        images, features = best.kept
        if update:
            self._add_to_bank(features)
            self.rounds += 1
        self.last_result = InversionResult(images.clamp(0.0, 1.0), targets.detach(), history)
        return self.last_result


@register_synthesizer("cmi")
class ContrastiveModelInversion(_CMICore, RoundMaterializing):
    """CMI as a materialising synthesizer. Options: the fields of :class:`CMISettings` plus the
    shell's (:class:`~generators.rounds.RoundMaterializing`; ``fit_rounds`` 8)."""

    #: official CIFAR script: 200 generator steps per round, batch 256 (``fit_batch_size``)
    paper_options = {"iterations": 200, "fit_batch_size": 256, "lr_g": 1e-3, "base_channels": 64}
    smoke_options = {"iterations": 1, "fit_rounds": 1, "fit_batch_size": 16, "base_channels": 8, "head_dim": 8}
    default_fit_rounds = 8


@register_synthesizer("cmi-online")
class ContrastiveModelInversionOnline(_CMICore, RoundOnline):
    """CMI inside the Distiller's loop: a round against the live students every ``refresh_every``
    (50) steps into a FIFO pool (20,000); ``adv_weight`` 0.5 (official ``adv_cmi``)."""

    paper_options = {"iterations": 200, "lr_g": 1e-3, "base_channels": 64}
    smoke_options = {"iterations": 1, "base_channels": 8, "head_dim": 8}
    online_defaults = {"adv_weight": 0.5}
    default_refresh_every = 50
    default_pool_size = 20000
