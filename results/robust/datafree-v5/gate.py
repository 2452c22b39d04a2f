"""A robust round's test gate: exit 0 only if the three students' mean val PGD-20 ratio reaches the bar.

    python gate.py RUNS [NAME_PREFIX (default didafl, v5)] [BAR (default 0.847, v5's)]
reads RUNS/{PREFIX}-s{0,1,2}-val/results.json.
"""
import json
import sys

runs = sys.argv[1]
prefix = sys.argv[2] if len(sys.argv) > 2 else "didafl"
bar = float(sys.argv[3]) if len(sys.argv) > 3 else 0.847
teacher = json.load(open("results/robust/datafree-v4/trades-teacher-val.json"))["attacks"]["pgd20"]
ratios = [json.load(open(f"{runs}/{prefix}-s{s}-val/results.json"))["attacks"]["pgd20"] / teacher for s in (0, 1, 2)]
mean = sum(ratios) / len(ratios)
print("val ratios", [round(r, 4) for r in ratios], "mean", round(mean, 4), f"gate {bar}:", "pass" if mean >= bar else "fail")
sys.exit(0 if mean >= bar else 1)
