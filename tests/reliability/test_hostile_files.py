"""Hostile files (issue 16, item 6): pickles that run code, TorchScript only on request, and
checkpoints whose embedded model description is absurd -- refused with one line, before any code
from the file runs and before any model is allocated."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import run_cli, write_tensor_dataset
from datafree_kd.checkpoint import ModelSpec, save_model
from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import CheckpointError

pytestmark = pytest.mark.timeout(120)

PACKAGES = [Path(__file__).resolve().parents[2] / name for name in ("datafree_kd", "generators")]


class Evil:
    """Unpickling this creates the marker file: proof that code from the file ran."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil(marker: Path) -> Evil:
    evil = Evil()
    evil.marker = str(marker)
    return evil





def one_line_error(capsys: pytest.CaptureFixture[str], code: int, *names: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert code == 2 and len(lines) == 1 and lines[0].startswith("dfkd: error: "), err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A toy dataset and an (untrained) lenet5 checkpoint for it, written once."""
    root = tmp_path_factory.mktemp("hostile")
    data = write_tensor_dataset(root / "toy", n_train=64, n_test=16)
    info = DatasetInfo("tensors", 4, 1, 28, (0.5,), (0.5,))
    spec = ModelSpec.for_dataset("lenet5", info)
    torch.manual_seed(0)
    model = spec.build().eval()
    save_model(root / "model.pt", model, spec, info)
    return SimpleNamespace(root=root, data=data, info=info, model=model, checkpoint=root / "model.pt")


# ----------------------------------------------------------------------------- every load is weights-only

def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            out.append((ast.unparse(node.func), node))
    return out


def test_every_torch_load_in_the_package_is_weights_only() -> None:
    """Static audit: each ``torch.load`` passes ``weights_only=True``; ``torch.jit.load`` appears
    only in the opt-in TorchScript loader; nothing calls ``pickle.load(s)`` (the CIFAR reader uses
    a restricted Unpickler subclass)."""
    loads, jit = [], []
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            for name, call in _calls(path):
                where = f"{path.name}:{call.lineno}"
                if name == "torch.load":
                    weights_only = [k for k in call.keywords if k.arg == "weights_only"]
                    assert weights_only and isinstance(weights_only[0].value, ast.Constant) \
                        and weights_only[0].value.value is True, f"{where}: torch.load without weights_only=True"
                    loads.append(where)
                elif name in ("torch.jit.load", "jit.load"):
                    jit.append(where)
                assert name not in ("pickle.load", "pickle.loads", "torch.serialization.load", "dill.load"), where
    assert loads, "the audit found no torch.load at all: the scan is broken"
    assert [w.split(":")[0] for w in jit] == ["checkpoint.py"], jit


# ----------------------------------------------------------------------------- pickles that run code

def _raw_pickle(path: Path, marker: Path) -> Path:
    with open(path, "wb") as handle:
        pickle.dump({"format": "datafree_kd.model", "state_dict": {"x": _evil(marker)}}, handle)
    return path


def _torch_saved(path: Path, marker: Path) -> Path:
    torch.save({"format": "datafree_kd.model", "model": {"arch": "lenet5"}, "state_dict": {"x": _evil(marker)}}, path)
    return path


@pytest.mark.parametrize("write", [_raw_pickle, _torch_saved], ids=["raw-pickle", "torch-save-zip"])
def test_the_payload_is_live(tmp_path: Path, write) -> None:
    """Control: an unrestricted load of these files does create the marker."""
    marker = tmp_path / "PWNED"
    path = write(tmp_path / "evil.pt", marker)
    if write is _raw_pickle:
        with open(path, "rb") as handle:
            pickle.load(handle)
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("write", [_raw_pickle, _torch_saved], ids=["raw-pickle", "torch-save-zip"])
@pytest.mark.parametrize("command", ["evaluate", "evaluate-reference", "distill", "synthesize"])
def test_malicious_checkpoint_is_refused_before_it_runs(toy: SimpleNamespace, tmp_path: Path, write, command: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "PWNED"
    evil = write(tmp_path / "evil.pt", marker)
    out = str(tmp_path / "out")
    argv = {
        "evaluate": ["evaluate", str(evil), "--out", out],
        "evaluate-reference": ["evaluate", str(toy.checkpoint), "--reference", str(evil), "--data-root",
                               str(toy.data), "--latency-runs", "0", "--out", out],
        "distill": ["distill", "--teacher", str(evil), "--source", "real", "--out", out],
        "synthesize": ["synthesize", "--teacher", str(evil), "--out", out],
    }[command]
    line = one_line_error(capsys, run_cli(argv), str(evil))
    assert "unsafe" in line or "unreadable" in line or "corrupt" in line, line
    assert not marker.exists(), "code from the checkpoint ran"


def test_malicious_training_state_is_refused_on_resume(toy: SimpleNamespace, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``--resume`` reads last.pt through the same weights-only reader."""
    marker, out = tmp_path / "PWNED", tmp_path / "run"
    out.mkdir()
    _torch_saved(out / "last.pt", marker)
    code = run_cli(["teacher", "train", "--dataset", "tensors", "--data-root", str(toy.data), "--out", str(out),
                    "--resume", "epochs=1", "batch_size=16", "latency_runs=0"])
    one_line_error(capsys, code, "last.pt")
    assert not marker.exists()


def test_malicious_transfer_shard_is_refused(toy: SimpleNamespace, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A shard whose checksum matches meta.json (so it passes the integrity check) but whose
    pickle would run code: the weights-only load refuses it."""
    from datafree_kd.checkpoint import load_model
    from datafree_kd.transfer_set import TransferSet

    marker = tmp_path / "PWNED"
    ts = TransferSet.create(tmp_path / "set", toy.info, "noise", {}, load_model(toy.checkpoint).fingerprint, 0,
                            shard_size=16)
    ts.append(torch.rand(16, 1, 28, 28), torch.randn(16, 4))
    ts.flush()
    shard = tmp_path / "set" / "shard-00000.pt"
    torch.save({"images": _evil(marker), "teacher_logits": torch.zeros(16, 4)}, shard)
    meta = json.loads((tmp_path / "set" / "meta.json").read_text())
    meta["shards"][0].update(bytes=shard.stat().st_size, sha256=hashlib.sha256(shard.read_bytes()).hexdigest())
    (tmp_path / "set" / "meta.json").write_text(json.dumps(meta))
    code = run_cli(["distill", "--teacher", str(toy.checkpoint), "--source", f"transfer:{tmp_path / 'set'}",
                    "--data-root", str(toy.data), "--out", str(tmp_path / "out"), "recipe=none", "epochs=1",
                    "batch_size=8", "latency_runs=0"])
    one_line_error(capsys, code, str(shard))
    assert not marker.exists()


def test_malicious_tensor_dataset_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker, data = tmp_path / "PWNED", tmp_path / "data"
    write_tensor_dataset(data, n_train=16, n_test=8)
    torch.save({"images": _evil(marker), "labels": torch.zeros(16, dtype=torch.long)}, data / "train.pt")
    code = run_cli(["teacher", "train", "--dataset", "tensors", "--data-root", str(data),
                    "--out", str(tmp_path / "out"), "epochs=1"])
    one_line_error(capsys, code, "train.pt")
    assert not marker.exists()


# ----------------------------------------------------------------------------- TorchScript only on request

@pytest.fixture(scope="module")
def scripted(toy: SimpleNamespace) -> Path:
    path = toy.root / "scripted.pt"
    torch.jit.trace(toy.model, torch.rand(1, 1, 28, 28)).save(str(path))
    return path


def test_torchscript_is_refused_without_opt_in_and_never_loaded(toy: SimpleNamespace, scripted: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from datafree_kd.checkpoint import load_model
    from datafree_kd.teacher import load_teacher

    def no_jit(*args, **kwargs):
        raise AssertionError("torch.jit.load was called without the opt-in")

    monkeypatch.setattr(torch.jit, "load", no_jit)
    for loader in (load_model, load_teacher):
        with pytest.raises(CheckpointError, match="loaded only on request") as err:
            loader(scripted, info=toy.info)
        assert str(scripted) in str(err.value) and "torchscript:" in str(err.value)


def test_torchscript_loads_with_opt_in(toy: SimpleNamespace, scripted: Path) -> None:
    from datafree_kd.checkpoint import load_model
    from datafree_kd.teacher import is_frozen, load_teacher

    x = torch.rand(2, 1, 28, 28)
    for loaded in (load_model(scripted, info=toy.info, torchscript=True),
                   load_teacher(f"torchscript:{scripted}", info=toy.info)):
        assert loaded.spec is None and torch.allclose(loaded(x), toy.model(x), atol=1e-6)
    assert is_frozen(load_teacher(scripted, info=toy.info, torchscript=True).model)
    with pytest.raises(CheckpointError, match="not a TorchScript file"):  # the opt-in on a plain checkpoint
        load_model(toy.checkpoint, info=toy.info, torchscript=True)


def test_torchscript_cli_needs_the_flag(toy: SimpleNamespace, scripted: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    base = ["evaluate", str(scripted), "--dataset", "tensors", "--data-root", str(toy.data), "--latency-runs", "0"]
    one_line_error(capsys, run_cli([*base, "--out", str(tmp_path / "refused")]), str(scripted), "--torchscript")
    assert not (tmp_path / "refused" / "results.json").exists()
    assert run_cli([*base, "--torchscript", "--out", str(tmp_path / "flag")]) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "flag" / "results.json").read_text())
    assert results["arch"] == "torchscript" and 0 <= results["test_accuracy"] <= 1
    prefixed = ["evaluate", f"torchscript:{scripted}", *base[2:], "--out", str(tmp_path / "prefix")]
    assert run_cli(prefixed) == 0, capsys.readouterr().err
    one_line_error(capsys, run_cli(["distill", "--teacher", str(scripted), "--source", "real",
                                    "--out", str(tmp_path / "d")]), str(scripted), "torchscript:")


# ----------------------------------------------------------------------------- absurd model descriptions

@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make any model allocation fail loudly, on the real device; record meta-device builds."""
    import datafree_kd.models as models

    real, meta_calls = models.create_model, []

    def guarded(*args, **kwargs):
        if torch.get_default_device().type != "meta":
            raise AssertionError("a model was allocated from an absurd checkpoint")
        meta_calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "create_model", guarded)
    return meta_calls


def _crafted(toy: SimpleNamespace, path: Path, model: dict | None = None, info: dict | None = None) -> Path:
    data = torch.load(toy.checkpoint, weights_only=True)
    data["model"].update(model or {})
    data["dataset_info"].update(info or {})
    torch.save(data, path)
    return path


ABSURD = [
    pytest.param({"arch": "nosucharch"}, None, "nosucharch", id="unknown-arch"),
    pytest.param({"num_classes": 10**9}, {"num_classes": 10**9}, "num_classes", id="num-classes-1e9"),
    pytest.param({"image_size": 10**6}, {"image_size": 10**6}, "image_size", id="image-size-1e6"),
    pytest.param({"in_channels": 0}, None, "in_channels", id="channels-zero"),
    pytest.param({"in_channels": -3}, None, "in_channels", id="channels-negative"),
    pytest.param({"num_classes": -1}, None, "num_classes", id="classes-negative"),
    pytest.param({"std": [0.0]}, None, "std", id="std-zero"),
    pytest.param({"mean": [0.5, 0.5, 0.5]}, None, "mean", id="mean-wrong-length"),
    pytest.param({"num_classes": "many"}, None, "metadata", id="classes-not-a-number"),
    pytest.param({"kwargs": {"widths": [6, 16, 100_000, 100_000]}}, None, "parameters", id="kwargs-10e9-parameters"),
    pytest.param({"in_channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3}, None, "dataset info",
                 id="spec-disagrees-with-dataset-info"),
]


@pytest.mark.parametrize("model, info, name", ABSURD)
def test_absurd_model_description_is_refused_before_allocation(toy: SimpleNamespace, tmp_path: Path, no_build,
                                                               model, info, name: str) -> None:
    from datafree_kd.checkpoint import load_model

    path = _crafted(toy, tmp_path / "crafted.pt", model, info)
    began = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert time.perf_counter() - began < 5
    message = str(err.value)
    assert str(path) in message and name in message and "\n" not in message, message
    # only the parameter count (on the meta device, no memory) may have built anything
    assert no_build == (["lenet5"] if name == "parameters" else [])


def test_absurd_checkpoint_through_the_cli(toy: SimpleNamespace, tmp_path: Path, no_build,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = _crafted(toy, tmp_path / "crafted.pt", {"num_classes": 10**9}, {"num_classes": 10**9})
    for argv in (["evaluate", str(path), "--out", str(tmp_path / "e")],
                 ["distill", "--teacher", str(path), "--source", "real", "--out", str(tmp_path / "d")],
                 ["synthesize", "--teacher", str(path), "--out", str(tmp_path / "s")]):
        one_line_error(capsys, run_cli(argv), str(path), "num_classes")
    assert no_build == []


def test_sane_checkpoint_still_loads(toy: SimpleNamespace) -> None:
    """The bounds leave real models alone (and the meta-device count runs before the real build)."""
    from datafree_kd.checkpoint import load_model

    loaded = load_model(toy.checkpoint)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), toy.model(x))
    for arch, size, channels in (("resnet20", 32, 3), ("wrn_16_1", 32, 3), ("lenet5", 28, 1)):
        info = DatasetInfo("x", 100, channels, size, (0.5,) * channels, (0.5,) * channels)
        assert ModelSpec.for_dataset(arch, info).build() is not None


def test_one_line_in_a_real_terminal_process(tmp_path: Path) -> None:
    """The same refusal from a fresh ``python -m datafree_kd.cli`` (default warning filters, no
    pytest capture): stderr is the one error line, and the file's code did not run."""
    import subprocess
    import sys

    marker = tmp_path / "PWNED"
    evil = _raw_pickle(tmp_path / "evil.pt", marker)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    proc = subprocess.run([sys.executable, "-m", "datafree_kd.cli", "evaluate", str(evil), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=100)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"dfkd: error: {evil}: ") and not marker.exists()
