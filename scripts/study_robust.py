"""Robustness transfer: a robust teacher distilled plainly, with ARD and with RSLAD — on real data,
and (rows marked data-free) on a synthetic transfer set made from the teacher alone.

Every model (teacher and students) is evaluated clean and under PGD-20 on the full test set and
under reference-strength AutoAttack on the first ``--aa-limit`` test images (AutoAttack on all 10k
is hours of CPU; the limit is recorded). Writes ``OUT/summary.{json,md}``.

    python scripts/study_robust.py --teacher runs/teachers/fmnist-lenet5-pgd/model.pt --out results/robust

Data-free rows need ``--transfer DIR`` (e.g. from ``dfkd synthesize --teacher T.pt``) and train
for ``--df-steps`` steps with ``--df-mixup``:

    python scripts/study_robust.py --teacher T.pt --transfer runs/robust-df2/set/transfer_set \
        --only "ard (data-free),rslad (data-free)" --out results/robust
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from datafree_kd.commands.evaluate import EvaluateConfig, evaluate
from datafree_kd.distillation import DistillConfig, run_distillation
from datafree_kd.io import atomic_write_json, atomic_write_text

ROWS = {
    "kd (plain)": {"objective": "kd=1"},
    "ard": {"objective": "ard=1"},
    "rslad": {"objective": "rslad=1"},
    "iad": {"objective": "iad=1"},
    "ard (data-free)": {"objective": "ard=1", "data_free": True},
    "rslad (data-free)": {"objective": "rslad=1", "data_free": True},
}


def robust_figures(model: str, eps: float, aa_limit: int, out: Path, threads: int) -> dict[str, Any]:
    full = evaluate(EvaluateConfig(model=model, attacks="pgd20", eps=eps, latency_runs=0, threads=threads), str(out / "eval-pgd"))
    aa = evaluate(EvaluateConfig(model=model, attacks="pgd20,autoattack", eps=eps, attack_limit=aa_limit,
                                 latency_runs=0, threads=threads), str(out / "eval-aa"))
    return {"clean": full["test_accuracy"], "pgd20": full["attacks"]["pgd20"],
            "pgd20_subset": aa["attacks"]["pgd20"], "autoattack_subset": aa["attacks"]["autoattack"],
            "aa_examples": aa["attack_examples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", default="lenet5_half")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--aa-limit", type=int, default=300)
    parser.add_argument("--only", default="")
    parser.add_argument("--transfer", default="", help="transfer set for the data-free rows (skipped without it)")
    parser.add_argument("--df-steps", type=int, default=8000, help="distillation steps of the data-free rows")
    parser.add_argument("--df-mixup", type=float, default=1.0, help="mixup alpha of the data-free rows")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", default="runs/robust")
    parser.add_argument("--out", default="results/robust")
    args = parser.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    only = {s for s in args.only.split(",") if s}
    names = (["teacher"] if not only or "teacher" in only else []) + [n for n in ROWS if not only or n in only]
    if not args.transfer:
        skipped = [n for n in names if ROWS.get(n, {}).get("data_free")]
        if skipped and only:
            parser.error(f"{', '.join(skipped)} need --transfer DIR")
        names = [n for n in names if n not in skipped]
    for name in names:
        if name == "teacher":
            figures = robust_figures(args.teacher, args.eps, args.aa_limit, runs / "teacher", args.threads)
        else:
            row = dict(ROWS[name])
            term = row["objective"].split("=")[0]
            options = {term: {"eps": args.eps}} if term in ("ard", "rslad", "iad") else {}
            budget = {"source": "real", "epochs": args.epochs}
            if row.pop("data_free", False):
                budget = {"source": f"transfer:{args.transfer}", "steps": args.df_steps, "epochs": 0,
                          "mixup": args.df_mixup}
            cfg = DistillConfig(teacher=args.teacher, student=args.student, latency_runs=0, threads=args.threads,
                                term_options=options, **budget, **row)
            r = run_distillation(cfg, runs / name)
            figures = robust_figures(str(runs / name / "model.pt"), args.eps, args.aa_limit, runs / name, args.threads)
            figures["train_time_s"] = r["train_time_s"]
            figures["source"] = cfg.source
            if cfg.data_free:
                figures.update({"steps": cfg.steps, "mixup": cfg.mixup})
        path = out / "summary.json"
        summary = json.loads(path.read_text()) if path.exists() else {"rows": {}}
        summary.update({"teacher": args.teacher, "eps": args.eps, "student": args.student, "epochs": args.epochs})
        summary["rows"][name] = figures
        atomic_write_json(path, summary)
        atomic_write_text(out / "summary.md", render(summary))
    print(render(json.loads((out / "summary.json").read_text())))


def render(summary: dict[str, Any]) -> str:
    lines = [f"Robust teacher `{summary['teacher']}`, student `{summary['student']}` ({summary['epochs']} epochs, "
             f"real data unless marked data-free), L∞ eps {summary['eps']}. Clean and PGD-20 on the full test set; AutoAttack "
             "(reference strength) and PGD-20 on the first N test images.", "",
             "| model | clean | PGD-20 | PGD-20 (first N) | AutoAttack (first N) | N |", "|---|---|---|---|---|---|"]
    order = ["teacher"] + list(ROWS)
    for name in [n for n in order if n in summary["rows"]]:
        r = summary["rows"][name]
        lines.append(f"| {name} | {r['clean']:.4f} | {r['pgd20']:.4f} | {r['pgd20_subset']:.4f} | "
                     f"{r['autoattack_subset']:.4f} | {r['aa_examples']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
