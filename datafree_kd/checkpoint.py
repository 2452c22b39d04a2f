"""Model checkpoints that describe themselves (DESIGN rules 6 and 9).

A checkpoint is a plain dict saved with ``torch.save`` and read back with ``weights_only=True``:
the architecture name and arguments, the DatasetInfo, the resolved config and a fingerprint of the
weights travel with the state_dict, so loading never needs the original command line.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .data.info import DatasetInfo
from .errors import CheckpointError, ConfigError, DfkdError
from .io import atomic_torch_save

FORMAT = "datafree_kd.model"
FORMAT_VERSION = 1

#: Bounds a model description must meet before anything is built from it: a checkpoint's embedded
#: spec is untrusted input, and ``num_classes=10**9`` would otherwise allocate a 10**9-row layer.
MAX_CLASSES = 100_000
MAX_CHANNELS = 64
MAX_IMAGE_SIZE = 1024
#: refused above this many parameters (4 GB of float32), counted on the meta device before the
#: real build, so sizes within the bounds above that still blow up (LeNet at 1024 px) allocate nothing
MAX_PARAMETERS = 1_000_000_000
#: ``torchscript:FILE`` opts a model path in to TorchScript loading (``load_model(torchscript=True)``)
TORCHSCRIPT_PREFIX = "torchscript:"


@dataclass(frozen=True)
class ModelSpec:
    """Everything ``create_model`` needs to rebuild an architecture."""

    arch: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_dataset(cls, arch: str, info: DatasetInfo, **kwargs: Any) -> "ModelSpec":
        return cls(arch, info.num_classes, info.in_channels, info.image_size, info.mean, info.std, kwargs)

    def check(self) -> "ModelSpec":
        """Refuse an unknown architecture or absurd sizes (ConfigError) before anything is built."""
        from .models import MODELS

        if self.arch not in MODELS:
            MODELS.get(self.arch)  # raises, listing the known models
        bounds = (("num_classes", 1, MAX_CLASSES), ("in_channels", 1, MAX_CHANNELS),
                  ("image_size", 1, MAX_IMAGE_SIZE))
        for name, low, high in bounds:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"model {name} must be an integer in [{low}, {high}], got {value!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != self.in_channels or not all(math.isfinite(v) for v in values):
                raise ConfigError(f"model {name} needs {self.in_channels} finite value(s), got {list(values)}")
        if not all(v > 0 for v in self.std):
            raise ConfigError(f"model std must be positive, got {list(self.std)}")
        if not isinstance(self.kwargs, dict) or not all(isinstance(k, str) for k in self.kwargs):
            raise ConfigError(f"model kwargs must be a mapping of names, got {self.kwargs!r}")
        return self

    def _create(self) -> nn.Module:
        from .models import create_model

        return create_model(
            self.arch, self.num_classes, self.in_channels, self.image_size,
            mean=self.mean, std=self.std, **self.kwargs,
        )

    def build(self) -> nn.Module:
        """The model, once :meth:`check` passed and a parameter count on the meta device (no
        memory) stays under ``MAX_PARAMETERS``; a factory refusing its arguments is a ConfigError."""
        self.check()
        what = f"arch {self.arch!r} for {self.num_classes} classes of {self.in_channels}x{self.image_size}px images"
        try:
            with torch.device("meta"):
                count = sum(p.numel() for p in self._create().parameters())
        except DfkdError:
            raise
        except Exception:  # noqa: BLE001 - a factory the meta device cannot run: the real build decides
            count = 0
        if count > MAX_PARAMETERS:
            raise ConfigError(f"{what} would have {count:,} parameters (more than {MAX_PARAMETERS:,})")
        try:
            return self._create()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot build {what} ({_first_line(exc)})") from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        return cls(
            arch=str(d["arch"]), num_classes=int(d["num_classes"]),
            in_channels=int(d["in_channels"]), image_size=int(d["image_size"]),
            mean=tuple(float(x) for x in d["mean"]), std=tuple(float(x) for x in d["std"]),
            kwargs=dict(d.get("kwargs", {})),
        )


def fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """A short SHA-256 of names, dtypes, shapes and bytes: identifies a teacher across files."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous().reshape(-1)
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def save_model(
    path: str | os.PathLike,
    model: nn.Module,
    spec: ModelSpec,
    info: DatasetInfo,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write a self-describing checkpoint atomically; return the weight fingerprint."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    fp = fingerprint(state)
    atomic_torch_save(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "datafree_kd_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": spec.to_dict(),
            "dataset_info": info.to_dict(),
            "config": config or {},
            "extra": extra or {},
            "fingerprint": fp,
            "state_dict": state,
        },
        path,
    )
    return fp


