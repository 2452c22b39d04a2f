"""Dataset loaders: every registered dataset is read from tiny files written in its real format.

Nothing here downloads: the download path is exercised with torchvision's classes replaced by
fakes that write the same tiny files.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from datafree_kd.data import DATASETS, DatasetInfo, ImageTensors, forbid_training_data, load_dataset
from datafree_kd.data import builtin
from datafree_kd.errors import ConfigError, DatasetError

FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
RNG = np.random.default_rng(0)


@dataclass
class Expected:
    """What a fixture wrote, per split, and the DatasetInfo the loader must report."""

    images: dict[str, np.ndarray]  # N,C,H,W exactly as the loader must return them (train, val, test)
    labels: dict[str, np.ndarray]
    num_classes: int
    class_names: tuple[str, ...] | None = None  # None: not checked
    dtype: dict[str, torch.dtype] | None = None  # default uint8 for every split


# ------------------------------------------------------------------- writers of real formats


def with_official_val(e: Expected) -> Expected:
    """Benchmarks: val is the last 5,000 images of the training files; train stays whole."""
    e.images["val"], e.labels["val"] = e.images["train"][-5000:], e.labels["train"][-5000:]
    return e


def with_carved_val(e: Expected, val_rows: list[int]) -> Expected:
    """User datasets without a val file: val is ``val_rows`` of the train file, train the rest."""
    keep = [i for i in range(len(e.labels["train"])) if i not in val_rows]
    for table in (e.images, e.labels):
        table["val"], table["train"] = table["train"][val_rows], table["train"][keep]
    return e



def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_idx_dataset(d: Path, sizes: dict[str, int] = {"train": 7, "test": 3},
                      compress: bool = True) -> Expected:
    images, labels = {}, {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        n = sizes[split]
        x = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = RNG.integers(0, 10, n, dtype=np.uint8)
        write_idx(d / f"{prefix}-images-idx3-ubyte", x, compress)
        write_idx(d / f"{prefix}-labels-idx1-ubyte", y, compress)
        images[split], labels[split] = x[:, None], y.astype(np.int64)
    return with_official_val(Expected(images, labels, 10))


def write_pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar_batch(n: int, num_classes: int, label_key: bytes) -> tuple[dict, np.ndarray, np.ndarray]:
    data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = RNG.integers(0, num_classes, n).tolist()
    batch = {b"batch_label": b"tiny", b"data": data, label_key: labels, b"filenames": [b"x.png"] * n}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [lab // 5 for lab in labels]
    return batch, data.reshape(n, 3, 32, 32), np.array(labels, dtype=np.int64)


def write_cifar10(root: Path) -> Expected:
    d = root / "cifar-10-batches-py"
    train_x, train_y = [], []
    for i in range(1, 6):
        batch, x, y = cifar_batch(2, 10, b"labels")
        write_pickle(d / f"data_batch_{i}", batch)
        train_x.append(x), train_y.append(y)
    batch, test_x, test_y = cifar_batch(3, 10, b"labels")
    write_pickle(d / "test_batch", batch)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_pickle(d / "batches.meta", {b"label_names": [n.encode() for n in names],
                                      b"num_cases_per_batch": 2, b"num_vis": 3072})
    return with_official_val(Expected({"train": np.concatenate(train_x), "test": test_x},
                                      {"train": np.concatenate(train_y), "test": test_y}, 10, tuple(names)))


def write_cifar100(root: Path) -> Expected:
    d = root / "cifar-100-python"
    batch, train_x, train_y = cifar_batch(4, 100, b"fine_labels")
    write_pickle(d / "train", batch)
    batch, test_x, test_y = cifar_batch(3, 100, b"fine_labels")
    write_pickle(d / "test", batch)
    names = [f"class{i:02d}" for i in range(100)]
    write_pickle(d / "meta", {b"fine_label_names": [n.encode() for n in names],
                              b"coarse_label_names": [f"super{i}".encode() for i in range(20)]})
    return with_official_val(Expected({"train": train_x, "test": test_x}, {"train": train_y, "test": test_y},
                                      100, tuple(names)))


def write_svhn(root: Path) -> Expected:
    root.mkdir(parents=True, exist_ok=True)
    images, labels = {}, {}
    for split, n in (("train", 5), ("test", 4)):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        stored = np.array([10, 1, 9, 10, 3][:n], dtype=np.uint8).reshape(n, 1)  # 10 is digit 0
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": stored})
        images[split] = x.transpose(3, 2, 0, 1)
        labels[split] = stored.ravel().astype(np.int64) % 10
    return with_official_val(Expected(images, labels, 10, tuple(str(i) for i in range(10))))


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_folder(root: Path, gray: bool = False) -> Expected:
    images, labels = {}, {}
    shape = (8, 8) if gray else (8, 8, 3)
    for split, per_class in (("train", 3), ("test", 2)):
        xs, ys = [], []
        for c, cls in enumerate(("cat", "dog")):
            for i in range(per_class):
                x = RNG.integers(0, 256, shape, dtype=np.uint8)
                write_png(root / split / cls / f"{i:03d}.png", x)
                xs.append(x[None] if gray else x.transpose(2, 0, 1))
                ys.append(c)
        images[split], labels[split] = np.stack(xs), np.array(ys, dtype=np.int64)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")  # ignored
    # no val folder: the last ceil(0.1 * 3) = 1 image of each class is val, and leaves train
    return with_carved_val(Expected(images, labels, 2, ("cat", "dog")), [2, 5])


def write_tensors(root: Path) -> Expected:
    root.mkdir(parents=True, exist_ok=True)
    train_x = RNG.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    train_y = np.array([0, 1, 2, 0, 1, 2], dtype=np.int64)
    torch.save({"images": torch.from_numpy(train_x), "labels": torch.from_numpy(train_y),
                "class_names": ["a", "b", "c"]}, root / "train.pt")
    test_x = RNG.random((4, 3, 8, 8), dtype=np.float32)
    test_y = np.array([2, 1, 0, 0], dtype=np.int64)
    np.savez(root / "test.npz", images=test_x, labels=test_y, class_names=np.array(["a", "b", "c"]))
    expected = Expected({"train": train_x, "test": test_x}, {"train": train_y, "test": test_y}, 3,
                        ("a", "b", "c"), {"train": torch.uint8, "val": torch.uint8, "test": torch.float32})
    return with_carved_val(expected, [3, 4, 5])  # the last image of each class


FMNIST_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _fmnist(root: Path) -> Expected:
    e = write_idx_dataset(root)  # directly in the root, gzipped
    e.class_names = FMNIST_NAMES
    return e


def _mnist(root: Path) -> Expected:
    return write_idx_dataset(root / "MNIST" / "raw", compress=False)  # torchvision's layout


# One writer per registered dataset; a dataset registered without one fails test_every_dataset.
WRITERS: dict[str, Callable[[Path], Expected]] = {
    "fashion-mnist": _fmnist,
    "mnist": _mnist,
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "svhn": write_svhn,
    "folder": write_folder,
    "tensors": write_tensors,
}


@pytest.fixture
def no_system_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide system-wide copies and the user's download cache, so only the test's files count."""
    for name in list(builtin.SYSTEM_DIRS):
        monkeypatch.setitem(builtin.SYSTEM_DIRS, name, ())
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# ------------------------------------------------------------------------ registry-wide


