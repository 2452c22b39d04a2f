"""Exact resume everywhere (issue 16, item 4): SIGKILL at named points of teacher training,
materialising synthesis and online distillation; the same command run again finishes with
results equal to an uninterrupted run's, and no torn file is ever left where a reader takes it.

The kills are placed by ``DFKD_FAULT=POINT:N`` (``datafree_kd.faults``), not by timing, so each
test kills exactly where it says. Every run is a subprocess of the real CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import train_toy_teacher, write_tensor_dataset

from datafree_kd.checkpoint import load_model
from datafree_kd.transfer_set import TransferSet

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _dfkd(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("DFKD_FAULT", None)
    if fault:
        env["DFKD_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "datafree_kd.cli", *args], env=env, capture_output=True, text=True)


def _kill_resume_compare(args, straight: Path, fault: str, out: Path) -> tuple[dict, dict]:
    """Kill ``args`` at ``fault``, check what it left is readable, resume it, and check it ended
    where the uninterrupted ``straight`` run did (weights, metrics); both runs' results."""
    killed = _dfkd(args(out), fault)
    assert killed.returncode == -signal.SIGKILL, f"not killed at {fault}: rc {killed.returncode}\n{killed.stderr}"
    _readable_state(out)
    finished = _dfkd(args(out) + ["--resume"])
    assert finished.returncode == 0, finished.stderr
    assert _same_model(straight / "model.pt", out / "model.pt")
    assert _metrics(straight) == _metrics(out)
    return tuple(json.loads((d / "results.json").read_text()) for d in (straight, out))


def _metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("elapsed_s", "cpu_s")} for line in lines]


def _same_model(a: Path, b: Path) -> bool:
    x, y = load_model(a).model.state_dict(), load_model(b).model.state_dict()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _straight(toy: dict, name: str, args) -> Path:
    """The uninterrupted run a killed one is compared with (once per module)."""
    out = toy["base"] / f"{name}-straight"
    done = _dfkd(args(toy, out))
    assert done.returncode == 0, done.stderr
    return out


def _readable_state(run: Path) -> None:
    """What a resuming reader takes is whole: last.pt loads; no temporary file stands in for it."""
    if (run / "last.pt").exists():
        torch.load(run / "last.pt", weights_only=True)
    if (run / "model.pt").exists():
        load_model(run / "model.pt")


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("resume")
    data, teacher = train_toy_teacher(base, arch="lenet5_bn")
    return {"data": data, "teacher": teacher, "base": base}


# ------------------------------------------------------------------------------ teacher training

TEACHER_KILLS = ["loop.unit:2", "loop.checkpoint:1", "io.before_replace:3"]


@pytest.fixture(scope="module")
def teacher_straight(toy) -> Path:
    return _straight(toy, "teacher", _teacher_args)


def _teacher_args(toy: dict, out: Path) -> list[str]:
    return ["teacher", "train", "--dataset", "tensors", "--data-root", str(toy["data"]), "--arch", "lenet5",
            "--epochs", "3", "--out", str(out), "batch_size=32", "latency_runs=0", "device=cpu", "threads=1"]


@pytest.mark.parametrize("fault", TEACHER_KILLS)
def test_teacher_training_resumes_exactly(toy, teacher_straight, fault, tmp_path):
    ra, rb = _kill_resume_compare(lambda out: _teacher_args(toy, out), teacher_straight, fault, tmp_path / "run")
    assert ra["test_accuracy"] == rb["test_accuracy"]


# --------------------------------------------------------------------------- materialising synthesis

SYNTH_KILLS = ["synthesis.fitted:1", "transfer.shard_written:2", "synthesis.batch:5", "io.before_replace:4"]


def _synth_args(toy: dict, out: Path, method: str = "dafl") -> list[str]:
    return ["synthesize", "--teacher", str(toy["teacher"]), "--method", method, "--n", "192", "--batch-size",
            "32", "--out", str(out), "shard_size=64", "preset=smoke", "preview=false", "device=cpu", "threads=1"]


@pytest.fixture(scope="module")
def synth_straight(toy) -> Path:
    return _straight(toy, "synth", _synth_args)


