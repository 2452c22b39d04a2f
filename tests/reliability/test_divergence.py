"""Divergence (issue 16, item 3): NaN or Inf in a loss term, a gradient or a generator's output
stops the run naming the term (or component) and the step, keeps the last good checkpoint, and
the CLI exits 2 with one line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import train_toy_teacher

from datafree_kd.cli import main
from datafree_kd.distillation import DistillConfig, run_distillation
from datafree_kd.errors import DivergenceError
from datafree_kd.loop import check_finite
from datafree_kd.synthesis import SynthesizeConfig, run_synthesis
from datafree_kd.teacher_training import TeacherTrainConfig, train_teacher
from datafree_kd.transfer_set import TransferSet


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    data, teacher = train_toy_teacher(tmp_path_factory.mktemp("divergence"))
    return {"data": data, "teacher": teacher}


def test_check_finite_names_every_bad_figure() -> None:
    check_finite({"kd": 0.5, "grad_norm": 3.0, "steps": 7}, "fine")
    with pytest.raises(DivergenceError, match=r"at step 3: kd = nan, grad_norm = inf"):
        check_finite({"kd": math.nan, "total": 1.0, "grad_norm": math.inf}, "at step 3")


def test_a_diverging_distillation_exits_2_and_keeps_the_last_good_checkpoint(toy, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["distill", "--teacher", str(toy["teacher"]), "--source", "real", "--data-root", str(toy["data"]),
                 "--steps", "20", "--out", str(out), "lr=1e30", "grad_clip=0", "checkpoint_every=1",
                 "latency_runs=0", "device=cpu", "threads=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("dfkd: error: diverged at step "), err
    step = int(err[0].split("diverged at step ")[1].split()[0])
    assert "kd = " in err[0] or "grad_norm = " in err[0]  # the term is named
    assert not (out / "model.pt").exists() and not (out / "results.json").exists()
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["progress"]["step"] == step - 1, "the checkpoint of the diverged step must not be written"
    weights = state["states"]["student0.model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_nan_from_an_online_generator_names_the_generator_and_step(toy, tmp_path, monkeypatch) -> None:
    from generators.noise import UniformNoise

    calls = {"n": 0}
    original = UniformNoise.sample

    def sample(self, batch_size, generator):
        calls["n"] += 1
        x = original(self, batch_size, generator)
        return x.fill_(math.nan) if calls["n"] == 3 else x

    monkeypatch.setattr(UniformNoise, "sample", sample)
    cfg = DistillConfig(teacher=str(toy["teacher"]), data_root=str(toy["data"]), source="online:noise", steps=10,
                        batch_size=8, latency_runs=0, device="cpu", threads=1)
    with pytest.raises(DivergenceError, match=r"diverged at step 3 .*generator output of online:noise"):
        run_distillation(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_nan_pixels_stop_a_synthesis_and_keep_the_shards_written(toy, tmp_path, monkeypatch) -> None:
    from generators.random_generator import RandomGenerator

    calls = {"n": 0}
    original = RandomGenerator.generate

    def generate(self, teacher, batch_size, generator, device):
        calls["n"] += 1
        x = original(self, teacher, batch_size, generator, device)
        return x.fill_(math.inf) if calls["n"] == 3 else x

    monkeypatch.setattr(RandomGenerator, "generate", generate)
    cfg = SynthesizeConfig(teacher=str(toy["teacher"]), method="random-generator", n=128, batch_size=32,
                           shard_size=32, preview=False, device="cpu", threads=1)
    with pytest.raises(DivergenceError, match="random-generator generated NaN or Inf pixels in batch 2"):
        run_synthesis(cfg, tmp_path / "run")
    assert len(TransferSet.open(tmp_path / "run" / "transfer_set")) == 64  # batches 0 and 1, whole
    monkeypatch.setattr(RandomGenerator, "generate", original)
    assert run_synthesis(cfg, tmp_path / "run")["count"] == 128  # the same command then finishes the set


def test_a_diverging_teacher_stops_at_its_epoch(toy, tmp_path) -> None:
    cfg = TeacherTrainConfig(dataset="tensors", data_root=str(toy["data"]), arch="lenet5", epochs=3, batch_size=32,
                             lr=1e30, hflip=False, crop_padding=0, latency_runs=0, device="cpu", threads=1)
    with pytest.raises(DivergenceError, match=r"diverged at epoch 1 .*train_loss = nan"):
        train_teacher(cfg, tmp_path / "teacher")
    assert not (tmp_path / "teacher" / "model.pt").exists()