def _alike(a: DatasetInfo, b: DatasetInfo) -> bool:
    """The same dataset description but for the normalisation statistics."""
    return replace(a, mean=b.mean, std=b.std) == b


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_loads_from_real_format(name: str, tmp_path: Path) -> None:
    if name not in WRITERS:
        pytest.fail(f"dataset {name!r} is registered but tests/test_data.py has no writer for it")
    expected = WRITERS[name](tmp_path)
    loaded = {split: load_dataset(name, split, root=str(tmp_path)) for split in ("train", "val", "test")}
    info = loaded["train"].info
    assert isinstance(info, DatasetInfo)
    if name in ("folder", "tensors"):  # user data: each split's statistics are its own (no train read for them)
        assert _alike(loaded["test"].info, info) and _alike(loaded["val"].info, info)
    else:
        assert loaded["test"].info == loaded["val"].info == info, "every split must describe the dataset the same way"
    assert info.name == name
    assert info.num_classes == expected.num_classes
    if expected.class_names is not None:
        assert info.class_names == expected.class_names
    assert len(info.mean) == len(info.std) == info.in_channels
    assert all(0 < s for s in info.std) and all(0 <= m <= 1 for m in info.mean)
    assert DatasetInfo.from_dict(info.to_dict()) == info
    for split, ds in loaded.items():
        assert isinstance(ds, ImageTensors)
        want = expected.images[split]
        assert ds.images.shape == want.shape
        assert ds.images.shape[1:] == info.shape
        assert ds.images.dtype == (expected.dtype or {}).get(split, torch.uint8)
        assert torch.equal(ds.images, torch.from_numpy(np.ascontiguousarray(want)))
        assert ds.labels.dtype == torch.int64
        assert ds.labels.tolist() == expected.labels[split].tolist()
        assert int(ds.labels.min()) >= 0 and int(ds.labels.max()) < info.num_classes
        seen = 0
        for x, y in ds.batches(4):
            assert x.dtype == torch.float32 and x.shape[1:] == info.shape
            assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
            assert len(y) == len(x)
            seen += len(x)
        assert seen == len(ds)


