"""The ``evaluate`` stage: clean and attacked accuracy of several models (``dfkd evaluate`` each)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..commands.evaluate import EvaluateConfig, evaluate
from ..config import save_yaml
from ..errors import ConfigError
from ..io import atomic_write_json
from ..training import RuntimeSettings
from .base import Stage, register_stage


@dataclass
class EvaluateStageConfig(RuntimeSettings):
    """Every model of ``models`` (stage names, filled in from the inputs) on the real test set;
    ``reference`` (a teacher) adds agreement. Attacks as for ``dfkd evaluate --attacks``."""

    models: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    reference: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    attacks: str = "pgd20"
    eps: float | None = None
    attack_limit: int = 0
    attack_batch_size: int = 200
    batch_size: int = 1000
    latency_runs: int = 10

    def validate(self) -> None:
        if not self.models or len(self.models) != len(self.names):
            raise ConfigError("an evaluate stage needs inputs: {models: [STAGE, ...]}")
        self.for_model(0)  # the settings each model is evaluated with: refused now, not after the others

    def for_model(self, index: int) -> EvaluateConfig:
        cfg = EvaluateConfig(model=self.models[index], dataset=self.dataset, data_root=self.data_root,
                             reference=self.reference if self.reference != self.models[index] else None,
                             batch_size=self.batch_size, latency_runs=self.latency_runs, attacks=self.attacks,
                             eps=self.eps, attack_limit=self.attack_limit, attack_batch_size=self.attack_batch_size,
                             seed=self.seed, device=self.device, threads=self.threads)
        cfg.validate()
        return cfg


@register_stage("evaluate")
class EvaluateStage(Stage):
    config_cls = EvaluateStageConfig
    inputs = {"models": "model", "reference": "model"}
    list_inputs = frozenset({"models"})
    required_inputs = frozenset({"models"})
    smoke = {"attack_limit": 32, "latency_runs": 0}

    def input_fields(self, inputs: dict[str, Any], name: str) -> dict[str, Any]:
        fields: dict[str, Any] = {"models": [m.artefact("model", name) for m in inputs["models"]],
                                  "names": [m.name for m in inputs["models"]]}
        if inputs.get("reference") is not None:
            fields["reference"] = inputs["reference"].artefact("model", name)
        return fields

    def run(self, cfg: EvaluateStageConfig, out: Path, resume: bool) -> dict[str, Any]:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(out / "config.yaml", cfg)
        models = {name: evaluate(cfg.for_model(i), str(out / name)) for i, name in enumerate(cfg.names)}
        results = {"kind": "evaluation", "models": models}
        atomic_write_json(out / "results.json", results)
        return results

    def outputs(self, out: Path, results: dict[str, Any]) -> tuple[dict[str, str], str]:
        return {}, ""

    def command(self, cfg: Any, out: Path) -> str:
        return " && ".join(f"dfkd evaluate {model} --config {out / name}/config.yaml --out {out / name}"
                           for model, name in zip(cfg.models, cfg.names))

    def figures(self, results: dict[str, Any]) -> dict[str, Any]:
        return {name: super(EvaluateStage, self).figures(r) for name, r in results["models"].items()}
