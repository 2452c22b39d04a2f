"""How long the README's main job takes on this machine: ``dfkd demo`` from nothing, then again
(every stage reused). Prints the two wall times, the CPU time of each stage, and the figures.

    python benchmarks/bench_demo.py [--out /tmp/bench-demo] [--keep]

Targets (issue 15): the first run ≤ 10 minutes on 2 CPU cores, the second < 30 s. Run it on an
idle machine; other processes on the cores distort the timings. Results: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_demo(out: Path) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "datafree_kd.cli", "demo", "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="demo directory (default: a fresh temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the directory")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-demo-")) / "demo"
    if out.exists():
        sys.exit(f"{out} exists; the first run must start from nothing")
    first = timed_demo(out)
    second = timed_demo(out)
    report = json.loads((out / "report.json").read_text())
    print(f"first run  {first:7.1f} s wall (target <= 600)")
    print(f"second run {second:7.1f} s wall (target < 30; statuses: "
          f"{sorted({s['status'] for s in report['stages'].values()})})")
    for name, stage in report["stages"].items():
        print(f"  {name:10s} {stage['kind']:10s} {stage['cpu_s']:7.1f} CPU s")
    ratio = report["student"]["test_accuracy"] / report["teacher"]["test_accuracy"]
    print(f"teacher {report['teacher']['test_accuracy']:.4f}  student {report['student']['test_accuracy']:.4f}"
          f"  ({ratio:.3f} x)")
    if not args.keep:
        shutil.rmtree(out.parent if not args.out else out)


if __name__ == "__main__":
    main()