def test_every_writer_is_registered() -> None:
    assert sorted(WRITERS) == DATASETS.names()


@pytest.mark.parametrize("name", DATASETS.names())
def test_missing_directory_names_the_path(name: str, tmp_path: Path, no_system_data: None) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        load_dataset(name, "test", root=str(missing))
    assert str(missing) in str(err.value)
    assert err.value.path is not None


# ---------------------------------------------------------------------- real Fashion-MNIST


def test_real_fashion_mnist_from_debian_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if not FMNIST_SYSTEM_DIR.is_dir():
        pytest.skip(f"{FMNIST_SYSTEM_DIR} missing (apt-get install dataset-fashion-mnist)")
    monkeypatch.setenv("HOME", str(tmp_path))  # no download cache: the Debian copy must be found
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    assert len(train) == 60000 and len(test) == 10000
    assert train.images.shape[1:] == test.images.shape[1:] == (1, 28, 28)
    assert train.images.dtype == torch.uint8
    assert train.labels.bincount().tolist() == [6000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10
    x = train.images.float() / 255
    assert abs(float(x.mean()) - train.info.mean[0]) < 1e-3
    assert abs(float(x.std()) - train.info.std[0]) < 1e-3
    assert train.info.class_names == FMNIST_NAMES


def test_real_fashion_mnist_val_is_the_train_tail_and_disjoint_from_test(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    if not FMNIST_SYSTEM_DIR.is_dir():
        pytest.skip(f"{FMNIST_SYSTEM_DIR} missing (apt-get install dataset-fashion-mnist)")
    monkeypatch.setenv("HOME", str(tmp_path))
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    with forbid_training_data():  # a data-free run may evaluate on val
        val = load_dataset("fashion-mnist", "val")
    assert len(val) == 5000 and len(train) == 60000  # teachers keep the full training set
    assert torch.equal(val.images, train.images[-5000:]) and torch.equal(val.labels, train.labels[-5000:])
    assert val.info == train.info == test.info
    rows = lambda ds: {bytes(r) for r in ds.images.flatten(1).numpy()}  # noqa: E731
    assert not rows(val) & rows(test)
    assert val.labels.bincount().min() > 400  # every class is there


# ------------------------------------------------------------------------------ val split


def test_tensors_val_file_is_used_and_train_stays_whole(tmp_path: Path) -> None:
    expected = write_tensors(tmp_path)
    val_x = RNG.integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "val.npz", images=val_x, labels=np.array([1, 2]))
    val = load_dataset("tensors", "val", root=str(tmp_path))
    train = load_dataset("tensors", "train", root=str(tmp_path), val_fraction=0.5)  # ignored: a val file exists
    assert torch.equal(val.images, torch.from_numpy(val_x)) and val.labels.tolist() == [1, 2]
    whole = np.concatenate([expected.images["train"], expected.images["val"]])
    assert len(train) == 6 and set(map(bytes, train.images.flatten(1).numpy())) == set(map(bytes, whole.reshape(6, -1)))
    assert (val.info.num_classes, val.info.shape) == (train.info.num_classes, train.info.shape)
    assert np.allclose(val.info.mean, val_x.mean(axis=(0, 2, 3)) / 255)  # the val file's own statistics


def test_tensors_val_carved_by_fraction(tmp_path: Path) -> None:
    from conftest import write_tensor_dataset

    root = write_tensor_dataset(tmp_path / "toy", n_train=96, classes=4)  # 24 per class
    full = torch.load(root / "train.pt", weights_only=True)
    info = load_dataset("tensors", "test", root=str(root)).info
    for fraction, per_class in ((0.1, 3), (0.25, 6)):
        val = load_dataset("tensors", "val", root=str(root), val_fraction=fraction)
        train = load_dataset("tensors", "train", root=str(root), val_fraction=fraction)
        assert len(val) == 4 * per_class and len(train) == 96 - 4 * per_class
        assert val.labels.bincount().tolist() == [per_class] * 4  # every class, not the last one only
        # the last images of each class (labels cycle 0..3, so those are the last 4 * per_class rows)
        assert torch.equal(val.images, full["images"][-4 * per_class:])
        assert torch.equal(train.images, full["images"][: 96 - 4 * per_class])
        assert _alike(val.info, info) and _alike(train.info, info)
        assert np.allclose(val.info.mean, val.images.double().mean((0, 2, 3)) / 255)  # the val rows' own
    assert len(load_dataset("tensors", "train", root=str(root), val_fraction=0.0)) == 96
    with pytest.raises(DatasetError, match="no val split"):
        load_dataset("tensors", "val", root=str(root), val_fraction=0.0)
    with pytest.raises(ConfigError, match="val_fraction"):
        load_dataset("tensors", "val", root=str(root), val_fraction=1.0)


def test_folder_val_folder(tmp_path: Path) -> None:
    expected = write_folder(tmp_path)
    write_png(tmp_path / "val" / "dog" / "0.png", np.full((8, 8, 3), 9, np.uint8))
    write_png(tmp_path / "val" / "cat" / "0.png", np.full((8, 8, 3), 3, np.uint8))
    val = load_dataset("folder", "val", root=str(tmp_path))
    assert val.labels.tolist() == [0, 1] and val.images[:, 0, 0, 0].tolist() == [3, 9]
    assert len(load_dataset("folder", "train", root=str(tmp_path))) == len(expected.labels["train"]) + 2
    write_png(tmp_path / "val" / "bird" / "0.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="only in val: \\['bird'\\]"):
        load_dataset("folder", "val", root=str(tmp_path))


def test_guard_refuses_train_but_allows_val_and_test(tmp_path: Path) -> None:
    write_tensors(tmp_path)
    with forbid_training_data("a data-free run"):
        assert len(load_dataset("tensors", "val", root=str(tmp_path))) == 3
        assert len(load_dataset("tensors", "test", root=str(tmp_path))) == 4
        with pytest.raises(DatasetError, match="refusing to load the 'tensors' training split: a data-free run"):
            load_dataset("tensors", "train", root=str(tmp_path))


def test_loaders_without_val_fraction_still_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = DatasetInfo("old", 2, 1, 2, (0.5,), (0.25,))

    def old_loader(split: str, root: str | None = None, download: bool = False) -> ImageTensors:
        return ImageTensors(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0]), info)

    monkeypatch.setitem(DATASETS._entries, "old", old_loader)
    assert len(load_dataset("old", "val", val_fraction=0.3)) == 3


