"""Usage: python s41_e41.py R34_DIR E41_DIR [CSV]

Pilot E41's reader (val only): last-step val and distillation CPU of G (R34's runs, the default
since session 41) and E (the same config with kd alone) per teacher, E − G, and the pilot's
verdict. Reads no test figure. With CSV, writes the rows there.
"""
import csv
import json
import statistics
import sys
from pathlib import Path

if len(sys.argv) not in (3, 4):
    sys.exit(__doc__)
r34, e41 = Path(sys.argv[1]), Path(sys.argv[2])
rows, gains, cpu_ratio = [], [], []
for seed in (34, 35, 36):
    g = json.loads((r34 / f"G-{seed}" / "results.json").read_text())
    e = json.loads((e41 / f"E-{seed}" / "results.json").read_text())
    gains.append(100 * (e["val_accuracy"] - g["val_accuracy"]))
    cpu_ratio.append(e["train_time_s"] / g["train_time_s"])
    rows.append({"teacher_seed": seed, "val_G": round(g["val_accuracy"], 4), "val_E": round(e["val_accuracy"], 4),
                 "E_minus_G_points": round(gains[-1], 2), "train_s_G": round(g["train_time_s"]),
                 "train_s_E": round(e["train_time_s"])})
    print(f"teacher {seed}: val G {g['val_accuracy']:.4f}  E {e['val_accuracy']:.4f}  E - G {gains[-1]:+.2f}  "
          f"train s G {g['train_time_s']:.0f}  E {e['train_time_s']:.0f}")
pursue = statistics.mean(gains) >= -0.3 and min(gains) >= -1.0 and max(cpu_ratio) <= 0.8
print(f"mean E - G {statistics.mean(gains):+.2f} points, lowest {min(gains):+.2f}, CPU E/G at most "
      f"{max(cpu_ratio):.2f}: {'PURSUE (rule on new teachers)' if pursue else 'not pursued'}")
if len(sys.argv) == 4:
    with open(sys.argv[3], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
