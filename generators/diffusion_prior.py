"""Diffusion priors for ``diffusion`` synthesis: a diffusers UNet + noise schedule, from a local
pipeline directory (ours from ``dfkd prior train``, or any diffusers pipeline saved with
``save_pretrained``), or an untrained UNet sized for the teacher.

Two kinds: ``unet`` (a pixel-space ``UNet2DModel``, unconditional or class-conditional through
``num_class_embeds``) and ``text`` (a text-to-image pipeline: ``UNet2DConditionModel`` on VAE
latents, conditioned on per-class prompts through its text encoder). Loading never reaches the
network: local paths only, ``HF_HUB_OFFLINE=1``, ``local_files_only``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datafree_kd.checkpoint import fingerprint
from datafree_kd.errors import ConfigError, DatasetError

#: written beside a pipeline by ``dfkd prior train``: what the prior was trained on
PRIOR_META = "datafree_kd_prior.json"


@dataclass
class Prior:
    """What the sampler needs from a pipeline. ``channels`` / ``sample_size`` describe the space
    the UNet denoises (pixels for ``unet``, VAE latents for ``text``)."""

    kind: str
    unet: nn.Module
    scheduler_config: dict[str, Any]
    channels: int
    sample_size: int
    num_class_embeds: int | None = None
    path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    vae: nn.Module | None = None
    text_encoder: nn.Module | None = None
    tokenizer: Any = None

    @property
    def image_channels(self) -> int:
        """Channels of the images the prior makes (the VAE's output for a text pipeline)."""
        return int(self.vae.config.out_channels) if self.vae is not None else self.channels

    def fingerprint(self) -> str:
        return fingerprint({k: v.detach().cpu() for k, v in self.unet.state_dict().items()})

    def describe(self) -> dict[str, Any]:
        """Provenance of the prior for a transfer set's config."""
        return {"kind": self.kind, "path": self.path, "fingerprint": self.fingerprint(),
                "scheduler": self.scheduler_config.get("_class_name"), "channels": self.channels,
                "sample_size": self.sample_size, "num_class_embeds": self.num_class_embeds,
                "trained_on": self.meta.get("source_provenance"), "data_free": self.meta.get("data_free")}


def unet_levels(size: int) -> int:
    """Down-sampling levels a UNet can take at ``size`` px (each halves; sizes stay whole, >= 4)."""
    levels = 1
    while size % (2 ** (levels + 1)) == 0 and size // (2 ** (levels + 1)) >= 4 and levels < 3:
        levels += 1
    return levels


def build_unet(channels: int, size: int, width: int, num_classes: int | None = None) -> nn.Module:
    """A small pixel-space ``UNet2DModel`` for ``channels`` x ``size`` px (28 px: two levels, 7 px at
    the bottom), class-conditional when ``num_classes`` is given."""
    from diffusers import UNet2DModel

    if width < 4 or width % 4:
        raise ConfigError(f"unet_width must be a positive multiple of 4, got {width}")
    levels = unet_levels(size) + 1
    blocks = tuple(width * min(2 ** i, 4) for i in range(levels))
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=blocks,
                       down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
                       layers_per_block=1, norm_num_groups=min(8, width // 2 or 1), num_class_embeds=num_classes)


def default_scheduler_config(train_timesteps: int = 1000) -> dict[str, Any]:
    from diffusers import DDPMScheduler

    return dict(DDPMScheduler(num_train_timesteps=train_timesteps).config)


def untrained_prior(channels: int, size: int, width: int, generator: torch.Generator) -> Prior:
    """A UNet at a seeded random initialisation: every image then carries only what the teacher's
    guidance puts in (the floor a trained prior must beat)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        unet = build_unet(channels, size, width)
    return Prior("unet", unet, default_scheduler_config(), channels, size)


def load_prior(path: str | os.PathLike) -> Prior:
    """A local diffusers pipeline directory as a :class:`Prior`; any problem is one
    ``DatasetError`` naming the directory and what is wrong with it."""
    directory = Path(path).expanduser()
    if (directory / "pipeline" / "model_index.json").is_file():  # a `dfkd prior train` run directory
        directory = directory / "pipeline"
    if not directory.is_dir():
        raise DatasetError("no such diffusers pipeline directory", directory)
    if not (directory / "model_index.json").is_file():
        raise DatasetError("not a diffusers pipeline directory (no model_index.json; write one with "
                           "pipeline.save_pretrained(DIR) or `dfkd prior train`)", directory)
    try:
        index = json.loads((directory / "model_index.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"corrupt model_index.json ({exc})", directory) from None
    if not isinstance(index, dict) or "unet" not in index or "scheduler" not in index:
        raise DatasetError("model_index.json names no unet and scheduler: not a UNet diffusion pipeline", directory)
    os.environ["HF_HUB_OFFLINE"] = "1"  # local paths only: never reach the hub
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # errors and results stay one line each on stderr
    diffusers_logging.set_verbosity_error()
    try:  # a text-to-image pipeline's encoder comes through transformers, which has bars of its own
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
    except ImportError:
        pass
    try:
        pipe = DiffusionPipeline.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:  # diffusers raises many types for broken folders
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise DatasetError(f"cannot load the diffusers pipeline ({type(exc).__name__}: {first})", directory) from None
    meta = {}
    if (directory / PRIOR_META).is_file():
        meta = json.loads((directory / PRIOR_META).read_text(encoding="utf-8"))
    unet = pipe.unet
    config = dict(pipe.scheduler.config)
    if getattr(pipe, "text_encoder", None) is not None and getattr(pipe, "vae", None) is not None:
        return Prior("text", unet, config, int(unet.config.in_channels), int(unet.config.sample_size),
                     path=str(directory), meta=meta, vae=pipe.vae, text_encoder=pipe.text_encoder,
                     tokenizer=pipe.tokenizer)
    if type(unet).__name__ != "UNet2DModel":
        raise DatasetError(f"unsupported pipeline: its unet is a {type(unet).__name__} without a text encoder "
                           "and VAE", directory)
    size = unet.config.sample_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return Prior("unet", unet, config, int(unet.config.in_channels), int(size),
                 num_class_embeds=unet.config.num_class_embeds, path=str(directory), meta=meta)
