"""Rule R21's figures from its sweep (`python r21_gather.py SWEEP_DIR > r21.csv`): per run the
teacher's test accuracy, the student's val and test and their ratio to the teacher, and the CPU
seconds of synthesis and distillation as the stages recorded them (report.json). Read once, after
all three runs had finished. Also takes one `dfkd run` experiment directory (rule R23's WRN run:
`python r21_gather.py EXPERIMENT_DIR > results/wrn-pair/r23.csv`)."""
import csv
import json
import sys
from pathlib import Path

if len(sys.argv) != 2:
    sys.exit(__doc__)
rows = []
root = Path(sys.argv[1])
for run in [root] if (root / "report.json").is_file() else sorted((root / "runs").glob("seed=*")):
    stages = json.loads((run / "report.json").read_text())["stages"]
    teacher = json.loads((Path(stages["teacher"]["dir"]) / "results.json").read_text())
    student = json.loads((Path(stages["student"]["dir"]) / "results.json").read_text())
    synth, distill = stages["synthetic"]["cpu_s"], stages["student"]["cpu_s"]
    rows.append({"run": run.name, "teacher_epochs": teacher["epochs"],
                 "teacher_test": round(teacher["test_accuracy"], 4), "student_val": round(student["val_accuracy"], 4),
                 "student_test": round(student["test_accuracy"], 4),
                 "ratio": round(student["test_accuracy"] / teacher["test_accuracy"], 4),
                 "synthesis_cpu_s": round(synth), "distill_cpu_s": round(distill), "run_cpu_s": round(synth + distill),
                 "val_ratio": round(student["val_accuracy"] / student["teacher_val_accuracy"], 4),
                 "student": student["arch"], "steps": student["steps"]})
writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
writer.writeheader()
writer.writerows(rows)
