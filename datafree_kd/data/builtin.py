"""The built-in datasets: where their files are looked for, how they are validated, what they report.

Standard benchmarks (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN) are read from their original file
formats by our own parsers (``readers``), so tiny test files work and nothing runs code from a file;
torchvision is used only to *download*, and only when the caller asks. Two generic loaders,
``folder`` and ``tensors``, bring the user's own data. Images are kept as uint8 N,C,H,W in memory
(``tensors`` keeps float input as float32) and leave ``ImageTensors.batches`` as floats in [0, 1].

Where ``val`` comes from (disjoint from ``test`` everywhere):

* benchmarks (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN): the last ``VAL_SIZE`` (5,000) images of
  the official training files. ``train`` stays the full training set, so teachers keep training
  on all of it; val selects data-free students and recipes, which never read ``train``.
* ``tensors`` / ``folder``: a ``val.pt|val.npz`` file or ``ROOT/val/<class>/`` folder when
  present; otherwise the last ``ceil(val_fraction * n)`` images of each class of the train split,
  and then ``train`` *excludes* them, so a teacher trained there is also selected honestly.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..errors import DatasetError
from .guard import reading_val_rows, register_training_files
from .info import DatasetInfo
from .memory import ImageTensors
from .readers import (
    IMAGE_EXTENSIONS,
    as_names,
    image_header,
    is_gray_mode,
    load_pickle,
    read_idx,
    read_image,
    read_mat,
    read_tensor_file,
    str_keys,
)
from .registry import DEFAULT_VAL_FRACTION, SPLITS, register_dataset

# System-wide copies installed by OS packages, looked at after the user's root. A module-level
# table so tests (and unusual installs) can point it elsewhere.
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
}


#: images at the end of a benchmark's official training files that form its val split
VAL_SIZE = 5000


def default_root() -> Path:
    """Where downloads go (and are found again) when no root is given."""
    return Path("~/.cache/datafree_kd/data").expanduser()


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of {SPLITS}")
    return split


def _file_split(split: str) -> str:
    """Which official files a split is read from: val is a tail of the training files."""
    return "test" if _check_split(split) == "test" else "train"


def _official_part(images: np.ndarray, labels: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's share of what its files hold: all of it, or for val the last ``VAL_SIZE``
    images (copied, so the rest of the training set is freed)."""
    if split != "val":
        return images, labels
    tail = slice(max(0, len(labels) - VAL_SIZE), len(labels))
    return images[tail].copy(), labels[tail].copy()


def held_out_mask(labels: torch.Tensor, fraction: float) -> torch.Tensor:
    """The train images a user dataset without a val file holds out as val: the last
    ``ceil(fraction * n_c)`` of each class (at most ``n_c - 1``, so every class keeps a train image).

    Deterministic; per class because such files are often sorted by class (a folder always is),
    where the last images overall would all be one class.
    """
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        k = min(math.ceil(round(fraction * len(idx), 9)), len(idx) - 1)
        if k > 0:
            mask[idx[-k:]] = True
    return mask


