"""Run an experiment's stages in order, each in a directory keyed by what determines its output.

A stage's key is a hash of its kind, its *resolved* config (recipes and defaults filled in; keys
that only say where or how fast it runs left out) and the fingerprints of its inputs' outputs.
Its directory is ``OUT/stages/NAME-KEY``:

* ``stage.json`` present: the stage finished; it is reused without running anything;
* the directory without ``stage.json``: an interrupted run; the stage resumes (teacher and
  student training from ``last.pt``, synthesis from its written shards);
* no directory: the stage runs afresh.

So a re-run skips what is done, and changing one key re-runs exactly the stages whose resolved
config or inputs changed: that stage and everything downstream of it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import config_to_dict
from ..errors import ConfigError, DfkdError
from ..io import atomic_write_json, file_lock
from ..rundir import make_out_dir
from ..stages import STAGES, Stage, StageOutput
from .spec import ExperimentSpec, StageSpec

KEY_LENGTH = 12


@dataclass
class StageRecord:
    """One stage of this invocation: where it lives and whether it ran, resumed or was reused."""

    name: str
    kind: str
    key: str
    path: Path
    status: str
    output: StageOutput
    command: str
    cpu_s: float = 0.0
    wall_s: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)


def stage_key(stage: Stage, cfg: Any, inputs: dict[str, Any], name: str) -> str:
    """Hash of the resolved config (input paths replaced by the inputs' fingerprints)."""
    config = config_to_dict(cfg)
    for key in set(stage.input_fields(inputs, name)) | stage.unhashed_keys:
        config.pop(key, None)
    for key, default in stage.hashed_unless_default.items():
        if config.get(key) == default:
            config.pop(key)
    fingerprints = {slot: [o.fingerprint for o in v] if isinstance(v, list) else v.fingerprint
                    for slot, v in inputs.items()}
    blob = json.dumps({"kind": stage.kind, "config": config, "inputs": fingerprints,
                       "content": stage.content_key(cfg)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:KEY_LENGTH]


def _inputs(spec: StageSpec, done: dict[str, StageRecord]) -> dict[str, Any]:
    return {slot: [done[t].output for t in target] if isinstance(target, list) else done[target].output
            for slot, target in spec.inputs.items()}


def stage_lock(path: Path):
    """Exclusive hold on one stage directory: sweep jobs sharing a stage cache wait for each other
    instead of running the same stage twice into one directory."""
    return file_lock(path)


def _config(experiment: ExperimentSpec, spec: StageSpec, stage: Stage, smoke: bool) -> dict[str, Any]:
    config = experiment.stage_config(spec)
    if smoke:
        config = stage.smoke_config(config)
        config.update(spec.smoke)
    return config


class _Pending(StageOutput):
    """An upstream output that does not exist yet: its artefacts are placeholders (for preflight)."""

    def artefact(self, key: str, wanted_by: str) -> str:
        return f"<{key} of stage {self.name}>"


def preflight(experiment: ExperimentSpec, smoke: bool = False) -> None:
    """Build and validate every stage's config before the first stage runs, upstream outputs
    standing in as placeholders, so that a bad value in the last stage (``evaluate.eps=1.5``) is
    a one-line error now rather than after the teacher trained. A stage whose config depends on
    what an input holds (:meth:`Stage.preflight`) is checked when it is reached."""
    pending: dict[str, StageOutput] = {}
    for spec in experiment.stages:
        stage = STAGES.get(spec.kind)()
        inputs = {slot: [pending[t] for t in target] if isinstance(target, list) else pending[target]
                  for slot, target in spec.inputs.items()}
        try:
            stage.preflight(_config(experiment, spec, stage, smoke), inputs, spec.name)
        except DfkdError as exc:
            raise ConfigError(f"stage {spec.name!r}: {exc}", experiment.source or None) from None
        pending[spec.name] = _Pending(spec.name, spec.kind, Path(f"<{spec.name}>"))


def run_stage(experiment: ExperimentSpec, spec: StageSpec, done: dict[str, StageRecord], stages_dir: Path,
              smoke: bool) -> StageRecord:
    stage = STAGES.get(spec.kind)()
    config = _config(experiment, spec, stage, smoke)
    inputs = _inputs(spec, done)
    cfg = stage.build_config(config, inputs, spec.name)
    key = stage_key(stage, cfg, inputs, spec.name)
    path = stages_dir / f"{spec.name}-{key}"
    with stage_lock(path):
        return _run_or_reuse(stage, spec, cfg, inputs, key, path)


def _run_or_reuse(stage: Stage, spec: StageSpec, cfg: Any, inputs: dict[str, Any], key: str, path: Path
                  ) -> StageRecord:
    marker = path / "stage.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        output = StageOutput(spec.name, spec.kind, path, saved["artefacts"], saved["fingerprint"], saved["results"])
        print(f"[{spec.name}] reused {path}", flush=True)
        return StageRecord(spec.name, spec.kind, key, path, "reused", output, saved["command"], saved["cpu_s"],
                           saved["wall_s"], saved["config"])
    status = "resumed" if path.exists() else "ran"
    print(f"[{spec.name}] {'resuming' if status == 'resumed' else 'running'} {spec.kind} in {path}", flush=True)
    began, cpu_began = time.perf_counter(), time.process_time()
    results = stage.run(cfg, path, resume=status == "resumed")
    wall_s, cpu_s = time.perf_counter() - began, time.process_time() - cpu_began
    artefacts, fingerprint = stage.outputs(path, results)
    output = StageOutput(spec.name, spec.kind, path, artefacts, fingerprint or key, results)
    record = StageRecord(spec.name, spec.kind, key, path, status, output, stage.command(cfg, path), cpu_s, wall_s,
                         config_to_dict(cfg))
    # written last and atomically: its presence means the whole stage finished
    atomic_write_json(marker, {"name": spec.name, "kind": spec.kind, "key": key, "artefacts": artefacts,
                               "fingerprint": output.fingerprint, "results": results, "command": record.command,
                               "cpu_s": cpu_s, "wall_s": wall_s, "config": record.config,
                               "inputs": {s: [o.name for o in v] if isinstance(v, list) else v.name
                                          for s, v in inputs.items()}})
    return record


def run_experiment(experiment: ExperimentSpec, out: str | Path, smoke: bool = False,
                   stages_dir: str | Path | None = None) -> dict[str, Any]:
    """Run (or reuse) every stage; write ``OUT/report.json`` and ``OUT/report.md``; return the report.

    Stage directories live in ``stages_dir`` (default ``OUT/stages``); runs of a sweep share one,
    so a teacher or transfer set that several runs need is made once.
    """
    from .report import write_report

    preflight(experiment, smoke)
    out = make_out_dir(out)
    stages = make_out_dir(stages_dir) if stages_dir is not None else out / "stages"
    began = time.perf_counter()
    done: dict[str, StageRecord] = {}
    for spec in experiment.stages:
        done[spec.name] = run_stage(experiment, spec, done, stages, smoke)
    return write_report(experiment, list(done.values()), out, smoke, time.perf_counter() - began)
