"""Where a data-free result's CPU goes, for this tree and (optionally) an earlier revision, side by side.

For each synthesizer asked for (``--methods``; default: every materialising one but diffusion,
which needs a prior) it runs ``dfkd synthesize`` with that method's CPU defaults and prints the
fit's CPU seconds, images per second while generating and the CPU minutes of the whole command.
For the distillation loop it runs ``dfkd distill`` with the default recipe on the default
method's set and prints steps per second, the CPU minutes until the student's *val* accuracy
first reaches ``--val-target`` (periodic evaluation every ``--eval-every`` steps; a revision
whose periodic evaluation has no val figures prints "-") and the final val accuracy.
``--pipeline`` adds the default pipeline itself (``dfkd synthesize --n 20000`` without
``--method``, then ``dfkd distill`` without a config): CPU minutes, val and test accuracy.

    python benchmarks/bench_pipeline.py --teacher results/teachers/fmnist-lenet5-bn/model.pt \\
        --against HEAD~3 [--methods fast,cmi,nayer] [--images 1024] [--steps 3000] [--pipeline]

Every command runs as its own process on one torch thread (``threads=1``), one at a time, so
run it on an otherwise idle machine. ``--against REV`` checks REV out into a temporary git
worktree and runs the same commands with that revision's code and configs, interleaved
method by method with this tree's, so drift of the machine's speed hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_METHODS = "random-generator,dead-leaves,dafl,deepinversion,fast,cmi,nayer"


def child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def dfkd(root: Path, args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    """One CLI command with ``root``'s code; returns (its CPU seconds, the process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    before = child_cpu_s()
    done = subprocess.run([sys.executable, "-m", "datafree_kd.cli", *args, "threads=1"], cwd=root, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{root}: dfkd {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return child_cpu_s() - before, done


def synthesis(root: Path, teacher: str, method: str | None, n: int, out: Path) -> dict[str, Any]:
    args = ["synthesize", "--teacher", teacher, "--n", str(n), "--out", str(out), "preview=false"]
    cpu, _ = dfkd(root, args + (["--method", method] if method else []))
    results = json.loads((out / "results.json").read_text())
    generate_s = results.get("generate_time_s") or float("nan")
    return {"cpu_min": cpu / 60, "fit_s": results.get("fit_time_s", 0.0), "images_per_s": n / generate_s}


def distillation(root: Path, teacher: str, set_dir: Path, out: Path, steps: int | None, eval_every: int,
                 target: float) -> dict[str, Any]:
    args = ["distill", "--teacher", teacher, "--source", f"transfer:{set_dir}", "--out", str(out),
            "latency_runs=0", f"eval_every={eval_every}"]
    if steps:
        args += [f"steps={steps}", "epochs=0"]
    cpu, _ = dfkd(root, args)
    results = json.loads((out / "results.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    reached = next((r for r in records if r.get("student0/val_accuracy", -1.0) >= target), None)
    last = records[-1]
    loop_cpu = last.get("cpu_s") or last["elapsed_s"]  # old revisions record wall time only
    return {"cpu_min": cpu / 60, "steps_per_s": last["step"] / loop_cpu,
            "cpu_min_to_target": None if reached is None or "cpu_s" not in reached else reached["cpu_s"] / 60,
            "val_accuracy": results.get("val_accuracy"), "test_accuracy": results["test_accuracy"]}


def checkout(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), rev], check=True,
                   capture_output=True)
    return where


def fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=str(REPO / "results/teachers/fmnist-lenet5-bn/model.pt"))
    parser.add_argument("--against", help="a git revision to measure side by side (e.g. the previous main)")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help="comma list, or 'none' to skip the per-method rows")
    parser.add_argument("--images", type=int, default=1024, help="images per synthesizer measurement")
    parser.add_argument("--distill-images", type=int, default=4096, help="size of the set the loop is timed on")
    parser.add_argument("--loop-method", help="method of the set the loop is timed on (default: dfkd's default)")
    parser.add_argument("--steps", type=int, default=3000, help="distillation steps (0: the recipe's own)")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--val-target", type=float, default=0.80)
    parser.add_argument("--pipeline", action="store_true", help="also the default pipeline at 20k images")
    parser.add_argument("--no-loop", action="store_true", help="skip the distillation-loop rows")
    parser.add_argument("--work", help="scratch directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    teacher = str(Path(args.teacher).resolve())
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-pipeline-"))
    roots = {"this tree": REPO}
    if args.against:
        roots[args.against] = checkout(args.against, work / "against")
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        for method in ([] if args.methods == "none" else args.methods.split(",")):
            got = {}
            for label, root in roots.items():
                try:
                    got[label] = synthesis(root, teacher, method, args.images, work / label.replace(" ", "-") / method)
                except SystemExit as failed:  # e.g. a method the earlier revision does not have: "-"
                    print(str(failed).splitlines()[-1], file=sys.stderr)
                    got[label] = {"fit_s": None, "images_per_s": None, "cpu_min": None}
            rows += [(f"{method}: fit CPU s", {k: v["fit_s"] for k, v in got.items()}),
                     (f"{method}: images/s", {k: v["images_per_s"] for k, v in got.items()}),
                     (f"{method}: CPU min ({args.images} images)", {k: v["cpu_min"] for k, v in got.items()})]
        loop = {}
        for label, root in ([] if args.no_loop else roots.items()):
            base = work / label.replace(" ", "-")
            synthesis(root, teacher, args.loop_method, args.distill_images, base / "loop-set")
            loop[label] = distillation(root, teacher, base / "loop-set", base / "loop", args.steps or None,
                                       args.eval_every, args.val_target)
        loop_rows = (("steps_per_s", "distill: steps/s"), ("cpu_min_to_target", f"distill: CPU min to val >= {args.val_target}"),
                     ("val_accuracy", "distill: final val"), ("cpu_min", "distill: CPU min"))
        for key, name in (() if args.no_loop else loop_rows):
            rows.append((name, {k: v[key] for k, v in loop.items()}))
        if args.pipeline:
            whole = {}
            for label, root in roots.items():
                base = work / label.replace(" ", "-")
                made = synthesis(root, teacher, None, 20000, base / "pipe-set")
                student = distillation(root, teacher, base / "pipe-set", base / "pipe", None, 0, 2.0)
                whole[label] = {**student, "cpu_min": made["cpu_min"] + student["cpu_min"]}
            for key, name in (("cpu_min", "pipeline: CPU min"), ("val_accuracy", "pipeline: val"),
                              ("test_accuracy", "pipeline: test")):
                rows.append((name, {k: v[key] for k, v in whole.items()}))
    finally:
        if args.against:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "against")],
                           capture_output=True)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    labels = list(roots)
    print("| figure | " + " | ".join(labels) + (" | ratio |" if len(labels) == 2 else " |"))
    print("|---" * (len(labels) + 1 + (len(labels) == 2)) + "|")
    for name, values in rows:
        cells = [fmt(values.get(label)) for label in labels]
        if len(labels) == 2:
            a, b = (values.get(label) for label in labels)
            cells.append(fmt(a / b) if isinstance(a, float) and isinstance(b, float) and b else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