def _carve(images: torch.Tensor, labels: torch.Tensor, split: str, fraction: float,
           where: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``train`` without the held-out images, or ``val`` = those images."""
    held = held_out_mask(labels, fraction)
    if split == "val" and not held.any():
        raise DatasetError(f"no val split: no val file or folder, and val_fraction={fraction} holds out "
                           "no train images", where)
    keep = held if split == "val" else ~held
    return images[keep], labels[keep]


def _base(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else default_root()


def _search_dirs(name: str, root: str | os.PathLike | None, subdirs: Sequence[str]) -> list[Path]:
    """The conventional sub-folders of the user's root (or of the download dir), the root itself,
    then system-wide copies."""
    base = _base(root)
    dirs = [base / s for s in subdirs] + [base]
    dirs += [Path(d) for d in SYSTEM_DIRS.get(name, ())]
    return list(dict.fromkeys(dirs))


def _not_found(what: str, looked: Iterable[Path], hint: str, root: str | os.PathLike | None) -> DatasetError:
    where = ", ".join(str(d) for d in looked)
    return DatasetError(f"{what} not found (looked in: {where}); {hint}", _base(root))


def _download(tv_class: str, root: Path, **kwargs: Any) -> None:
    """Fetch through torchvision (which checks the archive's md5); only called on request."""
    import torchvision.datasets

    try:
        root.mkdir(parents=True, exist_ok=True)
        getattr(torchvision.datasets, tv_class)(str(root), download=True, **kwargs)
    except DatasetError:
        raise
    except Exception as e:  # network, disk, checksum: all user-fixable
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatasetError(f"downloading {tv_class} failed: {first}", root) from None


def _labels_array(value: Any, path: Path, key: str) -> np.ndarray:
    """Integer labels as a 1-D int64 array (accepts lists and N,1 arrays as the formats store them)."""
    arr = np.asarray(value)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise DatasetError(f"{key!r} must be a 1-D list of integer labels (got {arr.dtype}, "
                           f"shape {arr.shape})", path)
    return arr.astype(np.int64)


def _check_label_range(labels: np.ndarray | torch.Tensor, num_classes: int, path: Path) -> None:
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DatasetError(
            f"labels must lie in 0..{num_classes - 1}; found {int(labels.min())}..{int(labels.max())}",
            path,
        )


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (population) of N,C,H,W images, in [0, 1] units.

    Accumulates in float64 over chunks, so large uint8 sets need no full float copy.
    """
    c = images.shape[1]
    s1 = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for chunk in images.split(1024):
        x = chunk.double()
        if images.dtype == torch.uint8:
            x /= 255.0
        s1 += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
    n = images.numel() // c
    mean = s1 / n
    std = (s2 / n - mean * mean).clamp_min(0).sqrt()
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _stats_or_error(images: torch.Tensor, path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = channel_stats(images)
    flat = [i for i, s in enumerate(std) if s < 1e-6]
    if flat:
        raise DatasetError(
            f"train images are constant in channel(s) {flat}; normalising by a zero std is undefined",
            path,
        )
    return mean, std


# ------------------------------------------------------------------------- MNIST family (IDX)


@dataclass(frozen=True)
class _IdxSpec:
    name: str
    tv_class: str  # torchvision class used to download; it stores files in root/<tv_class>/raw
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    hint: str


FASHION_MNIST = _IdxSpec(
    name="fashion-mnist",
    tv_class="FashionMNIST",
    mean=(0.2860,),
    std=(0.3530,),
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    hint="install Debian's copy (apt-get install dataset-fashion-mnist), pass --data-root DIR "
         "holding the IDX files, or allow downloading (--download)",
)

MNIST = _IdxSpec(
    name="mnist",
    tv_class="MNIST",
    mean=(0.1307,),
    std=(0.3081,),
    class_names=tuple(str(d) for d in range(10)),
    hint="pass --data-root DIR holding the IDX files (in DIR or DIR/MNIST/raw), "
         "or allow downloading (--download)",
)


def _find_idx_pair(dirs: Iterable[Path], prefix: str) -> tuple[Path, Path] | None:
    """The first directory holding both the images and labels file of a split (raw or .gz)."""
    for d in dirs:
        pair = []
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            stem = d / f"{prefix}-{kind}"
            hit = next((p for p in (stem, stem.with_name(stem.name + ".gz")) if p.is_file()), None)
            pair.append(hit)
        if pair[0] is not None and pair[1] is not None:
            return pair[0], pair[1]
    return None


def _load_idx(spec: _IdxSpec, split: str, root: str | os.PathLike | None, download: bool) -> ImageTensors:
    prefix = "train" if _file_split(split) == "train" else "t10k"
    raw = f"{spec.tv_class}/raw"
    dirs = _search_dirs(spec.name, root, [raw])
    found = _find_idx_pair(dirs, prefix)
    if found is None and download:
        _download(spec.tv_class, _base(root), train=prefix == "train")
        found = _find_idx_pair([_base(root) / raw], prefix)
    if found is None:
        what = f"{spec.name} {split} files ({prefix}-images-idx3-ubyte[.gz], {prefix}-labels-idx1-ubyte[.gz])"
        raise _not_found(what, dirs, spec.hint, root)
    images_path, labels_path = found
    with reading_val_rows(found if split == "val" else ()):  # val: the tail of the training files
        images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise DatasetError(f"expected N x H x W square images, found shape {images.shape}", images_path)
    if labels.ndim != 1:
        raise DatasetError(f"expected a 1-D label file, found shape {labels.shape}", labels_path)
    if len(labels) != len(images):
        raise DatasetError(f"{len(labels)} labels for {len(images)} images in {images_path.name}",
                           labels_path)
    _check_label_range(labels, 10, labels_path)
    images, labels = _official_part(images, labels, split)
    info = DatasetInfo(spec.name, 10, 1, images.shape[1], spec.mean, spec.std, spec.class_names)
    return ImageTensors(torch.from_numpy(images).unsqueeze(1),
                        torch.from_numpy(labels.astype(np.int64)), info)


def _idx_training_files(spec: _IdxSpec, root: str | None) -> list[Path]:
    names = [f"train-{kind}" + gz for kind in ("images-idx3-ubyte", "labels-idx1-ubyte") for gz in ("", ".gz")]
    return [d / n for d in _search_dirs(spec.name, root, [f"{spec.tv_class}/raw"]) for n in names]


register_training_files("fashion-mnist")(lambda root: _idx_training_files(FASHION_MNIST, root))
register_training_files("mnist")(lambda root: _idx_training_files(MNIST, root))


@register_dataset("fashion-mnist")
def fashion_mnist(split: str, root: str | None = None, download: bool = False) -> ImageTensors:
    """Fashion-MNIST (28x28 grey, 10 classes) from IDX files: root, root/FashionMNIST/raw, Debian.
    ``val``: the last 5,000 training images (``train`` stays all 60,000)."""
    return _load_idx(FASHION_MNIST, split, root, download)


@register_dataset("mnist")
def mnist(split: str, root: str | None = None, download: bool = False) -> ImageTensors:
    """MNIST digits (28x28 grey, 10 classes) from IDX files: root or root/MNIST/raw; ``val`` as
    for Fashion-MNIST."""
    return _load_idx(MNIST, split, root, download)


# ----------------------------------------------------------------------- CIFAR (pickles)


@dataclass(frozen=True)
class _CifarSpec:
    name: str
    tv_class: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    meta_file: str
    meta_key: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_names: tuple[str, ...]  # used when the meta file is absent


CIFAR10 = _CifarSpec(
    name="cifar10",
    tv_class="CIFAR10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    label_key="labels",
    meta_file="batches.meta",
    meta_key="label_names",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    default_names=("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"),
)

CIFAR100 = _CifarSpec(
    name="cifar100",
    tv_class="CIFAR100",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    label_key="fine_labels",
    meta_file="meta",
    meta_key="fine_label_names",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    default_names=(),
)


def _load_cifar(spec: _CifarSpec, split: str, root: str | os.PathLike | None, download: bool) -> ImageTensors:
    files = spec.train_files if _file_split(split) == "train" else spec.test_files
    base = _base(root)
    dirs = _search_dirs(spec.name, root, [spec.folder])

    def find() -> Path | None:
        return next((d for d in dirs if all((d / f).is_file() for f in files)), None)

    folder = find()
    if folder is None and download:
        _download(spec.tv_class, base, train=_file_split(split) == "train")
        folder = find()
    if folder is None:
        raise _not_found(
            f"{spec.name} {split} batches ({', '.join(files)})",
            dirs,
            f"pass --data-root DIR containing {spec.folder}/ (the extracted 'python version' "
            "archive), or allow downloading (--download)",
            root,
        )

    images, labels = [], []
    for name in files:
        path = folder / name
        with reading_val_rows([path] if split == "val" else ()):  # val: the tail of the training batches
            batch = str_keys(load_pickle(path), path)
        for key in ("data", spec.label_key):
            if key not in batch:
                raise DatasetError(f"batch has no {key!r} entry (keys: {sorted(batch)})", path)
        data = batch["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
                or data.shape[1] != 3 * 32 * 32:
            shape = getattr(data, "shape", None)
            raise DatasetError(f"'data' must be a uint8 array of shape N x 3072, found "
                               f"{getattr(data, 'dtype', type(data).__name__)} {shape}", path)
        lab = _labels_array(batch[spec.label_key], path, spec.label_key)
        if len(lab) != len(data):
            raise DatasetError(f"{len(lab)} labels for {len(data)} images", path)
        _check_label_range(lab, spec.num_classes, path)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)

    class_names = spec.default_names
    meta_path = folder / spec.meta_file
    if meta_path.is_file():
        meta = str_keys(load_pickle(meta_path), meta_path)
        if spec.meta_key not in meta:
            raise DatasetError(f"meta file has no {spec.meta_key!r} entry", meta_path)
        class_names = as_names(meta[spec.meta_key], meta_path, spec.meta_key)
        if len(class_names) != spec.num_classes:
            raise DatasetError(f"{len(class_names)} class names, expected {spec.num_classes}",
                               meta_path)
    info = DatasetInfo(spec.name, spec.num_classes, 3, 32, spec.mean, spec.std, class_names)
    images, labels = _official_part(np.concatenate(images), np.concatenate(labels), split)
    return ImageTensors(torch.from_numpy(images), torch.from_numpy(labels), info)


def _cifar_training_files(spec: _CifarSpec, root: str | None) -> list[Path]:
    return [d / f for d in _search_dirs(spec.name, root, [spec.folder]) for f in spec.train_files]


register_training_files("cifar10")(lambda root: _cifar_training_files(CIFAR10, root))
register_training_files("cifar100")(lambda root: _cifar_training_files(CIFAR100, root))


@register_dataset("cifar10")
def cifar10(split: str, root: str | None = None, download: bool = False) -> ImageTensors:
    """CIFAR-10 (32x32 RGB, 10 classes) from the python pickle batches in root/cifar-10-batches-py."""
    return _load_cifar(CIFAR10, split, root, download)


@register_dataset("cifar100")
def cifar100(split: str, root: str | None = None, download: bool = False) -> ImageTensors:
    """CIFAR-100 (32x32 RGB, 100 fine classes) from the pickles in root/cifar-100-python."""
    return _load_cifar(CIFAR100, split, root, download)


# ---------------------------------------------------------------------------- SVHN (.mat)

SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)


@register_training_files("svhn")
def _svhn_training_files(root: str | None) -> list[Path]:
    return [d / "train_32x32.mat" for d in _search_dirs("svhn", root, ["svhn", "SVHN"])]


@register_dataset("svhn")
def svhn(split: str, root: str | None = None, download: bool = False) -> ImageTensors:
    """SVHN cropped digits (32x32 RGB, 10 classes) from train_32x32.mat / test_32x32.mat.

    The .mat files store X as H,W,C,N and the digit 0 as label 10; both are undone here. ``val``:
    the last 5,000 images of train_32x32.mat.
    """
    filename = f"{_file_split(split)}_32x32.mat"
    dirs = _search_dirs("svhn", root, ["svhn", "SVHN"])
    path = next((d / filename for d in dirs if (d / filename).is_file()), None)
    if path is None and download:
        _download("SVHN", _base(root), split=_file_split(split))
        path = _base(root) / filename if (_base(root) / filename).is_file() else None
    if path is None:
        raise _not_found(f"svhn {split} file {filename}", dirs,
                         "pass --data-root DIR containing train_32x32.mat and test_32x32.mat, "
                         "or allow downloading (--download)", root)
    with reading_val_rows([path] if split == "val" else ()):  # val: the tail of train_32x32.mat
        mat = read_mat(path)
    for key in ("X", "y"):
        if key not in mat:
            raise DatasetError(f"no variable {key!r} in the .mat file", path)
    x = mat["X"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3 \
            or x.shape[0] != x.shape[1]:
        raise DatasetError(f"'X' must be uint8 of shape H x W x 3 x N with H == W, found "
                           f"{getattr(x, 'dtype', '?')} {getattr(x, 'shape', '?')}", path)
    y = _labels_array(mat["y"], path, "y")
    if len(y) != x.shape[3]:
        raise DatasetError(f"{len(y)} labels for {x.shape[3]} images", path)
    _check_label_range(y, 11, path)  # 1..10 as stored (0 tolerated)
    y = np.where(y == 10, 0, y)
    images, y = _official_part(np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y, split)  # -> N,C,H,W
    info = DatasetInfo("svhn", 10, 3, x.shape[0], SVHN_MEAN, SVHN_STD,
                       tuple(str(d) for d in range(10)))
    return ImageTensors(torch.from_numpy(images), torch.from_numpy(y), info)


# ------------------------------------------------------------------- folder of images


def _user_dir(name: str, root: str | os.PathLike | None, layout: str) -> Path:
    """The root a user-data loader needs; these have no default location."""
    if root is None:
        raise DatasetError(f"the {name!r} dataset needs a data root (--data-root DIR) laid out as {layout}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DatasetError(f"no such directory; the {name!r} dataset expects {layout}", base)
    return base


_FOLDER_LAYOUT = "DIR/train/<class>/*.png|jpg and DIR/test/<class>/... (optionally DIR/val/<class>/...)"


def _scan_folder(split_dir: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class folders (sorted, hidden ones skipped) and their image files, like ImageFolder."""
    if not split_dir.is_dir():
        raise DatasetError(f"no such directory; expected {_FOLDER_LAYOUT}", split_dir)
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DatasetError("no class sub-folders found", split_dir)
    samples: list[tuple[Path, int]] = []
    for idx, cls in enumerate(classes):
        for dirpath, dirnames, filenames in sorted(os.walk(split_dir / cls, followlinks=True)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((Path(dirpath) / f, idx))
    if not samples:
        raise DatasetError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found", split_dir)
    return classes, samples


def _read_folder_images(samples: list[tuple[Path, int]], mode: str, size: int | None,
                        split_dir: Path) -> np.ndarray:
    """Decode every image in ``mode``; all must share one square size (no silent resizing)."""
    reference: str = "the train images"
    for path, _ in samples:
        _, (w, h) = image_header(path)
        if size is None:
            if w != h:
                raise DatasetError(f"images must be square, but {path} is {w}x{h}; crop or pad "
                                   "them first", split_dir)
            size, reference = w, str(path)
        if (w, h) != (size, size):
            raise DatasetError(
                f"images differ in size: {path} is {w}x{h} but {reference} is {size}x{size}; "
                "resize them all to one square size first (nothing is resized silently)",
                split_dir,
            )
    stacked = np.stack([read_image(path, mode) for path, _ in samples])
    return stacked[:, None] if mode == "L" else stacked.transpose(0, 3, 1, 2)


def _same_classes(classes: list[str], other: list[str], split: str, base: Path) -> None:
    if other != classes:
        only_train = sorted(set(classes) - set(other))
        only_other = sorted(set(other) - set(classes))
        raise DatasetError(f"train and {split} have different class folders (only in train: "
                           f"{only_train or 'none'}; only in {split}: {only_other or 'none'})", base)


def _class_folders(split_dir: Path) -> list[str]:
    """Class folder names of a split (listing only: no image is opened)."""
    if not split_dir.is_dir():
        raise DatasetError(f"no such directory; expected {_FOLDER_LAYOUT}", split_dir)
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def _folder_split(samples: list[tuple[Path, int]], classes: list[str], split_dir: Path, base: Path
                  ) -> ImageTensors:
    """Decode one split's images; mode (RGB unless all grey, or as info.json's ``in_channels``
    says), size and statistics are its own."""
    stored = _stored_info(base)
    channels = stored.get("in_channels")
    if channels not in (None, 1, 3):
        raise DatasetError(f"in_channels must be 1 or 3, got {channels!r}", base / "info.json")
    grey = all(is_gray_mode(image_header(p)[0]) for p, _ in samples) if channels is None else channels == 1
    mode = "L" if grey else "RGB"
    images = torch.from_numpy(_read_folder_images(samples, mode, None, split_dir))
    labels = torch.tensor([c for _, c in samples], dtype=torch.int64)
    return ImageTensors(images, labels, _user_info("folder", base, images, labels, tuple(classes), split_dir,
                                                   num_classes=len(classes), stored=stored))


@register_training_files("folder")
def _folder_training_files(root: str | None) -> list[Path]:
    return [] if root is None else [Path(root).expanduser() / "train"]


@register_dataset("folder")
def image_folder(split: str, root: str | None = None, download: bool = False,
                 val_fraction: float = DEFAULT_VAL_FRACTION) -> ImageTensors:
    """A folder of images per class (ImageFolder layout), decoded into memory.

    Each split reads only its own images: its mode (RGB unless every image is greyscale) and
    normalisation statistics are its own, unless ``DIR/info.json`` stores them (:func:`_user_info`);
    the class list is the train folder's (names only: no training image is opened for a ``test``
    or ``val`` split). Without a ``val/`` folder, val is the last ``val_fraction`` of each train
    class -- only those files are opened -- and train excludes it.
    """
    _check_split(split)
    base = _user_dir("folder", root, _FOLDER_LAYOUT)
    train_dir, val_dir = base / "train", base / "val"
    if split == "test" or (split == "val" and val_dir.is_dir()):
        split_dir = base / split
        classes, samples = _scan_folder(split_dir)
        if train_dir.is_dir():
            _same_classes(_class_folders(train_dir), classes, split, base)
        return _folder_split(samples, classes, split_dir, base)
    classes, train_samples = _scan_folder(train_dir)
    counts = np.bincount([c for _, c in train_samples], minlength=len(classes))
    if (counts == 0).any():
        empty = [classes[i] for i in np.flatnonzero(counts == 0)]
        raise DatasetError(f"train class folder(s) without images: {empty}", train_dir)
    if split == "train" and val_dir.is_dir():
        return _folder_split(train_samples, classes, train_dir, base)
    held = held_out_mask(torch.tensor([c for _, c in train_samples]), val_fraction).tolist()
    if split == "val":
        if not any(held):
            raise DatasetError(f"no val split: no val folder, and val_fraction={val_fraction} holds out "
                               "no train images", train_dir)
        picked = [s for s, h in zip(train_samples, held) if h]
        with reading_val_rows([p for p, _ in picked]):  # these files only, not the rest of train
            return _folder_split(picked, classes, train_dir, base)
    return _folder_split([s for s, h in zip(train_samples, held) if not h], classes, train_dir, base)


# ------------------------------------------------------------------- tensors (.pt / .npz)

_TENSORS_LAYOUT = ("DIR/train.pt|train.npz and DIR/test.pt|test.npz (optionally DIR/val.pt|val.npz) "
                   "holding 'images' (uint8 or float in [0,1], N,C,H,W or N,H,W) and 'labels'")


def _tensor_files(base: Path, split: str) -> list[Path]:
    return [p for p in (base / f"{split}.pt", base / f"{split}.npz") if p.is_file()]


def _tensor_file(base: Path, split: str) -> Path:
    found = _tensor_files(base, split)
    if not found:
        raise DatasetError(f"no {split}.pt or {split}.npz; expected {_TENSORS_LAYOUT}", base)
    if len(found) > 1:
        raise DatasetError(f"both {split}.pt and {split}.npz exist; keep one", base)
    return found[0]


def _as_tensor(value: Any, path: Path, key: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "buif":
            raise DatasetError(f"{key!r} has unsupported dtype {value.dtype}", path)
        return torch.from_numpy(np.ascontiguousarray(value))
    if key == "labels" and isinstance(value, (list, tuple)):
        try:
            return torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            pass
    raise DatasetError(f"{key!r} must be a tensor or array, found {type(value).__name__}", path)


def _read_tensor_split(base: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], Path]:
    """Validated ``(images N,C,H,W, labels int64, class_names, path)`` of one split."""
    path = _tensor_file(base, split)
    content = read_tensor_file(path)
    missing = [k for k in ("images", "labels") if k not in content]
    if missing:
        raise DatasetError(f"missing {missing} (found keys: {sorted(map(str, content))})", path)
    images = _as_tensor(content["images"], path, "images")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise DatasetError(f"'images' must be N,C,H,W or N,H,W, found shape {tuple(images.shape)}", path)
    n, c, h, w = images.shape
    if h != w:
        hint = " (looks channels-last: permute to N,C,H,W)" if w in (1, 3, 4) and c == h else ""
        raise DatasetError(f"images must be square N,C,H,W, found shape {tuple(images.shape)}{hint}", path)
    if n == 0:
        raise DatasetError("no images", path)
    if images.dtype == torch.uint8:
        pass
    elif images.is_floating_point():
        lo, hi = float(images.min()), float(images.max())
        if not (torch.isfinite(images).all() and lo >= 0.0 and hi <= 1.0):
            raise DatasetError(f"float images must lie in [0, 1]; found values in [{lo}, {hi}]"
                               + (" (divide by 255?)" if hi > 1.0 and hi <= 255.0 else ""), path)
        images = images.float()
    else:
        raise DatasetError(f"images must be uint8 (0..255) or float in [0, 1], found {images.dtype}", path)
    labels = _as_tensor(content["labels"], path, "labels")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise DatasetError(f"labels must be integers, found {labels.dtype}", path)
    if labels.dim() != 1 or len(labels) != n:
        raise DatasetError(f"need one label per image: {n} images, labels of shape "
                           f"{tuple(labels.shape)}", path)
    names = as_names(content["class_names"], path, "class_names") if "class_names" in content else ()
    return images.contiguous(), labels.long(), names, path


def _stored_info(base: Path) -> dict[str, Any]:
    """``DIR/info.json`` of a user dataset, or {} (see :func:`_user_info`)."""
    path = base / "info.json"
    if not path.is_file():
        return {}
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"corrupt info.json ({e})", path) from None
    if not isinstance(stored, dict):
        raise DatasetError("info.json must hold an object", path)
    return stored


def _user_info(name: str, base: Path, images: torch.Tensor, labels: torch.Tensor, names: tuple[str, ...],
               where: Path, num_classes: int | None = None, stored: dict[str, Any] | None = None) -> DatasetInfo:
    """A user dataset's description from the split at hand, or from ``DIR/info.json`` where the
    dataset stores it (``mean``, ``std``, optionally ``num_classes``, ``class_names`` and, for a
    folder, ``in_channels``): an evaluation split never reads the training files for statistics
    (DESIGN rule 8)."""
    stored = _stored_info(base) if stored is None else stored
    names = tuple(stored.get("class_names") or names)
    num_classes = int(stored.get("num_classes") or num_classes or len(names) or int(labels.max()) + 1)
    if "mean" in stored and "std" in stored:
        mean, std = tuple(map(float, stored["mean"])), tuple(map(float, stored["std"]))
    else:
        mean, std = _stats_or_error(images, where)
    _check_label_range(labels, num_classes, where)
    try:
        return DatasetInfo(name, num_classes, images.shape[1], images.shape[2], mean, std, names)
    except ValueError as e:
        raise DatasetError(str(e), base / "info.json" if stored else where) from None


@register_training_files("tensors")
def _tensors_training_files(root: str | None) -> list[Path]:
    return [] if root is None else [Path(root).expanduser() / f"train{ext}" for ext in (".pt", ".npz")]


@register_dataset("tensors")
def tensors(split: str, root: str | None = None, download: bool = False,
            val_fraction: float = DEFAULT_VAL_FRACTION) -> ImageTensors:
    """Arrays the user saved (``train``/``test``, optionally ``val``, as .pt or .npz), loaded
    without pickles.

    Each split is described by its own file (:func:`_user_info`): ``num_classes`` is
    ``len(class_names)`` if given, else its largest label + 1, and mean/std are its own, unless
    ``DIR/info.json`` stores them; a ``test`` split never opens the train file. Without a val
    file, val is the last ``val_fraction`` of each train class (read from the train file, of which
    only those rows are kept), and train excludes it.
    """
    _check_split(split)
    base = _user_dir("tensors", root, _TENSORS_LAYOUT)
    has_val = bool(_tensor_files(base, "val"))
    if split == "test" or (split == "val" and has_val):
        images, labels, names, path = _read_tensor_split(base, split)
        return ImageTensors(images, labels, _user_info("tensors", base, images, labels, names, path))
    train_file = _tensor_file(base, "train")
    with reading_val_rows([train_file] if split == "val" else ()):
        train_images, train_labels, names, train_path = _read_tensor_split(base, "train")
    if split == "train":
        info = _user_info("tensors", base, train_images, train_labels, names, train_path)
        if has_val:
            return ImageTensors(train_images, train_labels, info)
        return ImageTensors(*_carve(train_images, train_labels, split, val_fraction, train_path), info)
    images, labels = _carve(train_images, train_labels, split, val_fraction, train_path)  # copies the val rows
    del train_images, train_labels
    return ImageTensors(images, labels, _user_info("tensors", base, images, labels, names, train_path))
