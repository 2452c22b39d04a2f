"""``dfkd distill``: train student(s) from a teacher with a weighted KD objective."""

from __future__ import annotations

import argparse

from ..distillation import DistillConfig, run_distillation
from ..summary import format_table, results_summary
from .common import add_config_arguments, add_preset_argument, resolve_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    d = subparsers.add_parser("distill", help="distil a teacher into student(s)")
    d.add_argument("--teacher", help="teacher checkpoint (comma-separated paths: an ensemble)")
    d.add_argument("--teacher-arch", dest="teacher_arch", help="arch of a plain state_dict teacher")
    d.add_argument("--student", help="student arch (comma-separated: several students at once)")
    d.add_argument("--source", help="real (the kd-real baseline) | transfer:DIR | online:METHOD")
    d.add_argument("--objective", help="weighted terms, e.g. kd=1,discriminator=0.1")
    d.add_argument("--dataset", help="test set for evaluation (default: the teacher's)")
    d.add_argument("--data-root", dest="data_root")
    d.add_argument("--steps", type=int)
    d.add_argument("--epochs", type=int)
    d.add_argument("--seed", type=int)
    d.add_argument("--device")
    add_preset_argument(d)
    d.add_argument("--resume", action="store_true", help="continue from DIR/last.pt if present")
    add_config_arguments(d)
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = ("teacher", "teacher_arch", "student", "source", "objective", "dataset", "data_root",
             "steps", "epochs", "seed", "device", "preset")
    cfg = resolve_config(DistillConfig, args, {k: getattr(args, k) for k in names})
    results = run_distillation(cfg, args.out, resume=args.resume)
    print(results_summary(results))
    if len(results["students"]) > 1:
        print(format_table([(f"{s['name']} {s['arch']}", s["test_accuracy"]) for s in results["students"]]))
    return 0
