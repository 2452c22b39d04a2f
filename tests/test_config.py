from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import load_script
from datafree_kd.commands.evaluate import EvaluateConfig
from datafree_kd.config import (
    config_from_dict, config_to_dict, load_yaml, merge, parse_overrides, save_yaml,
)
from datafree_kd.distillation import DistillConfig
from datafree_kd.errors import ConfigError
from datafree_kd.losses import Objective
from datafree_kd.data.info import DatasetInfo
from datafree_kd.synthesis import SynthesizeConfig, build_synthesizer
from datafree_kd.teacher_training import TeacherTrainConfig, recipe_for

CONFIG_CLASSES = [TeacherTrainConfig, EvaluateConfig, DistillConfig, SynthesizeConfig]
REQUIRED = {EvaluateConfig: {"model": "m.pt"}, DistillConfig: {"teacher": "t.pt"}, SynthesizeConfig: {"teacher": "t.pt"}}
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cls", CONFIG_CLASSES)
def test_yaml_round_trip(cls, tmp_path):
    cfg = cls(**REQUIRED.get(cls, {}))
    save_yaml(tmp_path / "c.yaml", cfg)
    again = config_from_dict(cls, load_yaml(tmp_path / "c.yaml"))
    assert again == cfg
    assert config_to_dict(again) == config_to_dict(cfg)


def test_overrides_are_typed():
    over = parse_overrides(["epochs=3", "lr=0.2", "hflip=false", "data_root=/x", "device=cpu"])
    cfg = config_from_dict(TeacherTrainConfig, over)
    assert (cfg.epochs, cfg.lr, cfg.hflip, cfg.data_root) == (3, 0.2, False, "/x")
    assert isinstance(cfg.lr, float) and isinstance(cfg.epochs, int)


def test_integer_looking_float_accepted_and_string_number_coerced():
    cfg = config_from_dict(TeacherTrainConfig, {"lr": 1, "epochs": "4"})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.epochs == 4


@pytest.mark.parametrize(
    "data, message",
    [
        ({"epochz": 3}, "unknown config key"),
        ({"epochs": "three"}, "epochs: expected an integer"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"hflip": "maybe"}, "hflip: expected true/false"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"epochs": 2, "warmup_epochs": 2}, "warmup_epochs"),
    ],
)
def test_bad_configs_are_refused(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(TeacherTrainConfig, data)


def test_malformed_override():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])


def test_yaml_with_python_tag_is_refused(tmp_path):
    bad = tmp_path / "evil.yaml"
    bad.write_text("epochs: !!python/object/apply:os.system ['echo pwned > %s']\n" % (tmp_path / "p"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    assert not (tmp_path / "p").exists()


def test_missing_and_non_mapping_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(tmp_path / "list.yaml")


def test_merge_is_recursive_and_right_biased():
    assert merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 1}


def test_recipes_are_valid_configs():
    for dataset in ("fashion-mnist", "mnist", "cifar10", "cifar100", "svhn"):
        config_from_dict(TeacherTrainConfig, {"dataset": dataset, **recipe_for(dataset, "resnet20")})


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("**/*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    data = load_yaml(path)
    if path.parent.name == "studies":  # a plan: every row's distillation and synthesis settings must be valid
        info = DatasetInfo("fashion-mnist", 10, 1, 28, (0.5,), (0.25,))
        load_script("study_datafree").check_plan(data["rows"])  # set_of rows name a row made the same way
        for row in data["rows"]:
            cfg = config_from_dict(DistillConfig, {"teacher": "t.pt", "source": "online:noise", **row.get("distill", {})})
            Objective.from_spec(cfg.objective, cfg.term_options)
            if row["kind"] == "materialising" and row["method"] != "auto":
                build_synthesizer(row["method"], info, row.get("options", {}))
            elif row["kind"] == "online":
                from generators import SYNTHESIZERS

                SYNTHESIZERS.get(row["method"])(info, **row.get("options", {}))
        return
    if path.parent.name == "experiments":  # a pipeline: stages of known kinds, inputs naming earlier stages
        from datafree_kd.experiment import ExperimentSpec

        assert ExperimentSpec.from_dict(data, str(path)).stages
        return
    cls = {"teacher": TeacherTrainConfig, "evaluate": EvaluateConfig, "distill": DistillConfig,
           "synthesize": SynthesizeConfig}[path.parent.name]
    required = {EvaluateConfig: {"model": "x.pt"}, DistillConfig: {"teacher": "t.pt"}, SynthesizeConfig: {"teacher": "t.pt"}}
    cfg = config_from_dict(cls, {**required.get(cls, {}), **data})
    if cls is DistillConfig:
        Objective.from_spec(cfg.objective, cfg.term_options)


@dataclass
class Inner:
    k: int = 1


@dataclass
class Outer:
    inner: Inner
    sizes: tuple[int, ...] = (1,)


def test_nested_dataclass_and_tuple_fields():
    cfg = config_from_dict(Outer, {"inner": {"k": "3"}, "sizes": "1000,5000"})
    assert cfg.inner.k == 3 and cfg.sizes == (1000, 5000)
    with pytest.raises(ConfigError, match="inner.zz"):
        config_from_dict(Outer, {"inner": {"zz": 1}})