# ------------------------------------------------------------------------- corrupt files


def _truncate_payload(path: Path) -> None:
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-100]))


def _truncate_gzip(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def _bad_magic(path: Path) -> None:
    path.write_bytes(gzip.compress(b"\x01\x02\x08\x03" + gzip.decompress(path.read_bytes())[4:]))


@pytest.mark.parametrize("damage, words", [
    (_truncate_payload, "truncated"),
    (_truncate_gzip, "gzip"),
    (_bad_magic, "not an IDX file"),
])
def test_corrupt_idx_names_the_file(tmp_path: Path, damage: Callable[[Path], None], words: str) -> None:
    write_idx_dataset(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    damage(bad)
    with pytest.raises(DatasetError, match=words) as err:
        load_dataset("fashion-mnist", "train", root=str(tmp_path))
    assert str(bad) in str(err.value)


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(DatasetError, match="5 labels for 3 images"):
        load_dataset("mnist", "test", root=str(tmp_path))


class _SystemCall:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (self.command,))


class _Exec:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):  # noqa: ANN204
        return (exec, (f"open({self.command!r}, 'w').close()",))


@pytest.mark.parametrize("where", ["top", "inside"])
@pytest.mark.parametrize("payload", [_SystemCall, _Exec])
def test_malicious_pickle_is_refused_not_run(tmp_path: Path, payload: type, where: str) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = payload(f"touch {marker}" if payload is _SystemCall else str(marker))
    obj = evil if where == "top" else {b"data": np.zeros((1, 3072), np.uint8), b"labels": [evil]}
    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_1", obj)
    with pytest.raises(DatasetError, match="refusing") as err:
        load_dataset("cifar10", "train", root=str(tmp_path))
    assert "data_batch_1" in str(err.value)
    assert not marker.exists(), "the pickle's payload ran"


