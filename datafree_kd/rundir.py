"""The run-directory contract: config.yaml, results.json, model.pt, metrics.jsonl (DESIGN)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .config import save_yaml
from .errors import ConfigError
from .io import atomic_write_json, atomic_write_text


class RunDir:
    """One run's output directory; every ``dfkd`` subcommand writes through this."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError("--out exists and is not a directory", self.path)
        self.path.mkdir(parents=True, exist_ok=True)

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
        save_yaml(self.config_path, cfg)

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_json(self.results_path, results)

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def reset_metrics(self, records: list[dict[str, Any]]) -> None:
        """Start metrics.jsonl afresh (or from a resumed run's history), dropping stale lines."""
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        atomic_write_text(self.metrics_path, text)

    def write_metrics_csv(self, records: list[dict[str, Any]]) -> None:
        """metrics.csv beside metrics.jsonl, one column per figure, for spreadsheets and plots."""
        columns = sorted({key for record in records for key in record}, key=lambda k: (k != "step", k))
        lines = [",".join(columns)]
        lines += [",".join("" if r.get(c) is None else str(r[c]) for c in columns) for r in records]
        atomic_write_text(self.path / "metrics.csv", "\n".join(lines) + "\n")

    def read_results(self) -> dict[str, Any]:
        return json.loads(self.results_path.read_text())
