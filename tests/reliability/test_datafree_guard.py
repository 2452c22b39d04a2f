"""The data-free claim: no real training file reaches a data-free run, whichever code opens it,
and results say where every batch came from (issue 16, items 1 and 2)."""

from __future__ import annotations

import gzip
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FMNIST_DIR, requires_fashion_mnist, write_tensor_dataset
from test_data import write_idx_dataset

from datafree_kd.checkpoint import ModelSpec, save_model
from datafree_kd.data import forbid_training_data, load_dataset
from datafree_kd.data.guard import TrainingDataRefused, is_training_file
from datafree_kd.distillation import DistillConfig, run_distillation
from datafree_kd.errors import ConfigError
from datafree_kd.synthesis import SynthesizeConfig, run_synthesis
from datafree_kd.transfer_set import TransferSet

_OPENED: list[str] | None = None


def _record(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.path.realpath(os.fsdecode(os.fspath(args[0]))))


sys.addaudithook(_record)


@contextmanager
def opened_paths() -> Iterator[list[str]]:
    """Every path this process opens inside the block (an audit hook of the test's own)."""
    global _OPENED
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


def _teacher(path: Path, info, arch: str = "lenet5", seed: int = 0) -> Path:
    """An untrained teacher checkpoint for ``info`` (the guard does not care what it knows)."""
    torch.manual_seed(seed)
    spec = ModelSpec.for_dataset(arch, info)
    save_model(path, spec.build(), spec, info, {})
    return path


