"""``--blind``: the commands whose runs are chosen between on val print no figure measured on the
test split (the research protocol: choose on val, read test once, after the choice)."""

from __future__ import annotations

import argparse

from datafree_kd.commands.run import summary_lines
from datafree_kd.summary import add_blind_argument, results_summary

RESULTS = {"arch": "lenet5_half", "dataset": "fashion-mnist", "test_accuracy": 0.8123, "val_accuracy": 0.8456,
           "reference_accuracy": 0.9111, "agreement": 0.8777, "ece": 0.0312, "params": 15000,
           "attacks": {"pgd20": 0.6222}}
TEST_FIGURES = ("0.8123", "0.9111", "0.8777", "0.0312", "0.6222")


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


def test_the_flag_defaults_to_seeing():
    parser = argparse.ArgumentParser()
    add_blind_argument(parser)
    assert parser.parse_args([]).blind is False and parser.parse_args(["--blind"]).blind is True
