"""Supervised training of teachers (and of the real-data baselines later issues compare against).

Each epoch ends with an atomic ``last.pt`` training state, so an interrupted run resumes exactly
where it stopped; the final ``model.pt`` is a self-describing checkpoint (DESIGN rule 6).

Robust teachers (``adversarial``, L∞ threat model, all through :func:`adversarial.pgd_maximize`):

* ``pgd`` — Madry et al. (2018): min_θ CE(f(x'), y) with x' = PGD maximising CE(f(·), y) from a
  uniform random start in the eps-ball; the attack runs with the model in eval mode (parameters
  frozen), the update in train mode. ``train_accuracy`` is then measured on the adversarial batch.
* ``trades`` — Zhang et al. (2019): CE(f(x), y) + β·KL(f(x) ‖ f(x')), batch-mean KL, with x'
  maximising KL(f(x) ‖ f(·)) (f(x) fixed, eval mode, as the official code) from x + 0.001·N(0, 1).
  As in the official code the outer KL is not detached on its f(x) side. ``train_accuracy`` is
  measured on the clean batch. Difference from the official code: the 0.001·N start is projected
  to the ball/[0, 1] at once instead of after the first step (identical for steps ≥ 1).

``adv_eps`` None takes the dataset's usual budget (``DEFAULT_ADV_EPS``); ``adv_step_size`` None is
2.5·eps/steps (Madry et al.'s rule; equals the usual 2/255 for eps 8/255 and 10 steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .adversarial import ModelModeGuard, pgd_maximize
from .checkpoint import ModelSpec, save_model
from .config import config_to_dict
from .data import load_dataset
from .data.augment import augment_batch
from .distributed import init_from_launcher
from .distributed import summary as distributed_summary
from .summary import is_blind
from .errors import ConfigError
from .evaluation import evaluate_classifier, predict
from .metrics import top1_accuracy
from .rundir import RunDir
from .runtime import resolve_device, seed_everything, set_threads
from .loop import LoopSchedule, TrainingLoop
from .training import OptimizerSettings, RuntimeSettings, build_optimizer, build_scheduler


@dataclass
class TeacherTrainConfig(OptimizerSettings, RuntimeSettings):
    """A supervised training recipe; per-dataset defaults come from ``RECIPES``."""

    dataset: str = "fashion-mnist"
    data_root: str | None = None
    download: bool = False
    arch: str = "lenet5"
    epochs: int = 15
    batch_size: int = 128
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    crop_padding: int = 2
    hflip: bool = True
    eval_every: int = 1
    eval_batch_size: int = 1000
    latency_runs: int = 30
    adversarial: str = "none"
    adv_eps: float | None = None
    adv_steps: int = 10
    adv_step_size: float | None = None
    trades_beta: float = 6.0

    def validate(self) -> None:
        positive = ("epochs", "batch_size", "eval_batch_size", "eval_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("label_smoothing must be in [0, 1)")
        if self.crop_padding < 0 or self.warmup_epochs < 0 or self.latency_runs < 0:
            raise ConfigError("crop_padding, warmup_epochs and latency_runs must be >= 0")
        if self.warmup_epochs >= self.epochs:
            raise ConfigError("warmup_epochs must be smaller than epochs")
        if self.adversarial not in ADVERSARIAL_METHODS:
            raise ConfigError(f"unknown adversarial training {self.adversarial!r}; use one of "
                              f"{', '.join(ADVERSARIAL_METHODS)}")
        if self.adv_steps < 1:
            raise ConfigError(f"adv_steps must be >= 1, got {self.adv_steps}")
        for name in ("adv_eps", "adv_step_size"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        if not self.trades_beta >= 0:
            raise ConfigError(f"trades_beta must be >= 0, got {self.trades_beta}")
        self.adversarial_settings()  # a missing eps for an unknown dataset fails now, not after loading
        from .models import MODELS

        if self.arch not in MODELS:
            MODELS.get(self.arch)  # an unknown arch fails now (listing the known ones), not after loading the data

    def adversarial_settings(self) -> dict[str, Any]:
        """The resolved adversarial-training recipe, as recorded in results.json."""
        if self.adversarial == "none":
            return {"method": "none"}
        eps = self.adv_eps if self.adv_eps is not None else DEFAULT_ADV_EPS.get(self.dataset)
        if eps is None:
            raise ConfigError(f"adversarial={self.adversarial} on dataset {self.dataset!r} has no default "
                              f"budget; give adv_eps=... (images are in [0, 1])")
        step_size = self.adv_step_size if self.adv_step_size is not None else 2.5 * eps / self.adv_steps
        settings: dict[str, Any] = {"method": self.adversarial, "norm": "linf", "eps": float(eps),
                                    "steps": self.adv_steps, "step_size": float(step_size)}
        if self.adversarial == "trades":
            settings["beta"] = self.trades_beta
        return settings


ADVERSARIAL_METHODS = ("none", "pgd", "trades")
# The usual L∞ budgets in [0, 1] pixel units (Madry et al.; TRADES; ARD/RSLAD for CIFAR).
DEFAULT_ADV_EPS: dict[str, float] = {
    "fashion-mnist": 0.1, "mnist": 0.3, "cifar10": 8 / 255, "cifar100": 8 / 255, "svhn": 8 / 255,
}
# Fields added after runs already existed: a saved config without them resumes as a clean run.
_ADVERSARIAL_DEFAULTS = {"adversarial": "none", "adv_eps": None, "adv_steps": 10, "adv_step_size": None,
                         "trades_beta": 6.0}


# Per-dataset defaults, then per-(dataset, arch) refinements; user settings override both.
RECIPES: dict[str, dict[str, Any]] = {
    # measured: lenet5 reaches 91.5 % in 15 epochs; crop padding hurt this small model (90.97 %)
    "fashion-mnist": {"epochs": 15, "lr": 0.05, "crop_padding": 0, "hflip": True},
    "mnist": {"epochs": 10, "lr": 0.05, "crop_padding": 2, "hflip": False},
    "cifar10": {"epochs": 200, "lr": 0.1, "crop_padding": 4, "hflip": True, "schedule": "cosine"},
    "cifar100": {"epochs": 200, "lr": 0.1, "crop_padding": 4, "hflip": True, "schedule": "cosine"},
    "svhn": {"epochs": 40, "lr": 0.05, "crop_padding": 4, "hflip": False},
}
ARCH_RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    ("fashion-mnist", "resnet20"): {"epochs": 12, "lr": 0.1, "crop_padding": 2},
}


def recipe_for(dataset: str, arch: str) -> dict[str, Any]:
    return {**RECIPES.get(dataset, {}), **ARCH_RECIPES.get((dataset, arch), {})}


def recipe_layer(user: dict[str, Any]) -> dict[str, Any]:
    """The recipe under the settings a user gave: for their dataset and arch (else the defaults')."""
    defaults = TeacherTrainConfig()
    return recipe_for(str(user.get("dataset", defaults.dataset)), str(user.get("arch", defaults.arch)))


def train_teacher(cfg: TeacherTrainConfig, out: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg.arch`` on ``cfg.dataset`` into run directory ``out``; return the results dict."""
    cfg.validate()
    set_threads(cfg.threads)
    # under torchrun every rank draws the same global batches and trains on its share (distributed.py)
    ranks, device = init_from_launcher(resolve_device(cfg.device))
    run = RunDir(out, writes=ranks.is_main)
    run.write_config(cfg)
    generator = seed_everything(cfg.seed)
    train_set = load_dataset(cfg.dataset, "train", cfg.data_root, cfg.download)
    test_set = load_dataset(cfg.dataset, "test", cfg.data_root, cfg.download)
    info = train_set.info
    spec = ModelSpec.for_dataset(cfg.arch, info)
    model = spec.build().to(device)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    steps_per_epoch = train_set.num_batches(cfg.batch_size, drop_last=True)
    if steps_per_epoch < 1:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the {len(train_set)} training images")
    scheduler = build_scheduler(
        optimizer, cfg.schedule, cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    )
    stateful = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    adversarial = cfg.adversarial_settings()
    share = ranks.share(cfg.batch_size) if ranks.enabled else slice(None)
    trained = ranks.wrap(model, device)  # the training forward; attacks run on the bare model

    def train_epoch(epoch: int) -> dict[str, float]:
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        batches = train_set.batches(cfg.batch_size, shuffle=True, generator=generator, drop_last=True, device=device)
        for x, y in tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=None):
            x = augment_batch(x, cfg.crop_padding, cfg.hflip, generator)
            x, y = x[share], y[share]
            if adversarial["method"] == "none":
                logits = trained(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            else:
                loss, logits = adversarial_loss(model, x, y, adversarial, cfg.label_smoothing, generator, trained)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        figures = ranks.mean({"train_loss": loss_sum / seen, "train_accuracy": correct / seen})
        return {**figures, "lr": scheduler.get_last_lr()[0]}

    def evaluate() -> dict[str, float]:
        model.eval()
        return {"test_accuracy": top1_accuracy(predict(model, test_set, cfg.eval_batch_size, device), test_set.labels)}

    schedule = LoopSchedule(cfg.epochs, unit="epoch", eval_every=cfg.eval_every)
    loop = TrainingLoop(run, stateful, generator, schedule, config_to_dict(cfg), _epoch_line, _ADVERSARIAL_DEFAULTS,
                        ranks=ranks)
    if resume:
        loop.resume()
    history = loop.fit(train_epoch, evaluate)
    elapsed = loop.elapsed
    if not ranks.is_main:  # rank 0 saves, evaluates and writes; the others receive its results
        return ranks.from_main(None)
    config = config_to_dict(cfg)
    fp = save_model(run.model_path, model, spec, info, config, extra={"history": history})
    results = evaluate_classifier(
        model, test_set, cfg.eval_batch_size, device, latency_runs=cfg.latency_runs
    )
    results.update(
        {
            "kind": "teacher",
            "dataset": cfg.dataset,
            "arch": cfg.arch,
            "seed": cfg.seed,
            "epochs": cfg.epochs,
            "accuracy_is": "last-epoch",
            "train_time_s": elapsed,
            "fingerprint": fp,
            "device": str(device),
            **distributed_summary(ranks),
            "adversarial": adversarial,
            "history": history,
        }
    )
    run.write_results(results)
    return ranks.from_main(results)


def adversarial_loss(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict[str, Any], label_smoothing: float,
    generator: torch.Generator, forward: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's PGD (Madry) or TRADES training loss; returns (loss, logits the accuracy is read from).

    The attack runs in eval mode with parameters frozen (restored afterwards); random starts come
    from the run's ``generator`` so a resumed run replays the same perturbations. ``forward``: the
    module the training forward goes through (a DDP wrapper of ``model``; once per batch, as DDP
    wants), the attack and any second forward use ``model`` itself.
    """
    forward = forward if forward is not None else model
    eps, step_size, steps = settings["eps"], settings["step_size"], settings["steps"]
    if settings["method"] == "pgd":
        with ModelModeGuard(model, train=False, requires_grad=False):
            x_adv = pgd_maximize(lambda z: F.cross_entropy(model(z), y, reduction="sum"), x, eps, step_size, steps,
                                 generator=generator)
        logits = forward(x_adv)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits
    if settings["method"] == "trades":
        with ModelModeGuard(model, train=False, requires_grad=False):
            with torch.no_grad():
                p_natural = F.softmax(model(x), dim=1)
            noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
            x_adv = pgd_maximize(
                lambda z: F.kl_div(F.log_softmax(model(z), dim=1), p_natural, reduction="sum"),
                x, eps, step_size, steps, init=x + 0.001 * noise,
            )
        logits = forward(x)
        robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        natural = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        return natural + settings["beta"] * robust, logits
    raise ConfigError(f"unknown adversarial training {settings['method']!r}")


def _epoch_line(record: dict[str, Any]) -> str:
    text = (
        f"epoch {record['epoch']:3d}  loss {record['train_loss']:.4f}  "
        f"train {record['train_accuracy']:.4f}"
    )
    if "test_accuracy" in record and not is_blind():
        text += f"  test {record['test_accuracy']:.4f}"
    return text + f"  ({record['elapsed_s']:.0f}s)"
