"""Usage: python s32_val_only.py SWEEP_DIR [SWEEP_DIR ...]

Prints seed, val accuracy and synthesis + distillation CPU seconds of each run of each sweep,
from its results.csv, and nothing else: comparisons chosen on val (rule R22) read this before any
test figure.
"""
import csv
import sys
from pathlib import Path

if len(sys.argv) < 2:
    sys.exit(__doc__)
for sweep in sys.argv[1:]:
    table = Path(sweep) / "results.csv"
    if not table.is_file():
        sys.exit(f"{table}: no such file (has the sweep finished?)")
    with table.open() as f:
        for row in csv.DictReader(f):
            # swept keys only: attack columns (attacks.*) are test-split figures
            swept = {k: v for k, v in row.items() if "." in k and k != "run_dir" and "attacks." not in k}
            print(sweep, f"seed {row['seed']}", swept or "", f"val {float(row['val_accuracy']):.4f}",
                  f"datafree_cpu_s {float(row['datafree_cpu_s']):.0f}")
