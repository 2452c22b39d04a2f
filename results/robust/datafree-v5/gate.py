"""The v5 rule's test gate: exit 0 only if the three DI+DAFL students' mean val PGD-20 ratio is >= 0.847."""
import json
import sys

runs = sys.argv[1]
teacher = json.load(open("results/robust/datafree-v4/trades-teacher-val.json"))["attacks"]["pgd20"]
ratios = [json.load(open(f"{runs}/didafl-s{s}-val/results.json"))["attacks"]["pgd20"] / teacher for s in (0, 1, 2)]
mean = sum(ratios) / len(ratios)
print("val ratios", [round(r, 4) for r in ratios], "mean", round(mean, 4), "gate 0.847:", "pass" if mean >= 0.847 else "fail")
sys.exit(0 if mean >= 0.847 else 1)
