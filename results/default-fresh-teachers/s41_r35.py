"""Usage: python s41_r35.py val|test SWEEP_DIR [CSV]

Rule R35's reader, from the sweep's results.csv. `val`: last-step val and data-free CPU (set +
student) of G (100 epochs) and H (50) per teacher, H − G and the rule's verdict; no test figure.
`test` (after the verdict): G's test accuracy and its ratio to the teacher's (read in either
case, the held-out check of R34), and H's only if the rule adopted it. With CSV, writes the
rows the mode may show.
"""
import csv
import statistics
import sys
from pathlib import Path

if len(sys.argv) not in (3, 4) or sys.argv[1] not in ("val", "test"):
    sys.exit(__doc__)
mode, sweep = sys.argv[1], Path(sys.argv[2])
with (sweep / "results.csv").open() as f:
    table = list(csv.DictReader(f))
arms = {"G": "100", "H": "50"}
runs = {(arm, int(r["seed"])): r for r in table for arm, epochs in arms.items() if r["student.epochs"] == epochs}
seeds = sorted({seed for _, seed in runs})
gains, cpu = [], []
for seed in seeds:
    g, h = runs["G", seed], runs["H", seed]
    gains.append(100 * (float(h["val_accuracy"]) - float(g["val_accuracy"])))
    cpu.append(float(h["datafree_cpu_s"]) / float(g["datafree_cpu_s"]))
    print(f"teacher {seed}: val G {float(g['val_accuracy']):.4f}  H {float(h['val_accuracy']):.4f}  H - G "
          f"{gains[-1]:+.2f}  data-free CPU s G {float(g['datafree_cpu_s']):.0f}  H {float(h['datafree_cpu_s']):.0f}")
adopt = statistics.mean(gains) >= -0.3 and min(gains) >= -1.0 and max(cpu) <= 0.6
print(f"mean H - G {statistics.mean(gains):+.2f} points, lowest {min(gains):+.2f}, data-free CPU H/G at most "
      f"{max(cpu):.2f} (set included, so the distillation's ratio is lower): {'ADOPT' if adopt else 'not adopted'}")
shown = ("G", "H") if adopt else ("G",)
rows = []
for arm in arms:
    for seed in seeds:
        r = runs[arm, seed]
        row = {"arm": arm, "epochs": arms[arm], "teacher_seed": seed, "val": round(float(r["val_accuracy"]), 4),
               "datafree_cpu_s": round(float(r["datafree_cpu_s"]))}
        if mode == "test" and arm in shown:
            row.update(test=round(float(r["test_accuracy"]), 4), teacher_test=round(float(r["teacher_accuracy"]), 4),
                       ratio=round(float(r["test_accuracy"]) / float(r["teacher_accuracy"]), 4))
        rows.append(row)
if mode == "test":
    for arm in shown:
        acc = [float(runs[arm, s]["test_accuracy"]) for s in seeds]
        ratio = [float(runs[arm, s]["test_accuracy"]) / float(runs[arm, s]["teacher_accuracy"]) for s in seeds]
        print(f"{arm}: test {statistics.mean(acc):.4f} ± {statistics.stdev(acc):.4f} = {statistics.mean(ratio):.3f} x ("
              + " / ".join(f"{q:.3f}" for q in ratio) + ")  teachers "
              + " / ".join(f"{float(runs[arm, s]['teacher_accuracy']):.4f}" for s in seeds))
if len(sys.argv) == 4:
    with open(sys.argv[3], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
