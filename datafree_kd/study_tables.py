"""Tables and statistics of a study (``dfkd sweep``, ``dfkd ablate-size``).

Each run of a study gives one flat row dict (swept keys, ``seed``, ``test_accuracy``,
``attacks.{name}``, cost figures, ``run_dir``; any key may be missing). This module writes those
rows as ``results.csv``, groups them into cells (one per combination of swept values) with mean,
sample std and a Student-t confidence interval over seeds, and renders the cells as Markdown.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from typing import Any, Sequence

import numpy as np
from scipy import stats

from .io import atomic_write_text

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf)", re.IGNORECASE)


def _is_accuracy(key: str) -> bool:
    return key.startswith("attacks.") or key.endswith("accuracy")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def result_columns(rows: list[dict], first: Sequence[str] = ()) -> list[str]:
    """Column order of ``results.csv``: the swept keys as given, ``seed``, then every other key
    (accuracies first, each part sorted) -- so the table reads like the design of the study."""
    head = list(dict.fromkeys([*first, "seed"]))
    rest = {key for row in rows for key in row} - set(head)
    return head + sorted(rest, key=lambda key: (not _is_accuracy(key), key))


def write_results_csv(rows: list[dict], path: str | os.PathLike, first: Sequence[str] = ()) -> None:
    """One line per run, written atomically, so a crashed sweep never leaves half a table.
    Missing values are empty cells."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=result_columns(rows, first), restval="",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _parse(text: str) -> Any:
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return {"True": True, "False": False}.get(text, text)


def read_results_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``results.csv`` with numbers parsed back; empty cells (missing values) are
    left out of the row dict, as they were when written."""
    with open(path, newline="") as handle:
        return [{key: _parse(value) for key, value in row.items() if value != ""}
                for row in csv.DictReader(handle)]


def confidence_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean over seeds: mean +- t_{(1+level)/2, n-1} * s / sqrt(n),
    with s the sample std (ddof=1); the same as ``scipy.stats.t.interval(level, n-1, loc=mean,
    scale=scipy.stats.sem(values))``. With n < 2 there is no spread to estimate, so it is
    (nan, nan) rather than a misleading zero-width interval. Identical values give (mean, mean)."""
    x = np.asarray(values, dtype=float)
    n = x.size
    if n < 2:
        return math.nan, math.nan
    mean = float(x.mean())
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean - half, mean + half


def _group_ranks(rows: list[dict], key: str) -> dict[Any, tuple]:
    """Sort order of one grouping key: numeric when every present value is a number (so sizes
    read 1k, 5k, 50k), else first appearance; a missing value (None) goes last."""
    values = list(dict.fromkeys(row.get(key) for row in rows))
    present = [v for v in values if v is not None]
    if present and all(_is_number(v) for v in present):
        present.sort()
    ranks = {v: (0, i) for i, v in enumerate(present)}
    ranks[None] = (1, 0)
    return ranks


def count_key(group_by: Sequence[str]) -> str:
    """Key of a cell's run count: ``n``, unless ``n`` is itself swept (the set size of
    ``ablate-size``), then ``n_runs``. Every cell also carries ``n_runs``."""
    return "n_runs" if "n" in group_by else "n"


def summarize(rows: list[dict], group_by: Sequence[str], metrics: Sequence[str],
              level: float = 0.95) -> list[dict]:
    """One cell per combination of ``group_by`` values seen in ``rows``: the group values,
    ``n`` (rows in the cell; see :func:`count_key`), ``seeds`` (sorted), ``ci_level``, and per
    metric ``{m}_mean``, ``{m}_std`` (ddof=1), ``{m}_ci_low``, ``{m}_ci_high`` and ``{m}_n``.
    Rows where a metric is missing (or None) are skipped for that metric only; a metric with no
    values gives nan."""
    ranks = {key: _group_ranks(rows, key) for key in group_by}
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(key) for key in group_by), []).append(row)
    order = sorted(groups, key=lambda combo: [ranks[k][v] for k, v in zip(group_by, combo)])
    cells = []
    for combo in order:
        members = groups[combo]
        cell: dict[str, Any] = dict(zip(group_by, combo))
        cell[count_key(group_by)] = cell["n_runs"] = len(members)
        cell["seeds"] = sorted({row["seed"] for row in members if row.get("seed") is not None})
        cell["ci_level"] = level
        for metric in metrics:
            values = [float(row[metric]) for row in members if row.get(metric) is not None]
            arr = np.asarray(values, dtype=float)
            low, high = confidence_interval(values, level)
            cell[f"{metric}_mean"] = float(arr.mean()) if arr.size else math.nan
            cell[f"{metric}_std"] = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
            cell[f"{metric}_ci_low"], cell[f"{metric}_ci_high"] = low, high
            cell[f"{metric}_n"] = len(values)
        cells.append(cell)
    return cells


def _num(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def _cell_text(value: Any) -> str:
    return str(value).replace("|", "\\|")


def format_metric(cell: dict, metric: str) -> str:
    """``mean ± std [low, high]`` of one metric in one cell (``n/a`` where undefined)."""
    mean = cell.get(f"{metric}_mean", math.nan)
    if not math.isfinite(mean):
        return "n/a"
    std, low, high = (cell.get(f"{metric}_{s}", math.nan) for s in ("std", "ci_low", "ci_high"))
    if not math.isfinite(std):
        return f"{_num(mean)} (single run, no CI)"
    return f"{_num(mean)} ± {_num(std)} [{_num(low)}, {_num(high)}]"


def write_summary_md(cells: list[dict], path: str | os.PathLike, group_by: Sequence[str],
                     metrics: Sequence[str], title: str, notes: Sequence[str] = ()) -> str:
    """``summary.md`` of a study: the notes (how figures were selected and reported) as bullets,
    a line saying how many seeds each cell aggregates and what the interval is, then one table
    row per cell. Written atomically; returns the text."""
    level = cells[0].get("ci_level", 0.95) if cells else 0.95
    pct, count = f"{100 * level:g}", count_key(group_by)
    runs = [cell.get("n_runs", cell.get("n", 0)) for cell in cells]
    n_text = "0" if not runs else f"{min(runs)}" if min(runs) == max(runs) else \
        f"{min(runs)}–{max(runs)}"
    seeds = ", ".join(map(str, sorted({s for cell in cells for s in cell.get("seeds", [])})))
    lines = [f"# {title}", ""]
    lines += [f"- {note}" for note in notes]
    lines += [f"- {count} = {n_text} seeds (runs) per cell (seeds {seeds or 'none'}); mean ± "
              f"sample std (ddof=1) [CI low, high]; the CI is Student-t {pct} % over seeds.", ""]
    header = [*group_by, count, *(f"{m} mean ± std [{pct}% CI low, high]" for m in metrics)]
    lines.append("| " + " | ".join(map(_cell_text, header)) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for cell, n in zip(cells, runs):
        values = [*(cell.get(key) for key in group_by), n,
                  *(format_metric(cell, m) for m in metrics)]
        lines.append("| " + " | ".join("" if v is None else _cell_text(v) for v in values) + " |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(path, text)
    return text
