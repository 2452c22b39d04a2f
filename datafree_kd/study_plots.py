"""Figures of a study, from the cells of :func:`datafree_kd.study_tables.summarize`.

Figures are built on matplotlib's object API with the Agg canvas (no pyplot, no display, no global
figure registry to leak), at a fixed size and dpi without ``bbox_inches="tight"`` so the PNG's
pixel size is exactly ``FIGSIZE * DPI``, and saved atomically.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .io import atomic_open

FIGSIZE = (6.4, 4.4)  # inches
DPI = 150  # -> 960 x 660 pixels


def new_figure(panels: int = 1):
    """A figure of ``panels`` side-by-side axes, each FIGSIZE wide (one axes, or a list of them)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(FIGSIZE[0] * panels, FIGSIZE[1]), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    return fig, axes[0] if panels == 1 else axes


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Tight layout, PNG written beside ``path`` then renamed into place; the figure is cleared
    afterwards (it is not registered with pyplot, so nothing else holds it)."""
    path = Path(path)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=DPI)
    fig.clear()
    return path


def size_label(size: float) -> str:
    """Compact tick label of a set size: 500, 5k, 1.5k, 2M."""
    for factor, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(size) >= factor:
            return f"{size / factor:g}{suffix}"
    return f"{size:g}"


def _series(cells: Sequence[dict], series_key: str) -> dict[Any, list[dict]]:
    out: dict[Any, list[dict]] = {}
    for cell in cells:
        out.setdefault(cell.get(series_key), []).append(cell)
    return out


def _col(cells: Sequence[dict], key: str) -> np.ndarray:
    return np.array([math.nan if cell.get(key) is None else float(cell[key]) for cell in cells])


def _focus_on_means(ax: Any, cells: Sequence[dict], key: str, reference: float | None) -> None:
    """Fractions: y limits around the means (and the reference), inside [0, 1], so that a wide
    interval (t with two seeds is 12.7 standard errors) cannot squash the lines into a corner."""
    values = [v for v in _col(cells, key).tolist() + ([reference] if reference is not None else [])
              if math.isfinite(v)]
    if not values or min(values) < 0 or max(values) > 1:
        return
    low, high = min(values), max(values)
    pad = 0.15 * (high - low) + 0.02
    ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad))


def plot_metric_vs_size(cells: Sequence[dict], path: str | os.PathLike, size_key: str = "n",
                        series_key: str = "method", metric: str = "test_accuracy",
                        reference: float | None = None, reference_label: str = "teacher",
                        ylabel: str = "test accuracy (fraction)", title: str | None = None,
                        secondary_fraction_of: float | None = None,
                        xlabel: str = "synthetic images (log scale)") -> Path:
    """The size ablation figure: one line per series (mean over seeds, markers), shaded Student-t
    CI band where defined, log x axis labelled with the sizes actually run, an optional dashed
    reference line (the teacher) and an optional right axis giving the same values as a fraction
    of ``secondary_fraction_of`` (usually the teacher's accuracy). Returns the path."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    fig, ax = new_figure()
    sizes: set[float] = set()
    for name, group in _series(cells, series_key).items():
        group = sorted(group, key=lambda cell: float(cell[size_key]))
        x = _col(group, size_key)
        mean = _col(group, f"{metric}_mean")
        low, high = _col(group, f"{metric}_ci_low"), _col(group, f"{metric}_ci_high")
        sizes.update(x.tolist())
        (line,) = ax.plot(x, mean, marker="o", label=metric if name is None else str(name))
        ok = np.isfinite(low) & np.isfinite(high)
        if ok.any():
            ax.fill_between(x, np.where(ok, low, mean), np.where(ok, high, mean), where=ok,
                            color=line.get_color(), alpha=0.2, linewidth=0)
    _focus_on_means(ax, cells, f"{metric}_mean", reference)
    if reference is not None:
        ax.axhline(reference, linestyle="--", color="0.4",
                   label=f"{reference_label} {reference:.3f}")
    ax.set_xscale("log")
    ticks = sorted(sizes)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticklabels([size_label(s) for s in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    level = next((c["ci_level"] for c in cells if "ci_level" in c), 0.95)
    ax.set_title(title or f"{metric} vs synthetic-set size (band: {100 * level:g}% CI over seeds)",
                 fontsize=10)
    if secondary_fraction_of is not None:
        teacher = float(secondary_fraction_of)
        # Same values as a fraction of the teacher; a secondary axis keeps the limits matched.
        right = ax.secondary_yaxis("right", functions=(lambda v: v / teacher,
                                                        lambda f: f * teacher))
        right.set_ylabel(f"fraction of {reference_label} ({teacher:.3f})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title=series_key or None, fontsize=8)
    return save_figure(fig, path)


def plot_clean_vs_robust(cells: Sequence[dict], path: str | os.PathLike, series_key: str = "method",
                         clean: str = "test_accuracy", robust: str = "attacks.pgd20",
                         label_key: str | None = "n", xlabel: str | None = None,
                         ylabel: str | None = None, title: str | None = None) -> Path:
    """The robustness trade-off: one point per cell at (clean mean, robust mean) with std error
    bars on both axes, coloured by series and annotated with ``label_key`` (e.g. the set size).
    Cells with a single seed show the point without bars. Returns the path."""
    fig, ax = new_figure()
    for name, group in _series(cells, series_key).items():
        x, y = _col(group, f"{clean}_mean"), _col(group, f"{robust}_mean")
        xerr, yerr = _col(group, f"{clean}_std"), _col(group, f"{robust}_std")
        ax.errorbar(x, y, xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr), fmt="o",
                    capsize=3, label="mean over seeds" if name is None else str(name))
        if label_key is not None:
            for cell, xi, yi in zip(group, x, y):
                value = cell.get(label_key)
                if value is None or not (math.isfinite(xi) and math.isfinite(yi)):
                    continue
                text = size_label(float(value)) if isinstance(value, (int, float)) else str(value)
                ax.annotate(text, (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel(xlabel or f"clean accuracy, {clean} (fraction)")
    ax.set_ylabel(ylabel or f"robust accuracy, {robust} (fraction)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "clean vs robust accuracy (bars: std over seeds)", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title=series_key or None, fontsize=8)
    return save_figure(fig, path)
