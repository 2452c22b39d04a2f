"""Sweeps and the set-size ablation: many variants of one experiment, then one table and its plots.

Both expand into :class:`~.executor.Job` s that share one stage cache (``OUT/stages``), so a
teacher or a transfer set several runs need is made once; each run keeps its own directory
(``OUT/runs/NAME``: experiment.yaml, report.json, log.txt). Results: ``results.csv`` (one row per
run), ``summary.md`` (mean ± std and a Student-t 95 % interval per cell) and PNG plots.

Selection follows the protocol: a sweep picks its best cell on ``val_accuracy`` and reports that
cell's ``test_accuracy``; summary.md says so.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..config import merge
from ..errors import ConfigError
from .executor import Job
from .spec import ExperimentSpec

ACCURACY_METRICS = ("test_accuracy", "val_accuracy", "teacher_fraction")


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """``["student.lr=0.01,0.001", "synthetic.n=5000,20000"]`` -> ``[(key, [values]), ...]``."""
    grid = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,...")
        try:
            values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
        except yaml.YAMLError as exc:
            raise ConfigError(f"--grid {item!r}: a value is not valid YAML ({type(exc).__name__})") from None
        if key.strip() in (k for k, _ in grid):
            raise ConfigError(f"--grid {key!r} is given twice")
        grid.append((key.strip(), values))
    return grid


def expand_grid(grid: Sequence[tuple[str, list[Any]]], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, each with every seed (seed varies fastest)."""
    keys = [k for k, _ in grid]
    return [{**dict(zip(keys, values)), "seed": seed}
            for values in itertools.product(*(v for _, v in grid)) for seed in seeds]


def run_name(point: dict[str, Any]) -> str:
    """A directory name that says what the run is: ``student.lr=0.001_seed=0``."""
    text = "_".join(f"{k}={v}" for k, v in point.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]", "-", text)


def _override(spec: ExperimentSpec, point: dict[str, Any]) -> ExperimentSpec:
    return spec.with_overrides([f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in point.items()])


def _options_for(config: dict[str, Any], method: str) -> dict[str, Any]:
    """A synthesize stage's options for ``method``: the experiment's own belong to the method it
    names (``auto`` when unset); another method starts from its measured CPU options
    (:func:`generators.default.measured_options`), since ``fit_steps`` means nothing to ``dead-leaves``."""
    from generators.default import measured_options

    return config.get("options", {}) if method == config.get("method", "auto") else measured_options(method)


def _swap_methods(spec: ExperimentSpec, point: dict[str, Any]) -> ExperimentSpec:
    """Give each synthesize stage whose method the grid point swaps :func:`_options_for` the new
    method; options the grid names itself (``STAGE.options.KEY``) still apply on top."""
    return dataclasses.replace(spec, stages=[
        dataclasses.replace(s, config={**s.config, "options": _options_for(s.config, point[f"{s.name}.method"])})
        if s.kind == "synthesize" and f"{s.name}.method" in point else s
        for s in spec.stages])


def sweep_jobs(spec: ExperimentSpec, grid: Sequence[tuple[str, list[Any]]], seeds: Sequence[int], out: Path
               ) -> list[Job]:
    return [Job(run_name(point), _override(_swap_methods(spec, point), point), out / "runs" / run_name(point),
                out / "stages", point)
            for point in expand_grid(grid, seeds)]


def _stage_of_kind(spec: ExperimentSpec, kind: str) -> str:
    names = [s.name for s in spec.stages if s.kind == kind]
    if not names:
        raise ConfigError(f"experiment {spec.name!r} has no {kind} stage")
    return names[0]


def _size_study_parts(method: str, synthesizers: set[str], stage_names: set[str]) -> list[str]:
    """``"fast+diffusion"`` -> ``["fast", "diffusion"]``: the sets a size-study method learns from."""
    from generators import SYNTHESIZERS

    parts = [p.strip() for p in method.split("+")]
    if not all(parts) or len(set(parts)) != len(parts):
        raise ConfigError(f"--methods {method!r}: a union names distinct methods joined by '+'")
    for part in parts:
        if part in stage_names:
            continue
        if part not in synthesizers:
            SYNTHESIZERS.get(part)  # the registry's own error, with close matches
        if getattr(SYNTHESIZERS.get(part), "online", False):
            raise ConfigError(f"--methods: {part!r} is an online method; the size study needs materialising ones")
    return parts


