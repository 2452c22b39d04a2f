"""The on-disk synthetic transfer set: what a synthesizer writes and the Distiller reads.

Layout (one directory)::

    meta.json          provenance + the shard table (file, count, bytes, sha256 of each shard)
    shard-00000.pt     {"images": uint8|float16 N,C,H,W, "teacher_logits": float32 N,K, "labels": int64 N}
    shard-00001.pt     (logits and labels are optional, but all shards of one set agree)
    preview.png        optional, from ``write_preview``

Why this shape:

* **Shards** bound memory on both sides: a synthesizer never holds more than one shard of images,
  and ``iter_batches`` streams a set larger than memory one shard at a time.
* **meta.json is rewritten atomically after every shard**, and a shard file is written (atomically)
  before the meta.json that lists it. An interrupted synthesis therefore leaves a valid set of
  the shards completed so far, and ``TransferSet.open(path).append(...)`` resumes it. A shard file
  that no meta.json lists (the crash fell between the two writes) is simply overwritten.
* **Checksums** (sha256 of each shard's bytes) make a truncated copy or an altered file a one-line
  ``DatasetError`` naming the shard, instead of a silently different experiment (DESIGN rule 9);
  shards load with ``torch.load(weights_only=True)`` only.
* **Provenance** (synthesizer, its config, teacher fingerprint, seed, count, dataset description)
  travels in meta.json, so loading never needs the original command line (DESIGN rule 6).
* **Images are quantised once, at write time** (uint8 = ``round(x * 255)``, or float16) and come
  back bit-exactly; readers hand out floats in [0, 1] (DESIGN rule 1).
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import os
import re
import warnings
from io import BytesIO
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import torch

from . import __version__
from .data.guard import active as guard_active
from .data.info import DatasetInfo
from .data.memory import ImageTensors
from .errors import DatasetError, DfkdError, NotATransferSet
from .faults import crash_point
from .io import _json_default, atomic_open, atomic_write_json

FORMAT = "datafree_kd.transfer_set"
FORMAT_VERSION = 1
META_NAME = "meta.json"
#: where ``dfkd synthesize`` puts the set inside its run directory
RUN_SUBDIR = "transfer_set"
PREVIEW_NAME = "preview.png"
DTYPES = {"uint8": torch.uint8, "float16": torch.float16}
SHARD_PATTERN = re.compile(r"^shard-\d{5,}\.pt$")
#: Height (and width) in pixels of one cell of the preview grid: the PNG is rows * this tall.
PREVIEW_CELL_PX = 64
#: Width in pixels of the class-name column on the left of the preview.
PREVIEW_LABEL_PX = 128

_REQUIRED_META = (
    "format", "format_version", "synthesizer", "synthesizer_config", "teacher_fingerprint", "seed",
    "count", "shape", "num_classes", "dtype", "dataset_info", "created", "shards",
)


class TransferBatch(NamedTuple):
    """One streamed batch: images (floats in [0,1] unless asked for the stored dtype), labels
    (stored labels, else the teacher's argmax, else zeros) and the teacher logits (or None)."""

    images: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor | None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


class TransferSet:
    """A sharded, checksummed, provenance-carrying set of synthetic images (see the module doc).

    Make one with ``TransferSet.create`` (new, writable) or ``TransferSet.open`` (existing; still
    writable, so an interrupted synthesis can resume by appending). ``subset(n)`` returns a
    read-only view of the first ``n`` items. Not safe for two concurrent writers.
    """

    def __init__(self, path: Path, meta: dict[str, Any], limit: int | None = None,
                 writable: bool = True) -> None:
        """Internal: use ``create``, ``open`` or ``subset``."""
        self.path = Path(path)
        self._meta = meta
        self._info = DatasetInfo.from_dict(meta["dataset_info"])
        self._limit = limit
        self._writable = writable
        self._pending: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = []
        self._pending_count = 0

    # ------------------------------------------------------------------ making and opening

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        info: DatasetInfo,
        synthesizer: str,
        synthesizer_config: dict[str, Any],
        teacher_fingerprint: str,
        seed: int,
        dtype: str = "uint8",
        shard_size: int = 5000,
    ) -> "TransferSet":
        """Start an empty set in ``path`` (a new or empty directory) and write its meta.json.

        A non-empty directory is refused so a new synthesis never mixes with old shards; to
        continue an interrupted set, use ``TransferSet.open(path)`` and ``append``.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise DfkdError("exists and is not a directory; cannot create a transfer set here", path)
        if path.is_dir() and any(path.iterdir()):
            hint = (" (it holds a transfer set: use TransferSet.open(path) to append to it)"
                    if (path / META_NAME).exists() else "")
            raise DfkdError(f"directory is not empty; refusing to create a transfer set{hint}", path)
        if dtype not in DTYPES:
            raise DfkdError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}", path)
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise DfkdError(f"shard_size must be a positive integer, got {shard_size!r}", path)
        try:  # normalise now so the in-memory meta is exactly what meta.json holds
            config = json.loads(json.dumps(dict(synthesizer_config), default=_json_default))
        except (TypeError, ValueError) as exc:
            raise DfkdError(f"synthesizer_config is not JSON-serialisable ({_first_line(exc)})", path) from None
        now = _now()
        meta: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "datafree_kd_version": __version__,
            "synthesizer": str(synthesizer),
            "synthesizer_config": config,
            "teacher_fingerprint": str(teacher_fingerprint),
            "seed": int(seed),
            "count": 0,
            "shape": list(info.shape),
            "num_classes": info.num_classes,
            "dtype": dtype,
            "shard_size": shard_size,
            "has_logits": None,  # decided by the first append, then fixed for the whole set
            "has_labels": None,
            # true while every image entered the set under the data-free guard (data.guard)
            "written_under_guard": guard_active() is not None,
            "dataset_info": info.to_dict(),
            "created": now,
            "updated": now,
            "shards": [],
        }
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / META_NAME, meta)
        return cls(path, meta)

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> "TransferSet":
        """Open an existing set -- its directory or the ``dfkd synthesize`` run directory holding
        it (:func:`locate`); check its meta.json and that every shard is there, whole and (with
        ``verify``) unaltered. Any problem is a one-line ``DatasetError`` naming the file."""
        path = locate(path)
        meta_path = path / META_NAME
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"corrupt meta.json ({_first_line(exc)})", meta_path) from None
        cls._check_meta(meta, meta_path)
        for entry in meta["shards"]:
            cls._check_shard_file(path / entry["file"], entry, verify)
        return cls(path, meta)

    @staticmethod
    def _check_meta(meta: Any, meta_path: Path) -> None:
        def bad(message: str) -> DatasetError:
            return DatasetError(f"bad meta.json: {message}", meta_path)

        if not isinstance(meta, dict):
            raise bad("not a JSON object")
        if meta.get("format") != FORMAT:
            raise bad(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
        missing = [k for k in _REQUIRED_META if k not in meta]
        if missing:
            raise bad(f"missing field(s) {', '.join(missing)}")
        version = meta["format_version"]
        if not isinstance(version, int) or version < 1:
            raise bad(f"format_version {version!r} is not a positive integer")
        if version > FORMAT_VERSION:
            raise bad(f"format_version {version} is newer than this datafree_kd reads ({FORMAT_VERSION})")
        try:
            info = DatasetInfo.from_dict(meta["dataset_info"])
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"dataset_info is invalid ({_first_line(exc)})") from None
        if meta["dtype"] not in DTYPES:
            raise bad(f"dtype {meta['dtype']!r} is not one of {sorted(DTYPES)}")
        if meta["shape"] != list(info.shape) or meta["num_classes"] != info.num_classes:
            raise bad(f"shape/num_classes {meta['shape']}/{meta['num_classes']} disagree with dataset_info")
        shard_size = meta.get("shard_size", 5000)
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise bad(f"shard_size {shard_size!r} is not a positive integer")
        for key in ("has_logits", "has_labels"):
            if meta.get(key) not in (None, True, False):
                raise bad(f"{key} must be true, false or null")
        shards = meta["shards"]
        if not isinstance(shards, list):
            raise bad("shards is not a list")
        seen: set[str] = set()
        total = 0
        for i, entry in enumerate(shards):
            if not isinstance(entry, dict) or not {"file", "count", "sha256", "bytes"} <= set(entry):
                raise bad(f"shard entry {i} needs file, count, bytes and sha256")
            name = entry["file"]
            if not isinstance(name, str) or not SHARD_PATTERN.match(name) or name in seen:
                raise bad(f"shard entry {i} has an invalid or repeated file name {name!r}")
            seen.add(name)
            for key in ("count", "bytes"):
                value = entry[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "count" else 0):
                    raise bad(f"shard {name}: {key} {value!r} is not a valid integer")
            if not isinstance(entry["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
                raise bad(f"shard {name}: sha256 is not a hex digest")
            total += entry["count"]
        if shards and (meta.get("has_logits") is None or meta.get("has_labels") is None):
            raise bad("has_logits/has_labels must be set once shards exist")
        if meta["count"] != total:
            raise bad(f"count {meta['count']} != sum of shard counts {total}")

    @staticmethod
    def _check_shard_file(shard: Path, entry: dict[str, Any], verify: bool) -> None:
        if not shard.is_file():
            raise DatasetError("shard missing", shard)
        size = shard.stat().st_size
        if size < entry["bytes"]:
            raise DatasetError(f"shard truncated ({size} of {entry['bytes']} bytes)", shard)
        if size > entry["bytes"]:
            raise DatasetError(f"shard size mismatch ({size} bytes, expected {entry['bytes']}; file altered?)", shard)
        if verify and _sha256_file(shard) != entry["sha256"]:
            raise DatasetError("shard checksum mismatch (sha256 differs from meta.json; file altered?)", shard)

    # ------------------------------------------------------------------ description

    def __len__(self) -> int:
        """Images on disk (and, for a ``subset`` view, in the view); buffered appends not counted."""
        count = int(self._meta["count"])
        return count if self._limit is None else min(count, self._limit)

    def __repr__(self) -> str:
        return (f"TransferSet({str(self.path)!r}, count={len(self)}, synthesizer={self._meta['synthesizer']!r}, "
                f"dtype={self._meta['dtype']!r}, teacher={self._meta['teacher_fingerprint']!r})")

    @property
    def info(self) -> DatasetInfo:
        """The teacher's data description (shape, classes, class names, statistics)."""
        return self._info

    @property
    def meta(self) -> dict[str, Any]:
        """A copy of the in-memory meta.json (the whole set's, also for a subset view)."""
        return copy.deepcopy(self._meta)

    @property
    def dtype(self) -> str:
        return str(self._meta["dtype"])

    @property
    def has_logits(self) -> bool:
        return bool(self._meta.get("has_logits"))

    @property
    def has_labels(self) -> bool:
        return bool(self._meta.get("has_labels"))

    @property
    def shard_size(self) -> int:
        return int(self._meta.get("shard_size", 5000))

    @property
    def pending(self) -> int:
        """Images appended but not yet written (until a shard fills or ``flush``)."""
        return self._pending_count

    def provenance(self) -> dict[str, Any]:
        """What a student trained on this set (or this subset) should record about it."""
        m = self._meta
        return {
            "path": str(self.path), "format_version": m["format_version"], "synthesizer": m["synthesizer"],
            "synthesizer_config": copy.deepcopy(m["synthesizer_config"]),
            "teacher_fingerprint": m["teacher_fingerprint"], "seed": m["seed"], "count": len(self),
            "total_count": int(m["count"]), "dtype": m["dtype"], "created": m["created"],
            "set_checksum": self.checksum(), "written_under_guard": bool(m.get("written_under_guard", False)),
            "synthesizer_provenance": copy.deepcopy(m.get("synthesizer_provenance")),
        }

    def checksum(self) -> str:
        """sha256 over the shard table (names, counts, sha256s): one figure that names the set's bytes."""
        table = [(e["file"], e["count"], e["sha256"]) for e in self._meta["shards"]]
        return hashlib.sha256(json.dumps(table).encode()).hexdigest()

    # ------------------------------------------------------------------ writing

    def append(self, images: torch.Tensor, teacher_logits: torch.Tensor | None = None,
               labels: torch.Tensor | None = None) -> None:
        """Validate a batch, quantise it and buffer it; every full ``shard_size`` is written at once.

        Validation is strict because a bad batch would otherwise be discovered only at training
        time: images N,C,H,W matching ``info.shape``, finite floats in [0,1]; logits N,num_classes
        and finite; labels N integers in [0, num_classes). Whether logits/labels are given must
        agree with earlier appends.
        """
        if not self._writable:
            raise DfkdError("a subset view is read-only; append to the full set", self.path)
        q, logits, labs = self._validate(images, teacher_logits, labels)
        if len(q) == 0:
            return
        if guard_active() is None:  # an image that could have come from anywhere: the set is no longer data-free
            self._meta["written_under_guard"] = False
        self._pending.append((q, logits, labs))
        self._pending_count += len(q)
        while self._pending_count >= self.shard_size:
            self._write_pending(self.shard_size)

    def record(self, key: str, value: Any) -> None:
        """Add a provenance fact known only once the synthesizer is ready (e.g. the fingerprint of
        the diffusion prior it loaded) to meta.json, atomically; core fields cannot be overwritten."""
        if not self._writable or key in _REQUIRED_META or key in ("shards", "written_under_guard"):
            raise DfkdError(f"cannot record {key!r} on this set", self.path)
        value = json.loads(json.dumps(value, default=_json_default))
        if self._meta.get(key) != value:
            self._meta[key] = value
            atomic_write_json(self.path / META_NAME, self._meta)

    def flush(self) -> None:
        """Write the buffered partial shard (call at the end of a synthesis, or to checkpoint)."""
        if self._pending_count:
            self._write_pending(self._pending_count)

    close = flush

    def __enter__(self) -> "TransferSet":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None and self._writable:
            self.flush()

    def _validate(self, images: Any, teacher_logits: Any, labels: Any
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        def bad(message: str) -> DatasetError:
            return DatasetError(f"cannot append: {message}", self.path)

        if not isinstance(images, torch.Tensor):
            raise bad(f"images must be a tensor, got {type(images).__name__}")
        if not images.is_floating_point():
            raise bad(f"images must be floats in [0, 1], got dtype {images.dtype}")
        if images.dim() != 4 or tuple(images.shape[1:]) != self._info.shape:
            raise bad(f"images have shape {tuple(images.shape)}, expected N,{','.join(map(str, self._info.shape))}")
        x = images.detach().cpu()
        n = len(x)
        if n and not bool(torch.isfinite(x).all()):
            raise bad("images contain NaN or infinite values")
        if n and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise bad(f"images must lie in [0, 1] (DESIGN rule 1); got min {float(x.min()):.4g}, "
                      f"max {float(x.max()):.4g}")
        k = self._info.num_classes
        logits = None
        if teacher_logits is not None:
            if not isinstance(teacher_logits, torch.Tensor) or not teacher_logits.is_floating_point():
                raise bad("teacher_logits must be a float tensor")
            if tuple(teacher_logits.shape) != (n, k):
                raise bad(f"teacher_logits have shape {tuple(teacher_logits.shape)}, expected ({n}, {k})")
            logits = teacher_logits.detach().cpu().to(torch.float32).contiguous()
            if n and not bool(torch.isfinite(logits).all()):
                raise bad("teacher_logits contain NaN or infinite values")
        labs = None
        if labels is not None:
            if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool \
                    or labels.is_complex():
                raise bad("labels must be an integer tensor")
            if tuple(labels.shape) != (n,):
                raise bad(f"labels have shape {tuple(labels.shape)}, expected ({n},)")
            labs = labels.detach().cpu().to(torch.int64).contiguous()
            if n and (int(labs.min()) < 0 or int(labs.max()) >= k):
                raise bad(f"labels must lie in [0, {k - 1}]")
        for key, given in (("has_logits", logits is not None), ("has_labels", labs is not None)):
            fixed = self._meta.get(key)
            if fixed is not None and fixed != given:
                what = key.split("_", 1)[1]
                raise bad(f"this set was written {'with' if fixed else 'without'} {what}; every append must agree")
        if n:
            self._meta["has_logits"], self._meta["has_labels"] = logits is not None, labs is not None
        if self.dtype == "uint8":
            q = x.to(torch.float32).mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        else:
            q = x.to(torch.float16).clamp_(0.0, 1.0)
        return q.contiguous(), logits, labs

    def _write_pending(self, count: int) -> None:
        """Write the first ``count`` buffered images as one shard, then rewrite meta.json."""
        parts = self._pending
        images = torch.cat([p[0] for p in parts])
        logits = torch.cat([p[1] for p in parts]) if self.has_logits else None  # type: ignore[misc]
        labels = torch.cat([p[2] for p in parts]) if self.has_labels else None  # type: ignore[misc]
        # .clone(): torch.save writes a view's whole storage, so a shard must own exactly its items
        shard: dict[str, torch.Tensor] = {"images": images[:count].clone()}
        if logits is not None:
            shard["teacher_logits"] = logits[:count].clone()
        if labels is not None:
            shard["labels"] = labels[:count].clone()
        rest = len(images) - count
        self._pending = [] if rest == 0 else [(
            images[count:].clone(),
            None if logits is None else logits[count:].clone(),
            None if labels is None else labels[count:].clone(),
        )]
        self._pending_count = rest

        buffer = BytesIO()
        torch.save(shard, buffer)
        data = buffer.getvalue()
        name = f"shard-{len(self._meta['shards']):05d}.pt"
        with atomic_open(self.path / name, "wb") as handle:  # the shard first, then the meta listing it
            handle.write(data)
        crash_point("transfer.shard_written")
        self._meta["shards"].append(
            {"file": name, "count": count, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        )
        self._meta["count"] = int(self._meta["count"]) + count
        self._meta["updated"] = _now()
        atomic_write_json(self.path / META_NAME, self._meta)

    # ------------------------------------------------------------------ reading

    def _check_n(self, n: int | None) -> int:
        if self._pending_count:
            raise DfkdError(f"{self._pending_count} appended images are not written yet; call flush() first",
                            self.path)
        if n is None:
            return len(self)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DatasetError(f"subset size must be a non-negative integer, got {n!r}", self.path)
        if n > len(self):
            raise DatasetError(f"asked for {n} images but the transfer set holds only {len(self)}", self.path)
        return n

    def _read_shard(self, entry: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Load one shard safely and check it holds what meta.json says."""
        shard = self.path / entry["file"]
        if not shard.is_file():
            raise DatasetError("shard missing", shard)
        from .checkpoint import load_error_reason

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = torch.load(shard, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, unsafe pickle, ...: all one line naming the file
            raise DatasetError(f"corrupt or truncated shard ({load_error_reason(exc)})", shard) from None
        count, shape = entry["count"], tuple(self._meta["shape"])
        if not isinstance(data, dict) or not isinstance(data.get("images"), torch.Tensor):
            raise DatasetError("shard is not a dict with an 'images' tensor", shard)
        images = data["images"]
        if images.dtype != DTYPES[self.dtype] or tuple(images.shape) != (count, *shape):
            raise DatasetError(f"shard images are {images.dtype} {tuple(images.shape)}, meta.json says "
                               f"{self.dtype} {(count, *shape)}", shard)
        checks = (("teacher_logits", self.has_logits, torch.float32, (count, self._info.num_classes)),
                  ("labels", self.has_labels, torch.int64, (count,)))
        for key, expected, dtype, want in checks:
            value = data.get(key)
            if not expected:
                data.pop(key, None)
                continue
            if not isinstance(value, torch.Tensor) or value.dtype != dtype or tuple(value.shape) != want:
                raise DatasetError(f"shard {key} missing or not {dtype} {want}", shard)
        return data

    # ------------------------------------------------------------------ shard-level reads (streaming)

    @property
    def image_bytes(self) -> int:
        """Bytes one image takes decoded, in the stored dtype (uint8: C*H*W; float16: twice that)."""
        c, h, w = self._info.shape
        return c * h * w * (1 if self.dtype == "uint8" else 2)

    def decoded_bytes(self, n: int | None = None) -> int:
        """Bytes the first ``n`` images (all of this view by default) take decoded in memory, as
        ``load`` holds them: the images in their stored dtype plus one int64 label each."""
        n = len(self) if n is None else n
        return int(n) * (self.image_bytes + 8)

    def shard_counts(self) -> list[int]:
        """Images in each shard of this view, in file order (a ``subset`` view cuts the last one short
        and leaves out the shards past its end). ``read_shard(i)`` reads shard ``i`` of this list."""
        counts, left = [], len(self)
        for entry in self._meta["shards"]:
            if left <= 0:
                break
            counts.append(min(int(entry["count"]), left))
            left -= counts[-1]
        return counts

    def read_shard(self, index: int, verify: bool = True) -> dict[str, torch.Tensor]:
        """Shard ``index`` of this view (cut to the view), checked again on disk first: present,
        the size meta.json records and (with ``verify``) the same sha256, so a shard removed or
        altered after ``open`` is a one-line ``DatasetError`` naming it, not different data."""
        counts = self.shard_counts()
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(counts):
            raise DatasetError(f"shard index {index!r} out of range (this view has {len(counts)} shards)", self.path)
        entry = self._meta["shards"][index]
        self._check_shard_file(self.path / entry["file"], entry, verify)
        data = self._read_shard(entry)
        if counts[index] < entry["count"]:
            data = {k: v[: counts[index]].clone() for k, v in data.items()}
        return data

    def _shards(self, n: int) -> Iterator[dict[str, torch.Tensor]]:
        """The first ``n`` items, one shard dict at a time (the last one cut short)."""
        left = n
        for entry in self._meta["shards"]:
            if left <= 0:
                return
            data = self._read_shard(entry)
            if entry["count"] > left:
                data = {k: v[:left] for k, v in data.items()}
            left -= entry["count"]
            yield data

    def _labels_of(self, data: dict[str, torch.Tensor]) -> torch.Tensor:
        if "labels" in data:
            return data["labels"]
        if "teacher_logits" in data:
            return data["teacher_logits"].argmax(dim=1)
        return torch.zeros(len(data["images"]), dtype=torch.int64)

    def load(self, n: int | None = None) -> ImageTensors:
        """The first ``n`` images (all by default) in memory, in their stored dtype (uint8 or
        float16; ``ImageTensors.as_float`` gives [0,1] floats per batch). Labels are the stored
        labels, else the teacher's argmax, else zeros."""
        n = self._check_n(n)
        images = torch.empty((n, *self._info.shape), dtype=DTYPES[self.dtype])
        labels = torch.empty(n, dtype=torch.int64)
        at = 0
        for data in self._shards(n):
            m = len(data["images"])
            images[at : at + m] = data["images"]
            labels[at : at + m] = self._labels_of(data)
            at += m
        return ImageTensors(images, labels, self._info)

    def load_logits(self, n: int | None = None) -> torch.Tensor:
        """The teacher logits (float32 n,K) of the first ``n`` images."""
        n = self._check_n(n)
        if not self.has_logits and n:
            raise DatasetError("this transfer set stores no teacher logits", self.path)
        logits = torch.empty((n, self._info.num_classes), dtype=torch.float32)
        at = 0
        for data in self._shards(n):
            m = len(data["images"])
            logits[at : at + m] = data["teacher_logits"]
            at += m
        return logits

    def subset(self, n: int) -> "TransferSet":
        """A read-only view of the first ``n`` items, for size ablations.

        Nested prefixes (subset(1000) within subset(5000) within subset(20000)) are the right
        design for a size ablation: each larger set strictly contains the smaller one, so a
        difference in student accuracy comes from the extra images alone, not from a different
        random draw of which images were kept. It is also deterministic without any seed and
        cheap: reading a prefix touches only the first shards.
        """
        n = self._check_n(n)
        return TransferSet(self.path, self._meta, limit=n, writable=False)

    def iter_batches(self, batch_size: int, as_float: bool = True, drop_last: bool = False
                     ) -> Iterator[TransferBatch]:
        """Stream the set in order, holding only one shard (plus < one batch) in memory, for sets
        larger than memory. Batches run across shard boundaries; yields the same images, labels
        and logits as ``load`` / ``load_logits``. ``as_float=False`` keeps the stored dtype."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DfkdError(f"batch_size must be a positive integer, got {batch_size!r}", self.path)
        n = self._check_n(None)
        carry: list[dict[str, torch.Tensor]] = []
        carried = 0

        def emit(parts: list[dict[str, torch.Tensor]]) -> TransferBatch:
            images = torch.cat([p["images"] for p in parts])
            labels = torch.cat([self._labels_of(p) for p in parts]).clone()
            logits = torch.cat([p["teacher_logits"] for p in parts]).clone() if self.has_logits else None
            if as_float:
                images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
            else:
                images = images.clone()
            return TransferBatch(images, labels, logits)

        for data in self._shards(n):
            m, at = len(data["images"]), 0
            if carried:
                take = min(batch_size - carried, m)
                carry.append({k: v[:take] for k, v in data.items()})
                carried += take
                at = take
                if carried == batch_size:
                    yield emit(carry)
                    carry, carried = [], 0
            while m - at >= batch_size:
                yield emit([{k: v[at : at + batch_size] for k, v in data.items()}])
                at += batch_size
            if at < m:
                carry.append({k: v[at:].clone() for k, v in data.items()})  # do not pin the shard
                carried += m - at
        if carried and not drop_last:
            yield emit(carry)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    # ------------------------------------------------------------------ preview

    def write_preview(self, path: str | os.PathLike | None = None, per_class: int = 8) -> Path:
        """Write a PNG grid (default ``preview.png`` in the set's directory): one row per class
        present (class from labels, else teacher argmax), the first ``per_class`` images of that
        class in set order, class names on the left. Each row is ``PREVIEW_CELL_PX`` pixels tall.
        A look at this grid is the quickest sanity check of a synthesizer. Returns the path."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise DfkdError(f"per_class must be a positive integer, got {per_class!r}", self.path)
        n = self._check_n(None)
        if n == 0:
            raise DatasetError("cannot preview an empty transfer set", self.path)
        k = self._info.num_classes
        picked: dict[int, list[torch.Tensor]] = {}
        for data in self._shards(n):  # stop reading once every class has its row filled
            for image, label in zip(data["images"], self._labels_of(data).tolist()):
                row = picked.setdefault(int(label), [])
                if len(row) < per_class:
                    row.append(image.float().div(255.0) if image.dtype == torch.uint8 else image.float())
            if len(picked) == k and all(len(v) >= per_class for v in picked.values()):
                break
        classes = sorted(picked)
        dpi = PREVIEW_CELL_PX  # one inch per cell: pixel sizes come out exact
        width_px = PREVIEW_LABEL_PX + per_class * PREVIEW_CELL_PX
        height_px = len(classes) * PREVIEW_CELL_PX
        fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, facecolor="white")
        FigureCanvasAgg(fig)
        names, gap = self._info.names(), 2
        for r, cls in enumerate(classes):
            bottom = 1.0 - (r + 1) / len(classes)
            label = names[cls] if self._info.class_names else f"class {cls}"
            fig.text(PREVIEW_LABEL_PX / width_px - 0.01, bottom + 0.5 / len(classes),
                     label if len(label) <= 18 else label[:17] + "…", ha="right", va="center", fontsize=9)
            for c, image in enumerate(picked[cls]):
                left = (PREVIEW_LABEL_PX + c * PREVIEW_CELL_PX + gap) / width_px  # a white gap per cell
                ax = fig.add_axes((left, bottom + gap / height_px, (PREVIEW_CELL_PX - 2 * gap) / width_px,
                                   (PREVIEW_CELL_PX - 2 * gap) / height_px))
                ax.set_axis_off()
                if image.shape[0] == 3:
                    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
                else:
                    ax.imshow(image[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        out = Path(path) if path is not None else self.path / PREVIEW_NAME
        buffer = BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi,
                    metadata={"Title": f"{self._meta['synthesizer']} transfer set ({n} images)"})
        with atomic_open(out, "wb") as handle:
            handle.write(buffer.getvalue())
        return out


def locate(path: str | os.PathLike) -> Path:
    """The set directory meant by ``path``: the set itself, or the ``transfer_set/`` inside the run
    directory of ``dfkd synthesize`` (so ``transfer:RUN`` works as well as ``transfer:RUN/transfer_set``)."""
    path = Path(path)
    if not path.exists():
        raise NotATransferSet("no such transfer set (directory not found)", path)
    if not path.is_dir():
        raise NotATransferSet("a transfer set is a directory, this is a file", path)
    for candidate in (path, path / RUN_SUBDIR):
        if (candidate / META_NAME).is_file():
            return candidate
    raise NotATransferSet(f"meta.json missing: not a transfer set, nor a `dfkd synthesize` run directory with "
                          f"{RUN_SUBDIR}/{META_NAME} (or its synthesis never started)", path)


def open_transfer_set(path: str | os.PathLike, verify: bool = True) -> TransferSet:
    """Function form of ``TransferSet.open`` (for CLI/config code that picks loaders by name)."""
    return TransferSet.open(path, verify=verify)


__all__ = ["FORMAT", "FORMAT_VERSION", "PREVIEW_CELL_PX", "RUN_SUBDIR", "TransferBatch", "TransferSet", "locate",
           "open_transfer_set"]
