"""``dfkd list models|datasets|terms|synthesizers|attacks|stages|executors``: what the registries hold."""

from __future__ import annotations

import argparse
from typing import Callable


def _models() -> list[str]:
    from ..models import MODELS

    return MODELS.names() + ["tv:NAME (any torchvision classifier)"]


def _datasets() -> list[str]:
    from ..data import DATASETS

    return DATASETS.names()


def _terms() -> list[str]:
    from ..losses import LOSS_TERMS

    return LOSS_TERMS.names()


def _synthesizers() -> list[str]:
    from generators import SYNTHESIZERS

    return [f"{n} ({'online' if getattr(SYNTHESIZERS.get(n), 'online', False) else 'materialising'})"
            for n in SYNTHESIZERS.names()]


def _attacks() -> list[str]:
    from ..attacks import ATTACKS

    return ATTACKS.names()


def _stages() -> list[str]:
    from ..stages import STAGES

    return [f"{n} (inputs: {', '.join(STAGES.get(n).inputs) or 'none'})" for n in STAGES.names()]


def _executors() -> list[str]:
    from ..experiment.executor import EXECUTORS

    return EXECUTORS.names()


LISTERS: dict[str, Callable[[], list[str]]] = {
    "models": _models, "datasets": _datasets, "terms": _terms, "synthesizers": _synthesizers, "attacks": _attacks,
    "stages": _stages, "executors": _executors,
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    lister = subparsers.add_parser("list", help="list a registry: " + ", ".join(LISTERS))
    lister.add_argument("what", choices=tuple(LISTERS))
    lister.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    print("\n".join(LISTERS[args.what]()))
    return 0
