"""Sweeps and the set-size ablation: grid expansion, shared stages, skipping finished runs, the CSV,
the summary and the plots."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from conftest import write_tensor_dataset
from datafree_kd.errors import ConfigError
from datafree_kd.experiment import ExperimentSpec
from datafree_kd.experiment.sweep import ablate_size_jobs, expand_grid, parse_grid, run_name, sweep_jobs
from datafree_kd.study_plots import DPI, FIGSIZE
from datafree_kd.study_tables import read_results_csv
from test_experiment import _env, toy_experiment


def test_grid_expands_to_the_product_with_seeds_fastest():
    grid = parse_grid(["student.lr=0.01,0.001", "synthetic.method=dafl,random-generator"])
    assert grid == [("student.lr", [0.01, 0.001]), ("synthetic.method", ["dafl", "random-generator"])]
    points = expand_grid(grid, [0, 1, 2])
    assert len(points) == 12 and [p["seed"] for p in points[:3]] == [0, 1, 2]
    assert points[0] == {"student.lr": 0.01, "synthetic.method": "dafl", "seed": 0}
    assert len({run_name(p) for p in points}) == 12
    assert run_name({"a": "x/y z", "seed": 0}) == "a=x-y-z_seed=0"
    for bad in (["student.lr"], ["=1,2"], ["student.lr="], ["a=1", "a=2"]):
        with pytest.raises(ConfigError):
            parse_grid(bad)


def test_a_grid_that_swaps_the_method_starts_it_from_its_measured_options(tmp_path):
    """The experiment's options belong to its method: a swapped-in method gets its own measured
    ones (as in the size study), with options the grid names itself on top."""
    from generators.default import measured_options

    data = write_tensor_dataset(tmp_path / "data")
    spec = ExperimentSpec.from_dict(toy_experiment(data))
    def synth_options(*grid: str) -> dict:
        return {job.swept["synthetic.method"]: next(s for s in job.spec.stages if s.name == "synthetic").config["options"]
                for job in sweep_jobs(spec, parse_grid(list(grid)), [0], tmp_path / "o")}

    options = synth_options("synthetic.method=dafl,dead-leaves")
    assert options == {"dafl": {"fit_steps": 3, "batch_size": 16, "base_channels": 8},
                       "dead-leaves": measured_options("dead-leaves")}
    named = synth_options("synthetic.method=dead-leaves", "synthetic.options.max_shapes=2")
    assert named == {"dead-leaves": {**measured_options("dead-leaves"), "max_shapes": 2}}
    kept = sweep_jobs(spec, parse_grid(["student.lr=0.01"]), [0], tmp_path / "o")[0]
    assert next(s for s in kept.spec.stages if s.name == "synthetic").config["options"]["fit_steps"] == 3


def test_ablate_size_jobs_share_one_set_per_method_and_seed(tmp_path):
    data = write_tensor_dataset(tmp_path / "data")
    spec = ExperimentSpec.from_dict(toy_experiment(data))
    jobs = ablate_size_jobs(spec, [64, 32, 128], ["dafl", "random-generator"], [0, 1], tmp_path / "o")
    assert len(jobs) == 12 and [j.swept["n"] for j in jobs[:4]] == [32] * 4
    for job in jobs:
        synth = next(s for s in job.spec.stages if s.kind == "synthesize").config
        assert next(s for s in job.spec.stages if s.kind == "synthesize").name == f"synthetic-{job.swept['method']}"
        student = next(s for s in job.spec.stages if s.kind == "distill").config
        assert synth["n"] == 128 and synth["method"] == job.swept["method"]
        # the experiment's own options stay with its method; another method gets its measured ones
        assert synth["options"] == ({} if job.swept["method"] != "dafl" else {"fit_steps": 3, "batch_size": 16,
                                                                               "base_channels": 8})
        assert student["transfer_size"] == job.swept["n"] and student["epochs"] == 0
        assert student["steps"] == 24  # the experiment's own step budget, for every size
    fast = ablate_size_jobs(spec, [32], ["fast"], [0], tmp_path / "o")[0]
    assert next(s for s in fast.spec.stages if s.kind == "synthesize").config["options"]["fit_rounds"] == 200
    by_epochs = ablate_size_jobs(spec, [32, 64], ["dafl"], [0], tmp_path / "o", budget="epochs", epochs=3)
    assert all(next(s for s in j.spec.stages if s.kind == "distill").config["epochs"] == 3 for j in by_epochs)
    with pytest.raises(ConfigError, match="budget"):
        ablate_size_jobs(spec, [32], ["dafl"], [0], tmp_path / "o", budget="time")


def _png_size(path):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.format, image.size


def test_sweep_writes_csv_summary_and_plots_and_skips_finished_runs(tmp_path):
    data = write_tensor_dataset(tmp_path / "data", n_train=192, n_test=48)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(toy_experiment(data, steps=8)))
    cmd = [sys.executable, "-m", "datafree_kd.cli", "sweep", str(path), "--grid", "student.steps=4,8",
           "--seeds", "0,1", "--jobs", "2", "--out", str(tmp_path / "sweep")]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "sweep"
    rows = read_results_csv(out / "results.csv")
    assert len(rows) == 4
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["student.steps", "seed"]
    for column in ("test_accuracy", "val_accuracy", "teacher_accuracy", "attacks.pgd20", "attacks.fgsm", "cpu_s"):
        assert column in header
    assert sorted((r["student.steps"], r["seed"]) for r in rows) == [(4, 0), (4, 1), (8, 0), (8, 1)]
    # one teacher and one set per seed, shared by both values of the swept student key
    assert len(list((out / "stages").glob("teacher-*/stage.json"))) == 2
    assert len(list((out / "stages").glob("synthetic-*/stage.json"))) == 2
    summary = (out / "summary.md").read_text()
    assert "Selected on val" in summary and "95" in summary and "±" in summary
    for png in ("accuracy_vs_size.png", "clean_vs_robust.png"):
        assert _png_size(out / png) == ("PNG", (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI)))
    again = subprocess.run(cmd + ["--blind"], env=_env(), capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.count(": skipped") == 4, again.stdout
    assert read_results_csv(out / "results.csv") == rows
    # --blind prints each run's val figure and no test figure (summary.md, which names both, is not printed)
    assert "withheld (--blind)" in again.stdout and "Selected on val" not in again.stdout
    for row in rows:
        assert f"val {row['val_accuracy']:.4f}" in again.stdout
    vals = {f"{r['val_accuracy']:.4f}" for r in rows}
    tests = {f"{r[k]:.4f}" for r in rows for k in ("test_accuracy", "attacks.pgd20", "attacks.fgsm")} - vals
    assert tests and not any(t in again.stdout for t in tests), again.stdout


def test_ablate_size_end_to_end(tmp_path):
    data = write_tensor_dataset(tmp_path / "data", n_train=192, n_test=48)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(toy_experiment(data, steps=8)))
    cmd = [sys.executable, "-m", "datafree_kd.cli", "ablate-size", str(path), "--sizes", "32,64,128",
           "--methods", "dafl,random-generator", "--seeds", "0", "--steps", "6", "--jobs", "2",
           "--out", str(tmp_path / "abl")]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_results_csv(tmp_path / "abl" / "results.csv")
    assert len(rows) == 6 and {r["images"] for r in rows} == {32, 64, 128} and {r["steps"] for r in rows} == {6}
    assert len(list((tmp_path / "abl" / "stages").glob("synthetic-*/stage.json"))) == 2
    report = json.loads((tmp_path / "abl" / "runs" / "method=dafl_n=32_seed=0" / "report.json").read_text())
    assert report["student"]["images"] == 32
    assert _png_size(tmp_path / "abl" / "accuracy_vs_size.png")[0] == "PNG"
    assert "Selected on val" not in (tmp_path / "abl" / "summary.md").read_text()  # an ablation chooses nothing


def test_the_size_study_swaps_the_set_the_student_learns_from_in_the_diffusion_chain(tmp_path):
    """configs/experiments/diffusion.yaml makes two sets (the GAN set the prior trains on, and the
    student's): `--methods fast,diffusion` varies the student's, leaving the prior's GAN set alone."""
    from datafree_kd.experiment.spec import ExperimentSpec
    from datafree_kd.experiment.sweep import ablate_size_jobs

    spec = ExperimentSpec.load(Path(__file__).resolve().parents[1] / "configs" / "experiments" / "diffusion.yaml")
    jobs = ablate_size_jobs(spec, [500, 1000], ["fast", "diffusion"], [0], tmp_path)
    assert len(jobs) == 4
    for job in jobs:
        stages = {s.name: s for s in job.spec.stages}
        made = stages[f"synthetic-{job.swept['method']}"]
        assert made.config["method"] == job.swept["method"] and made.config["n"] == 1000
        assert stages["gan"].config == next(s for s in spec.stages if s.name == "gan").config
        assert stages["student"].config["transfer_size"] == job.swept["n"]
        assert stages["student"].inputs["source"] == made.name
    diffusion = next(j for j in jobs if j.swept["method"] == "diffusion")
    assert next(s for s in diffusion.spec.stages if s.name == "synthetic-diffusion").config["options"]["guidance_scale"] == 0.1


def test_the_size_study_compares_a_union_with_its_parts_on_the_same_sets(tmp_path):
    """`--methods gan,diffusion,gan+diffusion`: a method may be a synthesize stage of the
    experiment by name (the prior's own GAN set), and `A+B` learns from both halves; the union's
    stages are the very stages (same names and configs, so the same cache entries) its parts use."""
    from datafree_kd.experiment.spec import ExperimentSpec
    from datafree_kd.experiment.sweep import ablate_size_jobs

    spec = ExperimentSpec.load(Path(__file__).resolve().parents[1] / "configs" / "experiments" / "diffusion.yaml")
    jobs = {(j.swept["method"], j.swept["n"]): j for j in
            ablate_size_jobs(spec, [1000, 20000], ["gan", "diffusion", "gan+diffusion"], [0], tmp_path)}
    assert len(jobs) == 6

    def stages(key):
        return {s.name: s for s in jobs[key].spec.stages}

    union, gan, diffusion = stages(("gan+diffusion", 1000)), stages(("gan", 1000)), stages(("diffusion", 1000))
    assert union["student"].inputs["source"] == ["gan", "synthetic-diffusion"]
    assert gan["student"].inputs["source"] == "gan" and "synthetic-diffusion" not in gan
    assert union["gan"] == gan["gan"] == diffusion["gan"] and union["gan"].config["n"] == 20000  # raised to the largest size
    assert union["synthetic-diffusion"] == diffusion["synthetic-diffusion"]
    assert union["prior"].inputs == {"source": "gan"}
    with pytest.raises(ConfigError, match="distinct"):
        ablate_size_jobs(spec, [1000], ["gan+gan"], [0], tmp_path)
    with pytest.raises(ConfigError):
        ablate_size_jobs(spec, [1000], ["gan+nosuchmethod"], [0], tmp_path)


def test_a_student_learns_from_a_union_of_stages(tmp_path):
    """A distill stage's `source` may list several synthesize stages: `transfer:A,B`, shared equally."""
    data = write_tensor_dataset(tmp_path / "data", n_train=192, n_test=48)
    raw = toy_experiment(data, steps=4)
    synth = next(s for s in raw["stages"] if s["kind"] == "synthesize")
    other = {**synth, "name": "other", "config": {**synth["config"], "method": "random-generator", "options": {}}}
    raw["stages"].insert(raw["stages"].index(synth) + 1, other)
    student = next(s for s in raw["stages"] if s["kind"] == "distill")
    student["inputs"]["source"] = [synth["name"], "other"]
    student["config"]["transfer_size"] = 32
    from datafree_kd.experiment.runner import run_experiment

    report = run_experiment(ExperimentSpec.from_dict(raw), tmp_path / "run")
    results = json.loads(next((tmp_path / "run" / "stages").glob("student-*/results.json")).read_text())
    members = results["source_provenance"]["union"]
    assert [m["synthesizer"] for m in members] == [synth["config"]["method"], "random-generator"]
    assert results["images"] == 32 and report["student"]["images"] == 32
    student["inputs"]["source"] = []
    with pytest.raises(ConfigError, match="empty"):
        ExperimentSpec.from_dict(raw)
