"""DDP against one process at the same global batch and steps (issue 18's acceptance).

For each (teacher, transfer set) pair and seed: `dfkd distill` in one process and under
`torchrun --nproc-per-node N` (gloo on CPU), the same flags otherwise; writes runs.csv and a
Markdown table of last-step test accuracy, the largest weight difference and wall time.

    python scripts/study_ddp.py --pair TEACHER.pt:SET_DIR --pair ... --seeds 0,1 --steps 1500 \
        --out results/ddp --runs runs/ddp
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


from datafree_kd.checkpoint import load_model

REPO = Path(__file__).resolve().parents[1]


def distill(teacher: str, source: str, out: Path, seed: int, steps: int, ranks: int) -> float:
    """Wall seconds of one run (skipped when its results exist)."""
    if (out / "results.json").is_file():
        return json.loads((out / "results.json").read_text()).get("wall_s", 0.0)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), "-m"]
                if ranks > 1 else [sys.executable, "-m"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    began = time.perf_counter()
    subprocess.run([*launcher, "datafree_kd.cli", "distill", "--teacher", teacher, "--source", f"transfer:{source}",
                    "--out", str(out), "--steps", str(steps), "--seed", str(seed), "latency_runs=0"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    results = json.loads((out / "results.json").read_text())
    results["wall_s"] = wall
    (out / "results.json").write_text(json.dumps(results))
    return wall


def max_weight_difference(a: Path, b: Path) -> float:
    x, y = load_model(a).model.state_dict(), load_model(b).model.state_dict()
    return max(float((x[k].float() - y[k].float()).abs().max()) for k in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", action="append", required=True, help="TEACHER.pt:TRANSFER_SET_DIR")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs", required=True)
    args = parser.parse_args()
    rows = []
    for p, pair in enumerate(args.pair):
        teacher, _, source = pair.partition(":")
        for seed in [int(s) for s in args.seeds.split(",")]:
            row = {"pair": p, "teacher": teacher, "seed": seed}
            for ranks in (1, args.ranks):
                out = Path(args.runs) / f"pair{p}-seed{seed}-ranks{ranks}"
                row[f"wall_s_{ranks}"] = distill(teacher, source, out, seed, args.steps, ranks)
                result = json.loads((out / "results.json").read_text())
                row[f"test_{ranks}"] = result["test_accuracy"]
                row["teacher_accuracy"] = result["teacher_accuracy"]
            one, many = (Path(args.runs) / f"pair{p}-seed{seed}-ranks{r}" / "model.pt" for r in (1, args.ranks))
            row["max_weight_diff"] = max_weight_difference(one, many)
            rows.append(row)
            print(row, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "runs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    n = args.ranks

    def mean_std(key: str) -> str:
        values = [r[key] for r in rows]
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0:.4f}"

    lines = [f"| runs | 1 process: test | {n} ranks (gloo): test | max |Δ weight| | wall s (1 / {n}) |", "|---|---|---|---|---|",
             f"| all ({len(rows)}) | {mean_std('test_1')} | {mean_std(f'test_{n}')} | "
             f"{max(r['max_weight_diff'] for r in rows):.2e} | "
             f"{statistics.mean(r['wall_s_1'] for r in rows):.0f} / {statistics.mean(r[f'wall_s_{n}'] for r in rows):.0f} |"]
    lines += [f"| pair {r['pair']} seed {r['seed']} | {r['test_1']:.4f} | {r[f'test_{n}']:.4f} | "
              f"{r['max_weight_diff']:.2e} | {r['wall_s_1']:.0f} / {r[f'wall_s_{n}']:.0f} |" for r in rows]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
