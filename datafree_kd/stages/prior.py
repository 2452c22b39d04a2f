"""The ``prior`` stage: a diffusion prior trained on an upstream transfer set (``dfkd prior train``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..prior import PriorTrainConfig, train_prior
from .base import Stage, StageOutput, register_stage


@register_stage("prior")
class PriorStage(Stage):
    config_cls = PriorTrainConfig
    inputs = {"source": "transfer_set"}
    required_inputs = frozenset({"source"})
    smoke = {"steps": 4, "width": 8, "batch_size": 16, "checkpoint_every": 2, "log_every": 2}

    def input_fields(self, inputs: dict[str, Any], name: str) -> dict[str, Any]:
        source: StageOutput = inputs["source"]
        return {"source": f"transfer:{source.artefact('transfer_set', name)}"}

    def run(self, cfg: PriorTrainConfig, out: Path, resume: bool) -> dict[str, Any]:
        return train_prior(cfg, out, resume=resume)

    def outputs(self, out: Path, results: dict[str, Any]) -> tuple[dict[str, str], str]:
        from generators.diffusion_prior import load_prior

        return {"prior": results["pipeline"]}, load_prior(results["pipeline"]).fingerprint()

    def command(self, cfg: Any, out: Path) -> str:
        return f"dfkd prior train --config {out}/config.yaml --out {out}"

    def figures(self, results: dict[str, Any]) -> dict[str, Any]:
        return {k: results[k] for k in ("data_free", "params", "steps", "final_loss", "train_time_s") if k in results}
