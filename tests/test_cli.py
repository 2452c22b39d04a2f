"""The command line: run-directory contract and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import requires_fashion_mnist

REPO = Path(__file__).resolve().parents[1]


def dfkd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "datafree_kd.cli", *args], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A lenet5 teacher trained for 2 epochs on the toy `tensors` dataset through the CLI."""
    from conftest import write_tensor_dataset

    root = tmp_path_factory.mktemp("cli")
    data = write_tensor_dataset(root / "toy", n_train=256, n_test=64)
    out = root / "teacher"
    proc = dfkd("teacher", "train", "--dataset", "tensors", "--data-root", str(data), "--arch", "lenet5",
                "--epochs", "2", "--out", str(out), "batch_size=32", "latency_runs=2", "hflip=false")
    assert proc.returncode == 0, proc.stderr
    return data, out, proc


def test_teacher_train_writes_the_run_directory(trained):
    data, out, proc = trained
    results = json.loads((out / "results.json").read_text())
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (out / "model.pt").is_file() and (out / "last.pt").is_file()
    assert config["epochs"] == 2 and config["batch_size"] == 32 and config["dataset"] == "tensors"
    assert results["test_accuracy"] > 0.5  # toy is easy (4 classes, chance 0.25)
    from datafree_kd.checkpoint import load_model
    from datafree_kd.data import load_dataset

    test = load_dataset("tensors", "test", str(data))
    with torch.no_grad():  # the figure is the saved model's, recomputed here
        ok = load_model(out / "model.pt").model.eval()(test.as_float(test.images)).argmax(1) == test.labels
    assert results["test_accuracy"] == pytest.approx(ok.float().mean().item(), abs=1e-9)
    assert results["params"] > 0 and results["flops"] > 0 and results["latency_ms_per_image"] > 0
    assert len(results["history"]) == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert "test_accuracy" in proc.stdout


def test_evaluate_reproduces_training_accuracy(trained, tmp_path):
    data, out, _ = trained
    proc = dfkd("evaluate", str(out / "model.pt"), "--data-root", str(data), "--reference", str(out / "model.pt"),
                "--out", str(tmp_path / "ev"), "latency_runs=2")
    assert proc.returncode == 0, proc.stderr
    ev = json.loads((tmp_path / "ev" / "results.json").read_text())
    train = json.loads((out / "results.json").read_text())
    assert ev["test_accuracy"] == pytest.approx(train["test_accuracy"])
    assert ev["agreement"] == 1.0 and ev["dataset"] == "tensors"
    assert set(ev["per_class_accuracy"]) == {"0", "1", "2", "3"}
    for key in ("params", "flops", "latency_ms_per_image", "ece"):
        assert key in ev and key in proc.stdout
    assert (tmp_path / "ev" / "config.yaml").is_file()


def test_evaluate_on_val_scores_the_val_split_under_its_own_name(trained, tmp_path):
    """``--split val`` is for choosing: its figure is the val split's (recomputed here) and is never
    written as ``test_accuracy``; attacks run on val images too."""
    from datafree_kd.checkpoint import load_model
    from datafree_kd.data import load_dataset

    data, out, _ = trained
    proc = dfkd("evaluate", str(out / "model.pt"), "--data-root", str(data), "--split", "val", "--attacks", "fgsm",
                "--attack-limit", "10", "--eps", "0.1", "--out", str(tmp_path / "ev"), "latency_runs=0")
    assert proc.returncode == 0, proc.stderr
    ev = json.loads((tmp_path / "ev" / "results.json").read_text())
    val = load_dataset("tensors", "val", str(data))
    with torch.no_grad():
        ok = load_model(out / "model.pt").model.eval()(val.as_float(val.images)).argmax(1) == val.labels
    assert ev["split"] == "val" and "test_accuracy" not in ev and ev["num_val"] == len(val.labels)
    assert ev["val_accuracy"] == pytest.approx(ok.float().mean().item(), abs=1e-9)
    assert ev["attack_examples"] == 10 and 0.0 <= ev["attacks"]["fgsm"] <= ev["val_accuracy"] + 1e-9
    assert "val_accuracy" in proc.stdout and "test_accuracy" not in proc.stdout
    bad = dfkd("evaluate", str(out / "model.pt"), "--data-root", str(data), "--out", str(tmp_path / "bad"), "split=train")
    _assert_one_line_error(bad, "split")
    assert not (tmp_path / "bad").exists()


def test_resume_continues_from_last_epoch(trained, tmp_path):
    """Resumes a *copy* of the shared run: the module-scoped ``trained`` directory stays as it was."""
    import shutil

    data, shared, _ = trained
    out = tmp_path / "teacher"
    shutil.copytree(shared, out)
    before = {p.name: p.read_bytes() for p in shared.iterdir() if p.is_file()}
    proc = dfkd("teacher", "train", "--dataset", "tensors", "--data-root", str(data), "--arch", "lenet5",
                "--epochs", "2", "--out", str(out), "--resume", "batch_size=32", "latency_runs=2", "hflip=false")
    assert proc.returncode == 0, proc.stderr
    assert "resuming from epoch 2 of 2" in proc.stdout
    changed = dfkd("teacher", "train", "--dataset", "tensors", "--data-root", str(data), "--arch", "lenet5",
                   "--epochs", "2", "--out", str(out), "--resume", "batch_size=64", "latency_runs=2", "hflip=false")
    assert changed.returncode == 2 and "different config" in changed.stderr
    assert {p.name: p.read_bytes() for p in shared.iterdir() if p.is_file()} == before


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dfkd: error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_corrupt_checkpoint_error(trained, tmp_path):
    data, out, _ = trained
    bad = tmp_path / "truncated.pt"
    bad.write_bytes((out / "model.pt").read_bytes()[:1000])
    _assert_one_line_error(dfkd("evaluate", str(bad), "--data-root", str(data), "--out", str(tmp_path / "e")),
                           str(bad), "corrupt or truncated")


