"""The run-directory contract: config.yaml, results.json, model.pt, metrics.jsonl (DESIGN)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .config import save_yaml
from .errors import ConfigError
from .io import atomic_write_json, atomic_write_text


def make_out_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and its parents) and check a file can be written in it; a path that is
    a file, lies under one or may not be written is a one-line ConfigError naming it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError("--out exists and is not a directory", path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write the --out directory ({exc.strerror or type(exc).__name__})", path) from None
    return path


#: what a ``results.json`` ``kind`` says about the directory; other markers name the rest
_MARKERS = (("report.json", "experiment"), ("results.csv", "sweep"), ("transfer_set", "synthesis"))


def run_kind(path: str | os.PathLike) -> str | None:
    """Which kind of run an existing directory holds (``teacher``, ``distillation``, ``synthesis``,
    ``evaluation``, ``experiment``, ``sweep``, ...), or None (nothing there yet). An experiment's
    stage directory holds the run of its kind (``dfkd distill --out STAGE_DIR`` reproduces it)."""
    path = Path(path)
    if not path.is_dir():
        return None
    for name, kind in _MARKERS:
        if (path / name).exists():
            return kind
    results = path / "results.json"
    if results.is_file():
        try:
            kind = json.loads(results.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        return str(kind) if kind else "unknown"
    return None


def check_out(path: str | os.PathLike, kind: str) -> None:
    """Refuse an ``--out`` that already holds another kind of run: writing there would mix two
    runs' files (a student's config.yaml over a teacher's, say). The same kind is a re-run or a
    resume of that run and is left to the command."""
    found = run_kind(path)
    if found is not None and found != kind:
        raise ConfigError(f"--out already holds the run of another command ({found}; this command writes "
                          f"a {kind} run); give another --out", path)


class RunDir:
    """One run's output directory; every ``dfkd`` subcommand writes through this.

    ``writes=False``: a reader of the directory (a DDP rank other than 0 resumes from the files
    rank 0 writes, and writes nothing itself)."""

    def __init__(self, path: str | os.PathLike, writes: bool = True) -> None:
        self.writes = writes
        self.path = make_out_dir(path) if writes else Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    @property
    def model_path(self) -> Path:
        return self.path / "model.pt"

    @property
    def state_path(self) -> Path:
        return self.path / "last.pt"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def write_config(self, cfg: Any) -> None:
        if not self.writes:
            return
        save_yaml(self.config_path, cfg)

    def write_results(self, results: dict[str, Any]) -> None:
        if not self.writes:
            return
        atomic_write_json(self.results_path, results)

    def append_metrics(self, record: dict[str, Any]) -> None:
        if not self.writes:
            return
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def reset_metrics(self, records: list[dict[str, Any]]) -> None:
        """Start metrics.jsonl afresh (or from a resumed run's history), dropping stale lines."""
        if not self.writes:
            return
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        atomic_write_text(self.metrics_path, text)

    def write_metrics_csv(self, records: list[dict[str, Any]]) -> None:
        """metrics.csv beside metrics.jsonl, one column per figure, for spreadsheets and plots."""
        if not self.writes:
            return
        columns = sorted({key for record in records for key in record}, key=lambda k: (k != "step", k))
        lines = [",".join(columns)]
        lines += [",".join("" if r.get(c) is None else str(r[c]) for c in columns) for r in records]
        atomic_write_text(self.path / "metrics.csv", "\n".join(lines) + "\n")

    def read_results(self) -> dict[str, Any]:
        return json.loads(self.results_path.read_text())
