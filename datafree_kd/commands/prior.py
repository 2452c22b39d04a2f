"""``dfkd prior train``: a diffusion prior for ``dfkd synthesize --method diffusion --prior DIR``."""

from __future__ import annotations

import argparse

from ..prior import PriorTrainConfig, train_prior
from ..rundir import check_out
from ..summary import format_table
from .common import add_config_arguments, resolve_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    prior = subparsers.add_parser("prior", help="train diffusion priors")
    actions = prior.add_subparsers(dest="prior_command", required=True)
    train = actions.add_parser("train", help="train a small UNet diffusion prior on a transfer set (data-free) "
                                             "or a public proxy dataset")
    train.add_argument("--source", help="transfer:DIR (a set or a `dfkd synthesize` run) or dataset:NAME")
    train.add_argument("--data-root", dest="data_root", help="where a dataset:NAME source's files are")
    train.add_argument("--steps", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    train.add_argument("--resume", action="store_true", help="continue from DIR/last.pt if present")
    add_config_arguments(train)
    train.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    flags = {k: getattr(args, k) for k in ("source", "data_root", "steps", "seed", "device")}
    cfg = resolve_config(PriorTrainConfig, args, flags)
    check_out(args.out, "prior")
    results = train_prior(cfg, args.out, resume=args.resume)
    print(format_table([(k, results[k]) for k in ("source", "data_free", "params", "steps", "final_loss",
                                                  "train_time_s")]))
    print(f"pipeline: {results['pipeline']}")
    print(f"sample with: dfkd synthesize --method diffusion --prior {args.out} --teacher T.pt --out DIR")
    return 0