def test_pickle_of_unexpected_type_is_refused(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    write_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", [1, 2, 3])
    with pytest.raises(DatasetError, match="expected a pickled dict"):
        load_dataset("cifar10", "test", root=str(tmp_path))


def test_cifar_loads_latest_pickle_protocol(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    batch, x, y = cifar_batch(3, 10, b"labels")
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({k.decode(): v for k, v in batch.items()}, f, protocol=pickle.HIGHEST_PROTOCOL)
    ds = load_dataset("cifar10", "test", root=str(tmp_path))
    assert torch.equal(ds.images, torch.from_numpy(x)) and ds.labels.tolist() == y.tolist()


class _Py2Array:
    """Pickles like an array written by Python 2: pixel data as a (latin-1) str, not bytes."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self):  # noqa: ANN204
        try:
            from numpy._core import multiarray
        except ImportError:  # numpy 1.x
            from numpy.core import multiarray

        a = self.array
        return (multiarray._reconstruct, (np.ndarray, (0,), "b"),
                (1, a.shape, a.dtype, False, a.tobytes().decode("latin1")))


def test_cifar_loads_python2_style_batches(tmp_path: Path) -> None:
    """The original CIFAR files: str keys, str pixel data, numpy.core module path."""
    write_cifar10(tmp_path)
    data = RNG.integers(0, 256, (2, 3072), dtype=np.uint8)
    raw = pickle.dumps({"data": _Py2Array(data), "labels": [4, 7], "batch_label": "testing"},
                       protocol=2)
    raw = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(raw)
    ds = load_dataset("cifar10", "test", root=str(tmp_path))
    assert torch.equal(ds.images, torch.from_numpy(data.reshape(2, 3, 32, 32)))
    assert ds.labels.tolist() == [4, 7]


def test_cifar_label_out_of_range(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    write_pickle(tmp_path / "cifar-10-batches-py" / "test_batch",
                 {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]})
    with pytest.raises(DatasetError, match="0..9"):
        load_dataset("cifar10", "test", root=str(tmp_path))


# ------------------------------------------------------------------------------- tensors


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_float_tensors_out_of_range(tmp_path: Path, bad: float) -> None:
    images = torch.rand(4, 1, 8, 8)
    images[0, 0, 0, 0] = bad
    torch.save({"images": images, "labels": torch.tensor([0, 1, 0, 1])}, tmp_path / "train.pt")
    with pytest.raises(DatasetError, match=r"\[0, 1\]") as err:
        load_dataset("tensors", "train", root=str(tmp_path))
    assert "train.pt" in str(err.value)


@pytest.mark.parametrize("labels, words", [
    (torch.tensor([0, 1, 2]), "one label per image"),
    (torch.tensor([0, 1, -1, 1]), "labels must lie in"),
    (torch.tensor([0.0, 1.0, 0.0, 1.0]), "integers"),
])
def test_tensors_bad_labels(tmp_path: Path, labels: torch.Tensor, words: str) -> None:
    torch.save({"images": torch.zeros(4, 8, 8, dtype=torch.uint8).add_(torch.arange(4).view(4, 1, 1)),
                "labels": labels}, tmp_path / "train.pt")
    with pytest.raises(DatasetError, match=words):
        load_dataset("tensors", "train", root=str(tmp_path))


def test_tensors_test_label_beyond_train_classes(tmp_path: Path) -> None:
    x = np.arange(4 * 64, dtype=np.uint8).reshape(4, 8, 8)
    np.savez(tmp_path / "train.npz", images=x, labels=np.array([0, 1, 1, 0]))
    np.savez(tmp_path / "test.npz", images=x, labels=np.array([0, 1, 2, 0]))
    train = load_dataset("tensors", "train", root=str(tmp_path))
    assert train.info.shape == (1, 8, 8) and train.info.num_classes == 2  # N,H,W -> one channel
    # the test file describes itself (the train file is not read for it): 3 classes; a run
    # compares that with its teacher's. A class count stored with the dataset binds every split:
    assert load_dataset("tensors", "test", root=str(tmp_path)).info.num_classes == 3
    (tmp_path / "info.json").write_text('{"num_classes": 2}')
    with pytest.raises(DatasetError, match="labels must lie in 0..1") as err:
        load_dataset("tensors", "test", root=str(tmp_path))
    assert "test.npz" in str(err.value)


def test_tensors_refuse_pickled_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"images": torch.zeros(2, 1, 4, 4, dtype=torch.uint8), "labels": [0, 1],
                "extra": _SystemCall(f"touch {marker}")}, tmp_path / "train.pt")
    with pytest.raises(DatasetError, match="train.pt"):
        load_dataset("tensors", "train", root=str(tmp_path))
    assert not marker.exists()
    (tmp_path / "train.pt").unlink()
    np.savez(tmp_path / "train.npz", images=np.zeros((2, 4, 4), np.uint8),
             labels=np.array([object(), 1], dtype=object))
    with pytest.raises(DatasetError, match="train.npz"):
        load_dataset("tensors", "train", root=str(tmp_path))


def test_tensors_channels_last_hint(tmp_path: Path) -> None:
    torch.save({"images": torch.zeros(2, 8, 8, 3, dtype=torch.uint8), "labels": torch.tensor([0, 1])},
               tmp_path / "train.pt")
    with pytest.raises(DatasetError, match="channels-last"):
        load_dataset("tensors", "train", root=str(tmp_path))


@pytest.mark.parametrize("name", ["folder", "tensors"])
def test_user_datasets_need_a_root(name: str) -> None:
    with pytest.raises(DatasetError, match="--data-root"):
        load_dataset(name, "train", root=None)


# -------------------------------------------------------------------------------- folder


def test_folder_mixed_sizes(tmp_path: Path) -> None:
    write_folder(tmp_path)
    write_png(tmp_path / "train" / "dog" / "odd.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DatasetError, match="differ in size") as err:
        load_dataset("folder", "train", root=str(tmp_path), val_fraction=0.0)
    assert "odd.png" in str(err.value)


def test_folder_test_split_size_must_match_train(tmp_path: Path) -> None:
    write_folder(tmp_path)
    write_png(tmp_path / "test" / "dog" / "big.png", np.zeros((16, 16, 3), np.uint8))
    assert load_dataset("folder", "train", root=str(tmp_path)).info.image_size == 8
    with pytest.raises(DatasetError, match="differ in size"):
        load_dataset("folder", "test", root=str(tmp_path))


def test_folder_non_square(tmp_path: Path) -> None:
    write_png(tmp_path / "train" / "a" / "0.png", np.zeros((8, 6, 3), np.uint8))
    write_png(tmp_path / "test" / "a" / "0.png", np.zeros((8, 6, 3), np.uint8))
    with pytest.raises(DatasetError, match="square"):
        load_dataset("folder", "train", root=str(tmp_path))


def test_folder_class_mismatch(tmp_path: Path) -> None:
    write_folder(tmp_path)
    write_png(tmp_path / "test" / "bird" / "0.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="only in test: \\['bird'\\]"):
        load_dataset("folder", "test", root=str(tmp_path))


def test_folder_grayscale_and_mixed_modes(tmp_path: Path) -> None:
    expected = write_folder(tmp_path / "gray", gray=True)
    ds = load_dataset("folder", "train", root=str(tmp_path / "gray"))
    assert ds.info.in_channels == 1 and len(ds.info.mean) == 1
    assert torch.equal(ds.images, torch.from_numpy(expected.images["train"]))
    assert torch.equal(load_dataset("folder", "val", root=str(tmp_path / "gray")).images,
                       torch.from_numpy(expected.images["val"]))
    # one colour image makes the whole split RGB; grey images are replicated into 3 channels
    write_png(tmp_path / "gray" / "test" / "cat" / "color.png", np.full((8, 8, 3), 7, np.uint8))
    ds = load_dataset("folder", "test", root=str(tmp_path / "gray"))
    assert ds.info.in_channels == 3 and ds.images.shape[1] == 3
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])
    # info.json fixes the channels for every split (here: grey, though train has a colour image)
    (tmp_path / "gray" / "info.json").write_text('{"in_channels": 1}')
    assert load_dataset("folder", "test", root=str(tmp_path / "gray")).info.in_channels == 1


def test_folder_stats_are_the_splits_own_or_stored(tmp_path: Path) -> None:
    expected = write_folder(tmp_path)
    info = load_dataset("folder", "test", root=str(tmp_path)).info
    x = expected.images["test"].astype(np.float64) / 255  # the test images: the train folder is not read
    assert np.allclose(info.mean, x.mean(axis=(0, 2, 3))) and np.allclose(info.std, x.std(axis=(0, 2, 3)))
    (tmp_path / "info.json").write_text('{"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]}')
    for split in ("train", "val", "test"):
        assert load_dataset("folder", split, root=str(tmp_path)).info.mean == (0.1, 0.2, 0.3)


# ------------------------------------------------------------------------------ download


TV_CLASSES = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST", "cifar10": "CIFAR10",
              "cifar100": "CIFAR100", "svhn": "SVHN"}


def _fake_torchvision(name: str, calls: list[dict]) -> type:
    """A stand-in for the torchvision class: records the call and writes the real layout."""

    class Fake:
        def __init__(self, root: str, download: bool = False, **kwargs: object) -> None:
            calls.append({"root": root, "download": download, **kwargs})
            assert download, "torchvision must only be called to download"
            r = Path(root)
            if name in ("fashion-mnist", "mnist"):
                write_idx_dataset(r / TV_CLASSES[name] / "raw", compress=False)
            else:
                WRITERS[name](r)

    return Fake


@pytest.mark.parametrize("name", sorted(TV_CLASSES))
def test_download_only_when_asked(name: str, tmp_path: Path, no_system_data: None,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    calls: list[dict] = []
    monkeypatch.setattr(torchvision.datasets, TV_CLASSES[name], _fake_torchvision(name, calls))
    root = tmp_path / "dl"
    with pytest.raises(DatasetError, match="--download"):
        load_dataset(name, "test", root=str(root), download=False)
    assert calls == []
    ds = load_dataset(name, "test", root=str(root), download=True)
    assert len(calls) == 1 and Path(calls[0]["root"]) == root
    assert len(ds) > 0 and ds.info.name == name
    load_dataset(name, "test", root=str(root), download=True)  # already there: no second fetch
    assert len(calls) == 1


def test_download_failure_is_a_dataset_error(tmp_path: Path, no_system_data: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    class Offline:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(DatasetError, match="downloading MNIST failed: Error downloading"):
        load_dataset("mnist", "train", root=str(tmp_path), download=True)


# --------------------------------------------------------------------------- registry, memory


def test_unknown_dataset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet-42'"):
        load_dataset("imagenet-42", "train")


def test_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown split"):
        load_dataset("mnist", "validation", root=str(tmp_path))


def test_shuffled_batches_cover_each_sample_once() -> None:
    n = 103
    info = DatasetInfo("toy", 103, 1, 2, (0.5,), (0.25,))
    ds = ImageTensors(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n), info)

    def order(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return [i for _, y in ds.batches(10, shuffle=True, generator=g) for i in y.tolist()]

    first = order(0)
    assert sorted(first) == list(range(n))
    assert first != list(range(n))
    assert order(0) == first
    assert order(1) != first
    assert ds.num_batches(10) == 11 and ds.num_batches(10, drop_last=True) == 10
    g = torch.Generator().manual_seed(0)
    assert sum(len(y) for _, y in ds.batches(10, shuffle=True, generator=g, drop_last=True)) == 100
