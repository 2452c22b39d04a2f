"""``--blind``: the commands whose runs are chosen between on val print no figure measured on the
test split (the research protocol: choose on val, read test once, after the choice). The flag sets
one process-wide switch (``DFKD_BLIND``) that every printer asks and a sweep's child runs inherit."""

from __future__ import annotations

import argparse

import pytest

from datafree_kd.commands.run import summary_lines
from datafree_kd.distillation import _progress_line
from datafree_kd.summary import BLIND_ENV, add_blind_argument, is_blind, results_summary
from datafree_kd.teacher_training import _epoch_line

RESULTS = {"arch": "lenet5_half", "dataset": "fashion-mnist", "test_accuracy": 0.8123, "val_accuracy": 0.8456,
           "reference_accuracy": 0.9111, "agreement": 0.8777, "ece": 0.0312, "params": 15000,
           "attacks": {"pgd20": 0.6222}}
TEST_FIGURES = ("0.8123", "0.9111", "0.8777", "0.0312", "0.6222")


@pytest.fixture(autouse=True)
def seeing(monkeypatch):
    """Each test starts seeing; whatever it sets (the flag writes os.environ) is undone after it."""
    monkeypatch.setenv(BLIND_ENV, "0")


def test_results_summary_blind_keeps_val_and_cost_and_drops_every_test_figure():
    seen = results_summary(RESULTS)
    assert all(f in seen for f in TEST_FIGURES) and "0.8456" in seen
    blind = results_summary(RESULTS, blind=True)
    assert not any(f in blind for f in TEST_FIGURES), blind
    assert "0.8456" in blind and "15,000" in blind and "withheld (--blind)" in blind


def test_run_summary_blind_shows_val_per_model_and_no_ratio():
    report = {"cpu_s": 600.0, "models": {"teacher": {"test_accuracy": 0.9222},
                                         "student": {"test_accuracy": 0.8123, "val_accuracy": 0.8456,
                                                     "attacks": {"pgd20": 0.6222}}},
              "teacher": {"test_accuracy": 0.9222}, "student": {"test_accuracy": 0.8123}}
    seen = summary_lines(report)
    assert "0.8123" in seen and "student / teacher: 0.881" in seen
    blind = summary_lines(report, blind=True)
    assert not any(f in blind for f in ("0.9222", "0.8123", "0.6222", "0.881")), blind
    assert "0.8456" in blind and "10.0 min" in blind and "withheld" in blind


def test_the_flag_switches_every_printer_including_the_training_progress_lines(monkeypatch):
    parser = argparse.ArgumentParser()
    add_blind_argument(parser)
    step = {"step": 100, "elapsed_s": 5.0, "student0/total": 0.5, "student0/test_accuracy": 0.8123,
            "student0/val_accuracy": 0.8456}
    epoch = {"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.8, "test_accuracy": 0.8123, "elapsed_s": 5.0}
    assert parser.parse_args([]).blind is False and not is_blind()
    assert "0.8123" in _progress_line(step, 200) and "0.8123" in _epoch_line(epoch)
    assert parser.parse_args(["--blind"]).blind is True and is_blind()  # the flag sets the switch
    assert "0.8123" not in _progress_line(step, 200) and "0.8456" in _progress_line(step, 200)
    assert "0.8123" not in _epoch_line(epoch) and "0.8123" not in results_summary(RESULTS)
