"""``dfkd run EXPERIMENT.yaml`` and ``dfkd demo``: a pipeline of stages with cached results."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..experiment import ExperimentSpec, run_experiment
from ..rundir import check_out
from ..summary import WITHHELD, add_blind_argument, is_blind

#: the shipped experiments (``configs/experiments`` at the repository root)
EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "configs" / "experiments"
DEMO = EXPERIMENTS_DIR / "demo.yaml"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser("run", help="run an experiment file (stages with cached results)")
    run.add_argument("experiment", help="experiment YAML (see configs/experiments/)")
    _common(run)
    from .sweep import add_executor_arguments

    add_executor_arguments(run)
    run.set_defaults(func=run_command)
    demo = subparsers.add_parser("demo", help="the whole data-free pipeline on Fashion-MNIST, in minutes")
    _common(demo)
    demo.set_defaults(func=run_command, experiment=str(DEMO))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="experiment directory (stages/, report.md, report.json)")
    parser.add_argument("--smoke", action="store_true", help="shrink every stage to seconds (a pipeline check)")
    parser.add_argument("--stages", help="directory of stage runs to share with other experiments (default OUT/stages)")
    add_blind_argument(parser)
    parser.set_defaults(overrides=[])


def load_experiment(path: str, overrides: list[str]) -> ExperimentSpec:
    if not Path(path).is_file():
        raise ConfigError("experiment file not found", Path(path))
    return ExperimentSpec.load(path).with_overrides(overrides)


def run_command(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.experiment, args.overrides)
    check_out(args.out, "experiment")
    if getattr(args, "executor", "local") != "local":
        report = _run_elsewhere(args, experiment)
    elif getattr(args, "executor_opts", None):
        raise ConfigError("--executor-opt needs --executor submitit or ray; here the run is in this process")
    else:
        report = run_experiment(experiment, args.out, smoke=args.smoke, stages_dir=args.stages)
    print(summary_lines(report))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def _run_elsewhere(args: argparse.Namespace, experiment: ExperimentSpec) -> dict[str, Any]:
    """The whole experiment as one job of another executor (a Slurm job, a Ray task)."""
    import json

    from ..experiment.executor import EXECUTORS, Job
    from ..experiment.runner import preflight
    from .sweep import executor_options

    if args.smoke:
        raise ConfigError("--smoke runs here: drop --executor or --smoke")
    preflight(experiment)
    out = Path(args.out)
    job = Job(experiment.name, experiment, out, Path(args.stages) if args.stages else out / "stages")
    [result] = EXECUTORS.get(args.executor)([job], 1, None, executor_options(args, experiment))
    if result.status == "failed":
        raise ConfigError(f"the run failed under {args.executor} ({result.error}); see {out / 'log.txt'}")
    return json.loads(job.report_path.read_text())


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [header, *rows]]


def summary_lines(report: dict[str, Any], blind: bool | None = None) -> str:
    """The report's model table as aligned text (what a terminal user reads first); blind (by
    default ``is_blind()``): the val accuracy instead of every figure measured on the test split."""
    blind = is_blind() if blind is None else blind
    cpu = f"CPU time of all stages: {report['cpu_s'] / 60:.1f} min"
    if blind:
        rows = [[name, f"{m['val_accuracy']:.4f}" if "val_accuracy" in m else "-"]
                for name, m in report["models"].items()]
        return "\n".join([*_aligned(["model", "val acc"], rows), f"test figures: {WITHHELD}   {cpu}"])
    attacks = sorted({a for m in report["models"].values() for a in m.get("attacks", {})})
    rows = [[name, f"{m['test_accuracy']:.4f}" if "test_accuracy" in m else "-",
             *[f"{m['attacks'][a]:.4f}" if a in m.get("attacks", {}) else "-" for a in attacks]]
            for name, m in report["models"].items()]
    text = _aligned(["model", "test acc", *attacks], rows)
    if report.get("teacher", {}).get("test_accuracy") and "test_accuracy" in report.get("student", {}):
        ratio = report["student"]["test_accuracy"] / report["teacher"]["test_accuracy"]
        text.append(f"student / teacher: {ratio:.3f}   {cpu}")
    return "\n".join(text)