def _write_grey_folder(root: Path, classes: int = 2, per_class: int = 3) -> Path:
    g = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            for i in range(per_class):
                d = root / split / f"class{c}"
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(g.integers(0, 256, (28, 28), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def _data(name: str, tmp_path: Path) -> str | None:
    """A root holding ``name`` in its real format (None: the system-wide Fashion-MNIST)."""
    if name == "tensors":
        return str(write_tensor_dataset(tmp_path / "tensors"))
    if name == "folder":
        return str(_write_grey_folder(tmp_path / "folder"))
    if name == "mnist":
        write_idx_dataset(tmp_path / "mnist")
        return str(tmp_path / "mnist")
    return None


def _distill(teacher: Path, name: str, root: str | None, out: Path, **kw) -> dict:
    cfg = DistillConfig(teacher=str(teacher), dataset=name, data_root=root, source="online:noise", steps=2,
                        batch_size=8, latency_runs=0, eval_batch_size=64, device="cpu", threads=1, **kw)
    return run_distillation(cfg, out)


# ----------------------------------------------------------------------------- the guard itself


def test_every_reader_and_every_thread_is_refused_a_training_file(tmp_path: Path) -> None:
    root = write_tensor_dataset(tmp_path / "toy")
    train = root / "train.pt"
    copy = tmp_path / "elsewhere" / "train-images-idx3-ubyte.gz"  # a benchmark file in an unexpected place
    copy.parent.mkdir()
    with gzip.open(copy, "wb") as f:
        f.write(b"\0" * 16)
    readers = {
        "open": lambda p: open(p, "rb").read(1),
        "os.open": lambda p: os.close(os.open(p, os.O_RDONLY)),
        "torch.load": lambda p: torch.load(p, weights_only=True),
        "numpy": lambda p: np.fromfile(p, dtype=np.uint8),
        "gzip": lambda p: gzip.open(p).read(1),
    }
    with forbid_training_data("a data-free test", roots=[str(root)]):
        for name, read in readers.items():
            for path in (train, copy):
                with pytest.raises(TrainingDataRefused, match="a data-free test"):
                    read(path)
        caught: list[BaseException] = []

        def other_thread() -> None:
            try:
                torch.load(train, weights_only=True)
            except BaseException as exc:  # noqa: BLE001 - the test wants whatever it raised
                caught.append(exc)

        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        assert caught and isinstance(caught[0], TrainingDataRefused), "the guard must hold in every thread"
        assert len(load_dataset("tensors", "test", str(root))) == 40  # evaluation data stays readable
    assert torch.load(train, weights_only=True)["labels"].shape == (96,)  # and all of it after the guard


def test_torchvision_datasets_are_refused_their_training_split(tmp_path: Path) -> None:
    import torchvision

    write_idx_dataset(tmp_path / "FashionMNIST" / "raw", compress=False)
    with forbid_training_data("a data-free test"):
        with pytest.raises(TrainingDataRefused):
            torchvision.datasets.FashionMNIST(str(tmp_path), train=True, download=False)
        assert len(torchvision.datasets.FashionMNIST(str(tmp_path), train=False, download=False)) == 3


def test_training_files_are_recognised_by_declaration_and_by_name(tmp_path: Path) -> None:
    for name in ("train-labels-idx1-ubyte", "data_batch_3", "train_32x32.mat", "train.npz"):
        assert is_training_file(tmp_path / name), name
    assert is_training_file(tmp_path / "cifar-100-python" / "train")
    assert is_training_file(tmp_path / "data" / "train" / "cat" / "1.png")
    for name in ("t10k-images-idx3-ubyte.gz", "test_batch", "test.pt", "model.pt", "meta.json"):
        assert not is_training_file(tmp_path / name), name
    link = tmp_path / "innocent.bin"
    target = write_tensor_dataset(tmp_path / "toy") / "train.pt"
    link.symlink_to(target)
    assert is_training_file(link)  # resolved: a symlink does not hide a training file


# ------------------------------------------------------------------ whole runs, audited file by file


@pytest.mark.parametrize("name", ["tensors", "folder", "mnist",
                                  pytest.param("fashion-mnist", marks=requires_fashion_mnist())])
def test_a_data_free_run_evaluated_on_test_opens_no_training_file(name: str, tmp_path: Path) -> None:
    root = _data(name, tmp_path)
    teacher = _teacher(tmp_path / "teacher.pt", load_dataset(name, "test", root).info)
    with opened_paths() as opened:
        results = _distill(teacher, name, root, tmp_path / "run", eval_val=False)
    assert results["data_free"] is True and results["num_test"] == len(load_dataset(name, "test", root))
    training = [p for p in opened if is_training_file(p)]
    assert not training, f"a data-free run opened training files: {training}"
    test_files = [p for p in opened if ("t10k" in p or "test" in Path(p).parts or Path(p).stem == "test")
                  and not p.startswith(str(tmp_path / "run"))]
    assert test_files, "the recorder saw no read of the test split: it is not watching"


def test_a_val_cut_from_the_training_files_exposes_only_its_rows(tmp_path: Path) -> None:
    root = write_tensor_dataset(tmp_path / "toy", n_train=96, classes=4)
    whole = torch.load(root / "train.pt", weights_only=True)
    teacher = _teacher(tmp_path / "teacher.pt", load_dataset("tensors", "test", str(root)).info)
    with forbid_training_data("a data-free test", roots=[str(root)]):
        val = load_dataset("tensors", "val", str(root), val_fraction=0.25)
        with pytest.raises(TrainingDataRefused):  # the loader's exemption ended with the load
            torch.load(root / "train.pt", weights_only=True)
    assert len(val) == 24 and torch.equal(val.images, whole["images"][-24:])
    assert val.images.untyped_storage().nbytes() == val.images.numel(), "val must not be a view of all of train"
    with opened_paths() as opened:
        results = _distill(teacher, "tensors", str(root), tmp_path / "run", val_fraction=0.25)
    assert results["num_val"] == 24 and results["data_free"] is True
    assert {p for p in opened if is_training_file(p)} <= {str((root / "train.pt").resolve())}


@requires_fashion_mnist()
def test_fashion_mnist_val_under_the_guard_holds_only_the_val_rows(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with forbid_training_data("a data-free test"):
        val = load_dataset("fashion-mnist", "val")
        with pytest.raises(TrainingDataRefused):
            gzip.open(FMNIST_DIR / "train-images-idx3-ubyte.gz").read(16)
        with pytest.raises(Exception, match="training split"):
            load_dataset("fashion-mnist", "train")
    assert len(val) == 5000
    assert val.images.untyped_storage().nbytes() == 5000 * 28 * 28  # a copy of the tail, not the 60,000


# ------------------------------------------------------------------------------------ provenance


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    """A toy dataset, two different teachers and a set synthesized from the first (never modified)."""
    base = tmp_path_factory.mktemp("provenance")
    root = write_tensor_dataset(base / "toy")
    info = load_dataset("tensors", "test", str(root)).info
    teachers = [_teacher(base / f"teacher{i}.pt", info, seed=i) for i in (0, 1)]
    run_synthesis(SynthesizeConfig(teacher=str(teachers[0]), method="random-generator", n=64, batch_size=32,
                                   shard_size=32, preview=False, device="cpu", threads=1), base / "synth")
    return {"root": str(root), "teachers": teachers, "set": base / "synth" / "transfer_set", "info": info}


def _from_set(toy: dict, out: Path, teacher: int = 0, source: str | None = None, **kw) -> dict:
    settings = dict(epochs=1, batch_size=16, latency_runs=0, device="cpu", threads=1, recipe="none")
    cfg = DistillConfig(teacher=str(toy["teachers"][teacher]), dataset="tensors", data_root=toy["root"],
                        source=source or f"transfer:{toy['set']}", **{**settings, **kw})
    return run_distillation(cfg, out)


def test_results_carry_the_full_provenance_of_a_synthesized_set(toy: dict, tmp_path: Path) -> None:
    results = _from_set(toy, tmp_path / "run")
    transfer = TransferSet.open(toy["set"])
    source = results["source_provenance"]
    assert results["data_free"] is True and source["synthetic"] is True and results["foreign_set"] is False
    assert source["synthesizer"] == "random-generator" and source["seed"] == 0 and source["count"] == 64
    assert source["synthesizer_config"]["resolved_options"] == transfer.meta["synthesizer_config"]["resolved_options"]
    assert source["set_checksum"] == transfer.checksum() and len(source["set_checksum"]) == 64
    assert source["teacher_fingerprint"] == results["teacher_fingerprint"] == results["teacher_fingerprints"][0]
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert saved["extra"]["source_provenance"]["set_checksum"] == transfer.checksum()
    assert saved["extra"]["data_free"] is True


def test_a_set_built_from_real_images_is_not_data_free(toy: dict, tmp_path: Path) -> None:
    real = load_dataset("tensors", "train", toy["root"])
    fingerprint = TransferSet.open(toy["set"]).meta["teacher_fingerprint"]
    fake = TransferSet.create(tmp_path / "fake", toy["info"], "dafl", {}, fingerprint, seed=0)
    fake.append(real.as_float(real.images[:64]))  # claims DAFL, holds training images
    fake.flush()
    results = _from_set(toy, tmp_path / "run", source=f"transfer:{tmp_path / 'fake'}")
    assert results["data_free"] is False and results["source_provenance"]["synthetic"] is False
    assert results["source_provenance"]["written_under_guard"] is False
    with forbid_training_data("synthesis"):  # under the guard, but by no registered synthesizer
        other = TransferSet.create(tmp_path / "unregistered", toy["info"], "my-own-method", {}, fingerprint, seed=0)
        other.append(torch.rand(16, *toy["info"].shape))
        other.flush()
    results = _from_set(toy, tmp_path / "run2", source=f"transfer:{tmp_path / 'unregistered'}")
    assert results["data_free"] is False


def test_a_set_from_another_teacher_is_refused_unless_allowed(toy: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allow_foreign_set=true") as err:
        _from_set(toy, tmp_path / "refused", teacher=1)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "refused" / "model.pt").exists() and not (tmp_path / "refused" / "results.json").exists()
    results = _from_set(toy, tmp_path / "allowed", teacher=1, allow_foreign_set=True)
    assert results["foreign_set"] is True and results["source_provenance"]["foreign_set"] is True
    assert results["source_provenance"]["teacher_fingerprint"] != results["teacher_fingerprint"]


def test_online_and_real_sources_are_labelled(toy: dict, tmp_path: Path) -> None:
    online = _from_set(toy, tmp_path / "online", source="online:noise", steps=2, epochs=0)
    assert online["data_free"] is True and online["source_provenance"]["synthesizer"] == "noise"
    assert online["source_provenance"]["kind"] == "online"
    real = _from_set(toy, tmp_path / "real", source="real")
    assert real["data_free"] is False and real["source_provenance"]["uses_real_training_data"] is True
