"""``dfkd teacher train``: supervised teacher training with a per-dataset default recipe."""

from __future__ import annotations

import argparse

from ..rundir import check_out
from ..summary import results_summary
from ..teacher_training import ADVERSARIAL_METHODS, TeacherTrainConfig, recipe_layer, train_teacher
from .common import add_config_arguments, resolve_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    teacher = subparsers.add_parser("teacher", help="train teachers")
    actions = teacher.add_subparsers(dest="teacher_command", required=True)
    train = actions.add_parser("train", help="train a teacher on real data")
    train.add_argument("--dataset", help="dataset name (default fashion-mnist)")
    train.add_argument("--data-root", dest="data_root", help="where the dataset files are")
    train.add_argument("--download", action="store_const", const=True, help="allow torchvision downloads")
    train.add_argument("--arch", help="model name (see `dfkd list models`)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    train.add_argument("--adversarial", choices=ADVERSARIAL_METHODS,
                       help="robust teacher: pgd (Madry) or trades (Zhang et al.); budget via adv_eps=..., "
                            "adv_steps=..., adv_step_size=..., trades_beta=... (default none)")
    train.add_argument("--resume", action="store_true", help="continue from DIR/last.pt if present")
    add_config_arguments(train)
    train.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    flags = {k: getattr(args, k) for k in ("dataset", "data_root", "download", "arch", "epochs", "seed", "device",
                                               "adversarial")}
    cfg = resolve_config(TeacherTrainConfig, args, flags, recipe_layer)
    check_out(args.out, "teacher")
    results = train_teacher(cfg, args.out, resume=args.resume)
    print(results_summary(results))
    print(f"wrote {args.out}/model.pt, results.json, config.yaml")
    return 0
