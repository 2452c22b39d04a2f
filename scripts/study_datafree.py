"""Data-free distillation table: every method's accuracy, CPU minutes and seeds on one teacher.

Each row is a plan entry: a materialising method (synthesize N images, then distil from the
transfer set), an online method (generator trained inside the distillation loop), or a reference
(kd-real, the real-data baseline). A row with ``set_of: OTHER`` distils from OTHER's transfer sets
(same seeds) with its own recipe, to compare recipes on the same images. Results go to
``OUT/summary.{json,md}``; individual runs to ``--runs``. CPU minutes are the process's CPU time
(user + system): jobs sharing the cores inflate it far less than wall time, but not by nothing (the
same distillation took 9.7 CPU-min alone and ~11.7 with four jobs on two cores); ``--threads 1``
lets two studies share the two cores without oversubscription.

    python scripts/study_datafree.py --teacher runs/teachers/fmnist-lenet5/model.pt \
        --plan configs/studies/datafree-lenet5.yaml --out results/datafree-lenet5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from datafree_kd.config import load_yaml
from datafree_kd.distillation import DistillConfig, run_distillation
from datafree_kd.errors import ConfigError
from datafree_kd.io import atomic_write_json, atomic_write_text
from datafree_kd.synthesis import SynthesizeConfig, run_synthesis


def run_row(row: dict[str, Any], teacher: str, seed: int, runs: Path, threads: int) -> dict[str, Any]:
    """Run one plan row for one seed; return accuracy and timings."""
    name = row["name"]
    distill = {"teacher": teacher, "seed": seed, "latency_runs": 0, "threads": threads, **row.get("distill", {})}
    began, cpu_began = time.perf_counter(), time.process_time()
    synth_s = 0.0
    resolved: dict[str, Any] | None = None
    if row["kind"] == "materialising":
        synth = SynthesizeConfig(teacher=teacher, method=row["method"], options=row.get("options", {}),
                                 n=row.get("n", 20000), seed=seed, threads=threads, preview=True,
                                 **row.get("synthesize", {}))
        # ``set_of: ROW`` distils from another row's set (same method and options, so the synthesis
        # resume check accepts it) and counts the CPU time recorded when that set was made
        out = runs / f"{row.get('set_of', name)}-s{seed}-set"
        synth_cpu_before = time.process_time()
        synth_results = run_synthesis(synth, out)
        resolved = {"method": synth_results["method"], "options": synth_results.get("options", {})}
        synth_s = time.perf_counter() - began
        # a re-run reuses a finished set: count the CPU time recorded when it was made instead
        cpu_began -= synth_results.get("cpu_time_s", 0.0) - (time.process_time() - synth_cpu_before)
        distill["source"] = f"transfer:{out / 'transfer_set'}"
    elif row["kind"] == "online":
        distill["source"] = f"online:{row['method']}"
        distill["synthesizer_options"] = row.get("options", {})
    else:
        distill["source"] = "real"
    results = run_distillation(DistillConfig(**distill), runs / f"{name}-s{seed}")
    total_s = time.perf_counter() - began
    # process CPU time, not wall time: other jobs sharing the cores inflate it only a little
    cpu_minutes = (time.process_time() - cpu_began) / 60
    return {"seed": seed, "test_accuracy": results["test_accuracy"], "agreement": results["agreement"],
            "teacher_accuracy": results["teacher_accuracy"], "synthesis_s": synth_s,
            "cpu_minutes": cpu_minutes, "wall_s": total_s, "threads": torch.get_num_threads(),
            "resolved": resolved}


def merge_runs(old: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's runs after this invocation: its new seeds, plus earlier seeds of the *same*
    configuration (kind, method, options, distillation recipe and resolved synthesizer), so seeds
    can be run by separate processes. Runs of another configuration -- e.g. made before a default
    or the recipe changed -- are dropped rather than averaged with the new ones. (Entries written
    before the recipe was recorded are compared without it.)"""
    def key(run: dict[str, Any]) -> str:  # key order differs once a run has been through summary.json
        return json.dumps(run.get("resolved"), sort_keys=True)

    fresh = {r["seed"] for r in new["runs"]}
    resolved = {key(r) for r in new["runs"]}
    same = (old is not None and all(old.get(k) == new.get(k) for k in ("kind", "method", "options"))
            and old.get("distill", new.get("distill")) == new.get("distill"))
    kept = [r for r in (old or {}).get("runs", []) if same and r["seed"] not in fresh and key(r) in resolved]
    return sorted(kept + new["runs"], key=lambda r: r["seed"])


