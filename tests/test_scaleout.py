"""Scale-out (issue 18): DDP under torchrun equals one process at the same global batch, a set
made in shards equals the single-process set bit for bit, and sweeps run through submitit and
Ray writing the same results as the local executor. Every multi-process test launches the real
CLI under the real launcher (``python -m torch.distributed.run``), gloo on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import train_toy_teacher, write_tensor_dataset
from datafree_kd.checkpoint import load_model
from datafree_kd.distributed import Ranks, check_supported
from datafree_kd.errors import ConfigError
from datafree_kd.losses import Objective
from datafree_kd.study_tables import read_results_csv
from datafree_kd.synthesis import SynthesizeConfig, batch_range, parse_shard, run_synthesis
from datafree_kd.transfer_set import TransferSet

REPO = Path(__file__).resolve().parents[1]


def _env(fault: str | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for key in ("DFKD_FAULT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    if fault:
        env["DFKD_FAULT"] = fault
    return env


def _dfkd(args: list[str], ranks: int = 1, fault: str | None = None) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), "-m"]
                if ranks > 1 else [sys.executable, "-m"])
    return subprocess.run([*launcher, "datafree_kd.cli", *args], env=_env(fault), capture_output=True, text=True,
                          timeout=600)


def _metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in ("elapsed_s", "cpu_s")}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def _close_models(a: Path, b: Path, atol: float = 1e-5) -> bool:
    x, y = load_model(a).model.state_dict(), load_model(b).model.state_dict()
    return x.keys() == y.keys() and all(torch.allclose(x[k], y[k], atol=atol) for k in x)


def _close_metrics(a: list[dict], b: list[dict], rel: float = 1e-4) -> None:
    assert [r.keys() for r in a] == [r.keys() for r in b]
    for ra, rb in zip(a, b):
        for key in ra:
            assert rb[key] == pytest.approx(ra[key], rel=rel, abs=1e-6), key


@pytest.fixture(scope="module")
def toy_set(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(data, teacher, transfer set) on the toy problem."""
    root = tmp_path_factory.mktemp("scaleout")
    data, teacher = train_toy_teacher(root)
    cfg = SynthesizeConfig(teacher=str(teacher), method="random-generator", n=256, batch_size=64, shard_size=128,
                           device="cpu", preview=False)
    run_synthesis(cfg, root / "set")
    return data, teacher, root / "set"


def _distill_args(data: Path, teacher: Path, source: Path, out: Path, steps: int = 12) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--source", f"transfer:{source}", "--data-root", str(data),
            "--out", str(out), "--steps", str(steps), "--device", "cpu", "recipe=none", "batch_size=32",
            "checkpoint_every=4", "log_every=2", "latency_runs=0", "eval_val=false"]


