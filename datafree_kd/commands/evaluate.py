"""``dfkd evaluate MODEL``: clean accuracy, per-class accuracy, ECE, cost and teacher agreement."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from ..checkpoint import check_compatible, load_model
from ..config import config_to_dict
from ..data import load_dataset
from ..errors import ConfigError
from ..evaluation import evaluate_classifier
from ..rundir import RunDir
from ..runtime import resolve_device, seed_everything, set_threads
from ..summary import results_summary
from ..training import RuntimeSettings
from .common import add_config_arguments, resolve_config


@dataclass
class EvaluateConfig(RuntimeSettings):
    model: str = ""
    dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    arch: str | None = None
    reference: str | None = None
    batch_size: int = 1000
    latency_runs: int = 30
    ece_bins: int = 15

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("no model to evaluate")
        if self.batch_size < 1 or self.ece_bins < 1 or self.latency_runs < 0:
            raise ConfigError("batch_size and ece_bins must be >= 1, latency_runs >= 0")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("evaluate", help="evaluate a model checkpoint on a test set")
    ev.add_argument("model", help="model.pt, a plain state_dict (with --arch) or TorchScript")
    ev.add_argument("--dataset", help="default: the dataset recorded in the checkpoint")
    ev.add_argument("--data-root", dest="data_root")
    ev.add_argument("--download", action="store_const", const=True)
    ev.add_argument("--arch", help="architecture of a plain state_dict")
    ev.add_argument("--reference", help="a teacher checkpoint: report agreement with it")
    ev.add_argument("--batch-size", dest="batch_size", type=int)
    ev.add_argument("--device")
    ev.add_argument("--latency-runs", dest="latency_runs", type=int)
    add_config_arguments(ev)
    ev.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    names = ("model", "dataset", "data_root", "download", "arch", "reference", "batch_size", "device", "latency_runs")
    cfg = resolve_config(EvaluateConfig, args, {k: getattr(args, k) for k in names})
    results = evaluate(cfg, args.out)
    print(results_summary(results))
    return 0


def evaluate(cfg: EvaluateConfig, out: str) -> dict[str, Any]:
    """Evaluate ``cfg.model`` on the real test split; write the run directory; return results."""
    run = RunDir(out)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    info = None
    if cfg.dataset is not None and cfg.arch is not None:  # a bring-your-own state_dict needs it
        info = load_dataset(cfg.dataset, "test", cfg.data_root, cfg.download).info
    loaded = load_model(cfg.model, arch=cfg.arch, info=info)
    dataset = cfg.dataset or loaded.info.name
    if not cfg.dataset:
        cfg.dataset = dataset
    run.write_config(cfg)
    test_set = load_dataset(dataset, "test", cfg.data_root, cfg.download)
    check_compatible(loaded, test_set.info)
    reference = None
    if cfg.reference:
        reference = load_model(cfg.reference, info=test_set.info)
        check_compatible(reference, test_set.info)
        reference.to(device)
    loaded.to(device)
    results = evaluate_classifier(
        loaded.model, test_set, cfg.batch_size, device,
        reference=reference.model if reference else None,
        latency_runs=cfg.latency_runs, ece_bins=cfg.ece_bins,
    )
    results.update(
        {
            "kind": "evaluation",
            "model": cfg.model,
            "arch": loaded.spec.arch if loaded.spec else "torchscript",
            "dataset": dataset,
            "fingerprint": loaded.fingerprint,
            "reference_fingerprint": reference.fingerprint if reference else None,
            "device": str(device),
            "config": config_to_dict(cfg),
        }
    )
    run.write_results(results)
    return results
