"""scripts/study_datafree.py: seeds of one row run by separate processes merge into one table row;
a ``set_of`` row distils from another row's sets."""

from __future__ import annotations

import argparse
import json

import pytest

from conftest import load_script, train_toy_teacher
from datafree_kd.errors import ConfigError


def _study():
    return load_script("study_datafree")


def _row(seeds, resolved, options=None):
    return {"kind": "materialising", "method": "auto", "options": options or {},
            "runs": [{"seed": s, "test_accuracy": 0.5 + s / 10, "resolved": resolved} for s in seeds]}


def test_seeds_of_the_same_configuration_merge_and_a_rerun_replaces_its_seed():
    merge = _study().merge_runs
    fast_all = {"method": "fast", "options": {"bn_layers": "all"}}
    old = _row([0, 1], fast_all)
    old["runs"][1]["test_accuracy"] = 0.0  # seed 1 is re-run below: the new value must win
    old["runs"][0]["resolved"] = {"options": {"bn_layers": "all"}, "method": "fast"}  # as read back from JSON
    merged = merge(old, _row([1, 2], fast_all))
    assert [r["seed"] for r in merged] == [0, 1, 2]
    assert merged[1]["test_accuracy"] == 0.6


def test_runs_of_another_configuration_are_dropped_not_averaged():
    merge = _study().merge_runs
    before = _row([0, 1, 2], {"method": "fast", "options": {"bn_layers": "2d"}})  # an older default
    merged = merge(before, _row([1], {"method": "fast", "options": {"bn_layers": "all"}}))
    assert [r["seed"] for r in merged] == [1]
    assert [r["seed"] for r in merge(_row([0], None, {"a": 1}), _row([1], None))] == [1]  # plan options changed
    assert [r["seed"] for r in merge(None, _row([3], None))] == [3]
    eps_01, eps_005 = ({**_row([0], None), "distill": {"eps": e}} for e in (0.1, 0.05))
    assert [r["seed"] for r in merge(eps_01, {**eps_005, "runs": _row([1], None)["runs"]})] == [1]  # recipe changed
    legacy = _row([0], None)  # written before the recipe was recorded: kept
    assert [r["seed"] for r in merge(legacy, {**eps_005, "runs": _row([1], None)["runs"]})] == [0, 1]


def test_seeds_option_parses_and_rejects_in_one_line():
    study = _study()
    assert study.seed_list("0,1,2") == [0, 1, 2]
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated integers"):
        study.seed_list("0,x")


def test_a_set_of_row_distils_from_the_other_rows_set_and_counts_its_synthesis_time(tmp_path):
    study = _study()
    data, teacher = train_toy_teacher(tmp_path)
    synth = {"n": 64, "synthesize": {"batch_size": 32, "shard_size": 64}}
    distill = {"data_root": str(data), "steps": 3, "batch_size": 16, "device": "cpu"}
    base = {"name": "made", "kind": "materialising", "method": "random-generator", **synth, "distill": distill}
    reuse = {**base, "name": "reused", "set_of": "made", "distill": {**distill, "objective": "kd=1,explore=1"}}
    runs = tmp_path / "runs"
    study.run_row(base, str(teacher), 1, runs, threads=1)
    made_results = runs / "made-s1-set" / "results.json"
    recorded = json.loads(made_results.read_text())
    made_results.write_text(json.dumps({**recorded, "cpu_time_s": 6000.0}))  # as if it had taken 100 CPU-min
    row = study.run_row(reuse, str(teacher), 1, runs, threads=1)
    assert not (runs / "reused-s1-set").exists()
    config = json.loads((runs / "reused-s1" / "results.json").read_text())
    assert config["source"] == f"transfer:{runs / 'made-s1-set' / 'transfer_set'}"
    assert "explore" in config["objective"]
    assert 100 <= row["cpu_minutes"] < 110  # the reused set's recorded synthesis is counted, not free
    other_options = {**reuse, "options": {"latent_dim": 8}}  # not the set that row made: refused, not mixed
    with pytest.raises(ConfigError):
        study.run_row(other_options, str(teacher), 1, runs, threads=1)


def test_a_plan_whose_set_of_names_no_matching_row_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    study = _study()
    made = {"name": "made", "kind": "materialising", "method": "auto", "n": 100}
    study.check_plan([made, {**made, "name": "reused", "set_of": "made"}])
    with pytest.raises(ConfigError, match="not an earlier materialising row"):
        study.check_plan([made, {**made, "name": "reused", "set_of": "mdae"}])
    with pytest.raises(ConfigError, match="must equal"):
        study.check_plan([made, {**made, "name": "reused", "set_of": "made", "n": 50}])
    plan = tmp_path / "plan.yaml"
    plan.write_text("rows:\n  - {name: b, kind: materialising, method: auto, set_of: a}\n")
    monkeypatch.setattr("sys.argv", ["study_datafree.py", "--teacher", "t.pt", "--plan", str(plan)])
    with pytest.raises(SystemExit) as exit_info:
        study.main()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and "set_of 'a' is not an earlier materialising row" in err


def test_only_names_must_be_rows_of_the_plan_and_names_cannot_hold_commas(tmp_path, monkeypatch, capsys):
    study = _study()
    with pytest.raises(ConfigError, match="cannot contain ','"):
        study.check_plan([{"name": "kd, T 2", "kind": "real"}])
    plan = tmp_path / "plan.yaml"
    plan.write_text("rows:\n  - {name: kd-real, kind: real}\n")
    monkeypatch.setattr("sys.argv", ["study_datafree.py", "--teacher", "t.pt", "--plan", str(plan),
                                     "--only", "kd-real,kd-rael", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        study.main()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and "no row named 'kd-rael'" in err
    assert not (tmp_path / "out").exists()  # nothing ran
