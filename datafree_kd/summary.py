"""The short summary table every subcommand prints, and ``--blind``, which keeps test figures off it."""

from __future__ import annotations

import argparse
import os
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def format_table(rows: list[tuple[str, Any]]) -> str:
    """Two aligned columns: name and value."""
    rows = [(name, _fmt(value)) for name, value in rows if value is not None]
    width = max((len(name) for name, _ in rows), default=0)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


#: figures measured on the test split: ``--blind`` keeps them off the terminal
TEST_SPLIT_FIGURES = ("test_accuracy", "reference_accuracy", "agreement", "ece")
#: what a blind command prints where the test figures would be
WITHHELD = "withheld (--blind): in the run's files, to be read once, after the choice"
#: set by ``--blind`` for the whole process and the runs it starts (a sweep's ``dfkd run`` children)
BLIND_ENV = "DFKD_BLIND"


def is_blind() -> bool:
    """Whether this process prints test figures (every printer asks this one place)."""
    return os.environ.get(BLIND_ENV) == "1"


class _BlindAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        os.environ[BLIND_ENV] = "1"
        setattr(namespace, self.dest, True)


def add_blind_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--blind", action=_BlindAction, nargs=0, default=False,
                        help="print no figure measured on the test split (the run's files still hold them): "
                             "for runs that are chosen between on val")


def results_summary(results: dict[str, Any], blind: bool | None = None) -> str:
    """The key figures of a results.json, in a fixed order (blind, by default ``is_blind()``:
    none measured on test)."""
    blind = is_blind() if blind is None else blind
    rows: list[tuple[str, Any]] = [
        ("model", results.get("arch") or results.get("model")),
        ("dataset", results.get("dataset")),
        ("test_accuracy", results.get("test_accuracy")),
        ("val_accuracy", results.get("val_accuracy")),
        ("reference_accuracy", results.get("reference_accuracy")),
        ("agreement", results.get("agreement")),
        ("ece", results.get("ece")),
        ("params", results.get("params")),
        ("flops", results.get("flops")),
        ("latency_ms_per_image", results.get("latency_ms_per_image")),
        ("throughput_images_per_s", results.get("throughput_images_per_s")),
        ("train_time_s", results.get("train_time_s")),
    ]
    for name, value in sorted(results.get("attacks", {}).items()):
        rows.append((f"attack {name}", value))
    if blind:
        rows = [(name, value) for name, value in rows
                if name not in TEST_SPLIT_FIGURES and not name.startswith("attack ")]
        rows.append(("test figures", WITHHELD))
    return format_table(rows)