@pytest.mark.parametrize("fault", SYNTH_KILLS)
def test_synthesis_resumes_to_the_same_images(toy, synth_straight, fault, tmp_path):
    out = tmp_path / "run"
    killed = _dfkd(_synth_args(toy, out), fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if (out / "transfer_set" / "meta.json").exists():  # what a reader would take is whole and checksummed
        TransferSet.open(out / "transfer_set", verify=True)
    finished = _dfkd(_synth_args(toy, out))
    assert finished.returncode == 0, finished.stderr
    a, b = TransferSet.open(synth_straight / "transfer_set"), TransferSet.open(out / "transfer_set")
    assert a.checksum() == b.checksum() and len(b) == 192
    assert torch.equal(a.load().images, b.load().images)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (synth_straight, out))
    assert ra["class_counts"] == rb["class_counts"] and ra["set_checksum"] == rb["set_checksum"]


@pytest.mark.parametrize("method", ["cmi", "nayer"])
def test_round_based_synthesis_resumes_to_the_same_images(toy, method, tmp_path):
    """CMI's bank and head optimiser and NAYER's body and BN history are part of the saved fit."""
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert _dfkd(_synth_args(toy, straight, method)).returncode == 0
    killed = _dfkd(_synth_args(toy, out, method), "synthesis.batch:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    finished = _dfkd(_synth_args(toy, out, method))
    assert finished.returncode == 0, finished.stderr
    a, b = TransferSet.open(straight / "transfer_set"), TransferSet.open(out / "transfer_set")
    assert a.checksum() == b.checksum() and torch.equal(a.load().images, b.load().images)


# ------------------------------------------------------------------------------ online distillation

ONLINE_KILLS = ["loop.unit:6", "loop.checkpoint:2", "io.before_replace:3"]


def _online_args(toy: dict, out: Path) -> list[str]:
    return ["distill", "--teacher", str(toy["teacher"]), "--student", "lenet5_half", "--source", "online:dfad",
            "--data-root", str(toy["data"]), "--steps", "12", "--out", str(out), "batch_size=16",
            "checkpoint_every=4", "log_every=2", "latency_runs=0", "device=cpu", "threads=1", "preset=smoke"]


@pytest.fixture(scope="module")
def online_straight(toy) -> Path:
    return _straight(toy, "online", _online_args)


@pytest.mark.parametrize("fault", ONLINE_KILLS)
def test_online_distillation_resumes_exactly(toy, online_straight, fault, tmp_path):
    ra, rb = _kill_resume_compare(lambda out: _online_args(toy, out), online_straight, fault, tmp_path / "run")
    assert ra["test_accuracy"] == rb["test_accuracy"] and rb["data_free"] is True


def test_a_kill_inside_an_atomic_write_leaves_the_previous_checkpoint(toy, tmp_path):
    """The second checkpoint's temporary file is complete but not renamed: last.pt is still the first."""
    out = tmp_path / "run"
    # atomic writes of this run: config.yaml (1), metrics reset (2), last.pt at step 4 (3), at step 8 (4)
    killed = _dfkd(_online_args(toy, out), "io.before_replace:4")
    assert killed.returncode == -signal.SIGKILL
    assert torch.load(out / "last.pt", weights_only=True)["progress"]["step"] == 4
    assert list(out.glob(".last.pt.*.tmp")), "the kill should have left the unrenamed temporary file"


# ---------------------------------------------------------------------------------- attacked evaluation

def _evaluate_args(toy: dict, out: Path) -> list[str]:
    return ["evaluate", str(toy["teacher"]), "--data-root", str(toy["data"]), "--attacks", "fgsm,pgd20",
            "--eps", "0.1", "--attack-batch-size", "10", "--out", str(out), "latency_runs=0", "device=cpu",
            "threads=1"]


@pytest.mark.parametrize("fault", ["attacks.batch:2", "attacks.batch:9"])
def test_attacked_evaluation_resumes_from_its_journal(toy, fault, tmp_path):
    """The toy test split is 64 images, 7 batches per attack. Killed after the 2nd attacked batch
    (inside fgsm) or the 9th (inside pgd20), the rerun finishes with the uninterrupted run's figures
    and journal (that it attacks only the batches left is checked in test_attacks.py)."""
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert _dfkd(_evaluate_args(toy, straight)).returncode == 0
    killed = _dfkd(_evaluate_args(toy, out), fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "results.json").exists()
    journaled = (out / "attacks.jsonl").read_text().splitlines()
    assert len(journaled) == 1 + int(fault.rpartition(":")[2])  # the header, then one line per batch
    finished = _dfkd(_evaluate_args(toy, out))
    assert finished.returncode == 0, finished.stderr
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (straight, out))
    assert ra["attacks"] == rb["attacks"] and ra["attack_examples"] == rb["attack_examples"]
    assert (out / "attacks.jsonl").read_text() == (straight / "attacks.jsonl").read_text()
