"""Parsers for the on-disk dataset formats (IDX, CIFAR pickles, .mat, .pt/.npz, image files).

Every file is treated as untrusted input: nothing here runs code from a file, and every failure
becomes a one-line DatasetError that names the file and says what is wrong (DESIGN rule 9).
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DatasetError

PathLike = str | os.PathLike

# ---------------------------------------------------------------------------------------- IDX

# IDX type codes (third magic byte) -> a readable name; only unsigned bytes are image data here.
_IDX_TYPES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32",
              0x0E: "float64"}


def _read_raw(path: Path) -> bytes:
    """Whole file contents, transparently gunzipped for ``*.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError("file not found", path) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DatasetError(f"corrupt or truncated gzip stream ({e})", path) from None
    except OSError as e:
        raise DatasetError(f"cannot read file ({e.strerror or e})", path) from None


def read_idx(path: PathLike) -> np.ndarray:
    """Parse an IDX file (as used by MNIST and Fashion-MNIST) holding unsigned bytes.

    Checks the magic number, the type code and that the payload has exactly the size the
    header announces, so a truncated download fails here instead of as a reshape error later.
    """
    path = Path(path)
    data = _read_raw(path)
    if len(data) < 4:
        raise DatasetError(f"too short for an IDX header ({len(data)} bytes)", path)
    zero1, zero2, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero1 != 0 or zero2 != 0 or type_code not in _IDX_TYPES:
        raise DatasetError(f"not an IDX file (magic bytes {data[:4].hex()})", path)
    if type_code != 0x08:
        raise DatasetError(f"IDX file holds {_IDX_TYPES[type_code]} values; expected uint8", path)
    if ndim == 0:
        raise DatasetError("IDX header declares zero dimensions", path)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"truncated IDX header ({len(data)} of {header} bytes)", path)
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(dims)
    found = len(data) - header
    if found < expected:
        raise DatasetError(
            f"truncated IDX file: shape {dims} needs {expected} bytes of data, found {found}", path
        )
    if found > expected:
        raise DatasetError(
            f"corrupt IDX file: {found - expected} bytes beyond the declared shape {dims}", path
        )
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims).copy()


# ------------------------------------------------------------------------------ safe pickles


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The few callables numpy arrays and scalars need to be rebuilt from a pickle."""
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
        modules = ("numpy._core", "numpy.core")
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
        modules = ("numpy.core", "numpy._core")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # protocol < 3 stores bytes objects as _codecs.encode(str, "latin1")
        ("_codecs", "encode"): __import__("codecs").encode,
    }
    for mod in modules:  # pickles name whichever module path numpy had when they were written
        allowed[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild dicts, lists, strings, numbers and numpy arrays, and nothing
    else: any other global (``os.system``, ``builtins.eval``, ...) is refused before it is called."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _numpy_globals()
        try:
            return _RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} (only numpy arrays are allowed)"
            ) from None


def load_pickle(path: PathLike) -> Any:
    """Load a data pickle (e.g. a CIFAR batch) without ever executing code from it.

    ``latin1`` decodes the Python 2 strings in the original CIFAR files, as numpy recommends.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DatasetError("file not found", path) from None
    except pickle.UnpicklingError as e:
        raise DatasetError(f"unsafe or corrupt pickle: {e}", path) from None
    except EOFError:
        raise DatasetError("truncated pickle (unexpected end of file)", path) from None
    except OSError as e:
        raise DatasetError(f"cannot read file ({e.strerror or e})", path) from None
    except DatasetError:  # e.g. the data-free guard refusing the file: already one clear line
        raise
    except Exception as e:  # any other parse failure of untrusted bytes
        raise DatasetError(f"corrupt pickle ({type(e).__name__}: {e})", path) from None


def str_keys(obj: Any, path: PathLike) -> dict[str, Any]:
    """A pickled dict with its keys as ``str`` (Python 3 writers use bytes keys, Python 2 str)."""
    if not isinstance(obj, dict):
        raise DatasetError(f"expected a pickled dict, found {type(obj).__name__}", path)
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def as_names(value: Any, path: PathLike, key: str) -> tuple[str, ...]:
    """A list of class names stored as str or bytes."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, bytes)) for v in value):
        raise DatasetError(f"{key!r} must be a list of strings", path)
    return tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value)


# ------------------------------------------------------------------------------------- .mat


def read_mat(path: PathLike) -> dict[str, Any]:
    """Variables of a MATLAB v4-v7.2 file (SVHN's format); no code runs when reading."""
    import scipy.io

    path = Path(path)
    try:
        return scipy.io.loadmat(path)
    except FileNotFoundError:
        raise DatasetError("file not found", path) from None
    except NotImplementedError:
        raise DatasetError("MATLAB v7.3 (HDF5) files are not supported; save with -v7", path) from None
    except DatasetError:  # e.g. the data-free guard refusing the file: already one clear line
        raise
    except Exception as e:
        raise DatasetError(f"not a readable .mat file ({type(e).__name__}: {e})", path) from None


# ------------------------------------------------------------------------------ .pt / .npz


def read_tensor_file(path: PathLike) -> dict[str, Any]:
    """The dict stored in a ``.pt`` (``weights_only`` load) or ``.npz`` (no pickles) file."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DatasetError("file not found", path) from None
    except (pickle.UnpicklingError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatasetError(
            f"refused to load: only tensors, numbers, strings, lists and dicts are allowed "
            f"(no pickled objects): {first}",
            path,
        ) from None
    except DatasetError:  # e.g. the data-free guard refusing the file: already one clear line
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DatasetError(f"corrupt or unreadable file ({type(e).__name__}: {first})", path) from None
    if not isinstance(obj, dict):
        raise DatasetError(f"expected a dict with 'images' and 'labels', found {type(obj).__name__}",
                           path)
    return obj


# -------------------------------------------------------------------------------- images

_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                    ".webp")


def image_header(path: PathLike) -> tuple[str, tuple[int, int]]:
    """``(mode, (width, height))`` of an image file, read from its header without decoding."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except UnidentifiedImageError:
        raise DatasetError("not a readable image", path) from None
    except OSError as e:
        raise DatasetError(f"cannot read image ({e})", path) from None


def is_gray_mode(mode: str) -> bool:
    return mode in _GRAY_MODES


def read_image(path: PathLike, mode: str) -> np.ndarray:
    """Decode an image to uint8 ``H,W`` (mode ``L``) or ``H,W,3`` (mode ``RGB``).

    16-bit grayscale is scaled down (>> 8) rather than clipped as PIL's ``convert`` would do;
    32-bit integer and float images have no defined 0..255 range and are refused.
    """
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I;16"):
                im = Image.fromarray((np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8), "L")
            elif im.mode in ("I", "F"):
                raise DatasetError(
                    f"{'32-bit integer' if im.mode == 'I' else 'floating-point'} images are not "
                    "supported; save them as 8-bit",
                    path,
                )
            return np.asarray(im.convert(mode), dtype=np.uint8).copy()
    except DatasetError:
        raise
    except DatasetError:  # e.g. the data-free guard refusing the file: already one clear line
        raise
    except Exception as e:
        raise DatasetError(f"cannot decode image ({type(e).__name__}: {e})", path) from None


__all__ = [
    "IMAGE_EXTENSIONS",
    "as_names",
    "image_header",
    "is_gray_mode",
    "load_pickle",
    "read_idx",
    "read_image",
    "read_mat",
    "read_tensor_file",
    "str_keys",
]
