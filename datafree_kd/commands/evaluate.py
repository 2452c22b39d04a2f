"""``dfkd evaluate MODEL``: clean accuracy, per-class accuracy, ECE, cost and teacher agreement.

With ``--attacks fgsm,pgd20,...`` (names from ``datafree_kd.attacks.ATTACKS``) it also measures
robust accuracy on the first ``--attack-limit`` examples of the split (0 = all) and adds to results.json:

* ``attacks``: ``{name: accuracy}`` (fractions in [0, 1]; robust = correct on x *and* on x_adv);
* ``attack_eps`` / ``attack_norm``: the budget of the L∞ attacks (``--eps``, default per dataset,
  see ``attacks.default_eps``); when only L2 attacks ran, the L2 budget and ``"L2"``;
* ``attack_eps_l2``: the L2 budget (``--eps-l2``), present when an L2 attack (pgdl2, cw) ran;
* ``attack_budgets``: ``{name: {"norm": ..., "eps": ...}}``, the budget of every attack;
* ``attack_examples``: how many test examples were attacked; ``attack_seed``: the seed used.

Each attacked batch is also journaled in ``OUT/attacks.jsonl``: the same command, rerun after an
interruption, attacks only the batches left and reports the figures an uninterrupted run would.

Clean accuracy stays under ``test_accuracy`` (on the whole test set). ``--split val`` scores the
validation split instead, for choosing between models and recipes without reading test: the keys
become ``val_accuracy`` / ``num_val``, the attacks run on val images, and ``split`` is recorded.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from ..attacks import (ATTACKS, attack_budgets, attack_examples, attack_norm, check_eps, parse_attack_names,
                       robust_accuracy)
from ..checkpoint import check_compatible, load_model
from ..config import config_to_dict
from ..data import load_dataset
from ..errors import ConfigError
from ..evaluation import evaluate_classifier
from ..rundir import RunDir, check_out
from ..runtime import resolve_device, seed_everything, set_threads
from ..summary import results_summary
from ..training import RuntimeSettings
from .common import add_config_arguments, resolve_config


#: splits a model may be scored on (never train: it is what a teacher was fitted to)
EVALUATION_SPLITS = ("test", "val")


@dataclass
class EvaluateConfig(RuntimeSettings):
    model: str = ""
    #: ``test`` (figures to report) or ``val`` (figures to choose by)
    split: str = "test"
    dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    arch: str | None = None
    reference: str | None = None
    batch_size: int = 1000
    latency_runs: int = 30
    ece_bins: int = 15
    attacks: str = ""  # comma list of attack names, e.g. "fgsm,pgd20,pgd100,autoattack"
    eps: float | None = None  # L∞ budget; None = attacks.default_eps(dataset)
    eps_l2: float | None = None  # L2 budget (pgdl2, cw); None = attacks.default_eps(dataset, "L2")
    attack_limit: int = 0  # attack the first N examples of the split; 0 = all of it
    attack_batch_size: int = 200
    #: load ``model`` as TorchScript (it runs code of its own, so only on request; ``--torchscript``)
    torchscript: bool = False

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("no model to evaluate")
        if self.split not in EVALUATION_SPLITS:
            raise ConfigError(f"split must be one of {', '.join(EVALUATION_SPLITS)}, got {self.split!r}")
        for key, low in (("batch_size", 1), ("ece_bins", 1), ("latency_runs", 0), ("attack_limit", 0),
                         ("attack_batch_size", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"{key} must be >= {low}, got {getattr(self, key)}")
        names = parse_attack_names(self.attacks)  # unknown names fail here, before any work
        for key, norm in (("eps", "Linf"), ("eps_l2", "L2")):
            if getattr(self, key) is not None:
                check_eps(getattr(self, key), key, norm)
        if names:
            norms = {attack_norm(name) for name in names}
            if self.eps is not None and "Linf" not in norms:
                raise ConfigError(f"eps is the L∞ budget but {', '.join(names)} are L2 attacks; use eps_l2 (--eps-l2)")
            if self.eps_l2 is not None and "L2" not in norms:
                raise ConfigError(f"eps_l2 is the L2 budget but no L2 attack was asked for ({', '.join(names)})")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("evaluate", help="evaluate a model checkpoint on a test set")
    ev.add_argument("model", help="model.pt, a plain state_dict (with --arch) or TorchScript (with --torchscript)")
    ev.add_argument("--split", choices=EVALUATION_SPLITS, help="test (default) or val, to choose by")
    ev.add_argument("--dataset", help="default: the dataset recorded in the checkpoint")
    ev.add_argument("--data-root", dest="data_root")
    ev.add_argument("--download", action="store_const", const=True)
    ev.add_argument("--arch", help="architecture of a plain state_dict")
    ev.add_argument("--reference", help="a teacher checkpoint: report agreement with it")
    ev.add_argument("--batch-size", dest="batch_size", type=int)
    ev.add_argument("--device")
    ev.add_argument("--latency-runs", dest="latency_runs", type=int)
    ev.add_argument("--attacks", help=f"comma list of attacks ({', '.join(ATTACKS.names())})")
    ev.add_argument("--eps", type=float, help="L∞ attack budget on [0,1] images (default: per dataset)")
    ev.add_argument("--eps-l2", dest="eps_l2", type=float, help="L2 attack budget for pgdl2/cw (default: per dataset)")
    ev.add_argument("--attack-limit", dest="attack_limit", type=int, help="attack the first N images of the split (0 = all)")
    ev.add_argument("--attack-batch-size", dest="attack_batch_size", type=int)
    ev.add_argument("--torchscript", action="store_const", const=True,
                    help="MODEL is a TorchScript file (it runs code of its own: only for files you trust)")
    add_config_arguments(ev)
    ev.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    names = ("model", "split", "dataset", "data_root", "download", "arch", "reference", "batch_size", "device", "latency_runs",
             "attacks", "eps", "eps_l2", "attack_limit", "attack_batch_size", "torchscript")
    cfg = resolve_config(EvaluateConfig, args, {k: getattr(args, k) for k in names})
    check_out(args.out, "evaluation")
    results = evaluate(cfg, args.out)
    print(results_summary(results))
    return 0


def evaluate(cfg: EvaluateConfig, out: str) -> dict[str, Any]:
    """Evaluate ``cfg.model`` on the real ``cfg.split`` split; write the run directory; return results."""
    run = RunDir(out)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    info = None
    if cfg.dataset is not None:  # a plain state_dict or a TorchScript file is described by it
        info = load_dataset(cfg.dataset, "test", cfg.data_root, cfg.download).info
    loaded = load_model(cfg.model, arch=cfg.arch, info=info, torchscript=cfg.torchscript)
    dataset = cfg.dataset or loaded.info.name
    if not cfg.dataset:
        cfg.dataset = dataset
    attack_names = parse_attack_names(cfg.attacks)
    budgets = attack_budgets(attack_names, cfg.eps, cfg.eps_l2, dataset)  # a missing default fails now
    for budget in budgets.values():  # config.yaml records the budgets actually used
        if budget["norm"] == "Linf":
            cfg.eps = budget["eps"]
        else:
            cfg.eps_l2 = budget["eps"]
    run.write_config(cfg)
    test_set = load_dataset(dataset, cfg.split, cfg.data_root, cfg.download)
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
        latency_runs=cfg.latency_runs, ece_bins=cfg.ece_bins, split=cfg.split,
    )
    if attack_names:
        results.update(_attack_results(cfg, loaded.model, test_set, attack_names, budgets, device,
                                       loaded.fingerprint, run.path / "attacks.jsonl"))
    results.update(
        {
            "kind": "evaluation",
            "model": cfg.model,
            "arch": loaded.spec.arch if loaded.spec else "torchscript",
            "dataset": dataset,
            "split": cfg.split,
            "fingerprint": loaded.fingerprint,
            "reference_fingerprint": reference.fingerprint if reference else None,
            "device": str(device),
            "config": config_to_dict(cfg),
        }
    )
    run.write_results(results)
    return results


def _attack_results(cfg: EvaluateConfig, model: Any, test_set: Any, names: list[str],
                    budgets: dict[str, dict[str, Any]], device: Any, fingerprint: str,
                    journal: Any) -> dict[str, Any]:
    """Robust accuracies and the budget they were measured at (the results.json contract).

    ``journal`` (``OUT/attacks.jsonl``) records each attacked batch: the same command rerun after
    an interruption attacks only what is left (a full-set AutoAttack takes CPU-hours)."""
    linf = [b["eps"] for b in budgets.values() if b["norm"] == "Linf"]
    l2 = [b["eps"] for b in budgets.values() if b["norm"] == "L2"]
    accuracies = robust_accuracy(
        model, test_set, names, eps=linf[0] if linf else None, batch_size=cfg.attack_batch_size,
        device=device, seed=cfg.seed, limit=cfg.attack_limit, eps_l2=l2[0] if l2 else None,
        journal=journal, model_key=f"{fingerprint}:{cfg.split}",
    )
    out: dict[str, Any] = {
        "attacks": accuracies,
        "attack_eps": linf[0] if linf else l2[0],
        "attack_norm": "Linf" if linf else "L2",
        "attack_budgets": budgets,
        "attack_examples": attack_examples(test_set, cfg.attack_limit),
        "attack_seed": cfg.seed,
    }
    if l2:
        out["attack_eps_l2"] = l2[0]
    return out
