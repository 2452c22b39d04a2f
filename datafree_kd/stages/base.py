"""What an experiment stage is: a registered kind with a typed config, named inputs and outputs.

A stage turns its inputs (the outputs of earlier stages: a teacher checkpoint, a transfer set,
a student) and its config into a run directory that follows the run-directory contract
(DESIGN). The experiment runner (:mod:`datafree_kd.experiment`) only talks to this interface,
so a new kind of stage is one module that registers a :class:`Stage` subclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..config import config_from_dict, merge
from ..errors import ConfigError
from ..registry import Registry


@dataclass
class StageOutput:
    """What a finished stage hands downstream: named artefact paths and a content fingerprint.

    ``fingerprint`` identifies *what was produced* (weights, a transfer set's shard checksums),
    so a downstream stage keyed on it re-runs when its input really changed, not when only a path
    moved.
    """

    name: str
    kind: str
    path: Path
    artefacts: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""
    results: dict[str, Any] = field(default_factory=dict)

    def artefact(self, key: str, wanted_by: str) -> str:
        if key not in self.artefacts:
            raise ConfigError(f"stage {wanted_by!r} needs a {key} from stage {self.name!r} "
                              f"({self.kind}), which provides {', '.join(sorted(self.artefacts)) or 'nothing'}")
        return self.artefacts[key]


class Stage:
    """One kind of stage. Subclasses set the class attributes and implement ``build_config``,
    ``run`` and ``outputs``.

    * ``inputs``: the input slot names this kind accepts (``{"teacher": "model"}`` maps the slot
      to the artefact it reads from the upstream stage); ``list_inputs`` names slots that take a
      list of stages (evaluation of several models); ``union_inputs`` names slots that take one
      stage or a list (a student's ``source``: several sets learnt from as one union).
    * ``smoke``: config overrides that shrink the stage to seconds (``dfkd run --smoke``).
    """

    kind: ClassVar[str] = ""
    config_cls: ClassVar[type] = object
    inputs: ClassVar[dict[str, str]] = {}
    list_inputs: ClassVar[frozenset[str]] = frozenset()
    union_inputs: ClassVar[frozenset[str]] = frozenset()
    required_inputs: ClassVar[frozenset[str]] = frozenset()
    smoke: ClassVar[dict[str, Any]] = {}
    #: config keys that do not change what a stage produces (where it runs, how fast)
    unhashed_keys: ClassVar[frozenset[str]] = frozenset({"device", "threads", "data_root", "download",
                                                         "latency_runs"})
    #: keys added after stage caches existed, hashed only when set away from this default, so a
    #: cache made before the key existed still matches the same work
    hashed_unless_default: ClassVar[dict[str, Any]] = {}

    def build_config(self, config: dict[str, Any], inputs: dict[str, Any], name: str) -> Any:
        """The typed config the stage runs with: ``config`` plus the paths its inputs provide."""
        return config_from_dict(self.config_cls, merge(config, self.input_fields(inputs, name)))

    def input_fields(self, inputs: dict[str, Any], name: str) -> dict[str, Any]:
        """Config fields filled from inputs (e.g. ``teacher: path/model.pt``); default none."""
        return {}

    def preflight(self, config: dict[str, Any], inputs: dict[str, Any], name: str) -> Any:
        """Validate ``config`` before any stage of the experiment runs, ``inputs`` being placeholders
        for outputs not made yet (their artefacts are ``<KEY of stage NAME>``); default: build the
        config. Override to skip what cannot be known before the inputs exist."""
        return self.build_config(config, inputs, name)

    def content_key(self, cfg: Any) -> str:
        """What the stage reads besides its config and inputs (a file's checksum); default none."""
        return ""

    def run(self, cfg: Any, out: Path, resume: bool) -> dict[str, Any]:
        raise NotImplementedError

    def outputs(self, out: Path, results: dict[str, Any]) -> tuple[dict[str, str], str]:
        """``(artefacts, fingerprint)`` of a finished run directory."""
        raise NotImplementedError

    def command(self, cfg: Any, out: Path) -> str:
        """The shell command that reproduces this stage from its saved config."""
        raise NotImplementedError

    def smoke_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` shrunk for a smoke run (the stage's ``smoke`` overrides win)."""
        return merge(config, self.smoke)

    def figures(self, results: dict[str, Any]) -> dict[str, Any]:
        """The figures of this stage worth a line in the experiment report."""
        keys = ("test_accuracy", "val_accuracy", "agreement", "attacks", "params", "count", "method")
        return {k: results[k] for k in keys if k in results}


STAGES: Registry[type[Stage]] = Registry("stage")


def register_stage(kind: str):
    """Class decorator: ``@register_stage("teacher")``."""
    def decorator(cls: type[Stage]) -> type[Stage]:
        cls.kind = kind
        return STAGES.register(kind)(cls)

    return decorator