def ablate_size_jobs(spec: ExperimentSpec, sizes: Sequence[int], methods: Sequence[str], seeds: Sequence[int],
                     out: Path, budget: str = "steps", steps: int | None = None, epochs: int | None = None
                     ) -> list[Job]:
    """One ``max(sizes)`` set per method and seed, each size distilled from its nested prefix
    (``transfer_size``) with the same number of steps (``budget="steps"``) or epochs.

    A method is a synthesizer, a ``synthesize`` stage of the experiment by name (its own set,
    made with at least ``max(sizes)`` images, e.g. the GAN set a diffusion prior learns from), or
    a union ``A+B`` of those: the student learns from the first ``n/2`` images of each, and the
    union reuses the very sets the single-method runs make. The synthesizer's stage is named
    ``SYNTH-METHOD`` so the sets of all methods live side by side in one stage cache.
    Options are per method: the experiment's own apply to the method it names; another method
    starts from its measured CPU options (:func:`generators.default.measured_options`), if any.
    """
    from generators import SYNTHESIZERS

    if budget not in ("steps", "epochs"):
        raise ConfigError(f"budget must be steps or epochs, got {budget!r}")
    if not sizes or min(sizes) < 1 or not methods or not seeds:
        raise ConfigError("give sizes >= 1, at least one method and one seed")
    student = _stage_of_kind(spec, "distill")
    # the set the student learns from (an experiment may make others, e.g. the GAN set a diffusion prior trains on)
    fed = next(s for s in spec.stages if s.name == student).inputs.get("source")
    synth = fed if isinstance(fed, str) else _stage_of_kind(spec, "synthesize")
    base = next(s for s in spec.stages if s.name == synth)
    made_sets = {s.name for s in spec.stages if s.kind == "synthesize" and s.name != synth}
    parts_of = {m: _size_study_parts(m, set(SYNTHESIZERS.names()), made_sets) for m in methods}
    # a stage named as a method is raised to the largest size in every job, so that what else reads it
    # (a prior) is the same whichever method a job studies
    raised = {p for parts in parts_of.values() for p in parts if p in made_sets}
    student_cfg = next(s for s in spec.stages if s.name == student).config
    batch = int(student_cfg.get("batch_size", 128))
    if budget == "steps":
        # the student's own steps, else its epochs over the largest set, for every size
        steps = steps or int(student_cfg.get("steps") or 0) or int(student_cfg.get("epochs", 15)) * (max(sizes) // batch)
        if max(sizes) < batch:
            raise ConfigError(f"the largest size {max(sizes)} is below the student's batch size {batch}")
        training = {"steps": steps, "epochs": 0}
    else:
        training = {"epochs": epochs or int(student_cfg.get("epochs", 15)), "steps": 0}
    largest = max(sizes)

    def set_stage(part: str):
        return dataclasses.replace(base, name=f"{synth}-{part}",
                                   config={**base.config, "method": part, "n": largest,
                                           "options": _options_for(base.config, part)})

    jobs = []
    for n, method, seed in itertools.product(sorted(sizes), methods, seeds):
        parts = parts_of[method]
        feeds = [p if p in made_sets else f"{synth}-{p}" for p in parts]
        stages = []
        for s in spec.stages:
            if s.name == synth:
                stages += [set_stage(p) for p in parts if p not in made_sets]
            elif s.name in raised and int(s.config.get("n", 0)) < largest:
                stages.append(dataclasses.replace(s, config={**s.config, "n": largest}))
            elif s.name == student:
                stages.append(dataclasses.replace(s, inputs={**s.inputs, "source": feeds if len(feeds) > 1 else feeds[0]},
                                                  config=merge(s.config, {"transfer_size": n, **training})))
            else:  # any other reader of the swapped-out set reads the method's first set
                swap = lambda v: feeds[0] if v == synth else v  # noqa: E731
                stages.append(dataclasses.replace(s, inputs={k: [swap(t) for t in v] if isinstance(v, list) else swap(v)
                                                             for k, v in s.inputs.items()}))
        varied = dataclasses.replace(spec, stages=stages, defaults={**spec.defaults, "seed": seed})
        varied.check()
        point = {"method": method, "n": n, "seed": seed}
        jobs.append(Job(run_name(point), varied, out / "runs" / run_name(point), out / "stages", point))
    return jobs


def report_row(job: Job) -> dict[str, Any]:
    """One CSV row from a finished run's report.json: swept keys, seed, figures, cost."""
    report = json.loads(job.report_path.read_text())
    student, teacher = report.get("student", {}), report.get("teacher", {})
    row: dict[str, Any] = dict(job.swept)
    for key in ("test_accuracy", "val_accuracy", "agreement", "images", "steps"):
        if student.get(key) is not None:
            row[key] = student[key]
    if teacher.get("test_accuracy"):
        row["teacher_accuracy"] = teacher["test_accuracy"]
        if "test_accuracy" in row:
            row["teacher_fraction"] = row["test_accuracy"] / teacher["test_accuracy"]
    row.update({f"attacks.{a}": v for a, v in student.get("attacks", {}).items()})
    row.update({f"teacher_attacks.{a}": v for a, v in teacher.get("attacks", {}).items()})
    row["cpu_s"] = report["cpu_s"]
    row["datafree_cpu_s"] = sum(s["cpu_s"] for s in report["stages"].values() if s["kind"] in ("synthesize", "distill"))
    row["run_dir"] = str(job.out)
    return row


def metrics_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    present = {k for r in rows for k in r}
    attacks = sorted(k for k in present if k.startswith("attacks."))
    return [m for m in ACCURACY_METRICS if m in present] + attacks + ["cpu_s"]


def best_on_val(cells: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    scored = [c for c in cells if not math.isnan(c.get("val_accuracy_mean", math.nan))]
    return max(scored, key=lambda c: c["val_accuracy_mean"]) if scored else None


def write_outputs(rows: list[dict[str, Any]], keys: Sequence[str], out: Path, title: str,
                  size_key: str | None = None, series_key: str | None = None, notes: Sequence[str] = (),
                  xlabel: str = "synthetic images (log scale)", select: bool = True) -> dict[str, Any]:
    """results.csv, summary.md and the plots of a finished sweep; returns what was written.
    ``select``: name the best cell on val (a sweep chooses; an ablation only reports)."""
    from ..study_plots import plot_clean_vs_robust, plot_metric_vs_size
    from ..study_tables import summarize, write_results_csv, write_summary_md

    write_results_csv(rows, out / "results.csv", first=list(keys))
    metrics = metrics_of(rows)
    cells = summarize(rows, list(keys), metrics)
    teacher = [r["teacher_accuracy"] for r in rows if "teacher_accuracy" in r]
    teacher_mean = sum(teacher) / len(teacher) if teacher else None
    notes = list(notes)
    best = best_on_val(cells) if select else None
    if best is not None:
        where = ", ".join(f"{k}={best[k]}" for k in keys)
        notes.append(f"Selected on val: the best cell by mean val_accuracy is {where} (val "
                     f"{best['val_accuracy_mean']:.4f}); its test accuracy, read for the report only, is "
                     f"{best['test_accuracy_mean']:.4f}.")
    if teacher_mean is not None:
        notes.append(f"Teacher test accuracy {teacher_mean:.4f} (mean over the runs' teachers).")
    write_summary_md(cells, out / "summary.md", list(keys), metrics, title, notes)
    plots = []
    if size_key is not None:
        plots.append(plot_metric_vs_size(cells, out / "accuracy_vs_size.png", size_key=size_key,
                                         series_key=series_key or "", metric="test_accuracy",
                                         reference=teacher_mean, secondary_fraction_of=teacher_mean,
                                         title=title, xlabel=xlabel))
    robust = [m for m in metrics if m.startswith("attacks.")]
    if robust:
        plots.append(plot_clean_vs_robust(cells, out / "clean_vs_robust.png", series_key=series_key or "",
                                          robust=robust[0], label_key=size_key or keys[0]))
    return {"cells": cells, "plots": [str(p) for p in plots], "best_on_val": best}
