"""``run_synthesis``: turn a frozen teacher into a TransferSet with a materialising synthesizer.

Runs entirely inside ``forbid_training_data()``. Each batch gets its own seed derived from the run
seed and the batch index, and the synthesizer's fitted state is saved before generation starts,
so an interrupted synthesis resumes by appending the missing batches, with the same images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import read_checkpoint
from .config import config_to_dict
from .data import forbid_training_data, load_dataset
from .errors import ConfigError, DivergenceError
from .faults import crash_point
from .loop import check_finite
from .io import atomic_torch_save
from .rundir import RunDir
from .runtime import resolve_device, seed_everything, set_threads
from .teacher import load_teacher
from .training import RuntimeSettings

#: ``auto``: the measured best materialising method for the teacher at hand
#: (:func:`generators.default.choose_default`: ``fast`` for BatchNorm teachers, else ``dafl``).
AUTO = "auto"
DEFAULT_METHOD = AUTO


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
    n: int = 20000
    batch_size: int = 256
    dtype: str = "uint8"
    shard_size: int = 5120
    preview: bool = True

    def validate(self) -> None:
        if not self.teacher:
            raise ConfigError("no teacher given (--teacher T.pt)")
        for name in ("n", "batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.shard_size % self.batch_size:
            raise ConfigError("shard_size must be a multiple of batch_size (resume restarts at a shard boundary)")
        if self.dtype not in ("uint8", "float16"):
            raise ConfigError("dtype must be uint8 or float16")
        from generators.base import check_preset

        check_preset(self.preset)
        if self.method != AUTO:  # a misspelt method fails before the teacher is loaded
            from generators import SYNTHESIZERS

            if getattr(SYNTHESIZERS.get(self.method), "online", False):
                raise ConfigError(f"{self.method!r} is an online method: use it as "
                                  f"`dfkd distill --source online:{self.method}`")


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


def resolve_method(cfg: SynthesizeConfig, teacher: torch.nn.Module) -> tuple[str, dict[str, Any], str]:
    """``(method, options, why)``: ``auto`` picks the measured default for this teacher; the
    ``paper`` preset replaces the measured CPU options with the method's published sizes."""
    from generators import SYNTHESIZERS
    from generators.base import preset_options

    if cfg.method != AUTO:
        return cfg.method, preset_options(SYNTHESIZERS.get(cfg.method), cfg.preset, cfg.options), "given"
    from generators.default import choose_default

    method, options, reason = choose_default(teacher, cfg.options)
    if cfg.preset != "cpu":
        options = preset_options(SYNTHESIZERS.get(method), cfg.preset, cfg.options)
        reason += f"; {cfg.preset} preset"
    print(f"method: {method} (auto: {reason})")
    return method, options, f"auto: {reason}"


def run_synthesis(cfg: SynthesizeConfig, out: str | Path) -> dict[str, Any]:
    """Write ``cfg.n`` synthetic images (+ teacher logits) to the transfer set in ``out``."""
    cfg.validate()
    with forbid_training_data(f"synthesis with {cfg.method!r} is data-free", roots=[cfg.data_root]):
        return _run(cfg, RunDir(out))


def _run(cfg: SynthesizeConfig, run: RunDir) -> dict[str, Any]:
    from .transfer_set import TransferSet

    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    info = None
    if cfg.teacher_arch is not None:
        if not cfg.dataset:
            raise ConfigError("teacher_arch needs dataset= to describe the teacher's inputs")
        info = load_dataset(cfg.dataset, "test", cfg.data_root).info
    teacher = load_teacher(cfg.teacher, arch=cfg.teacher_arch, info=info).to(device)
    method, options, choice = resolve_method(cfg, teacher.model)
    synthesizer = build_synthesizer(method, teacher.info, options)
    set_path = run.path / "transfer_set"
    state_path = run.path / "synthesizer.pt"
    config = config_to_dict(cfg)
    timings = {"fit_s": 0.0, "generate_s": 0.0, "cpu_s": 0.0}
    if run.results_path.exists():  # a resumed run adds to the time already spent
        earlier = run.read_results()
        timings = {"fit_s": earlier.get("fit_time_s", 0.0), "generate_s": earlier.get("generate_time_s", 0.0),
                   "cpu_s": earlier.get("cpu_time_s", 0.0)}
    cpu_began = time.process_time()

    if (set_path / "meta.json").exists():
        transfer = TransferSet.open(set_path)
        _check_resumable(transfer.meta, cfg, method, options, teacher.fingerprint, set_path)
        print(f"resuming: {len(transfer)} of {cfg.n} images already written")
    else:
        run.write_config(cfg)
        transfer = TransferSet.create(set_path, teacher.info, method, {**config, "resolved_options": options},
                                      teacher.fingerprint, cfg.seed, dtype=cfg.dtype, shard_size=cfg.shard_size)
    fit_logs: dict[str, float] = {}
    if state_path.exists():
        synthesizer.load_state_dict(read_checkpoint(state_path))
        synthesizer.to(device)
    else:
        began = time.perf_counter()
        fit_logs = synthesizer.fit(teacher.model, torch.Generator().manual_seed(batch_seed(cfg.seed, -1)), device)
        check_finite(fit_logs, f"fitting {method}")
        crash_point("synthesis.fitted")
        timings["fit_s"] += time.perf_counter() - began
        atomic_torch_save(synthesizer.state_dict(), state_path)
        print(f"fitted {method} in {timings['fit_s']:.0f}s " + " ".join(f"{k}={v:.4g}" for k, v in fit_logs.items()))

    if hasattr(synthesizer, "describe"):  # e.g. the diffusion prior's fingerprint and what it was trained on
        transfer.record("synthesizer_provenance", synthesizer.describe())
    began = time.perf_counter()
    index = len(transfer) // cfg.batch_size
    if len(transfer) < cfg.n and len(transfer) % cfg.batch_size:
        raise ConfigError("the transfer set holds a partial batch; it was not written by this runner", set_path)
    while len(transfer) + transfer.pending < cfg.n:
        size = min(cfg.batch_size, cfg.n - len(transfer) - transfer.pending)
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
        print(f"{written}/{cfg.n} images ({time.perf_counter() - began:.0f}s)", flush=True)
    transfer.flush()
    timings["generate_s"] += time.perf_counter() - began
    timings["cpu_s"] += time.process_time() - cpu_began
    preview = transfer.write_preview() if cfg.preview else None
    results = _summarise(transfer, cfg, teacher.fingerprint, timings, fit_logs, preview, device)
    from generators.default import distill_recipe

    results.update({"options": options, "method_choice": choice, "distill_recipe": distill_recipe(teacher.model)})
    run.write_results(results)
    return results


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
    if meta.get("synthesizer") != method:
        changed.append("method")
    if saved.get("resolved_options", saved.get("options")) != options:
        changed.append("options")
    if changed or meta.get("teacher_fingerprint") != fingerprint:
        what = ", ".join(changed) or "teacher"
        raise ConfigError(f"an existing transfer set was made with a different {what}; use a new --out", path)


def _summarise(transfer: Any, cfg: SynthesizeConfig, fingerprint: str, timings: dict[str, float],
               fit_logs: dict[str, float], preview: Any, device: torch.device) -> dict[str, Any]:
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
