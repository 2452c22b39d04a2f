"""NAYER: noisy-layer data generation.

Tran et al., "NAYER: Noisy Layer Data Generation for Efficient and Effective Data-free Knowledge
Distillation", CVPR 2024 (official code: tmtuan1307/NAYER, ``datafree/synthesis/nayer.py`` and
``NLGenerator`` in ``datafree/models/generator.py``; read, then written here).

**Why.** Generators fed with random noise need many steps per batch to turn noise into class
evidence, and a persistent generator collapses to few modes. NAYER moves the randomness out of
the input: the generator's input is a fixed *label embedding* per class (the paper: CLIP text
features of "an image of {class}"), which carries class information from the first step, and the
diversity comes from a **noisy layer** -- a linear layer between the embedding and the generator
body that is *re-initialised with random weights for every batch* -- so the same class embedding
yields different images batch after batch, while the body (kept across batches) learns what the
classes share. Few steps per batch suffice: the method's speed claim.

**Generator** (:class:`NoisyLayerGenerator`): ``e = BN1d(E[y])`` -> noisy layer ``W_g e + b_g``
(one layer per group of ``num_classes`` consecutive images, as the official ``nl = num_classes``;
weights ~ N(0, 1), bias 0, re-drawn per round and trained with the body during the round) -> the
suite's DCGAN body (:class:`~generators.networks.DCGANGenerator`, whose input is the noisy layer's
``noise_dim`` outputs). Official sizes: text embeddings of 512, ``le_emb_size`` 1000, width 64.

**Round.** For ``g_steps`` Adam steps (``lr_g``, betas (0.5, 0.999)) on the body, the embedding
norm and the round's noisy layers:

    loss = bn_weight * R_BN(t(aug(x))) + ce_weight * CE(t(aug(x)), y) + adv_weight * L_adv

``aug`` = per-example shift by up to 4 px + flip (official ``RandomCrop(pad 4)`` + flip);
``R_BN`` with Fast-DFKD's momentum history (``bn_momentum`` 0.9, official ``bn_mmt``), updated
after each round; ``L_adv`` the decision-adversarial term against a student (online, after
``warmup`` rounds). The round returns its lowest-loss iterate (official). The body is
re-initialised every ``g_life`` rounds when ``g_life`` > 0 (official: every 10 epochs of 2
rounds after a warm-up of 10 per epoch; ``nayer-online`` defaults to 20 rounds, ``nayer`` to
never, since its body only trains during ``fit`` unless ``continual``).

**Label embeddings** (``label_embedding``), since the text model cannot download here:

* ``"random"`` (default, the documented fallback): one fixed N(0, 1) code of ``embedding_dim``
  (512) per class, drawn from a fixed seed (the same codes for every run and seed). Such codes are
  nearly orthogonal, so classes stay apart; what they lack is the text model's notion of which
  classes are alike.
* ``"onehot"``: the identity (``num_classes`` wide).
* a file (``.pt`` tensor or ``.npy`` array, ``num_classes x D``, loaded without unpickling code).
* a directory of a local text model (a Hugging Face CLIP model or any encoder with a tokenizer,
  e.g. a sentence-embedding model; needs ``transformers``): the classes' names are encoded as
  ``prompt`` (``"an image of {}"``; CLIP's text features, else the attention-masked mean of the
  last hidden states). Loaded with ``local_files_only``: nothing downloads.

Which source was used, and a checksum of the embedding, travel in the transfer set's provenance
(:meth:`describe`).

**Materialising (``nayer``) vs online (``nayer-online``)**: :mod:`generators.rounds`. ``fit`` =
``fit_rounds`` rounds that train the body (the paper's warm-up), each ``generate`` a round from
a copy of the fitted body with fresh noisy layers; ``continual=True`` keeps training the body
across batches (with ``g_life`` resets), as the paper's loop does. ``nayer-online``: a round every
``refresh_every`` distillation steps against the live students, ``adv_weight`` 1.33 (official).
CPU defaults shrink the round to 10 steps and the body to width 32 (chosen over 64 on val, two BN
LeNet-5 teachers, at two thirds of the CPU; ``results/generators-bn/``); ``paper_options``
restore the published sizes (30 steps, width 64, batch 400, 200 warm-up rounds).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import ConfigError

from .base import TeacherFn, register_synthesizer
from .bn_hooks import BN_LAYER_SETS, as_module, bn_matching
from .deepinversion import InversionResult, eval_mode
from .networks import DCGANGenerator
from .rounds import (
    BestIterate,
    BNHistory,
    RoundMaterializing,
    RoundMethod,
    RoundOnline,
    RoundSettings,
    apply_grads,
    inversion_terms,
    class_targets,
    draw_seed,
    shift_flip,
)

EMBEDDING_SEED = 20240617  # fixed: the fallback codes are the same for every run


@dataclass
class NayerSettings(RoundSettings):
    """Hyperparameters of a NAYER round (module docstring: sources); shared fields: RoundSettings."""

    g_steps: int = 10
    lr_g: float = 4e-3
    base_channels: int = 32
    bn_weight: float = 10.0
    bn_momentum: float = 0.9
    bn_layers: str = "2d"
    warmup: int = 20
    g_life: int = 0
    noise_dim: int = 1000
    label_embedding: str = "random"
    embedding_dim: int = 512
    prompt: str = "an image of {}"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.g_steps < 1:
            raise ConfigError(f"g_steps must be >= 1, got {self.g_steps}")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ConfigError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if self.bn_layers not in BN_LAYER_SETS:
            raise ConfigError(f"bn_layers must be one of {tuple(BN_LAYER_SETS)}, got {self.bn_layers!r}")
        if self.warmup < 0 or self.g_life < 0 or self.noise_dim < 1 or self.embedding_dim < 1:
            raise ConfigError("need warmup >= 0, g_life >= 0, noise_dim >= 1, embedding_dim >= 1")
        if "{}" not in self.prompt:
            raise ConfigError(f"prompt must contain '{{}}' where the class name goes, got {self.prompt!r}")


# --------------------------------------------------------------------------------------------
# label embeddings
# --------------------------------------------------------------------------------------------


def _from_text_model(directory: Path, names: Sequence[str], prompt: str) -> torch.Tensor:
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ConfigError("a text-model label_embedding needs transformers (pip install -e '.[text]')") from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        model = AutoModel.from_pretrained(str(directory), local_files_only=True).eval()
    except (OSError, ValueError) as err:
        raise ConfigError(f"{directory}: not a local text model with a tokenizer ({err})") from err
    texts = [prompt.format(name.replace("_", " ")) for name in names]
    tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        if hasattr(model, "get_text_features"):  # CLIP: its projected text features, as the paper
            return model.get_text_features(**tokens).float()
        hidden = model(**tokens).last_hidden_state.float()
    mask = tokens["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def load_label_embedding(source: str, info: DatasetInfo, dim: int = 512, prompt: str = "an image of {}") -> torch.Tensor:
    """``num_classes x D`` class codes from ``source`` (see the module docstring)."""
    k = info.num_classes
    if source == "random":
        return torch.randn(k, dim, generator=torch.Generator().manual_seed(EMBEDDING_SEED))
    if source == "onehot":
        return torch.eye(k)
    path = Path(source).expanduser()
    if path.is_dir():
        table = _from_text_model(path, info.names(), prompt)
    elif not path.is_file():
        raise ConfigError(f"{source}: label_embedding is not 'random', 'onehot', a file or a text-model directory")
    elif path.suffix == ".npy":
        try:
            table = torch.from_numpy(np.load(path, allow_pickle=False)).float()
        except ValueError as err:
            raise ConfigError(f"{path}: not a plain .npy array ({err})") from err
    elif path.suffix == ".pt":
        try:
            table = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise ConfigError(f"{path}: cannot read a tensor from it ({err})") from err
        if not isinstance(table, torch.Tensor):
            raise ConfigError(f"{path}: holds a {type(table).__name__}, not a tensor")
        table = table.float()
    else:
        raise ConfigError(f"{path}: label embeddings are read from .pt or .npy files or a text-model directory")
    if table.dim() != 2 or table.shape[0] != k:
        raise ConfigError(f"{source}: label embedding has shape {tuple(table.shape)}; need ({k}, D), one row per class")
    if not torch.isfinite(table).all():
        raise ConfigError(f"{source}: label embedding holds NaN or Inf")
    return table


# --------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------


class NoisyLayerGenerator(nn.Module):
    """Label embedding -> BN1d -> per-round noisy layers -> DCGAN body (module docstring)."""

    def __init__(self, embedding: torch.Tensor, info: DatasetInfo, noise_dim: int, base_channels: int) -> None:
        super().__init__()
        self.register_buffer("embedding", embedding.float().clone())
        self.embed_norm = nn.BatchNorm1d(embedding.shape[1], track_running_stats=False)
        self.body = DCGANGenerator.for_info(info, noise_dim, base_channels)
        self.group = info.num_classes

    def noisy_layers(self, batch: int, rng: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh noisy layers for a batch: weights ~ N(0, 1), biases 0, one per group of images."""
        groups = -(-batch // self.group)
        weight = torch.randn(groups, self.body.latent_dim, self.embedding.shape[1], generator=rng).to(device)
        return weight.requires_grad_(True), torch.zeros(groups, self.body.latent_dim, device=device).requires_grad_(True)

    def forward(self, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        e = self.embed_norm(self.embedding[targets])
        n, groups = len(targets), weight.shape[0]
        e = F.pad(e, (0, 0, 0, groups * self.group - n)).view(groups, self.group, -1)  # one row block per layer
        v = torch.baddbmm(bias.unsqueeze(1), e, weight.transpose(1, 2)).reshape(groups * self.group, -1)[:n]
        return self.body(v)

    def reinitialise(self, seed: int) -> None:
        """Re-draw the body and the embedding norm from ``seed`` (the global RNG is left alone)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed_norm.reset_parameters()
        self.body.reinitialise(torch.Generator().manual_seed(seed))


class _NayerCore(BNHistory, RoundMethod):
    """Generator, BN history and one NAYER round (mixed into both shells)."""

    settings: NayerSettings
    info: DatasetInfo
    settings_from = NayerSettings.split

    def _build_core(self) -> None:
        s = self.settings
        self.embedding_source = s.label_embedding
        table = load_label_embedding(s.label_embedding, self.info, s.embedding_dim, s.prompt)
        self.generator = NoisyLayerGenerator(table, self.info, s.noise_dim, s.base_channels)
        self._init_history()
        self.register_buffer("rounds", torch.zeros((), dtype=torch.long))
        self.register_buffer("life_seed", torch.zeros((), dtype=torch.long))
        self.last_result: InversionResult | None = None

    def describe(self) -> dict[str, Any]:
        """Where the label embedding came from (what a transfer set's provenance records)."""
        digest = hashlib.sha256(self.generator.embedding.cpu().numpy().tobytes()).hexdigest()
        return {"label_embedding": self.embedding_source, "label_embedding_shape": list(self.generator.embedding.shape),
                "label_embedding_sha256": digest}

    def begin_fit(self, generator: torch.Generator) -> None:
        self.life_seed.fill_(draw_seed(generator))
        self.generator.reinitialise(int(self.life_seed))
        self.rounds.zero_()
        self.bn_history = torch.zeros(0, device=self.bn_history.device)

    def run_round(
        self, teacher: TeacherFn, batch_size: int, generator: torch.Generator, students: Sequence[nn.Module] = (),
        update: bool = True, targets: torch.Tensor | None = None,
    ) -> InversionResult:
        s = self.settings
        module = as_module(teacher)
        device = self.bn_history.device
        targets = class_targets(s.targets, batch_size, self.info, generator, targets, device)
        use_adv = s.adv_weight > 0 and bool(students) and int(self.rounds) >= s.warmup
        competitors = list(students) if use_adv else []
        if update and s.g_life and int(self.rounds) > 0 and int(self.rounds) % s.g_life == 0:  # the body's life is over
            self.life_seed.fill_(draw_seed(generator))
            self.generator.reinitialise(int(self.life_seed))
        gen = self.generator if update else copy.deepcopy(self.generator)
        gen.train()
        weight, bias = gen.noisy_layers(len(targets), generator, device)
        params = [p for p in gen.parameters() if p.requires_grad] + [weight, bias]
        optimizer = torch.optim.Adam(params, lr=s.lr_g, betas=s.betas)
        best, history, last_stats = BestIterate(), [], None
        layers = BN_LAYER_SETS[s.bn_layers]
        past = self.past_stats(module, layers) if s.bn_weight > 0 else None
        with eval_mode(module, *competitors), bn_matching(
            module, s.bn_weight, momentum=s.bn_momentum if past is not None else 0.0, history=past, layer_types=layers,
        ) as bn:
            for _ in range(s.g_steps):
                x = gen(targets, weight, bias)
                x_aug = shift_flip(x, s.shift, s.flip, generator)
                t_logits = module(x_aug)
                total, terms = inversion_terms(s, t_logits, targets, bn, competitors, x_aug)
                terms["total"] = total
                best.offer(total, x)
                last_stats = bn.batch_stats() or None
                bn.reset()
                apply_grads(total, params, optimizer)
                history.append({k: float(v.detach()) for k, v in terms.items()})
        if update:
            self.push_stats(past, last_stats, s.bn_momentum)
            self.rounds += 1
        (images,) = best.kept
        self.last_result = InversionResult(images.clamp(0.0, 1.0), targets.detach(), history)
        return self.last_result


@register_synthesizer("nayer")
class NoisyLayerGeneration(_NayerCore, RoundMaterializing):
    """NAYER as a materialising synthesizer. Options: the fields of :class:`NayerSettings` plus the
    shell's (:class:`~generators.rounds.RoundMaterializing`; ``fit_rounds`` 20)."""

    #: official CIFAR-10 script: 30 generator steps per round (CIFAR-100: 40), batch 400, and a
    #: warm-up of 20 epochs x 10 rounds
    paper_options = {"g_steps": 30, "fit_batch_size": 400, "fit_rounds": 200, "base_channels": 64}
    smoke_options = {"g_steps": 1, "fit_rounds": 1, "fit_batch_size": 16, "base_channels": 8, "noise_dim": 16}
    default_fit_rounds = 20


@register_synthesizer("nayer-online")
class NoisyLayerGenerationOnline(_NayerCore, RoundOnline):
    """NAYER inside the Distiller's loop: a round against the live students every
    ``refresh_every`` (50) steps into a FIFO pool (20,000); ``adv_weight`` 1.33 (official), a new
    body every 20 rounds."""

    paper_options = {"g_steps": 30, "base_channels": 64}
    smoke_options = {"g_steps": 1, "base_channels": 8, "noise_dim": 16}
    online_defaults = {"adv_weight": 1.33, "g_life": 20}
    default_refresh_every = 50
    default_pool_size = 20000
