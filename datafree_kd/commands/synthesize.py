"""``dfkd synthesize``: make a synthetic transfer set from a frozen teacher (data-free)."""

from __future__ import annotations

import argparse

from ..rundir import check_out
from ..summary import format_table
from ..synthesis import SynthesizeConfig, run_synthesis
from .common import add_config_arguments, add_preset_argument, resolve_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser("synthesize", help="synthesize a transfer set from a teacher")
    s.add_argument("--teacher", help="teacher checkpoint")
    s.add_argument("--teacher-arch", dest="teacher_arch", help="arch of a plain state_dict teacher")
    s.add_argument("--dataset", help="describes a plain state_dict teacher's inputs")
    s.add_argument("--method", help="materialising synthesizer (default: the best measured one)")
    s.add_argument("--n", type=int, help="number of images")
    s.add_argument("--batch-size", dest="batch_size", type=int)
    s.add_argument("--prior", help="--method diffusion: a diffusers pipeline directory or a `dfkd prior train` run")
    s.add_argument("--shard", help="K/N: make only part K (0-based) of N into OUT/shards/; the last part "
                   "to finish merges them into OUT's set (automatic per rank under torchrun)")
    s.add_argument("--generators", type=int, help="K independently fitted synthesizers sharing --n equally "
                   "(seeds SEED, SEED+100, ...; a wider set than one generator's at the same size)")
    s.add_argument("--seed", type=int)
    s.add_argument("--device")
    add_preset_argument(s)
    add_config_arguments(s)
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = ("teacher", "teacher_arch", "dataset", "method", "n", "batch_size", "seed", "device", "preset", "shard", "generators")
    flags = {k: getattr(args, k) for k in names}
    if args.prior:
        flags["options"] = {"prior": args.prior}
    cfg = resolve_config(SynthesizeConfig, args, flags)
    check_out(args.out, "synthesis")
    results = run_synthesis(cfg, args.out)
    if results["kind"] == "synthesis-part":
        print(f"part {results['shard']}: {results['count']} images in {results['path']}; OUT's set is merged "
              "when the last part finishes")
        return 0
    print(format_table([(k, results[k]) for k in ("method", "count", "mean_teacher_confidence",
                                                  "class_balance_entropy_ratio", "fit_time_s", "generate_time_s")]))
    print(f"transfer set: {results['path']}")
    print(f"distil with: dfkd distill --teacher {cfg.teacher} --source transfer:{args.out} --out DIR   "
          f"(applies {results['distill_recipe']}, the measured recipe for this teacher, automatically; "
          "explicit options win)")
    return 0