def test_wrong_class_count_error(trained, tmp_path):
    data, out, _ = trained
    from conftest import write_tensor_dataset

    six = write_tensor_dataset(tmp_path / "six", classes=6)
    _assert_one_line_error(
        dfkd("evaluate", str(out / "model.pt"), "--dataset", "tensors", "--data-root", str(six),
             "--out", str(tmp_path / "e")),
        "model.pt", "4 classes", "6",
    )


def test_wrong_arch_error(trained, tmp_path):
    data, out, _ = trained
    raw = tmp_path / "raw.pth"
    ckpt = torch.load(out / "model.pt", weights_only=True)
    torch.save(ckpt["state_dict"], raw)
    _assert_one_line_error(
        dfkd("evaluate", str(raw), "--arch", "resnet8", "--dataset", "tensors", "--data-root", str(data),
             "--out", str(tmp_path / "e")),
        str(raw), "do not fit arch 'resnet8'",
    )


def test_missing_dataset_error(tmp_path):
    _assert_one_line_error(
        dfkd("teacher", "train", "--dataset", "cifar10", "--data-root", str(tmp_path / "nothing"),
             "--out", str(tmp_path / "t")),
        "nothing",
    )


def test_unknown_arch_and_bad_override_errors(tmp_path, trained):
    data, _, _ = trained
    _assert_one_line_error(dfkd("teacher", "train", "--dataset", "tensors", "--data-root", str(data),
                                "--arch", "lenet6", "--out", str(tmp_path / "t")), "unknown model 'lenet6'")
    _assert_one_line_error(dfkd("teacher", "train", "--dataset", "tensors", "--data-root", str(data),
                                "--out", str(tmp_path / "t"), "epochs=many"), "epochs")


def test_preset_flag(tmp_path, trained):
    _, teacher, _ = trained
    _assert_one_line_error(dfkd("distill", "--teacher", str(teacher / "model.pt"), "--source",
                                f"transfer:{tmp_path}", "--preset", "paper", "--out", str(tmp_path / "d")),
                           "sizes an online synthesizer")
    assert not (tmp_path / "d").exists()
    proc = dfkd("synthesize", "--teacher", str(teacher / "model.pt"), "--preset", "huge", "--out", str(tmp_path / "s"))
    assert proc.returncode == 2 and "invalid choice: 'huge'" in proc.stderr and not (tmp_path / "s").exists()


def test_synthesize_then_distill_the_run_directory_from_elsewhere(trained, tmp_path):
    """The hint `dfkd synthesize` prints works as printed, from any directory: the run directory is
    a source, and the recipe measured for the teacher (a BN-free chain LeNet-5) applies by itself."""
    data, teacher, _ = trained
    syn = dfkd("synthesize", "--teacher", str(teacher / "model.pt"), "--method", "random-generator", "--n", "64",
               "--batch-size", "32", "--generators", "2", "--out", str(tmp_path / "syn"), "shard_size=32",
               "options.base_channels=8")
    assert syn.returncode == 0, syn.stderr
    made = json.loads((tmp_path / "syn" / "results.json").read_text())
    assert made["count"] == 64 and [g["count"] for g in made["generators"]] == [32, 32]
    assert f"--source transfer:{tmp_path / 'syn'} --out DIR" in syn.stdout and "automatically" in syn.stdout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = dfkd("distill", "--teacher", str(teacher / "model.pt"), "--source", f"transfer:{tmp_path / 'syn'}",
                "--data-root", str(data), "--out", str(tmp_path / "d"), "steps=2", "batch_size=16", "latency_runs=0",
                cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert ("recipe: configs/distill/transfer-neighbours-grey-init.yaml (measured best for a BN-free chain "
            "teacher; explicit options win)") in proc.stdout
    config = yaml.safe_load((tmp_path / "d" / "config.yaml").read_text())
    assert config["student_init"] == "teacher" and config["blur"] == 1.5 and config["steps"] == 2
    results = json.loads((tmp_path / "d" / "results.json").read_text())
    assert results["recipe"] == config["recipe"] and "val_accuracy" in results and "teacher_val_accuracy" in results


def test_list_commands():
    proc = dfkd("list", "models")
    assert proc.returncode == 0 and "resnet20" in proc.stdout and "lenet5_half" in proc.stdout
    proc = dfkd("list", "datasets")
    assert proc.returncode == 0 and "fashion-mnist" in proc.stdout
    expected = {"terms": "discriminator", "synthesizers": "dfad (online)", "attacks": "autoattack",
                "stages": "distill (inputs: teacher, source)", "executors": "local"}
    for what, needle in expected.items():
        proc = dfkd("list", what)
        assert proc.returncode == 0 and needle in proc.stdout, (what, proc.stdout)


@pytest.mark.slow
@requires_fashion_mnist()
def test_fashion_mnist_teacher_end_to_end(tmp_path):
    """Real data: 2 epochs of lenet5 on Fashion-MNIST exceed 85 %; evaluate reproduces the figure."""
    out = tmp_path / "fm"
    proc = dfkd("teacher", "train", "--dataset", "fashion-mnist", "--arch", "lenet5", "--epochs", "2",
                "--out", str(out), "latency_runs=3")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["num_test"] == 10000 and results["test_accuracy"] > 0.85
    ev = dfkd("evaluate", str(out / "model.pt"), "--out", str(tmp_path / "ev"), "latency_runs=3")
    assert ev.returncode == 0, ev.stderr
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["test_accuracy"] == pytest.approx(
        results["test_accuracy"]
    )
