"""The short summary table every subcommand prints."""

from __future__ import annotations

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


def add_blind_argument(parser: Any) -> None:
    parser.add_argument("--blind", action="store_true",
                        help="print no figure measured on the test split (they are still written to the "
                             "run's files): for runs that are chosen between on val")


def results_summary(results: dict[str, Any], blind: bool = False) -> str:
    """The key figures of a results.json, in a fixed order (``blind``: none measured on test)."""
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
