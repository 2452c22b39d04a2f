"""The figures of rules R9 and R10: per run, teacher test, student val/test, ratio, CPU (synthesis +
distillation, from /usr/bin/time).  ``python gather.py r9 > r9.csv`` / ``python gather.py r10 > r10.csv``."""
import csv, json, re, sys
from pathlib import Path
S24, S25 = Path("/work/runs/s24"), Path("/work/runs/s25")


def cpu_s(log):
    t = Path(log).read_text()
    return float(re.search(r"User time \(seconds\): ([\d.]+)", t)[1]) + float(re.search(r"System time \(seconds\): ([\d.]+)", t)[1])


def r9_runs():
    arm = json.loads((S24 / "choice.json").read_text())["chosen"] if (S24 / "choice.json").exists() else None
    for name, d, a in [("kept", S24 / "k0", a) for a in ("P1", "P2")] + [(f"fresh-{t}", S24 / f"f{t}", arm) for t in (1, 2, 3)]:
        if a:
            yield name, a, d / "synth.log", d / a


def r10_runs():  # Q1 made its own sets (S25/<t>q1); Q2 reused R9's (S24/<t>)
    arm = json.loads((S25 / "choice.json").read_text())["chosen"]
    for name, t, a in [("kept", "k0", a) for a in ("Q1", "Q2")] + [(f"fresh-{t}", f"f{t}", arm) for t in (1, 2, 3)]:
        out = S25 / f"{t}{a.lower()}"
        yield name, a, (out if a == "Q1" else S24 / t) / "synth.log", out / a


rows = []
for name, a, synth_log, out in {"r9": r9_runs, "r10": r10_runs}[sys.argv[1]]():
    if not (out / "results.json").exists():
        continue
    r = json.loads((out / "results.json").read_text())
    synth, dist = cpu_s(synth_log), cpu_s(f"{out}.log")
    rows.append({"teacher": name, "arm": a, "teacher_test": round(r["teacher_accuracy"], 4),
                 "teacher_val": round(r["teacher_val_accuracy"], 4), "student_val": round(r["val_accuracy"], 4),
                 "student_test": round(r["test_accuracy"], 4) if name != "kept" else "",
                 "ratio_test": round(r["test_accuracy"] / r["teacher_accuracy"], 4) if name != "kept" else "",
                 "steps": r["steps"], "synthesis_cpu_min": round(synth / 60, 1), "distill_cpu_min": round(dist / 60, 1),
                 "run_cpu_min": round((synth + dist) / 60, 1)})
w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
w.writeheader(); w.writerows(rows)
