"""``run_synthesis``: turn a frozen teacher into a TransferSet with a materialising synthesizer.

Runs entirely inside ``forbid_training_data()``. Each batch gets its own seed derived from the run
seed and the batch index, and the synthesizer's fitted state is saved before generation starts,
so an interrupted synthesis resumes by appending the missing batches, with the same images.

The same seeds make a set divisible among jobs: ``shard="K/N"`` (0-based K; under ``torchrun``
each rank takes ``RANK/WORLD_SIZE``) generates only the K-th contiguous range of batches into
``OUT/shards/K-of-N``, after one fit shared through ``OUT/synthesizer.pt`` (the first job fits, the
others wait for it and load it), and the last job to finish merges the parts, in order, into
``OUT/transfer_set`` -- the very images, logits and shard files a single process writes.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from .checkpoint import read_checkpoint
from .config import config_to_dict
from .data import forbid_training_data, load_dataset
from .errors import ConfigError, DivergenceError
from .faults import crash_point
from .loop import check_finite
from .io import atomic_torch_save, atomic_write_json, file_lock
from .rundir import RunDir
from .runtime import resolve_device, resolve_precision, seed_everything, set_threads
from .teacher import load_teacher
from .training import RuntimeSettings

#: ``auto``: the measured best materialising method for the teacher at hand
#: (:func:`generators.default.choose_default`: ``fast`` for BatchNorm teachers, else ``dafl``).
AUTO = "auto"
DEFAULT_METHOD = AUTO
#: seed offset between the synthesizers of a ``generators=K`` run
GENERATOR_SEED_STRIDE = 100
#: the number formats a fit can run its forward passes in (autocast); ``float32`` runs none
FIT_PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}
#: what ``fit_precision`` may say: a format, or ``auto`` (bf16 where the device computes it natively)
FIT_PRECISION_CHOICES = (*FIT_PRECISIONS, "auto")


@dataclass
class SynthesizeConfig(RuntimeSettings):
    teacher: str = ""
    teacher_arch: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    method: str = DEFAULT_METHOD
    options: dict[str, Any] = field(default_factory=dict)
    #: ``cpu`` (defaults sized for two cores) or ``paper`` (each method's published sizes; GPU)
    preset: str = "cpu"
    #: images to make; unset (None): the set size the teacher kind's default was measured with
    #: (:func:`generators.default.default_images`: 20k, 5k for BN teachers past LeNet size)
    n: int | None = None
    batch_size: int = 256
    dtype: str = "uint8"
    shard_size: int = 5120
    preview: bool = True
    #: ``K/N``: make only the K-th of N parts (0 <= K < N); "" (default): the whole set, or this
    #: rank's part under torchrun
    shard: str = ""
    #: independently fitted synthesizers sharing ``n`` equally (the j-th fitted and sampled with
    #: seed ``seed + GENERATOR_SEED_STRIDE * j``): one fitted generator covers a narrow part of
    #: what the teacher knows, several cover more at the same set size
    generators: int = 1
    #: ``bfloat16``: the synthesizer's generator networks compute in bf16 during the fit (autocast;
    #: their images come out float32, and the teacher stays float32: with the teacher in bf16 too,
    #: DAFL's fit stalled, measured). Why: a generator fit is mostly convolutions at 64 channels,
    #: which CPUs with bf16 matrix units (Intel AMX) and GPUs run several times faster in bf16.
    #: Generated images, their labels and the saved fit stay float32; the set is a different draw.
    #: ``auto``: bf16 where the device computes it natively, else float32. Unset (None): the
    #: measured default of ``method: auto``'s choice (generators/default.py), else float32.
    fit_precision: str | None = None
    #: the synthesizer's and the teacher's conv weights (and so the activations) in NHWC during the
    #: fit: oneDNN's faster layout on CPUs; numerically the same computation up to summation order.
    #: Unset (None): as ``fit_precision``'s default.
    channels_last: bool | None = None

    def validate(self) -> None:
        if not self.teacher:
            raise ConfigError("no teacher given (--teacher T.pt)")
        for name in ("n", "batch_size", "shard_size", "generators"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.shard_size % self.batch_size:
            raise ConfigError("shard_size must be a multiple of batch_size (resume restarts at a shard boundary)")
        if self.dtype not in ("uint8", "float16"):
            raise ConfigError("dtype must be uint8 or float16")
        if self.fit_precision is not None and self.fit_precision not in FIT_PRECISION_CHOICES:
            raise ConfigError(f"fit_precision must be one of {', '.join(FIT_PRECISION_CHOICES)}, "
                              f"got {self.fit_precision!r}")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise ConfigError(f"channels_last must be true or false, got {self.channels_last!r}")
        if self.shard:
            parse_shard(self.shard)
        if self.generators > 1 and self.shard:
            raise ConfigError("generators > 1 cannot be combined with shard= (each generator is its own part already)")
        if self.n is not None and self.generators > self.n:
            raise ConfigError(f"generators={self.generators} cannot share n={self.n} images")
        from generators.base import check_preset

        check_preset(self.preset)
        if self.method != AUTO:  # a misspelt method fails before the teacher is loaded
            from generators import SYNTHESIZERS

            if getattr(SYNTHESIZERS.get(self.method), "online", False):
                raise ConfigError(f"{self.method!r} is an online method: use it as "
                                  f"`dfkd distill --source online:{self.method}`")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: part 2 (0-based) of 4."""
    index, sep, count = str(text).partition("/")
    try:
        k, n = int(index), int(count)
    except ValueError:
        k, n = -1, 0
    if not sep or n < 1 or not 0 <= k < n:
        raise ConfigError(f"shard must be K/N with 0 <= K < N (e.g. 0/4), got {text!r}")
    return k, n


