"""Pieces shared by subcommands: config resolution from defaults, YAML, flags and overrides."""

from __future__ import annotations

import argparse
from typing import Any, Callable, TypeVar

from ..config import config_from_dict, load_yaml, merge, parse_overrides

C = TypeVar("C")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (safe loader)")
    parser.set_defaults(overrides=[])  # filled by cli.main from trailing key=value arguments
    parser.add_argument("--out", required=True, help="run directory (config.yaml, results.json, ...)")


def resolve_config(
    cls: type[C],
    args: argparse.Namespace,
    flags: dict[str, Any],
    defaults: Callable[[dict[str, Any]], dict[str, Any]] = lambda user: {},
) -> C:
    """Precedence: dataclass defaults < ``defaults(user)`` (a recipe) < YAML < flags < key=value."""
    user: dict[str, Any] = load_yaml(args.config) if args.config else {}
    user = merge(user, {k: v for k, v in flags.items() if v is not None})
    user = merge(user, parse_overrides(args.overrides))
    return config_from_dict(cls, merge(defaults(user), user))


def add_preset_argument(parser: argparse.ArgumentParser) -> None:
    """``--preset``: the synthesizers' CPU-sized defaults or their published (paper) sizes."""
    from generators.base import PRESETS

    parser.add_argument("--preset", choices=PRESETS,
                        help="cpu: synthesizer defaults sized for two cores (default); "
                             "paper: each method's published sizes, for a GPU")
