"""``OUT/report.json`` and ``OUT/report.md``: every stage's figures, images, curves and commands.

``report.json`` keys (stable; scripts read them):

* ``models``: ``{stage name: {test_accuracy, val_accuracy?, attacks: {name: acc}, agreement?, ...}}``
  from the evaluate stage when there is one, else from the training stages' own results;
* ``teacher`` / ``student``: the first model-producing teacher/checkpoint stage and the first
  distill stage (the same dicts as under ``models``);
* ``stages``: ``{name: {kind, key, dir, status (ran | resumed | reused), cpu_s, wall_s, command,
  figures}}``; ``cpu_s`` is the CPU time of the run that made the stage (also when reused);
* ``cpu_s`` (sum over stages), ``wall_s`` (this invocation), ``smoke``, ``experiment``.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Sequence

from ..io import atomic_write_json, atomic_write_text
from ..stages import STAGES
from .runner import StageRecord
from .spec import ExperimentSpec

MODEL_KINDS = ("teacher", "checkpoint", "distill")
MODEL_KEYS = ("test_accuracy", "val_accuracy", "agreement", "reference_accuracy", "attacks", "attack_eps",
              "attack_examples", "ece", "params", "flops", "arch", "images", "steps")


def collect_models(records: Sequence[StageRecord]) -> dict[str, dict[str, Any]]:
    """Figures per model: the training stage's own (val accuracy) under the evaluate stage's."""
    models: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.kind in MODEL_KINDS:
            results = record.output.results
            models[record.name] = {"role": "student" if record.kind == "distill" else "teacher",
                                   **{k: results[k] for k in MODEL_KEYS if k in results}}
    for record in records:
        if record.kind == "evaluate":
            for name, results in record.output.results["models"].items():
                models.setdefault(name, {}).update({k: results[k] for k in MODEL_KEYS if k in results})
    return models


def write_report(experiment: ExperimentSpec, records: list[StageRecord], out: Path, smoke: bool,
                 wall_s: float) -> dict[str, Any]:
    models = collect_models(records)
    report: dict[str, Any] = {
        "experiment": experiment.name, "source": experiment.source, "digest": experiment.digest(), "smoke": smoke,
        "models": models,
        "stages": {r.name: {"kind": r.kind, "key": r.key, "dir": str(r.path), "status": r.status, "cpu_s": r.cpu_s,
                            "wall_s": r.wall_s, "command": r.command,
                            "figures": STAGES.get(r.kind)().figures(r.output.results)} for r in records},
        "cpu_s": sum(r.cpu_s for r in records), "wall_s": wall_s,
    }
    for role in ("teacher", "student"):
        name = next((n for n, m in models.items() if m.get("role") == role), None)
        if name is not None:
            report[role] = {"stage": name, **models[name]}
    images = _copy_preview(records, out)
    curves = _plot_curves(records, out / "curves.png")
    report["images"] = images and str(images)
    report["curves"] = curves and str(curves)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report, records))
    return report


def _copy_preview(records: Sequence[StageRecord], out: Path) -> Path | None:
    """The first synthesis stage's grid of images per class, beside the report."""
    for record in records:
        preview = record.output.artefacts.get("preview")
        if preview and Path(preview).is_file():
            target = out / "synthetic-images.png"
            shutil.copyfile(preview, target)
            return target
    return None


def _plot_curves(records: Sequence[StageRecord], path: Path) -> Path | None:
    """Teacher accuracy per epoch and each student's loss (and agreement) per step."""
    trained = [r for r in records if r.kind in ("teacher", "distill") and r.output.results.get("history")]
    if not trained:
        return None
    from ..study_plots import new_figure, save_figure

    fig, axes = new_figure(len(trained))
    axes = axes if isinstance(axes, list) else [axes]
    for ax, record in zip(axes, trained):
        history = record.output.results["history"]
        if record.kind == "teacher":
            x = [h["epoch"] for h in history]
            for key, label in (("train_accuracy", "train accuracy"), ("test_accuracy", "test accuracy")):
                points = [(e, h[key]) for e, h in zip(x, history) if key in h]
                if points:
                    ax.plot(*zip(*points), marker="o", label=label)
            ax.set_xlabel("epoch")
            ax.set_ylabel("accuracy (fraction)")
        else:
            x = [h["step"] for h in history]
            ax.plot(x, [h.get("student0/total", math.nan) for h in history], label="loss (objective total)")
            ax.set_xlabel("optimiser step")
            ax.set_ylabel("loss")
            twin = ax.twinx()
            twin.plot(x, [h.get("student0/train_agreement", math.nan) for h in history], color="tab:green",
                      label="agreement with teacher (train batches)")
            evals = [(h["step"], h["student0/test_accuracy"]) for h in history if "student0/test_accuracy" in h]
            if evals:
                twin.plot(*zip(*evals), color="tab:red", marker="o", label="test accuracy")
            twin.set_ylabel("fraction")
            twin.legend(loc="center right", fontsize=8)
        ax.set_title(f"{record.name} ({record.kind})")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left" if record.kind == "teacher" else "upper right", fontsize=8)
    return save_figure(fig, path)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("–" if value is None else str(value))


def render_markdown(report: dict[str, Any], records: Sequence[StageRecord]) -> str:
    models = report["models"]
    attacks = sorted({a for m in models.values() for a in m.get("attacks", {})})
    teacher_acc = report.get("teacher", {}).get("test_accuracy")
    eps = next((m["attack_eps"] for m in models.values() if "attack_eps" in m), None)
    examples = next((m["attack_examples"] for m in models.values() if "attack_examples" in m), None)
    lines = [f"# {report['experiment']}{' (smoke run: figures mean nothing)' if report['smoke'] else ''}", "",
             "Real test set, last-epoch/last-step models."
             + (f" Attacks: L∞ eps {eps:g} on the first {examples} test images." if attacks else ""), "",
             "| model | role | arch | test accuracy | × teacher | val accuracy | "
             + "".join(f"{a} | " for a in attacks) + "agreement | params |",
             "|---|---|---|---|---|---|" + "---|" * len(attacks) + "---|---|"]
    for name, m in models.items():
        ratio = m["test_accuracy"] / teacher_acc if teacher_acc and "test_accuracy" in m else None
        cells = [name, m.get("role", ""), m.get("arch", ""), _fmt(m.get("test_accuracy")), _fmt(ratio),
                 _fmt(m.get("val_accuracy")), *[_fmt(m.get("attacks", {}).get(a)) for a in attacks],
                 _fmt(m.get("agreement")), f"{m['params']:,}" if "params" in m else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("images"):
        lines += ["", "## Synthetic images (per class, as the teacher labels them)", "",
                  f"![synthetic images]({Path(report['images']).name})"]
    if report.get("curves"):
        lines += ["", "## Learning curves", "", f"![learning curves]({Path(report['curves']).name})"]
    lines += ["", "## Stages", "", "| stage | kind | status | CPU s | wall s | directory |", "|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r.name} | {r.kind} | {r.status} | {r.cpu_s:.0f} | {r.wall_s:.0f} | `{r.path}` |")
    lines += ["", f"CPU time of all stages: {report['cpu_s'] / 60:.1f} min; this invocation took "
              f"{report['wall_s']:.0f} s of wall time.", "", "## Reproduce each stage", "", "```bash"]
    lines += [r.command for r in records] + ["```", ""]
    return "\n".join(lines)