def shard_of(cfg: SynthesizeConfig) -> tuple[int, int]:
    """This job's part: the config's ``shard``, else this rank's under torchrun, else 0/1."""
    if cfg.shard:
        return parse_shard(cfg.shard)
    from .distributed import launched_world_size

    world = launched_world_size()
    return (int(os.environ.get("RANK", 0)), world) if world > 1 else (0, 1)


def batch_range(n: int, batch_size: int, k: int, parts: int) -> tuple[int, int, int]:
    """``(first batch, end batch, images)`` of part ``k`` of ``parts``: contiguous batch ranges,
    so parts merged in order are the single-process sequence of batches."""
    batches = -(-n // batch_size)
    first, end = k * batches // parts, (k + 1) * batches // parts
    images = max(0, min(n, end * batch_size) - first * batch_size)
    return first, end, images


def batch_seed(seed: int, index: int) -> int:
    """Independent, reproducible seed for batch ``index`` (so resumed runs redo the same batches)."""
    return (seed * 1_000_003 + index * 7_919 + 17) % (2**63 - 1)


def label_stored_pixels(teacher: Any, images: torch.Tensor, dtype: str, device: torch.device
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, teacher logits) for a generated batch, the logits taken on exactly the pixels a
    ``dtype`` transfer set will store (uint8 rounding changes the teacher's answer slightly)."""
    images = images.detach().clamp(0, 1)
    if dtype == "uint8":
        images = images.mul(255).round().div(255)
    with torch.no_grad():
        logits = teacher(images.to(device)).float().cpu()
    return images.cpu(), logits


def build_synthesizer(method: str, info: Any, options: dict[str, Any]) -> Any:
    from generators import SYNTHESIZERS

    factory = SYNTHESIZERS.get(method)
    if getattr(factory, "online", False):
        raise ConfigError(f"{method!r} is an online method: use it as `dfkd distill --source online:{method}`")
    try:
        return factory(info, **options)
    except TypeError as exc:
        raise ConfigError(f"bad options for synthesizer {method!r}: {exc}") from None


def resolve_method(cfg: SynthesizeConfig, teacher: torch.nn.Module, image_shape: tuple[int, ...] | None = None
                   ) -> tuple[str, dict[str, Any], str]:
    """``(method, options, why)``: ``auto`` picks the measured default for this teacher (and its
    size tier, given the input shape); the ``paper`` preset replaces the measured CPU options with
    the method's published sizes."""
    from generators import SYNTHESIZERS
    from generators.base import preset_options

    if cfg.method != AUTO:
        return cfg.method, preset_options(SYNTHESIZERS.get(cfg.method), cfg.preset, cfg.options), "given"
    from generators.default import choose_default

    method, options, reason = choose_default(teacher, cfg.options, image_shape)
    if cfg.preset != "cpu":
        options = preset_options(SYNTHESIZERS.get(method), cfg.preset, cfg.options)
        reason += f"; {cfg.preset} preset"
    print(f"method: {method} (auto: {reason})")
    return method, options, f"auto: {reason}"


def run_synthesis(cfg: SynthesizeConfig, out: str | Path) -> dict[str, Any]:
    """Write ``cfg.n`` synthetic images (+ teacher logits) to the transfer set in ``out``."""
    cfg.validate()
    if cfg.n is None:
        cfg = resolve_set_size(cfg)
    with forbid_training_data(f"synthesis with {cfg.method!r} is data-free", roots=[cfg.data_root]):
        if cfg.generators > 1:
            return _run_generators(cfg, RunDir(out))
        return _run(cfg, RunDir(out))


def generator_shares(n: int, k: int) -> list[int]:
    """Images per generator: equal shares, the remainder to the first ones (as a ``transfer:``
    union's ``transfer_size`` shares them out)."""
    return [n // k + (j < n % k) for j in range(k)]


def _run_generators(cfg: SynthesizeConfig, run: RunDir) -> dict[str, Any]:
    """``generators=K``: K complete synthesis runs in ``OUT/generators/j`` (each resumable on its
    own, the j-th exactly ``dfkd synthesize`` at seed ``seed + stride * j`` and its share of
    ``n``), then their sets concatenated in order into ``OUT/transfer_set``."""
    from dataclasses import replace

    made = run.path / "transfer_set" / "meta.json"
    if made.exists():  # a set made with one generator (or another K) is not this one, whatever its count
        saved = json.loads(made.read_text()).get("synthesizer_config", {})
        if (saved.get("generators", 1), saved.get("seed")) != (cfg.generators, cfg.seed):
            raise ConfigError("an existing transfer set was made with a different generators or seed; use a new --out",
                              made.parent)
        if run.results_path.exists() and run.read_results().get("count") == cfg.n:
            return run.read_results()
    run.write_config(cfg)
    members, first = [], None
    for j, share in enumerate(generator_shares(cfg.n, cfg.generators)):
        part_dir = run.path / "generators" / str(j)
        sub = replace(cfg, seed=cfg.seed + GENERATOR_SEED_STRIDE * j, n=share, generators=1, preview=False, shard="")
        results = _run(sub, RunDir(part_dir))
        atomic_write_json(part_dir / "part.json", {
            "generator": j, "seed": sub.seed, "count": results["count"], "fit_logs": results["fit_logs"],
            "fit_s": results["fit_time_s"], "generate_s": results["generate_time_s"], "cpu_s": results["cpu_time_s"]})
        members.append({"generator": j, "seed": sub.seed, "count": results["count"],
                        "set_checksum": results["set_checksum"], "fit_logs": results["fit_logs"]})
        first = first or results
    teacher = load_teacher(cfg.teacher, arch=cfg.teacher_arch, info=_teacher_info(cfg))
    config = config_to_dict(cfg)
    parts = [run.path / "generators" / str(j) for j in range(cfg.generators)]
    with file_lock(run.path / "transfer_set"):
        transfer, timings, fit_logs = _merge_parts(parts, run.path / "transfer_set", cfg, first["method"],
                                                   first["options"], teacher, config)
    preview = transfer.write_preview() if cfg.preview else None
    results = _summarise(transfer, cfg, teacher.fingerprint, timings, fit_logs, preview, first["device"])
    results.update({"options": first["options"], "method_choice": first["method_choice"],
                    "distill_recipe": first["distill_recipe"], "parts": 1, "generators": members})
    run.write_results(results)
    return results


def resolve_set_size(cfg: SynthesizeConfig) -> SynthesizeConfig:
    """``cfg`` with ``n`` set: the default's measured set size for this teacher under ``method:
    auto``, else :data:`~generators.default.DEFAULT_IMAGES`."""
    from dataclasses import replace

    from generators.default import DEFAULT_IMAGES, default_images

    n = DEFAULT_IMAGES
    if cfg.method == AUTO:
        teacher = load_teacher(cfg.teacher, arch=cfg.teacher_arch, info=_teacher_info(cfg))
        n = default_images(teacher.model, teacher.info.shape)
    resolved = replace(cfg, n=n)
    resolved.validate()
    return resolved


def _teacher_info(cfg: SynthesizeConfig) -> Any:
    """The dataset description a bare-architecture teacher needs (None for a dfkd checkpoint)."""
    if cfg.teacher_arch is None:
        return None
    if not cfg.dataset:
        raise ConfigError("teacher_arch needs dataset= to describe the teacher's inputs")
    return load_dataset(cfg.dataset, "test", cfg.data_root).info


def _run(cfg: SynthesizeConfig, run: RunDir) -> dict[str, Any]:
    from .transfer_set import TransferSet

    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    teacher = load_teacher(cfg.teacher, arch=cfg.teacher_arch, info=_teacher_info(cfg)).to(device)
    method, options, choice = resolve_method(cfg, teacher.model, teacher.info.shape)
    synthesizer = build_synthesizer(method, teacher.info, options)
    numerics = resolve_fit_numerics(cfg, teacher.model, synthesizer, method, device, teacher.info.shape)
    set_path = run.path / "transfer_set"
    state_path = run.path / "synthesizer.pt"
    config = config_to_dict(cfg)
    k, parts = shard_of(cfg)
    timings = {"fit_s": 0.0, "generate_s": 0.0, "cpu_s": 0.0}
    if parts == 1 and run.results_path.exists():  # a resumed run adds to the time already spent
        earlier = run.read_results()
        timings = {"fit_s": earlier.get("fit_time_s", 0.0), "generate_s": earlier.get("generate_time_s", 0.0),
                   "cpu_s": earlier.get("cpu_time_s", 0.0)}
    cpu_began = time.process_time()
    part_path = run.path / "shards" / f"{k}-of-{parts}" if parts > 1 else run.path
    first, _, count = batch_range(cfg.n, cfg.batch_size, k, parts)
    part_cfg = {**config, "shard": "", "n": count}  # a part's meta describes its own images
    transfer = _open_or_create(part_path / "transfer_set", cfg, method, options, teacher, part_cfg, run, count)
    synthesizer, fit_logs, fit_s = _fitted(synthesizer, state_path, teacher, cfg, method, device, numerics)
    timings["fit_s"] += fit_s
    if fit_s:  # provenance: what the fit ran in (``auto`` depends on the hardware)
        transfer.record("fit_numerics", {"precision": numerics.precision, "channels_last": numerics.channels_last})

    if hasattr(synthesizer, "describe"):  # e.g. the diffusion prior's fingerprint and what it was trained on
        transfer.record("synthesizer_provenance", synthesizer.describe())
    began = time.perf_counter()
    _generate(transfer, synthesizer, teacher, cfg, method, device, first, count)
    timings["generate_s"] += time.perf_counter() - began
    timings["cpu_s"] += time.process_time() - cpu_began
    if parts > 1:
        atomic_write_json(part_path / "part.json", {"shard": f"{k}/{parts}", "count": len(transfer),
                                                    "fit_logs": fit_logs, **timings})
        done = [run.path / "shards" / f"{i}-of-{parts}" for i in range(parts)]
        if not cfg.shard:  # ranks of one torchrun job: rank 0 waits for the others and merges
            if k != 0:
                return {"kind": "synthesis-part", "shard": f"{k}/{parts}", "count": len(transfer),
                        "path": str(part_path)}
            while not all((p / "part.json").is_file() for p in done):
                time.sleep(1.0)
        with file_lock(run.path / "transfer_set"):  # else the last part to finish merges them all
            if not all((p / "part.json").is_file() for p in done):
                print(f"part {k}/{parts} done ({len(transfer)} images); the last part to finish merges")
                return {"kind": "synthesis-part", "shard": f"{k}/{parts}", "count": len(transfer),
                        "path": str(part_path)}
            if run.results_path.exists() and run.read_results().get("count") == cfg.n:
                return run.read_results()  # merged already (a part run again after the merge)
            transfer, timings, fit_logs = _merge_parts(done, set_path, cfg, method, options, teacher, config)
    preview = transfer.write_preview() if cfg.preview else None
    results = _summarise(transfer, cfg, teacher.fingerprint, timings, fit_logs, preview, device)
    from generators.default import distill_recipe

    results.update({"options": options, "method_choice": choice, "distill_recipe": distill_recipe(teacher.model, teacher.info.shape, method),
                    "parts": parts, "fit_precision": numerics.precision, "channels_last": numerics.channels_last})
    run.write_results(results)
    return results


def _open_or_create(path: Path, cfg: SynthesizeConfig, method: str, options: dict[str, Any], teacher: Any,
                    config: dict[str, Any], run: RunDir, count: int) -> Any:
    """The set (or part) to write into: resumed when it exists and was made the same way."""
    from .transfer_set import TransferSet

    if (path / "meta.json").exists():
        transfer = TransferSet.open(path)
        _check_resumable(transfer.meta, cfg, method, options, teacher.fingerprint, path)
        print(f"resuming: {len(transfer)} of {count} images already written")
        return transfer
    if path.parent == run.path:
        run.write_config(cfg)
    return TransferSet.create(path, teacher.info, method, {**config, "resolved_options": options},
                              teacher.fingerprint, cfg.seed, dtype=cfg.dtype, shard_size=cfg.shard_size)


@dataclass(frozen=True)
class FitNumerics:
    """The fit's resolved number format and layout (what ``results.json`` records)."""

    precision: str = "float32"
    channels_last: bool = False


def resolve_fit_numerics(cfg: SynthesizeConfig, teacher: torch.nn.Module, synthesizer: torch.nn.Module,
                         method: str, device: torch.device, image_shape: tuple[int, ...] | None = None
                         ) -> FitNumerics:
    """Unset fields take ``method: auto``'s measured defaults; ``auto`` precision becomes bf16 on
    hardware that computes it natively and where the method fits a generator network. An explicit
    bf16 for a method without one is refused before anything is written."""
    from generators.default import default_fit
    from generators.networks import DCGANGenerator

    measured = default_fit(teacher, image_shape) if cfg.method == AUTO else {}
    precision = cfg.fit_precision or measured.get("fit_precision", "float32")
    channels_last = cfg.channels_last if cfg.channels_last is not None else measured.get("channels_last", False)
    has_network = any(isinstance(m, DCGANGenerator) for m in synthesizer.modules())
    if precision == "bfloat16" and not has_network:
        raise ConfigError(f"fit_precision=bfloat16 applies to generator networks, and {method} "
                          "fits none: leave it at float32")
    if precision == "auto":
        precision = resolve_precision(precision, device) if has_network else "float32"
    return FitNumerics(precision, bool(channels_last))


@contextmanager
def fit_numerics(numerics: FitNumerics, synthesizer: torch.nn.Module, teacher: torch.nn.Module) -> Iterator[None]:
    """The fit's number format and memory layout; everything gets its defaults back afterwards, so
    what is saved and generated is laid out as always."""
    from generators.networks import DCGANGenerator

    dtype = FIT_PRECISIONS[numerics.precision]
    networks = [m for m in synthesizer.modules() if isinstance(m, DCGANGenerator)] if dtype is not None else []
    modules = [synthesizer, teacher] if numerics.channels_last else []
    for module in modules:
        module.to(memory_format=torch.channels_last)
    for network in networks:
        network.compute_dtype = dtype
    try:
        yield
    finally:
        for network in networks:
            network.compute_dtype = None
        for module in modules:
            module.to(memory_format=torch.contiguous_format)


def _fitted(synthesizer: Any, state_path: Path, teacher: Any, cfg: SynthesizeConfig, method: str,
            device: torch.device, numerics: FitNumerics) -> tuple[Any, dict[str, float], float]:
    """Fit once per output directory: a saved fit is loaded (a resumed run, or another part's)."""
    with file_lock(state_path):
        if state_path.exists():
            synthesizer.load_state_dict(read_checkpoint(state_path))
            synthesizer.to(device)
            return synthesizer, {}, 0.0
        began = time.perf_counter()
        with fit_numerics(numerics, synthesizer, teacher.model):
            fit_logs = synthesizer.fit(teacher.model, torch.Generator().manual_seed(batch_seed(cfg.seed, -1)), device)
        check_finite(fit_logs, f"fitting {method}")
        crash_point("synthesis.fitted")
        atomic_torch_save(synthesizer.state_dict(), state_path)
        fit_s = time.perf_counter() - began
        print(f"fitted {method} in {fit_s:.0f}s " + " ".join(f"{k}={v:.4g}" for k, v in fit_logs.items()))
        return synthesizer, fit_logs, fit_s


def _generate(transfer: Any, synthesizer: Any, teacher: Any, cfg: SynthesizeConfig, method: str,
              device: torch.device, first: int, count: int) -> None:
    """Append batches ``first, first + 1, ...`` (each from its own seed) until ``count`` images."""
    if len(transfer) < count and len(transfer) % cfg.batch_size:
        raise ConfigError("the transfer set holds a partial batch; it was not written by this runner", transfer.path)
    index = first + len(transfer) // cfg.batch_size
    began = time.perf_counter()
    while len(transfer) + transfer.pending < count:
        size = min(cfg.batch_size, count - len(transfer) - transfer.pending)
        generator = torch.Generator().manual_seed(batch_seed(cfg.seed, index))
        generated = synthesizer.generate(teacher.model, size, generator, device)
        if not torch.isfinite(generated).all():
            raise DivergenceError(f"{method} generated NaN or Inf pixels in batch {index}; the set keeps its "
                                  f"{len(transfer)} earlier images")
        images, logits = label_stored_pixels(teacher, generated, cfg.dtype, device)
        transfer.append(images, logits, None)  # full shards reach the disk as they fill
        crash_point("synthesis.batch")
        index += 1
        written = len(transfer) + transfer.pending
        print(f"{written}/{count} images ({time.perf_counter() - began:.0f}s)", flush=True)
    transfer.flush()


def _merge_parts(parts: list[Path], set_path: Path, cfg: SynthesizeConfig, method: str, options: dict[str, Any],
                 teacher: Any, config: dict[str, Any]) -> tuple[Any, dict[str, float], dict[str, float]]:
    """The parts' images and logits, in part order, into one set (rewritten from scratch, so a
    merge interrupted half-way is simply redone); the parts' summed timings and the fit's logs."""
    import shutil

    from .transfer_set import TransferSet

    records = [json.loads((p / "part.json").read_text()) for p in parts]
    if set_path.exists():
        shutil.rmtree(set_path)
    merged = TransferSet.create(set_path, teacher.info, method, {**config, "shard": "", "resolved_options": options},
                                teacher.fingerprint, cfg.seed, dtype=cfg.dtype, shard_size=cfg.shard_size)
    for part in parts:
        piece = TransferSet.open(part / "transfer_set")
        for index in range(len(piece.shard_counts())):
            data = piece.read_shard(index)
            merged.append(piece_images(piece, data), data.get("teacher_logits"), None)
        if piece.meta.get("synthesizer_provenance") is not None:
            merged.record("synthesizer_provenance", piece.meta["synthesizer_provenance"])
    merged.flush()
    timings = {key: sum(r[key] for r in records) for key in ("fit_s", "generate_s", "cpu_s")}
    fit_logs = next((r["fit_logs"] for r in records if r["fit_logs"]), {})
    print(f"merged {len(parts)} parts into {set_path} ({len(merged)} images)")
    return merged, timings, fit_logs


def piece_images(piece: Any, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """A stored shard's images as the [0, 1] floats ``append`` takes (exact for uint8 and fp16)."""
    images = data["images"]
    return images.float().div(255) if images.dtype == torch.uint8 else images.float()


def _check_resumable(meta: dict[str, Any], cfg: SynthesizeConfig, method: str, options: dict[str, Any],
                     fingerprint: str, path: Path) -> None:
    """Refuse to add to a set whose images came from another synthesizer, options, seed or teacher.

    Compared is what determines the images -- the *resolved* method and options -- not how they
    were spelt: ``auto`` and the method it resolves to match, and a set made under an earlier
    default is not silently continued after that default changed.
    """
    saved = meta.get("synthesizer_config", {})
    current = config_to_dict(cfg)
    changed = [k for k in ("batch_size", "dtype", "seed") if saved.get(k) != current.get(k)]
    if saved.get("generators", 1) != current.get("generators", 1):  # sets from before the field: one
        changed.append("generators")
    for name in ("fit_precision", "channels_last"):  # as asked (the fit itself is saved and reloaded)
        if saved.get(name) != current.get(name):
            changed.append(name)
    if meta.get("synthesizer") != method:
        changed.append("method")
    if saved.get("resolved_options", saved.get("options")) != options:
        changed.append("options")
    if changed or meta.get("teacher_fingerprint") != fingerprint:
        what = ", ".join(changed) or "teacher"
        raise ConfigError(f"an existing transfer set was made with a different {what}; use a new --out", path)


def _summarise(transfer: Any, cfg: SynthesizeConfig, fingerprint: str, timings: dict[str, float],
               fit_logs: dict[str, float], preview: Any, device: torch.device | str) -> dict[str, Any]:
    """Diagnostics a user checks before distilling: class balance and teacher confidence."""
    logits = transfer.load_logits()
    probs = logits.softmax(1)
    counts = torch.bincount(probs.argmax(1), minlength=transfer.info.num_classes).float()
    share = counts / counts.sum()
    entropy = -(share[share > 0] * share[share > 0].log()).sum().item()
    return {
        "kind": "synthesis",
        "method": transfer.meta["synthesizer"],
        "count": len(transfer),
        "path": str(transfer.path),
        "teacher_fingerprint": fingerprint,
        "set_checksum": transfer.checksum(),
        "written_under_guard": transfer.provenance()["written_under_guard"],
        "seed": cfg.seed,
        "class_counts": dict(zip(transfer.info.names(), counts.int().tolist())),
        "class_balance_entropy_ratio": entropy / torch.log(torch.tensor(float(transfer.info.num_classes))).item(),
        "mean_teacher_confidence": probs.max(1).values.mean().item(),
        "fit_logs": fit_logs,
        "fit_time_s": timings["fit_s"],
        "generate_time_s": timings["generate_s"],
        "images_per_s": len(transfer) / timings["generate_s"] if timings["generate_s"] > 0 else None,
        "synthesizer_provenance": transfer.meta.get("synthesizer_provenance"),
        "cpu_time_s": timings["cpu_s"],
        "preview": str(preview) if preview else None,
        "device": str(device),
    }
