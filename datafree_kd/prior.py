"""``dfkd prior train``: a small diffusion prior (diffusers ``UNet2DModel`` + ``DDPMScheduler``)
trained on a transfer set -- fully data-free when the set came from a synthesizer -- or on a
public proxy image set the user names (``dataset:NAME``, real images: never labelled data-free).

The prior trains through the one training-loop core (exact resume from ``last.pt``, metrics,
divergence checks), keeps an exponential moving average of its weights, and is saved with
``save_pretrained`` as a ``DDPMPipeline`` in ``OUT/pipeline`` (EMA weights), so any diffusers
code loads it, and ``dfkd synthesize --method diffusion --prior OUT`` samples it.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import config_to_dict
from .data import forbid_training_data, load_dataset
from .errors import ConfigError
from .io import atomic_write_json
from .loop import LoopSchedule, TrainingLoop
from .rundir import RunDir
from .runtime import resolve_device, seed_everything, set_threads
from .sources import BatchSource, TensorSetSource
from .training import RuntimeSettings

PIPELINE_SUBDIR = "pipeline"


@dataclass
class PriorTrainConfig(RuntimeSettings):
    """``source``: ``transfer:DIR`` (a set or a ``dfkd synthesize`` run) or ``dataset:NAME``."""

    source: str = ""
    data_root: str | None = None
    #: condition the UNet on the class (the teacher's argmax for a transfer set, the true label for a dataset)
    class_conditional: bool = True
    #: base channels of the UNet (16: 0.64 M parameters at 28 px; sampling speed in benchmarks/RESULTS.md)
    width: int = 16
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    train_timesteps: int = 1000
    hflip: bool = False
    checkpoint_every: int = 250
    log_every: int = 50

    def validate(self) -> None:
        kind, _, target = self.source.partition(":")
        if kind not in ("transfer", "dataset") or not target:
            raise ConfigError(f"source must be transfer:DIR or dataset:NAME, got {self.source!r}")
        for name in ("width", "steps", "batch_size", "train_timesteps", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width % 4:
            raise ConfigError(f"width must be a multiple of 4, got {self.width}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.lr <= 0 or self.grad_clip < 0:
            raise ConfigError("lr must be > 0 and grad_clip >= 0")

    @property
    def from_transfer_set(self) -> bool:
        return self.source.startswith("transfer:")


def _source(cfg: PriorTrainConfig) -> tuple[BatchSource, Any, dict[str, Any]]:
    """(labelled batch source, DatasetInfo, provenance) of the training images."""
    kind, _, target = cfg.source.partition(":")
    if kind == "transfer":
        from .distillation import transfer_origin
        from .transfer_set import TransferSet

        transfer = TransferSet.open(target)
        data = transfer.load()  # labels: stored ones, else the teacher's argmax
        origin = transfer_origin(transfer)
        return TensorSetSource(data, with_labels=True, description=cfg.source, origin=origin), transfer.info, origin
    data = load_dataset(target, "train", cfg.data_root)
    origin = {"kind": "dataset", "dataset": target, "images": len(data), "synthetic": False}
    return TensorSetSource(data, with_labels=True, description=cfg.source, origin=origin), data.info, origin


class _EMA(nn.Module):
    """An exponential moving average of a module's weights (what the pipeline is saved with).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates: a fixed 0.999
    keeps 55 % of the random initialisation after 600 steps (CPU-sized runs are that short), and
    such an average samples noise where the live weights already sample shapes."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = int(self.updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        self.updates += 1
        for ema, live in zip(self.model.parameters(), model.parameters()):
            ema.lerp_(live, 1 - decay)
        for ema, live in zip(self.model.buffers(), model.buffers()):
            ema.copy_(live)


def train_prior(cfg: PriorTrainConfig, out: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train the prior of ``cfg`` into ``out``; return the results dict. A transfer-set source
    runs inside the data-free guard."""
    cfg.validate()
    guard = forbid_training_data(f"prior trained on {cfg.source}", roots=[cfg.data_root]) \
        if cfg.from_transfer_set else nullcontext()
    with guard:
        return _train(cfg, RunDir(out), resume)


def _train(cfg: PriorTrainConfig, run: RunDir, resume: bool) -> dict[str, Any]:
    from diffusers import DDPMPipeline, DDPMScheduler

    from generators.diffusion_prior import PRIOR_META, build_unet

    run.write_config(cfg)
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    generator = seed_everything(cfg.seed)
    source, info, origin = _source(cfg)
    source.setup(device)
    if len(source.data) < cfg.batch_size:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the {len(source.data)} images of {cfg.source}")
    classes = info.num_classes if cfg.class_conditional else None
    unet = build_unet(info.in_channels, info.image_size, cfg.width, classes).to(device)
    ema = _EMA(unet, cfg.ema_decay)
    scheduler = DDPMScheduler(num_train_timesteps=cfg.train_timesteps)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    abar = scheduler.alphas_cumprod.to(device)

    def train_step(step: int) -> dict[str, float]:
        x, y = source.next_batch(cfg.batch_size, generator)
        if cfg.hflip:
            flip = torch.rand(len(x), generator=generator) < 0.5
            x = torch.where(flip.to(device).view(-1, 1, 1, 1), x.flip(-1), x)
        x = x * 2 - 1
        noise = torch.randn(x.shape, generator=generator).to(device)
        t = torch.randint(0, cfg.train_timesteps, (len(x),), generator=generator).to(device)
        a = abar[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x + (1 - a).sqrt() * noise
        pred = unet(noisy, t, class_labels=y if classes else None).sample
        loss = F.mse_loss(pred, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip or float("inf"))
        optimizer.step()
        ema.update(unet)
        return {"loss": loss.item(), "grad_norm": float(grad_norm)}

    schedule = LoopSchedule(cfg.steps, unit="step", log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                            print_every=10 * cfg.log_every)
    loop = TrainingLoop(run, {"unet": unet, "ema": ema, "optimizer": optimizer, "source": source}, generator,
                        schedule, config_to_dict(cfg),
                        lambda r: f"step {r['step']}/{cfg.steps}  loss {r['loss']:.4f}  ({r['elapsed_s']:.0f}s)")
    if resume:
        loop.resume()
    cpu_began = time.process_time()
    history = loop.fit(train_step)
    cpu_s = time.process_time() - cpu_began

    pipeline_dir = run.path / PIPELINE_SUBDIR
    staging = run.path / f".{PIPELINE_SUBDIR}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    DDPMPipeline(unet=ema.model.cpu(), scheduler=scheduler).save_pretrained(str(staging))
    data_free = bool(cfg.from_transfer_set and origin.get("synthetic"))
    meta = {"source": cfg.source, "source_provenance": origin, "data_free": data_free,
            "dataset_info": info.to_dict(), "steps": cfg.steps, "ema_decay": cfg.ema_decay}
    (staging / PRIOR_META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    shutil.rmtree(pipeline_dir, ignore_errors=True)  # a staged copy is complete before the old one goes
    staging.rename(pipeline_dir)
    results = {
        "kind": "prior", "source": cfg.source, "data_free": data_free, "source_provenance": origin,
        "pipeline": str(pipeline_dir), "params": sum(p.numel() for p in unet.parameters()),
        "class_conditional": bool(classes), "steps": cfg.steps, "final_loss": history[-1]["loss"] if history else None,
        "train_time_s": loop.elapsed, "cpu_time_s": cpu_s, "device": str(device), "seed": cfg.seed, "history": history,
    }
    atomic_write_json(run.results_path, results)
    return results
