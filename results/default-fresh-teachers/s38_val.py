"""Usage: python s38_val.py RUN_DIR...   The val records of dfkd distill runs (metrics.jsonl), nothing else:
step and val accuracy per evaluation, for choosing on val without printing the test column beside it."""
import json
import sys
from pathlib import Path

if len(sys.argv) < 2:
    sys.exit(__doc__)
for run in sys.argv[1:]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        print(f"{run}: no metrics.jsonl yet")
        continue
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    val = [(r["step"], r["student0/val_accuracy"]) for r in records if "student0/val_accuracy" in r]
    print(f"{Path(run).name}: " + "  ".join(f"{step}: {acc:.4f}" for step, acc in val))
