"""Experiments: stages run in order, finished ones are reused, changed keys re-run only what depends
on them, and a run killed inside any stage finishes with the figures of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import requires_fashion_mnist, write_tensor_dataset
from datafree_kd.errors import ConfigError
from datafree_kd.experiment import ExperimentSpec, run_experiment

REPO = Path(__file__).resolve().parents[1]


def toy_experiment(data: Path, teacher_epochs: int = 2, fit_steps: int = 3, steps: int = 24) -> dict:
    common = {"device": "cpu", "threads": 1}
    return {
        "name": "toy",
        "defaults": {"seed": 0},
        "stages": [
            {"name": "teacher", "kind": "teacher",
             "config": {"dataset": "tensors", "data_root": str(data), "arch": "lenet5", "epochs": teacher_epochs,
                        "batch_size": 32, "hflip": False, "crop_padding": 0, "latency_runs": 0, **common}},
            {"name": "synthetic", "kind": "synthesize", "inputs": {"teacher": "teacher"},
             "config": {"method": "dafl", "n": 128, "batch_size": 32, "shard_size": 64,
                        "options": {"fit_steps": fit_steps, "batch_size": 16, "base_channels": 8}, **common}},
            {"name": "student", "kind": "distill", "inputs": {"teacher": "teacher", "source": "synthetic"},
             "config": {"data_root": str(data), "steps": steps, "batch_size": 32, "checkpoint_every": 4,
                        "log_every": 4, "latency_runs": 0, **common}},
            {"name": "evaluate", "kind": "evaluate", "inputs": {"models": ["teacher", "student"], "reference": "teacher"},
             "config": {"data_root": str(data), "attacks": "fgsm,pgd20", "eps": 0.1, "attack_limit": 16, "latency_runs": 0,
                        **common}},
        ],
    }


def figures(report: dict) -> dict:
    """What must not depend on whether a run was interrupted: accuracies, attacks, stage keys."""
    return {"models": {n: {k: m.get(k) for k in ("test_accuracy", "attacks", "agreement")}
                       for n, m in report["models"].items()},
            "keys": {n: s["key"] for n, s in report["stages"].items()}}


def fingerprints(out: Path) -> dict:
    return {p.parent.name.rsplit("-", 1)[0]: json.loads(p.read_text())["fingerprint"]
            for p in (out / "stages").glob("*/stage.json")}


@pytest.fixture
def toy(tmp_path):
    return write_tensor_dataset(tmp_path / "data", n_train=192, n_test=48)


def test_runs_every_stage_then_reuses_them(toy, tmp_path):
    spec = ExperimentSpec.from_dict(toy_experiment(toy))
    first = run_experiment(spec, tmp_path / "exp")
    assert {s["status"] for s in first["stages"].values()} == {"ran"}
    # the reported figures are those of the stages' saved models, recomputed here on the toy test set
    from datafree_kd.checkpoint import load_model
    from datafree_kd.data import load_dataset

    test = load_dataset("tensors", "test", str(toy))
    for role in ("teacher", "student"):
        model = load_model(Path(first["stages"][role]["dir"]) / "model.pt").model.eval()
        with torch.no_grad():
            expected = (model(test.as_float(test.images)).argmax(1) == test.labels).float().mean().item()
        assert first[role]["test_accuracy"] == pytest.approx(expected, abs=1e-9), role
    assert first["teacher"]["test_accuracy"] > 0.5  # 4 classes, chance 0.25: the teacher learnt (measured 1.0)
    assert set(first["teacher"]["attacks"]) == set(first["student"]["attacks"]) == {"fgsm", "pgd20"}
    assert first["student"]["agreement"] is not None and "agreement" not in first["teacher"]
    on_disk = json.loads((tmp_path / "exp" / "report.json").read_text())
    assert on_disk["student"]["test_accuracy"] == first["student"]["test_accuracy"]
    text = (tmp_path / "exp" / "report.md").read_text()
    assert "| student | student | lenet5_half |" in text and "pgd20" in text
    assert "dfkd teacher train --config" in text and "dfkd distill --config" in text
    for name in ("synthetic-images.png", "curves.png"):
        assert (tmp_path / "exp" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the student learnt from the synthetic set, under the data-free guard, with the measured recipe
    student = json.loads(next((tmp_path / "exp" / "stages").glob("student-*/results.json")).read_text())
    assert student["data_free"] and student["source"].startswith("transfer:")

    again = run_experiment(spec, tmp_path / "exp")
    assert {s["status"] for s in again["stages"].values()} == {"reused"}
    assert figures(again) == figures(first)
    assert again["cpu_s"] == pytest.approx(first["cpu_s"])  # reused stages report the CPU time that made them


def test_changing_one_key_reruns_only_the_stages_downstream_of_it(toy, tmp_path):
    spec = ExperimentSpec.from_dict(toy_experiment(toy))
    run_experiment(spec, tmp_path / "exp")
    changed = run_experiment(spec.with_overrides(["student.steps=16"]), tmp_path / "exp")
    status = {n: s["status"] for n, s in changed["stages"].items()}
    assert status == {"teacher": "reused", "synthetic": "reused", "student": "ran", "evaluate": "ran"}
    # a key that only says where a stage runs changes nothing
    moved = run_experiment(spec.with_overrides(["student.steps=16", "threads=2"]), tmp_path / "exp")
    assert {s["status"] for s in moved["stages"].values()} == {"reused"}
    upstream = run_experiment(spec.with_overrides(["synthetic.n=64"]), tmp_path / "exp")
    status = {n: s["status"] for n, s in upstream["stages"].items()}
    assert status == {"teacher": "reused", "synthetic": "ran", "student": "ran", "evaluate": "ran"}


def _dfkd(*args: str) -> list[str]:
    return [sys.executable, "-m", "datafree_kd.cli", *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


#: the file whose appearance shows the stage is under way but not finished
PARTIAL = {"teacher": "last.pt", "synthetic": "transfer_set/meta.json", "student": "last.pt"}


@pytest.mark.parametrize("stage", sorted(PARTIAL))
def test_killed_inside_a_stage_resumes_to_the_uninterrupted_figures(toy, tmp_path, stage):
    exp = toy_experiment(toy, teacher_epochs=6, fit_steps=60, steps=80)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    subprocess.run(_dfkd("run", str(path), "--out", str(tmp_path / "a")), env=_env(), check=True, capture_output=True)

    proc = subprocess.Popen(_dfkd("run", str(path), "--out", str(tmp_path / "b")), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    found = lambda: list((tmp_path / "b" / "stages").glob(f"{stage}-*/{PARTIAL[stage]}"))  # noqa: E731
    while not found() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    stage_dir = found()[0].parents[len(Path(PARTIAL[stage]).parts) - 1]
    assert not (stage_dir / "stage.json").exists(), "killed after the stage had finished"

    resumed = subprocess.run(_dfkd("run", str(path), "--out", str(tmp_path / "b")), env=_env(), capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"[{stage}] resuming" in resumed.stdout
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert b["stages"][stage]["status"] == "resumed"
    assert figures(a) == figures(b)
    assert fingerprints(tmp_path / "a") == fingerprints(tmp_path / "b")  # the same weights and images


def test_bad_experiments_are_one_line_errors(toy, tmp_path):
    good = toy_experiment(toy)
    bad_kind = {**good, "stages": [{**good["stages"][0], "kind": "trainer"}]}
    with pytest.raises(ConfigError, match="unknown stage 'trainer'"):
        ExperimentSpec.from_dict(bad_kind)
    later = {**good, "stages": [good["stages"][1], good["stages"][0]]}
    with pytest.raises(ConfigError, match="not an earlier stage"):
        ExperimentSpec.from_dict(later)
    no_input = {**good, "stages": [good["stages"][0], {**good["stages"][1], "inputs": {}}]}
    with pytest.raises(ConfigError, match="needs input"):
        ExperimentSpec.from_dict(no_input)
    wrong_slot = {**good, "stages": [good["stages"][0], {**good["stages"][1], "inputs": {"model": "teacher"}}]}
    with pytest.raises(ConfigError, match="take inputs teacher"):
        ExperimentSpec.from_dict(wrong_slot)
    spec = ExperimentSpec.from_dict(good)
    with pytest.raises(ConfigError, match="unknown distill config key.* epochz"):
        spec.with_overrides(["student.epochz=3"])
    with pytest.raises(ConfigError, match="neither a stage"):
        spec.with_overrides(["sed=1"])
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(good))
    proc = subprocess.run(_dfkd("run", str(path), "--out", str(tmp_path / "o"), "student.epochz=3"), env=_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "epochz" in proc.stderr
    assert not (tmp_path / "o").exists()  # refused before any stage ran


def test_shipped_experiments_parse():
    for path in sorted((REPO / "configs" / "experiments").glob("*.yaml")):
        spec = ExperimentSpec.load(path)
        assert spec.stages, path


@requires_fashion_mnist()
def test_demo_smoke_runs_the_whole_pipeline_on_fashion_mnist(tmp_path):
    proc = subprocess.run(_dfkd("demo", "--smoke", "--out", str(tmp_path / "demo")), env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["smoke"] and set(report["student"]["attacks"]) == {"pgd20"}
    assert report["stages"]["synthetic"]["figures"]["method"] == "dafl"
    assert "student / teacher" in proc.stdout and (tmp_path / "demo" / "report.md").exists()


def test_a_key_added_at_its_default_keeps_older_stage_caches_valid():
    """`generators`, `fit_precision` and `channels_last` joined SynthesizeConfig after caches
    existed: at their defaults the stage key is the key of the same config without the fields
    (old caches match); set, it is a new stage."""
    import hashlib
    from types import SimpleNamespace

    from datafree_kd.config import config_to_dict
    from datafree_kd.experiment.runner import KEY_LENGTH, stage_key
    from datafree_kd.stages.synthesize import SynthesizeStage
    from datafree_kd.synthesis import SynthesizeConfig

    stage = SynthesizeStage()
    inputs = {"teacher": SimpleNamespace(fingerprint="f00d", artefact=lambda kind, name: "t.pt")}
    cfg = SynthesizeConfig(teacher="t.pt", n=64)
    old = {k: v for k, v in config_to_dict(cfg).items()
           if k not in stage.unhashed_keys | {"generators", "fit_precision", "channels_last", "teacher"}}
    blob = json.dumps({"kind": stage.kind, "config": old, "inputs": {"teacher": "f00d"},
                       "content": stage.content_key(cfg)}, sort_keys=True, default=str)
    assert stage_key(stage, cfg, inputs, "synthetic") == hashlib.sha256(blob.encode()).hexdigest()[:KEY_LENGTH]
    for change in ({"generators": 3}, {"fit_precision": "bfloat16"}, {"channels_last": True}):
        changed = SynthesizeConfig(teacher="t.pt", n=64, **change)
        assert stage_key(stage, changed, inputs, "synthetic") != stage_key(stage, cfg, inputs, "synthetic")


def test_an_auto_method_stage_is_keyed_by_the_default_table(monkeypatch):
    """`method: auto` resolves through generators.default.DEFAULTS, so a changed default makes a
    new stage instead of serving a set made under the old one; an explicit method does not care."""
    from types import SimpleNamespace

    import generators.default as default
    from datafree_kd.experiment.runner import stage_key
    from datafree_kd.stages.synthesize import SynthesizeStage
    from datafree_kd.synthesis import SynthesizeConfig

    stage = SynthesizeStage()
    inputs = {"teacher": SimpleNamespace(fingerprint="f00d", artefact=lambda kind, name: "t.pt")}
    auto, dafl = SynthesizeConfig(teacher="t.pt"), SynthesizeConfig(teacher="t.pt", method="dafl")
    before = stage_key(stage, auto, inputs, "synthetic"), stage_key(stage, dafl, inputs, "synthetic")
    assert stage.content_key(dafl) == "" and len(stage.content_key(auto)) == 64
    changed = default.DefaultChoice("dafl", {**default.DEFAULTS["plain"].options, "lr": 0.05}, "changed")
    monkeypatch.setitem(default.DEFAULTS, "plain", changed)
    assert stage_key(stage, auto, inputs, "synthetic") != before[0]
    assert stage_key(stage, dafl, inputs, "synthetic") == before[1]


def test_distill_keys_added_at_their_defaults_keep_older_stage_caches_valid():
    """`select_images`, `invert`, `class_balance`, `precision`, `channels_last` and `init_merge`
    joined DistillConfig after caches existed."""
    import hashlib
    from types import SimpleNamespace

    from datafree_kd.config import config_to_dict
    from datafree_kd.distillation import DistillConfig
    from datafree_kd.experiment.runner import KEY_LENGTH, stage_key
    from datafree_kd.stages.distill import DistillStage

    stage = DistillStage()
    inputs = {"teacher": SimpleNamespace(fingerprint="f00d", artefact=lambda kind, name: "t.pt")}
    cfg = DistillConfig(teacher="t.pt")
    added = {"select_images", "invert", "class_balance", "precision", "channels_last", "init_merge"}
    old = {k: v for k, v in config_to_dict(cfg).items() if k not in stage.unhashed_keys | added | {"teacher"}}
    blob = json.dumps({"kind": stage.kind, "config": old, "inputs": {"teacher": "f00d"},
                       "content": stage.content_key(cfg)}, sort_keys=True, default=str)
    assert stage_key(stage, cfg, inputs, "student") == hashlib.sha256(blob.encode()).hexdigest()[:KEY_LENGTH]
    for change in ({"select_images": 8}, {"invert": 0.5}, {"class_balance": True}, {"precision": "bfloat16"},
                   {"channels_last": True}, {"init_merge": 0.0}):
        changed = DistillConfig(teacher="t.pt", **change)
        assert stage_key(stage, changed, inputs, "student") != stage_key(stage, cfg, inputs, "student")
