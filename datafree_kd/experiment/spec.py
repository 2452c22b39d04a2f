"""An experiment file: named stages of registered kinds, their configs and which outputs they read.

```yaml
name: demo
defaults: {seed: 0}                  # every stage whose config has the key gets it
stages:
  - {name: teacher, kind: teacher, config: {arch: lenet5}}
  - {name: synthetic, kind: synthesize, inputs: {teacher: teacher}, config: {n: 10000}}
  - {name: student, kind: distill, inputs: {teacher: teacher, source: synthetic}}
  - {name: evaluate, kind: evaluate, inputs: {models: [teacher, student], reference: teacher}}
```

Overrides (``dfkd run FILE key=value``) address a stage by name (``synthetic.n=5000``,
``student.term_options.kd.temperature=2``) or the defaults (``seed=1``, ``threads=1``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_yaml, merge, parse_overrides
from ..errors import ConfigError
from ..stages import STAGES

_STAGE_KEYS = {"name", "kind", "inputs", "config", "smoke"}


@dataclass
class StageSpec:
    name: str
    kind: str
    inputs: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    #: extra overrides for ``--smoke`` on top of the kind's own
    smoke: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentSpec:
    name: str
    stages: list[StageSpec]
    defaults: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    #: per executor, its options (``{"submitit": {"slurm_partition": "gpu"}}``); where runs
    #: execute changes no result, so this is left out of ``to_dict`` and the digest
    executor: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> "ExperimentSpec":
        unknown = sorted(set(data) - {"name", "description", "defaults", "stages", "executor"})
        if unknown:
            raise ConfigError(f"unknown experiment key(s) {', '.join(unknown)}; known: defaults, description, "
                              "executor, name, stages", source or None)
        executor = data.get("executor") or {}
        if not isinstance(executor, dict) or not all(isinstance(v, dict) for v in executor.values()):
            raise ConfigError("executor: expected a mapping of executor name to its options, e.g. "
                              "{submitit: {slurm_partition: gpu}}", source or None)
        raw = data.get("stages")
        if not isinstance(raw, list) or not raw:
            raise ConfigError("an experiment needs a non-empty list of stages", source or None)
        stages = []
        for i, entry in enumerate(raw):
            if not isinstance(entry, dict) or not {"name", "kind"} <= set(entry) or set(entry) - _STAGE_KEYS:
                raise ConfigError(f"stage {i}: expected a mapping with name, kind and optionally inputs, config, "
                                  f"smoke; got {entry!r}", source or None)
            if entry["kind"] not in STAGES:  # an unknown kind fails now, naming the file and the known ones
                try:
                    STAGES.get(str(entry["kind"]))
                except ConfigError as exc:
                    raise ConfigError(f"stage {entry['name']!r}: {exc}", source or None) from None
            stages.append(StageSpec(str(entry["name"]), str(entry["kind"]), dict(entry.get("inputs") or {}),
                                    dict(entry.get("config") or {}), dict(entry.get("smoke") or {})))
        spec = cls(str(data.get("name", Path(source).stem if source else "experiment")), stages,
                   dict(data.get("defaults") or {}), source, {str(k): dict(v) for k, v in executor.items()})
        spec.check()
        return spec

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExperimentSpec":
        return cls.from_dict(load_yaml(path), str(path))

    def check(self) -> None:
        """Names unique, inputs name earlier stages and slots the kind accepts, required slots filled."""
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen or "." in stage.name or "/" in stage.name:
                raise ConfigError(f"stage name {stage.name!r} is repeated or holds '.' or '/'", self.source or None)
            kind = STAGES.get(stage.kind)
            for slot, target in stage.inputs.items():
                if slot not in kind.inputs:
                    raise ConfigError(f"stage {stage.name!r}: {stage.kind} stages take inputs "
                                      f"{', '.join(kind.inputs) or 'none'}, not {slot!r}", self.source or None)
                targets = target if isinstance(target, list) else [target]
                if slot not in kind.union_inputs and isinstance(target, list) != (slot in kind.list_inputs):
                    raise ConfigError(f"stage {stage.name!r}: input {slot!r} takes "
                                      f"{'a list of stages' if slot in kind.list_inputs else 'one stage'}",
                                      self.source or None)
                if not targets:
                    raise ConfigError(f"stage {stage.name!r}: input {slot!r} is an empty list", self.source or None)
                missing = [t for t in targets if t not in seen]
                if missing:
                    raise ConfigError(f"stage {stage.name!r}: input {slot!r} names {', '.join(map(repr, missing))}, "
                                      "which is not an earlier stage", self.source or None)
            unknown = sorted(set(stage.config) - _fields(stage.kind))
            if unknown:  # caught before any stage runs, not when the run reaches this one
                raise ConfigError(f"stage {stage.name!r}: unknown {stage.kind} config key(s) {', '.join(unknown)}",
                                  self.source or None)
            absent = sorted(kind.required_inputs - set(stage.inputs))
            if absent:
                raise ConfigError(f"stage {stage.name!r} ({stage.kind}) needs input(s) {', '.join(absent)}",
                                  self.source or None)
            seen.add(stage.name)

    def with_overrides(self, items: list[str]) -> "ExperimentSpec":
        """A copy with ``key=value`` overrides applied (a stage name first, else a default)."""
        parsed = parse_overrides(items)
        names = {s.name for s in self.stages}
        stages = [dataclasses.replace(s, config=merge(s.config, parsed.get(s.name, {}))) for s in self.stages]
        for name in names & set(parsed):
            if not isinstance(parsed[name], dict):
                raise ConfigError(f"override {name}={parsed[name]!r}: {name!r} is a stage; give {name}.KEY=VALUE")
        defaults = merge(self.defaults, {k: v for k, v in parsed.items() if k not in names})
        unknown = [k for k in defaults if not any(k in _fields(s.kind) for s in stages)]
        if unknown:
            raise ConfigError(f"override {unknown[0]!r} is neither a stage ({', '.join(sorted(names))}) nor a key of "
                              "any stage's config")
        varied = dataclasses.replace(self, stages=stages, defaults=defaults)
        varied.check()
        return varied

    def to_dict(self) -> dict[str, Any]:
        """The experiment as a file would hold it (sweeps write one per run)."""
        return {"name": self.name, "defaults": self.defaults,
                "stages": [{k: v for k, v in dataclasses.asdict(s).items() if v or k in ("name", "kind")}
                           for s in self.stages]}

    def digest(self) -> str:
        """Identifies what the experiment asks for (a finished sweep run with the same digest is skipped)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def stage_config(self, stage: StageSpec) -> dict[str, Any]:
        """The stage's own config over the defaults that apply to its kind."""
        fields = _fields(stage.kind)
        return merge({k: v for k, v in self.defaults.items() if k in fields}, stage.config)


def _fields(kind: str) -> set[str]:
    return {f.name for f in dataclasses.fields(STAGES.get(kind).config_cls)}
