"""``dfkd distill``: train student(s) from a teacher with a weighted KD objective.

With a ``transfer:`` source and no ``--config``, the recipe measured best for the teacher's kind
is the defaults layer (``recipe=auto``; :func:`datafree_kd.distillation.recipe_defaults`): flags
and key=value still win, and ``recipe=none`` turns it off.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..distillation import DistillConfig, recipe_layer, run_distillation
from ..rundir import check_out
from ..summary import add_blind_argument, format_table, is_blind, results_summary
from .common import add_config_arguments, add_preset_argument, resolve_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    d = subparsers.add_parser("distill", help="distil a teacher into student(s)")
    d.add_argument("--teacher", help="teacher checkpoint (comma-separated paths: an ensemble)")
    d.add_argument("--teacher-arch", dest="teacher_arch", help="arch of a plain state_dict teacher")
    d.add_argument("--student", help="student arch (comma-separated: several students at once)")
    d.add_argument("--source", help="real (the kd-real baseline) | transfer:DIR (a set, or the run directory of "
                                    "`dfkd synthesize`) | online:METHOD")
    d.add_argument("--objective", help="weighted terms, e.g. kd=1,discriminator=0.1")
    d.add_argument("--dataset", help="test set for evaluation (default: the teacher's)")
    d.add_argument("--data-root", dest="data_root")
    d.add_argument("--steps", type=int)
    d.add_argument("--epochs", type=int)
    d.add_argument("--seed", type=int)
    d.add_argument("--device")
    add_preset_argument(d)
    d.add_argument("--resume", action="store_true", help="continue from DIR/last.pt if present")
    add_blind_argument(d)
    add_config_arguments(d)
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = ("teacher", "teacher_arch", "student", "source", "objective", "dataset", "data_root",
             "steps", "epochs", "seed", "device", "preset")
    cfg = resolve(args, {k: getattr(args, k) for k in names})
    check_out(args.out, "distillation")
    results = run_distillation(cfg, args.out, resume=args.resume)
    print(results_summary(results))
    if len(results["students"]) > 1 and not is_blind():
        print(format_table([(f"{s['name']} {s['arch']}", s["test_accuracy"]) for s in results["students"]]))
    return 0


def resolve(args: argparse.Namespace, flags: dict[str, Any]) -> DistillConfig:
    """The config, with the recipe (if any) as its defaults layer; the applied recipe is printed
    and kept in the config (``recipe``), so config.yaml and results.json say where defaults came from."""
    chosen: dict[str, Any] = {}

    def defaults(user: dict[str, Any]) -> dict[str, Any]:
        layer, chosen["path"], chosen["reason"] = recipe_layer(user, config_given=bool(args.config))
        return layer

    cfg = resolve_config(DistillConfig, args, flags, defaults)
    cfg.recipe = chosen["path"] or "none"
    if chosen["path"]:
        print(f"recipe: {chosen['path']} ({chosen['reason']}; explicit options win)")
    return cfg