@dataclass
class LoadedModel:
    """A model with its provenance; calling it runs the model."""

    model: nn.Module
    info: DatasetInfo
    spec: ModelSpec | None
    fingerprint: str
    config: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def to(self, device: torch.device | str) -> "LoadedModel":
        self.model.to(device)
        return self


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors naming the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError("file not found", path)
    if not path.is_file():
        raise CheckpointError("not a file", path)
    try:
        with warnings.catch_warnings():  # torch's advice about odd pickles would be more stderr lines
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        raise CheckpointError(f"corrupt or truncated checkpoint ({_first_line(exc)})", path) from None
    except Exception as exc:  # pickle.UnpicklingError from the weights-only unpickler, among others
        raise CheckpointError(f"unreadable or unsafe checkpoint ({load_error_reason(exc)})", path) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def load_error_reason(exc: BaseException) -> str:
    """What a refused ``torch.load(weights_only=True)`` found, in a few words: torch's own message
    is a page of advice (including re-running with ``weights_only=False``, which we never do);
    its ``WeightsUnpickler error:`` part is the reason."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker not in text:
        return _first_line(exc)
    rest = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
    reason = rest[0] if rest else "refused"
    if reason.startswith("Unsupported global: GLOBAL "):
        name = reason[len("Unsupported global: GLOBAL "):].split()[0]
        return f"it names the Python object {name}, which a weights-only load refuses: the file could run code"
    return f"not a weights-only checkpoint: {reason}"[:200]


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], arch: str, path: Path) -> None:
    """``load_state_dict(strict=True)`` whose mismatch error is one readable line."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            k = shapes[0]
            parts.append(f"shape of {k} is {tuple(state[k].shape)}, expected {tuple(own[k].shape)}")
        if missing:
            parts.append(f"{len(missing)} missing key(s) e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[0]}")
        raise CheckpointError(f"weights do not fit arch {arch!r}: " + "; ".join(parts), path)
    model.load_state_dict(state, strict=True)


def is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def split_model_path(path: str | os.PathLike) -> tuple[Path, bool]:
    """``(file, torchscript)``: ``torchscript:FILE`` is the opt-in to loading a TorchScript file."""
    text = os.fspath(path)
    if text.startswith(TORCHSCRIPT_PREFIX):
        return Path(text[len(TORCHSCRIPT_PREFIX):]), True
    return Path(text), False


def load_model(
    path: str | os.PathLike,
    arch: str | None = None,
    info: DatasetInfo | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    verify: bool = True,
    torchscript: bool = False,
) -> LoadedModel:
    """Load a model checkpoint, a bring-your-own ``state_dict`` (+ ``arch`` and ``info``) or a
    TorchScript file (+ ``info``). The model comes back in eval mode on the CPU.

    Checkpoints and state_dicts load with ``weights_only=True`` (no code runs). A TorchScript
    file carries code of its own, so it is loaded only when asked for: ``torchscript=True`` or a
    path spelt ``torchscript:FILE`` (what the CLI passes on); otherwise it is refused.
    """
    path, prefixed = split_model_path(path)
    torchscript = torchscript or prefixed
    if torchscript:
        if not path.is_file():
            raise CheckpointError("file not found" if not path.exists() else "not a file", path)
        if not is_torchscript(path):
            raise CheckpointError("not a TorchScript file (TorchScript loading was asked for)", path)
        return _load_torchscript(path, info)
    if path.is_file() and is_torchscript(path):
        raise CheckpointError(f"a TorchScript file, which runs code of its own: it is loaded only on request, "
                              f"as {TORCHSCRIPT_PREFIX}{path} (dfkd evaluate: --torchscript)", path)
    data = read_checkpoint(path)
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return _load_own(path, data, verify)
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return _load_plain_state_dict(path, data, arch, info, arch_kwargs or {})
    raise CheckpointError("not a datafree_kd checkpoint, a state_dict or a TorchScript file", path)