def test_ddp_distillation_equals_one_process_at_the_same_global_batch(toy_set, tmp_path):
    data, teacher, source = toy_set
    single = _dfkd(_distill_args(data, teacher, source, tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    ddp = _dfkd(_distill_args(data, teacher, source, tmp_path / "two"), ranks=2)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert (one["world_size"], two["world_size"], two["backend"]) == (1, 2, "gloo")
    _close_metrics(_metrics(tmp_path / "one"), _metrics(tmp_path / "two"))  # losses, grad norms, agreement
    assert _close_models(tmp_path / "one" / "model.pt", tmp_path / "two" / "model.pt")
    assert two["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=1 / 40)
    assert ddp.stdout.count("test_accuracy") == 1  # rank 0 speaks for the job


@pytest.mark.slow
def test_ddp_distillation_resumes_exactly_after_a_kill(toy_set, tmp_path):
    data, teacher, source = toy_set
    straight = _dfkd(_distill_args(data, teacher, source, tmp_path / "straight"), ranks=2)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = _dfkd(_distill_args(data, teacher, source, tmp_path / "killed"), ranks=2, fault="loop.checkpoint:2")
    assert killed.returncode != 0 and not (tmp_path / "killed" / "model.pt").exists()
    assert (tmp_path / "killed" / "last.pt").is_file()
    resumed = _dfkd(_distill_args(data, teacher, source, tmp_path / "killed") + ["--resume"], ranks=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _metrics(tmp_path / "straight") == _metrics(tmp_path / "killed")
    assert _close_models(tmp_path / "straight" / "model.pt", tmp_path / "killed" / "model.pt", atol=0)
    # the data order does not depend on the world size: one process finishes a 2-rank run's checkpoint
    again = _dfkd(_distill_args(data, teacher, source, tmp_path / "again"), ranks=2, fault="loop.checkpoint:2")
    assert again.returncode != 0
    alone = _dfkd(_distill_args(data, teacher, source, tmp_path / "again") + ["--resume"])
    assert alone.returncode == 0, alone.stderr
    assert _close_models(tmp_path / "straight" / "model.pt", tmp_path / "again" / "model.pt")


@pytest.mark.slow
def test_ddp_teacher_training_equals_one_process(tmp_path):
    data = write_tensor_dataset(tmp_path / "toy", n_train=256, n_test=64)
    args = ["teacher", "train", "--dataset", "tensors", "--data-root", str(data), "--arch", "lenet5", "--epochs", "2",
            "--device", "cpu", "batch_size=32", "hflip=false", "crop_padding=0", "latency_runs=0"]
    one = _dfkd([*args, "--out", str(tmp_path / "one")])
    two = _dfkd([*args, "--out", str(tmp_path / "two")], ranks=2)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    _close_metrics(_metrics(tmp_path / "one"), _metrics(tmp_path / "two"))
    assert _close_models(tmp_path / "one" / "model.pt", tmp_path / "two" / "model.pt")
    assert json.loads((tmp_path / "two" / "results.json").read_text())["world_size"] == 2


def test_ddp_refuses_what_it_cannot_split_or_synchronise():
    with pytest.raises(ConfigError, match="global batch"):
        Ranks(0, 2).share(33)
    assert Ranks(1, 4).share(32) == slice(8, 16)
    with pytest.raises(ConfigError, match="discriminator"):
        check_supported(Objective.from_spec("kd=1,discriminator=0.1", {}))
    check_supported(Objective.from_spec("kd=1", {}))  # response KD needs nothing synchronised


def test_shard_specs_and_ranges():
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/2", "a/b", "1", "0/0", "1/2/3"):
        with pytest.raises(ConfigError, match="K/N"):
            parse_shard(bad)
    # contiguous batch ranges that tile the set exactly, whatever the remainder
    for n, batch, parts in ((1000, 64, 4), (100, 64, 3), (64, 64, 4), (1, 8, 2)):
        ranges = [batch_range(n, batch, k, parts) for k in range(parts)]
        assert sum(r[2] for r in ranges) == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])) and ranges[-1][1] == -(-n // batch)


def _synth(teacher: Path, out: Path, shard: str = "") -> dict:
    cfg = SynthesizeConfig(teacher=str(teacher), method="dafl", n=200, batch_size=32, shard_size=64, device="cpu",
                           preview=False, shard=shard, options={"fit_steps": 3, "batch_size": 16, "base_channels": 8})
    return run_synthesis(cfg, out)


def test_a_set_made_in_four_shards_equals_the_single_process_set_bit_for_bit(toy_set, tmp_path, one_thread):
    _, teacher, _ = toy_set
    whole = _synth(teacher, tmp_path / "whole")
    parts = [_synth(teacher, tmp_path / "sharded", f"{k}/4") for k in (2, 0, 3, 1)]  # any order
    assert [p["kind"] for p in parts] == ["synthesis-part"] * 3 + ["synthesis"]
    merged = parts[-1]
    a, b = TransferSet.open(tmp_path / "whole"), TransferSet.open(tmp_path / "sharded")
    assert merged["set_checksum"] == whole["set_checksum"] == a.checksum() == b.checksum()  # same shard files
    assert torch.equal(a.load().images, b.load().images) and torch.equal(a.load_logits(), b.load_logits())
    assert merged["count"] == 200 and merged["parts"] == 4 and merged["written_under_guard"]
    # the fit was made once and shared: only one part reports fitting
    fits = [json.loads(p.read_text())["fit_s"] for p in (tmp_path / "sharded" / "shards").glob("*/part.json")]
    assert sum(f > 0 for f in fits) == 1
    # a part run again is a resume with nothing left to do; the merged set is unchanged
    assert _synth(teacher, tmp_path / "sharded", "1/4")["set_checksum"] == whole["set_checksum"]


@pytest.mark.slow
def test_shards_run_at_once_and_under_torchrun_merge_to_the_same_set(toy_set, tmp_path, one_thread):
    # the in-process set is made on one thread, as the shard processes are (OMP_NUM_THREADS=1), so
    # the fits round alike whatever thread count earlier tests left behind
    _, teacher, _ = toy_set
    whole = _synth(teacher, tmp_path / "whole")
    args = ["synthesize", "--teacher", str(teacher), "--method", "dafl", "n=200", "--batch-size", "32",
            "shard_size=64", "--device", "cpu", "preview=false", "options.fit_steps=3", "options.batch_size=16",
            "options.base_channels=8"]
    procs = [subprocess.Popen([sys.executable, "-m", "datafree_kd.cli", *args, "--shard", f"{k}/2", "--out",
                               str(tmp_path / "parallel")], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert TransferSet.open(tmp_path / "parallel").checksum() == whole["set_checksum"]
    ranked = _dfkd([*args, "--out", str(tmp_path / "ranks")], ranks=2)
    assert ranked.returncode == 0, ranked.stderr[-3000:]
    assert TransferSet.open(tmp_path / "ranks").checksum() == whole["set_checksum"]
    assert "merged 2 parts" in ranked.stdout


def _toy_sweep(tmp_path: Path, data: Path) -> Path:
    from test_experiment import toy_experiment

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(toy_experiment(data, steps=8)))
    return path


def _sweep(exp: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return _dfkd(["sweep", str(exp), "--grid", "student.steps=4,8", "--seeds", "0,1", "--jobs", "2", "--out", str(out),
                  *extra])


def _figures(out: Path) -> list[dict]:
    """results.csv without what depends on where and how fast a run executed."""
    return [{k: v for k, v in row.items() if k not in ("cpu_s", "datafree_cpu_s", "run_dir")}
            for row in read_results_csv(out / "results.csv")]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sweeps")
    exp = _toy_sweep(root, write_tensor_dataset(root / "data", n_train=192, n_test=48))
    proc = _sweep(exp, root / "local")
    assert proc.returncode == 0, proc.stderr
    return exp, root / "local"


def test_a_sweep_through_submitit_writes_the_local_executors_results(local_sweep, tmp_path):
    pytest.importorskip("submitit")
    exp, local = local_sweep
    proc = _sweep(exp, tmp_path / "submitit", "--executor", "submitit", "--executor-opt", "cluster=local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _figures(tmp_path / "submitit") == _figures(local) and len(_figures(local)) == 4
    assert list((tmp_path / "submitit" / "submitit").iterdir())  # submitit's own job folders
    again = _sweep(exp, tmp_path / "submitit", "--executor", "submitit", "--executor-opt", "cluster=local")
    assert again.returncode == 0 and again.stdout.count(": skipped") == 4, again.stdout


@pytest.mark.slow
def test_a_sweep_through_ray_writes_the_local_executors_results(local_sweep, tmp_path):
    pytest.importorskip("ray")
    exp, local = local_sweep
    proc = _sweep(exp, tmp_path / "ray", "--executor", "ray", "--executor-opt", "object_store_mb=128")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _figures(tmp_path / "ray") == _figures(local)


def test_executor_options_are_checked_before_anything_runs(local_sweep, tmp_path):
    exp, _ = local_sweep
    bad = _sweep(exp, tmp_path / "x", "--executor", "submitit", "--executor-opt", "partitoin=gpu")
    assert bad.returncode == 2 and "unknown submitit executor option(s) partitoin" in bad.stderr
    assert not (tmp_path / "x" / "runs").exists()
    local = _sweep(exp, tmp_path / "y", "--executor-opt", "cluster=local")
    assert local.returncode == 2 and "local executor takes no options" in local.stderr


def _slurm_up() -> bool:
    import shutil

    if not shutil.which("sinfo"):
        return False
    state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return state.returncode == 0 and any(s in state.stdout for s in ("idle", "mix", "alloc"))


@pytest.mark.slow
@pytest.mark.skipif(not _slurm_up(), reason="no Slurm answers here (bash scripts/local_slurm.sh start runs one)")
def test_a_sweep_through_a_real_slurm_writes_the_local_executors_results(local_sweep, tmp_path):
    """A real scheduler, not a mock: sbatch job arrays on the single-node Slurm that .ci/run
    starts on localhost (scripts/local_slurm.sh)."""
    pytest.importorskip("submitit")
    exp, local = local_sweep
    partition = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True).stdout.split()[0]
    proc = _sweep(exp, tmp_path / "slurm", "--executor", "submitit", "--executor-opt", "cluster=slurm",
                  "--executor-opt", f"slurm_partition={partition}", "--executor-opt", "timeout_min=20")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _figures(tmp_path / "slurm") == _figures(local)
    logs = list((tmp_path / "slurm" / "submitit").glob("*/*_log.out"))
    assert logs, "no Slurm job logs: the runs did not go through sbatch"
