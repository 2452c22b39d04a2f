"""The data-free guard: one enforcement point *below* every loader (DESIGN rule 8).

While a data-free run is active, opening a file that holds real training images raises
:class:`TrainingDataRefused`, whichever code opens it: our readers, ``torch.load``, ``numpy.load``,
PIL, torchvision's datasets or a user's script. It works through a Python audit hook
(``sys.addaudithook``) on the ``open`` event, which ``open()``, ``io.open``, ``os.open`` and
``io.open_code`` raise, and is process-wide (every thread), not per thread.

What counts as a training file:

* the files each registered dataset declares for its training split (``register_training_files``)
  under the run's data root, the default download root and the system-wide copies;
* any file whose name is a training file of a known format wherever it lies
  (``train-images-idx3-ubyte[.gz]``, CIFAR's ``data_batch_N``, ``train_32x32.mat``, ``train.pt``,
  ``train.npz``, an image file below a folder named ``train``, ...), so a copy in an unexpected
  place is refused too.

A benchmark's ``val`` split is the tail of its training files, and a user dataset without a val
file carves its val from the train file; the loader of that split reads the file inside
:func:`reading_val_rows`, an exemption for the current thread and the named files only, and hands
out a copy of the val rows alone. Not seen: reads by C code that bypasses Python's ``open`` (e.g.
``torchvision.io.read_file``) and other processes, which hold guards of their own.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import DatasetError


class TrainingDataRefused(DatasetError):
    """A data-free run tried to open a file of real training images."""


#: file names that are training data in a known format, wherever they lie
TRAINING_NAME = re.compile(
    r"^(train-(images|labels)-idx\d-ubyte(\.gz)?|data_batch_\d+|train_32x32\.mat|train\.(pt|npz))$"
)
#: image files below a folder of this name are a folder dataset's training split
TRAINING_FOLDER = "train"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: CIFAR-100's training pickle is just ``train`` inside this folder
_NAMED_IN_FOLDER = {("cifar-100-python", "train")}

# dataset name -> fn(root or None) -> paths (files or folders) that hold its training split
TrainingFiles = Callable[[str | None], Iterable[Path]]
_DECLARED: dict[str, TrainingFiles] = {}


def register_training_files(name: str) -> Callable[[TrainingFiles], TrainingFiles]:
    """Declare where dataset ``name`` keeps its training split (used when a guard starts)."""
    def decorator(fn: TrainingFiles) -> TrainingFiles:
        _DECLARED[name] = fn
        return fn
    return decorator


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reasons: list[str] = []
        self.protected: set[str] = set()  # real paths of files and folders, over all active guards
        self.entries: list[tuple[str, set[str]]] = []  # (reason, protected) of each active guard
        self.local = threading.local()  # .exempt: set of real paths this thread may open


_STATE = _State()


def active() -> str | None:
    """The reason of the innermost active guard, or None outside any."""
    reasons = _STATE.reasons
    return reasons[-1] if reasons else None


def _real(path: str | os.PathLike | bytes) -> str:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return os.path.realpath(os.fspath(path))


def is_training_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names real training data (declared for a dataset, or by its name)."""
    real = _real(path)
    for candidate in {os.path.abspath(os.fspath(path)), real}:
        p = Path(candidate)
        if TRAINING_NAME.match(p.name) or (p.parent.name, p.name) in _NAMED_IN_FOLDER:
            return True
        if p.suffix.lower() in _IMAGE_SUFFIXES and TRAINING_FOLDER in p.parts[:-1]:
            return True
    protected = _STATE.protected
    return real in protected or any(real.startswith(d + os.sep) for d in protected)


def _audit(event: str, args: tuple) -> None:
    if event != "open" or not _STATE.reasons or not args:
        return
    path = args[0]
    if not isinstance(path, (str, bytes, os.PathLike)):
        return  # a file descriptor: its open was audited when it was made
    if not is_training_file(path):
        return
    exempt = getattr(_STATE.local, "exempt", None)
    if exempt and _real(path) in exempt:
        return
    raise TrainingDataRefused(f"refusing to open a training file: {active()}", os.fsdecode(os.fspath(path)))


sys.addaudithook(_audit)


def _declared_paths(roots: Iterable[str | None]) -> set[str]:
    paths: set[str] = set()
    for fn in _DECLARED.values():
        for root in roots:
            try:
                found = list(fn(root))
            except DatasetError:
                continue  # a dataset that needs a root it was not given
            paths.update(_real(p) for p in found)
    return paths


@contextmanager
def forbid_training_data(reason: str = "this run is data-free", roots: Iterable[str | None] = ()) -> Iterator[None]:
    """Inside this block no thread of this process can open a training file (see the module doc).

    ``roots``: data roots the run was given, whose declared training files are protected besides
    the default and system-wide locations. ``val`` and ``test`` stay available, for evaluation.
    """
    entry = (reason, _declared_paths([None, *roots]))
    with _STATE.lock:
        _STATE.entries.append(entry)
        _STATE.reasons.append(reason)
        _STATE.protected |= entry[1]
    try:
        yield
    finally:
        with _STATE.lock:  # guards may end in any order (threads): recompute from those still active
            _STATE.entries.remove(entry)
            _STATE.reasons.remove(reason)
            _STATE.protected = set().union(*(paths for _, paths in _STATE.entries))


@contextmanager
def reading_val_rows(paths: Iterable[str | os.PathLike]) -> Iterator[None]:
    """Let the current thread open ``paths`` (training files a val split is cut from); the caller
    must hand out a copy of the val rows only."""
    local = _STATE.local
    previous = getattr(local, "exempt", None)
    local.exempt = (previous or set()) | {_real(p) for p in paths}
    try:
        yield
    finally:
        local.exempt = previous
