"""R10's figures: per run, teacher test, student val/test, ratio, CPU (synthesis + distillation, /usr/bin/time)."""
import csv, json, re, sys
from pathlib import Path
R, S24 = Path("/work/runs/s25"), Path("/work/runs/s24")
def cpu_s(log):
    t = Path(log).read_text()
    return float(re.search(r"User time \(seconds\): ([\d.]+)", t)[1]) + float(re.search(r"System time \(seconds\): ([\d.]+)", t)[1])
choice = json.loads((R / "choice.json").read_text())
arm = choice["chosen"]
def where(t, a):  # (synthesis log, distillation run directory) of teacher t ("k0" = kept) and arm a
    d = R / f"{t}{a.lower()}"
    return (d / "synth.log" if a == "Q1" else S24 / ("k0" if t == "k0" else t) / "synth.log"), d / a
runs = [("kept", "k0", a) for a in ("Q1", "Q2")] + [(f"fresh-{t}", f"f{t}", arm) for t in (1, 2, 3)]
rows = []
for name, t, a in runs:
    synth_log, out = where(t, a)
    if not (out / "results.json").exists():
        continue
    r = json.loads((out / "results.json").read_text())
    synth, dist = cpu_s(synth_log), cpu_s(str(out) + ".log")
    rows.append({"teacher": name, "arm": a, "teacher_test": round(r["teacher_accuracy"], 4),
                 "teacher_val": round(r["teacher_val_accuracy"], 4), "student_val": round(r["val_accuracy"], 4),
                 "student_test": round(r["test_accuracy"], 4) if name != "kept" else "",
                 "ratio_test": round(r["test_accuracy"] / r["teacher_accuracy"], 4) if name != "kept" else "",
                 "steps": r["steps"], "synthesis_cpu_min": round(synth / 60, 1), "distill_cpu_min": round(dist / 60, 1),
                 "run_cpu_min": round((synth + dist) / 60, 1)})
w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
w.writeheader(); w.writerows(rows)
