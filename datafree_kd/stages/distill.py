"""The ``distill`` stage: student(s) from a teacher and a batch source (``dfkd distill``).

With a ``source`` input (a ``synthesize`` stage) the student learns from that transfer set, and
the recipe measured best for the teacher's kind is the defaults layer under the stage's own
config, as with ``dfkd distill`` without ``--config``. Without one, the config's ``source``
(``online:METHOD``, or ``real`` for the named baseline) is used as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import config_from_dict, merge
from ..distillation import DistillConfig, recipe_layer, run_distillation
from .base import Stage, StageOutput, register_stage


@register_stage("distill")
class DistillStage(Stage):
    config_cls = DistillConfig
    inputs = {"teacher": "model", "source": "transfer_set"}
    required_inputs = frozenset({"teacher"})
    hashed_unless_default = {"select_images": 0, "init_merge": None, "invert": 0.0, "class_balance": False,
                             "precision": "float32", "channels_last": False}
    union_inputs = frozenset({"source"})  # a list of sets: their union (``transfer:A,B``), shared equally
    smoke = {"steps": 6, "epochs": 0, "eval_every": 0, "latency_runs": 0, "checkpoint_every": 3, "log_every": 2}

    def input_fields(self, inputs: dict[str, Any], name: str) -> dict[str, Any]:
        fields = {"teacher": inputs["teacher"].artefact("model", name)}
        source: StageOutput | list[StageOutput] | None = inputs.get("source")
        if source is not None:
            sets = source if isinstance(source, list) else [source]
            fields["source"] = "transfer:" + ",".join(s.artefact("transfer_set", name) for s in sets)
        return fields

    def build_config(self, config: dict[str, Any], inputs: dict[str, Any], name: str) -> DistillConfig:
        user = merge(config, self.input_fields(inputs, name))
        layer, path, _ = recipe_layer(user)
        return config_from_dict(DistillConfig, {**merge(layer, user), "recipe": path or "none"})

    def preflight(self, config: dict[str, Any], inputs: dict[str, Any], name: str) -> DistillConfig | None:
        """With a transfer set and ``recipe=auto`` the defaults are the recipe measured for the
        teacher's kind, which is known only once the teacher exists: checked when reached."""
        user = merge(config, self.input_fields(inputs, name))
        if str(user.get("source") or "").startswith("transfer:") and str(user.get("recipe") or "auto") == "auto":
            return None
        return self.build_config(config, inputs, name)

    def smoke_config(self, config: dict[str, Any]) -> dict[str, Any]:
        shrunk = merge(config, self.smoke)
        for key in ("init_images", "select_images"):  # images the student's slice is fitted on
            if config.get(key):
                shrunk[key] = 16
        return shrunk

    def run(self, cfg: DistillConfig, out: Path, resume: bool) -> dict[str, Any]:
        return run_distillation(cfg, out, resume=resume)

    def outputs(self, out: Path, results: dict[str, Any]) -> tuple[dict[str, str], str]:
        return {"model": str(out / "model.pt")}, results["fingerprint"]

    def command(self, cfg: Any, out: Path) -> str:
        return f"dfkd distill --config {out}/config.yaml --out {out}"
