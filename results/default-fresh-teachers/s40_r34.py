"""Usage: python s40_r34.py val|test R33_STAGES R34_DIR

Rule R34's reader. `val`: last-step val of X (R33's X student stages) and G (R34's runs) per
teacher, G − X and the rule's verdict; no test figure. `test` (only after the verdict adopts):
each run's test accuracy and its ratio to the teacher's, mean ± std per arm.
"""
import json
import statistics
import sys
from pathlib import Path

if len(sys.argv) != 4 or sys.argv[1] not in ("val", "test"):
    sys.exit(__doc__)
mode, stages, r34 = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
X_STAGES = {34: "student-0abfa5c6b2d4", 35: "student-8a49ecb3465b", 36: "student-0023d197cfc5"}
rows = {}
for seed, stage in X_STAGES.items():
    x = json.loads((stages / stage / "results.json").read_text())
    g = json.loads((r34 / f"G-{seed}" / "results.json").read_text())
    rows[seed] = (x, g)
gains = []
for seed, (x, g) in rows.items():
    gains.append(100 * (g["val_accuracy"] - x["val_accuracy"]))
    print(f"teacher {seed}: val X {x['val_accuracy']:.4f}  G {g['val_accuracy']:.4f}  G - X {gains[-1]:+.2f}")
adopt = statistics.mean(gains) >= 1.0 and min(gains) >= -1.0
print(f"mean G - X {statistics.mean(gains):+.2f} points, lowest {min(gains):+.2f}: {'ADOPT' if adopt else 'not adopted'}")
if mode == "test":
    if not adopt:
        sys.exit("not adopted: rule R34 reads no test figure")
    for arm, k in (("X", 0), ("G", 1)):
        acc = [r[k]["test_accuracy"] for r in rows.values()]
        ratio = [r[k]["test_accuracy"] / r[k]["teacher_accuracy"] for r in rows.values()]
        print(f"{arm}: test {statistics.mean(acc):.4f} ± {statistics.stdev(acc):.4f} = {statistics.mean(ratio):.3f} x "
              f"(" + " / ".join(f"{q:.3f}" for q in ratio) + ")  teachers " + " / ".join(
                  f"{r[k]['teacher_accuracy']:.4f}" for r in rows.values()))