def _load_own(path: Path, data: dict[str, Any], verify: bool) -> LoadedModel:
    try:
        spec = ModelSpec.from_dict(data["model"])
        info = DatasetInfo.from_dict(data["dataset_info"])
        state = data["state_dict"]
        recorded = str(data["fingerprint"])
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint metadata is incomplete ({_first_line(exc)})", path) from None
    try:  # the embedded description is untrusted: bounds first, nothing is built before they hold
        spec.check()
    except DfkdError as exc:
        raise CheckpointError(f"bad model description: {exc}", path) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("state_dict is not a mapping of tensors", path)
    if spec.num_classes != info.num_classes:
        raise CheckpointError(
            f"model has {spec.num_classes} classes but its dataset info says {info.num_classes}", path
        )
    if (spec.in_channels, spec.image_size) != (info.in_channels, info.image_size):
        raise CheckpointError(f"model takes {spec.in_channels}x{spec.image_size}px images but its dataset info "
                              f"says {info.in_channels}x{info.image_size}px", path)
    try:
        model = spec.build()
    except DfkdError as exc:
        raise CheckpointError(f"cannot rebuild the model: {exc}", path) from None
    load_state_into(model, state, spec.arch, path)
    fp = fingerprint(state)
    if verify and fp != recorded:
        raise CheckpointError(
            f"weights fingerprint {fp} does not match the recorded {recorded} (file altered?)", path
        )
    model.eval()
    return LoadedModel(model, info, spec, fp, dict(data.get("config", {})), str(path))


def _load_plain_state_dict(
    path: Path, state: dict[str, torch.Tensor], arch: str | None, info: DatasetInfo | None,
    arch_kwargs: dict[str, Any],
) -> LoadedModel:
    if arch is None or info is None:
        raise CheckpointError(
            "a plain state_dict: give its architecture (--arch) and dataset to load it", path
        )
    spec = ModelSpec.for_dataset(arch, info, **arch_kwargs)
    try:
        model = spec.build()
    except DfkdError as exc:
        raise CheckpointError(f"cannot build arch {arch!r}: {exc}", path) from None
    if any(k.startswith("normalize.") for k in state):
        load_state_into(model, state, arch, path)
    else:  # the raw network's weights; normalisation comes from the dataset statistics
        load_state_into(model.net, state, arch, path)
    model.eval()
    return LoadedModel(model, info, spec, fingerprint(model.state_dict()), {}, str(path))


def _load_torchscript(path: Path, info: DatasetInfo | None) -> LoadedModel:
    if info is None:
        raise CheckpointError("a TorchScript model: give its dataset to load it", path)
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch.jit raises a variety of runtime errors for bad archives
        raise CheckpointError(f"unreadable TorchScript file ({_first_line(exc)})", path) from None
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *info.shape))
    except Exception as exc:  # the scripted graph decides what it raises
        raise CheckpointError(f"TorchScript model fails on {info.shape} inputs ({_first_line(exc)})", path) from None
    if not isinstance(out, torch.Tensor) or out.shape != (1, info.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckpointError(f"TorchScript model returns {shape}, expected (1, {info.num_classes}) logits", path)
    return LoadedModel(model, info, None, fingerprint(model.state_dict()), {}, str(path))


def check_compatible(loaded: LoadedModel, info: DatasetInfo) -> None:
    """Refuse a model whose classes, channels or image size do not match a dataset."""
    got, want = loaded.info, info
    problems = []
    if got.num_classes != want.num_classes:
        problems.append(f"model has {got.num_classes} classes but {want.name!r} has {want.num_classes}")
    if got.in_channels != want.in_channels:
        problems.append(f"model takes {got.in_channels} channel(s), {want.name!r} has {want.in_channels}")
    if got.image_size != want.image_size:
        problems.append(f"model takes {got.image_size}px images, {want.name!r} has {want.image_size}px")
    if problems:
        raise CheckpointError("; ".join(problems), loaded.path or None)
