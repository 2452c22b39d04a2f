"""Stages that produce a model: ``teacher`` (supervised training) and ``checkpoint`` (an existing file)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import TORCHSCRIPT_PREFIX, load_model, split_model_path
from ..config import config_from_dict, merge
from ..errors import ConfigError
from ..rundir import RunDir
from ..teacher_training import TeacherTrainConfig, recipe_layer, train_teacher
from .base import Stage, register_stage


@register_stage("teacher")
class TeacherStage(Stage):
    """Train a teacher on real data (``dfkd teacher train``): the one stage that reads ``train``."""

    config_cls = TeacherTrainConfig
    smoke = {"epochs": 1, "warmup_epochs": 0, "latency_runs": 0}

    def build_config(self, config: dict[str, Any], inputs: dict[str, Any], name: str) -> TeacherTrainConfig:
        return config_from_dict(TeacherTrainConfig, merge(recipe_layer(config), config))

    def run(self, cfg: TeacherTrainConfig, out: Path, resume: bool) -> dict[str, Any]:
        return train_teacher(cfg, out, resume=resume)

    def outputs(self, out: Path, results: dict[str, Any]) -> tuple[dict[str, str], str]:
        return {"model": str(out / "model.pt")}, results["fingerprint"]

    def command(self, cfg: Any, out: Path) -> str:
        return f"dfkd teacher train --config {out}/config.yaml --out {out}"


@dataclass
class CheckpointConfig:
    """An existing model file: ``path`` (a ``model.pt``; with ``arch`` and ``dataset`` a plain state_dict;
    ``torchscript:FILE`` for a TorchScript file, which is loaded only when spelt so)."""

    path: str = ""
    arch: str | None = None
    dataset: str | None = None
    data_root: str | None = None

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("a checkpoint stage needs path: MODEL.pt")
        if not split_model_path(self.path)[0].is_file():
            raise ConfigError("checkpoint not found", split_model_path(self.path)[0])


@register_stage("checkpoint")
class CheckpointStage(Stage):
    """Reuse a trained model instead of training one; keyed on the file's bytes, so replacing the
    file re-runs everything downstream."""

    config_cls = CheckpointConfig

    def content_key(self, cfg: CheckpointConfig) -> str:
        digest = hashlib.sha256()
        with open(split_model_path(cfg.path)[0], "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def run(self, cfg: CheckpointConfig, out: Path, resume: bool) -> dict[str, Any]:
        info = None
        if cfg.arch is not None:
            if not cfg.dataset:
                raise ConfigError("a plain state_dict checkpoint needs dataset= to describe its inputs")
            from ..data import dataset_info

            info = dataset_info(cfg.dataset, cfg.data_root)
        loaded = load_model(cfg.path, arch=cfg.arch, info=info)
        run = RunDir(out)
        run.write_config(cfg)
        file, torchscript = split_model_path(cfg.path)
        path = f"{TORCHSCRIPT_PREFIX if torchscript else ''}{file.resolve()}"  # the opt-in travels downstream
        results = {"kind": "checkpoint", "path": path, "fingerprint": loaded.fingerprint,
                   "arch": loaded.spec.arch if loaded.spec else "torchscript", "dataset": loaded.info.name}
        run.write_results(results)
        return results

    def outputs(self, out: Path, results: dict[str, Any]) -> tuple[dict[str, str], str]:
        return {"model": results["path"]}, results["fingerprint"]

    def command(self, cfg: Any, out: Path) -> str:
        return f"(an existing file; see {out}/config.yaml)"