def size_ablation(row: dict[str, Any], teacher: str, sizes: list[int], runs: Path, threads: int) -> list[dict]:
    """Distil from nested prefixes of one transfer set (seed 0), same steps for every size."""
    source = f"transfer:{runs / (row['name'] + '-s0-set') / 'transfer_set'}"
    distill = dict(row.get("distill", {}))
    if not distill.get("steps"):  # the full set's step budget for every size: only the size varies
        distill["steps"] = distill.pop("epochs", 15) * (max(sizes) // distill.get("batch_size", 128))
        distill["epochs"] = 0
    out = []
    for n in sizes:
        cfg = DistillConfig(teacher=teacher, source=source, transfer_size=n, seed=0, latency_runs=0,
                            threads=threads, **distill)
        r = run_distillation(cfg, runs / f"{row['name']}-size{n}")
        out.append({"n": n, "test_accuracy": r["test_accuracy"], "agreement": r["agreement"], "steps": r["steps"]})
    return out


def check_plan(rows: list[dict[str, Any]]) -> None:
    """Refuse a plan whose ``set_of`` names no earlier materialising row made the same way (a typo
    would otherwise synthesize a fresh set under the misspelt name)."""
    made: dict[str, dict[str, Any]] = {}
    for row in rows:
        if "," in row["name"]:  # --only takes comma-separated names
            raise ConfigError(f"row {row['name']!r}: a row name cannot contain ','")
        other = row.get("set_of")
        if other is not None:
            if other not in made:
                raise ConfigError(f"row {row['name']!r}: set_of {other!r} is not an earlier materialising row")
            if [row.get(k) for k in ("method", "options", "n")] != [made[other].get(k) for k in ("method", "options", "n")]:
                raise ConfigError(f"row {row['name']!r}: method, options and n must equal those of {other!r}")
        if row.get("kind") == "materialising":
            made[row["name"]] = row


def seed_list(text: str) -> list[int]:
    """``--seeds 0,1,2``; argparse turns the ValueError into a one-line usage error."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--plan", required=True,
                        help="YAML: rows: [{name, kind, method, options, distill, seeds, set_of}]")
    parser.add_argument("--seeds", default=None, type=seed_list,
                        help="comma-separated; overrides the rows' own `seeds` lists (default: those, else 0)")
    parser.add_argument("--only", default="", help="comma-separated row names to run (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", default="runs/datafree")
    parser.add_argument("--out", default="results/datafree")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    plan = load_yaml(args.plan)
    try:
        check_plan(plan["rows"])
    except ConfigError as exc:
        parser.error(f"{args.plan}: {exc}")
    seeds = args.seeds
    only = {s for s in args.only.split(",") if s}
    unknown = sorted(only - {row["name"] for row in plan["rows"]})
    if unknown:  # a misspelt name would otherwise run nothing, or only part of what was meant
        parser.error(f"--only: no row named {', '.join(map(repr, unknown))} in {args.plan}")
    runs, out = Path(args.runs), Path(args.out)
    summary_path = out / "summary.json"
    order = [row["name"] for row in plan["rows"]]
    for row in plan["rows"]:
        if only and row["name"] not in only:
            continue
        entry = {"kind": row["kind"], "method": row.get("method", "kd-real"), "options": row.get("options", {}),
                 "distill": row.get("distill", {}),
                 "runs": [run_row(row, args.teacher, seed, runs, args.threads) for seed in (seeds or row.get("seeds", [0]))]}
        if row.get("sizes"):
            entry["sizes"] = size_ablation(row, args.teacher, row["sizes"], runs, args.threads)
        # re-read before writing: several processes may fill different rows of one table
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"rows": {}}
        summary.update({"teacher": args.teacher, "plan": args.plan})
        entry["runs"] = merge_runs(summary["rows"].get(row["name"]), entry)
        summary["rows"][row["name"]] = entry
        atomic_write_json(summary_path, summary)
        atomic_write_text(out / "summary.md", render(summary, order))
    if summary_path.exists():
        print(render(json.loads(summary_path.read_text()), order))


def render(summary: dict[str, Any], order: list[str] | None = None) -> str:
    names = [n for n in (order or []) if n in summary["rows"]] + sorted(set(summary["rows"]) - set(order or []))
    rows = {n: summary["rows"][n] for n in names}
    teacher_acc = next((r["runs"][0]["teacher_accuracy"] for r in rows.values() if r["runs"]), float("nan"))
    lines = [f"Teacher `{summary['teacher']}`: test accuracy {teacher_acc:.4f}. Real test set, "
             "last-step accuracy; CPU min = process CPU time of synthesis + distillation.", "",
             "| method | kind | test accuracy | / teacher | agreement | CPU min (mean / max) | seeds |",
             "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        accs = [r["test_accuracy"] for r in row["runs"]]
        m = statistics.mean(accs)
        s = f" ± {statistics.stdev(accs):.4f}" if len(accs) > 1 else ""
        agree = statistics.mean(r["agreement"] for r in row["runs"])
        cpus = [r["cpu_minutes"] for r in row["runs"]]
        seeds = ",".join(str(r["seed"]) for r in row["runs"])
        lines.append(f"| {name} | {row['kind']} | {m:.4f}{s} | {m / teacher_acc:.3f} | {agree:.4f} | {statistics.mean(cpus):.1f} / {max(cpus):.1f} | {seeds} |")
    for name, row in rows.items():
        if row.get("sizes"):
            lines += ["", f"Transfer-set size ablation ({name}, nested prefixes of one set, seed 0, same steps):", "",
                      "| images | test accuracy | / teacher | steps |", "|---|---|---|---|"]
            lines += [f"| {r['n']} | {r['test_accuracy']:.4f} | {r['test_accuracy'] / teacher_acc:.3f} | {r.get('steps', '')} |"
                      for r in row["sizes"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
