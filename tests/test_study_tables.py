"""Study tables, statistics and plots: CSV round trip, Student-t CI against scipy, grouping,
summary.md text, and PNG figures of an exact pixel size."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from datafree_kd.study_plots import DPI, FIGSIZE, plot_clean_vs_robust, plot_metric_vs_size
from datafree_kd.study_tables import (confidence_interval, read_results_csv, summarize,
                                      write_results_csv, write_summary_md)

WIDTH, HEIGHT = round(6.4 * 150), round(4.4 * 150)  # 960 x 660


def fake_rows(sizes=(500, 1000, 5000, 10000, 50000), methods=("fast", "deepinv"), seeds=(0, 1)):
    rows = []
    for method in methods:
        for n in sizes:
            for seed in seeds:
                acc = 0.5 + 0.08 * math.log10(n) + (0.03 if method == "fast" else 0) + 0.01 * seed
                rows.append({"method": method, "n": n, "seed": seed, "test_accuracy": acc,
                             "val_accuracy": acc + 0.005, "attacks.pgd20": acc / 2,
                             "cpu_s": 0.01 * n, "run_dir": f"runs/{method}-{n}-{seed}"})
    return rows


def assert_png(path):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (WIDTH, HEIGHT)
        image.load()


def test_csv_round_trip_column_order_and_missing_values(tmp_path):
    rows = [
        {"run_dir": "a,b \"quoted\"", "cpu_s": 61.2, "test_accuracy": 0.83, "lr": 0.01,
         "method": "fast", "seed": 0, "n": 5000, "attacks.pgd20": 0.41, "steps": 800},
        {"method": "dfad", "n": 1000, "seed": 1, "test_accuracy": 0.7, "teacher_accuracy": 0.92,
         "val_accuracy": 0.71, "images": 1000},
    ]
    path = tmp_path / "results.csv"
    write_results_csv(rows, path, first=["method", "n", "lr"])
    with open(path, newline="") as handle:
        header, first_line, second_line = list(csv.reader(handle))
    assert header[:4] == ["method", "n", "lr", "seed"]
    assert header[4:] == ["attacks.pgd20", "teacher_accuracy", "test_accuracy", "val_accuracy",
                          "cpu_s", "images", "run_dir", "steps"]
    assert second_line[header.index("lr")] == "" and first_line[header.index("images")] == ""
    back = read_results_csv(path)
    assert back == rows
    assert isinstance(back[0]["n"], int) and isinstance(back[0]["lr"], float)
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary behind


@pytest.mark.parametrize("n", [2, 3, 5])
def test_confidence_interval_matches_scipy(n):
    values = np.random.default_rng(n).normal(0.8, 0.05, size=n).tolist()
    for level in (0.95, 0.9):
        expected = stats.t.interval(level, n - 1, loc=np.mean(values), scale=stats.sem(values))
        assert confidence_interval(values, level) == pytest.approx(expected, rel=1e-12)


def test_confidence_interval_single_value_is_nan():
    low, high = confidence_interval([0.83])
    assert math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in confidence_interval([]))


def test_summarize_groups_and_statistics():
    rows = [
        {"method": "b", "n": 5000, "seed": 1, "test_accuracy": 0.8},
        {"method": "b", "n": 500, "seed": 0, "test_accuracy": 0.6, "attacks.pgd20": 0.3},
        {"method": "a", "n": 500, "seed": 0, "test_accuracy": 0.5},
        {"method": "b", "n": 5000, "seed": 0, "test_accuracy": 0.7, "attacks.pgd20": 0.2},
        {"method": "b", "n": 500, "seed": 2, "test_accuracy": 0.9, "attacks.pgd20": 0.4},
    ]
    cells = summarize(rows, ["method", "n"], ["test_accuracy", "attacks.pgd20"])
    # methods in order of first appearance, sizes numerically
    assert [(c["method"], c["n"]) for c in cells] == [("b", 500), ("b", 5000), ("a", 500)]
    b500, b5000, a500 = cells
    assert b500["n_runs"] == 2 and b500["seeds"] == [0, 2]
    assert b500["test_accuracy_mean"] == pytest.approx(0.75)
    assert b500["test_accuracy_std"] == pytest.approx(math.sqrt(2 * 0.15 ** 2))  # ddof=1
    low, high = confidence_interval([0.6, 0.9])
    assert (b500["test_accuracy_ci_low"], b500["test_accuracy_ci_high"]) == (low, high)
    assert b500["attacks.pgd20_mean"] == pytest.approx(0.35)
    assert b5000["seeds"] == [0, 1] and b5000["test_accuracy_mean"] == pytest.approx(0.75)
    # the row without the attack is skipped for that metric only
    assert b5000["attacks.pgd20_n"] == 1 and b5000["test_accuracy_n"] == 2
    assert b5000["attacks.pgd20_mean"] == pytest.approx(0.2)
    assert math.isnan(b5000["attacks.pgd20_std"]) and math.isnan(b5000["attacks.pgd20_ci_low"])
    assert a500["n_runs"] == 1 and math.isnan(a500["attacks.pgd20_mean"])
    # grouping by method only: `n` is the run count
    by_method = summarize(rows, ["method"], ["test_accuracy"])
    assert [(c["method"], c["n"]) for c in by_method] == [("b", 4), ("a", 1)]
    assert by_method[0]["test_accuracy_std"] == pytest.approx(np.std([0.8, 0.6, 0.7, 0.9], ddof=1))


def test_summary_md(tmp_path):
    cells = summarize(fake_rows(sizes=(500, 5000)), ["method", "n"], ["test_accuracy"])
    path = tmp_path / "summary.md"
    text = write_summary_md(cells, path, ["method", "n"], ["test_accuracy"], title="Size ablation",
                            notes=["selected on val, reported on test"])
    assert path.read_text() == text
    lines = text.splitlines()
    assert lines[0] == "# Size ablation"
    assert "- selected on val, reported on test" in lines
    assert any("n_runs = 2 seeds" in line and "Student-t 95 %" in line for line in lines)
    header = next(line for line in lines if line.startswith("| method"))
    assert header == "| method | n | n_runs | test_accuracy mean ± std [95% CI low, high] |"
    c = cells[0]
    expected = (f"| fast | 500 | 2 | {c['test_accuracy_mean']:.4f} ± {c['test_accuracy_std']:.4f} "
                f"[{c['test_accuracy_ci_low']:.4f}, {c['test_accuracy_ci_high']:.4f}] |")
    assert expected in lines
    assert lines.index("- selected on val, reported on test") < lines.index(header)
    assert len([line for line in lines if line.startswith("| ")]) == 1 + len(cells)


def test_summary_md_single_seed(tmp_path):
    rows = [r for r in fake_rows(seeds=(0,)) if r["n"] == 500]
    cells = summarize(rows, ["method"], ["test_accuracy"])
    text = write_summary_md(cells, tmp_path / "s.md", ["method"], ["test_accuracy"], title="t")
    assert "- n = 1 seeds (runs) per cell (seeds 0)" in text
    assert f"| fast | 1 | {cells[0]['test_accuracy_mean']:.4f} (single run, no CI) |" in text


def test_plot_metric_vs_size_log_axis(tmp_path):
    cells = summarize(fake_rows(), ["method", "n"], ["test_accuracy", "attacks.pgd20"])
    assert len(cells) == 10 and all(c["n_runs"] == 2 for c in cells)
    path = plot_metric_vs_size(cells, tmp_path / "size.png", reference=0.913,
                               secondary_fraction_of=0.913)
    assert path == tmp_path / "size.png"
    assert_png(path)
    assert (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI) == pytest.approx((WIDTH, HEIGHT))
    assert not list(tmp_path.glob(".*tmp"))


def test_plots_with_nan_ci(tmp_path):
    cells = summarize(fake_rows(sizes=(1000, 10000), seeds=(3,)), ["method", "n"],
                      ["test_accuracy", "attacks.pgd20"])
    assert all(math.isnan(c["test_accuracy_ci_low"]) for c in cells)
    assert_png(plot_metric_vs_size(cells, tmp_path / "nan.png", title="single seed"))
    assert_png(plot_clean_vs_robust(cells, tmp_path / "cr1.png", series_key="method"))


def test_plot_clean_vs_robust(tmp_path):
    cells = summarize(fake_rows(), ["method", "n"], ["test_accuracy", "attacks.pgd20"])
    assert_png(plot_clean_vs_robust(cells, tmp_path / "cr.png", series_key="method"))
