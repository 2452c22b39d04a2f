"""R9's figures: per run, teacher test, student val/test, ratio, CPU (synthesis + distillation, from /usr/bin/time)."""
import csv, json, re, sys
from pathlib import Path
R = Path("/work/runs/s24")
def cpu_s(log):
    t = Path(log).read_text()
    return float(re.search(r"User time \(seconds\): ([\d.]+)", t)[1]) + float(re.search(r"System time \(seconds\): ([\d.]+)", t)[1])
rows = []
arm = json.loads((R / "choice.json").read_text())["chosen"] if (R / "choice.json").exists() else None
runs = [("kept", R / "k0", a) for a in ("P1", "P2")] + [(f"fresh-{t}", R / f"f{t}", arm) for t in (1, 2, 3)]
for name, d, a in runs:
    res = d / a / "results.json" if a else None
    if not res or not res.exists():
        continue
    r = json.loads(res.read_text())
    synth, dist = cpu_s(d / "synth.log"), cpu_s(d / f"{a}.log")
    rows.append({"teacher": name, "arm": a, "teacher_test": round(r["teacher_accuracy"], 4),
                 "teacher_val": round(r["teacher_val_accuracy"], 4), "student_val": round(r["val_accuracy"], 4),
                 "student_test": round(r["test_accuracy"], 4) if name != "kept" else "",
                 "ratio_test": round(r["test_accuracy"] / r["teacher_accuracy"], 4) if name != "kept" else "",
                 "steps": r["steps"], "synthesis_cpu_min": round(synth / 60, 1), "distill_cpu_min": round(dist / 60, 1),
                 "run_cpu_min": round((synth + dist) / 60, 1)})
w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
w.writeheader(); w.writerows(rows)
