"""The ``synthesize`` stage: a transfer set from the frozen teacher (``dfkd synthesize``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..config import merge
from ..synthesis import SynthesizeConfig, run_synthesis
from .base import Stage, StageOutput, register_stage


@register_stage("synthesize")
class SynthesizeStage(Stage):
    config_cls = SynthesizeConfig
    hashed_unless_default = {"generators": 1, "fit_precision": None, "channels_last": None}
    #: ``prior``: a ``prior`` stage, sampled when the method is ``diffusion`` (other methods ignore it,
    #: so a size study can swap methods on one experiment)
    inputs = {"teacher": "model", "prior": "prior"}
    required_inputs = frozenset({"teacher"})
    smoke = {"n": 64, "batch_size": 32, "shard_size": 64, "preset": "smoke"}

    def input_fields(self, inputs: dict[str, Any], name: str) -> dict[str, Any]:
        teacher: StageOutput = inputs["teacher"]
        return {"teacher": teacher.artefact("model", name)}

    def build_config(self, config: dict[str, Any], inputs: dict[str, Any], name: str) -> Any:
        prior: StageOutput | None = inputs.get("prior")
        if prior is not None and config.get("method") == "diffusion":
            config = merge(config, {"options": {"prior": prior.artefact("prior", name)}})
        return super().build_config(config, inputs, name)

    def content_key(self, cfg: SynthesizeConfig) -> str:
        """With ``method: auto`` the measured default table decides the images, so a cached set
        made under an earlier default is not served after that default changed."""
        if cfg.method != "auto":
            return ""
        from dataclasses import asdict

        from generators.default import DEFAULTS

        table = {kind: asdict(choice) for kind, choice in sorted(DEFAULTS.items())}
        return hashlib.sha256(json.dumps(table, sort_keys=True, default=str).encode()).hexdigest()

    def run(self, cfg: SynthesizeConfig, out: Path, resume: bool) -> dict[str, Any]:
        return run_synthesis(cfg, out)  # resumes by itself: each batch has its own seed

    def outputs(self, out: Path, results: dict[str, Any]) -> tuple[dict[str, str], str]:
        meta = json.loads((out / "transfer_set" / "meta.json").read_text())
        digest = hashlib.sha256(json.dumps([s["sha256"] for s in meta["shards"]]).encode()).hexdigest()
        artefacts = {"transfer_set": str(out / "transfer_set")}
        if results.get("preview"):
            artefacts["preview"] = results["preview"]
        return artefacts, digest

    def command(self, cfg: Any, out: Path) -> str:
        return f"dfkd synthesize --config {out}/config.yaml --out {out}"

    def figures(self, results: dict[str, Any]) -> dict[str, Any]:
        keys = ("method", "count", "mean_teacher_confidence", "class_balance_entropy_ratio", "cpu_time_s")
        return {k: results[k] for k in keys if k in results}
