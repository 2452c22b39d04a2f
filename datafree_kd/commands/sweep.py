"""``dfkd sweep`` and ``dfkd ablate-size``: many runs of one experiment, one table and its plots."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..experiment.executor import EXECUTORS, JobResult
from ..experiment.runner import preflight
from ..rundir import check_out, make_out_dir
from ..summary import WITHHELD, add_blind_argument, format_table, is_blind
from ..experiment.sweep import ablate_size_jobs, parse_grid, report_row, sweep_jobs, write_outputs
from .run import load_experiment


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment YAML (see configs/experiments/)")
    parser.add_argument("--seeds", type=_int_list, default=[0], help="comma-separated seeds (default 0)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each on one torch thread (default 1)")
    add_executor_arguments(parser)
    parser.add_argument("--out", required=True, help="study directory (runs/, stages/, results.csv, summary.md, PNGs)")
    parser.add_argument("--stages", help="stage cache to share with other studies (default OUT/stages)")
    add_blind_argument(parser)
    parser.set_defaults(overrides=[])


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    sweep = subparsers.add_parser("sweep", help="run an experiment over a grid of settings and seeds")
    _common(sweep)
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="a swept key and its values (repeatable; the product is run)")
    sweep.set_defaults(func=run_sweep)
    ablate = subparsers.add_parser("ablate-size", help="accuracy against synthetic-set size, per method")
    _common(ablate)
    ablate.add_argument("--sizes", type=_int_list, required=True, help="comma-separated set sizes")
    ablate.add_argument("--methods", required=True, help="comma-separated materialising synthesizers")
    ablate.add_argument("--budget", choices=("steps", "epochs"), default="steps",
                        help="equal optimiser steps for every size (default) or equal epochs")
    ablate.add_argument("--steps", type=int, help="the step budget (default: the student's epochs on the largest set)")
    ablate.add_argument("--epochs", type=int, help="the epoch budget with --budget epochs")
    ablate.set_defaults(func=run_ablate_size)


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", default="local", help=f"where runs execute ({', '.join(EXECUTORS.names())})")
    parser.add_argument("--executor-opt", dest="executor_opts", action="append", default=[], metavar="KEY=VALUE",
                        help="an executor option (repeatable), over the experiment's `executor:` section")


def executor_options(args: argparse.Namespace, spec: Any) -> dict[str, Any]:
    """The chosen executor's options: the experiment's section, then ``--executor-opt`` on top."""
    EXECUTORS.get(args.executor)
    unknown = sorted(set(spec.executor) - set(EXECUTORS.names()))
    if unknown:
        raise ConfigError(f"executor section names unknown executor(s) {', '.join(unknown)}", spec.source or None)
    options = dict(spec.executor.get(args.executor, {}))
    for item in args.executor_opts:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--executor-opt {item!r}: expected KEY=VALUE")
        options[key.strip()] = yaml.safe_load(value)
    return options


def _progress(result: JobResult, done: int, total: int) -> None:
    extra = f" ({result.seconds:.0f}s)" if result.seconds else ""
    error = f": {result.error}" if result.error else ""
    print(f"[{done}/{total}] {result.job.name}: {result.status}{extra}{error}", flush=True)


def _execute(args: argparse.Namespace, jobs: list, keys: list[str], title: str, size_key: str | None,
             series_key: str | None, notes: list[str], xlabel: str = "synthetic images (log scale)",
             select: bool = True) -> int:
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    executor = EXECUTORS.get(args.executor)
    options = executor_options(args, jobs[0].spec)
    for job in jobs:  # every run's stage configs are checked before the first run starts
        preflight(job.spec)
    check_out(args.out, "sweep")
    out = make_out_dir(args.out)
    if args.stages:
        make_out_dir(args.stages)
        for job in jobs:
            job.stages_dir = Path(args.stages)
    print(f"{len(jobs)} runs, {args.jobs} at a time, in {out / 'runs'} (shared stages: {jobs[0].stages_dir})")
    results = executor(jobs, args.jobs, _progress, options)
    failed = [r for r in results if r.status == "failed"]
    rows = [report_row(r.job) for r in results if r.status != "failed"]
    if not rows:
        raise ConfigError(f"every run failed; see {failed[0].job.out / 'log.txt'}")
    written = write_outputs(rows, keys, out, title, size_key, series_key, notes, xlabel, select)
    if is_blind():  # summary.md names the cell chosen on val *and* its test accuracy
        print(val_lines(rows))
    else:
        print((out / "summary.md").read_text())
    print(f"wrote {out / 'results.csv'}, {out / 'summary.md'}" + "".join(f", {p}" for p in written["plots"]))
    for r in failed:
        print(f"failed: {r.job.name} (see {r.job.out / 'log.txt'}): {r.error}")
    return 1 if failed else 0


def val_lines(rows: list[dict[str, Any]]) -> str:
    """Each run's name (its swept values and seed), val accuracy and data-free CPU time: what
    ``--blind`` prints instead of summary.md."""
    table = format_table([(Path(r["run_dir"]).name, f"val {r.get('val_accuracy', float('nan')):.4f}   "
                                    f"synthesis + distillation {r['datafree_cpu_s']:.0f} CPU-s") for r in rows])
    return f"{table}\ntest figures: {WITHHELD} (results.csv, summary.md)"


def run_sweep(args: argparse.Namespace) -> int:
    spec = load_experiment(args.experiment, args.overrides)
    grid = parse_grid(args.grid)
    if not grid and len(args.seeds) < 2:
        raise ConfigError("give --grid KEY=V1,V2 and/or several --seeds")
    keys = [k for k, _ in grid]
    numeric = [k for k, values in grid if all(isinstance(v, (int, float)) for v in values)]
    size_key = numeric[0] if numeric else None
    series = next((k for k in keys if k != size_key), None)
    notes = [f"Experiment {args.experiment}, grid {' '.join(args.grid) or '(seeds only)'}, seeds "
             f"{','.join(map(str, args.seeds))}; each run on one torch thread."]
    return _execute(args, sweep_jobs(spec, grid, args.seeds, Path(args.out)), keys, f"sweep of {spec.name}",
                    size_key, series, notes, f"{size_key} (log scale)")


def run_ablate_size(args: argparse.Namespace) -> int:
    spec = load_experiment(args.experiment, args.overrides)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    jobs = ablate_size_jobs(spec, args.sizes, methods, args.seeds, Path(args.out), args.budget, args.steps,
                            args.epochs)
    # every job has the same budget; the summary says it
    student = next(s for s in jobs[0].spec.stages if s.kind == "distill").config
    what = f"{student['steps']} steps" if args.budget == "steps" else f"{student['epochs']} epochs"
    notes = [f"Experiment {args.experiment}: one {max(args.sizes)}-image set per method and seed, each size "
             f"distilled from its nested prefix for {what}; seeds {','.join(map(str, args.seeds))} (each seed "
             "trains its own teacher); each run on one torch thread.",
             "Nothing here was selected: every size and method is reported on test; val_accuracy is shown "
             "beside it."]
    return _execute(args, jobs, ["method", "n"], f"set-size ablation of {spec.name}", "n", "method", notes,
                    select=False)
