"""A per-batch journal for long evaluations, so an interrupted one resumes where it stopped.

Standard AutoAttack on a full test set takes CPU-hours; losing all of it to a killed job or a
session's end is the failure this prevents. The journal is a JSON-lines file: a header line with
the identity of the evaluation (model fingerprint, split, budgets, seed, batch size, ...), then one
line per finished batch. Because every batch is attacked with a seed derived from its index
alone, a resumed run that skips the journaled batches gives exactly the figure of an uninterrupted
one. A journal written for another identity is stale and is started afresh; a line cut short by a
crash is dropped when the journal is opened.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .io import atomic_write_text


def _canonical(obj: Any) -> Any:
    """The identity as JSON would read it back (tuples become lists), so comparisons are exact."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class BatchJournal:
    """``record(task, index, value)`` after each batch; ``get(task, index)`` on resume."""

    def __init__(self, path: str | os.PathLike, identity: dict[str, Any]) -> None:
        self.path = Path(path)
        self.identity = _canonical(identity)
        self.entries: dict[tuple[str, int], Any] = {}
        lines = self._read()
        if lines and lines[0].get("identity") == self.identity:
            for line in lines[1:]:
                if isinstance(line.get("task"), str) and isinstance(line.get("index"), int) and "value" in line:
                    self.entries[(line["task"], line["index"])] = line["value"]
        # rewrite what is kept (the header, the whole lines), so appends never follow a torn line
        text = json.dumps({"identity": self.identity}, sort_keys=True) + "\n"
        text += "".join(json.dumps({"task": t, "index": i, "value": v}, sort_keys=True) + "\n"
                        for (t, i), v in self.entries.items())
        atomic_write_text(self.path, text)

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        records = []
        for raw in self.path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                break  # a line cut short by a crash: it and anything after it are not trusted
            if not isinstance(record, dict):
                break
            records.append(record)
        return records

    def get(self, task: str, index: int) -> Any | None:
        return self.entries.get((task, index))

    def record(self, task: str, index: int, value: Any) -> None:
        """Append one finished batch and force it to disk before the next batch starts."""
        value = _canonical(value)
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"task": task, "index": index, "value": value}, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.entries[(task, index)] = value
