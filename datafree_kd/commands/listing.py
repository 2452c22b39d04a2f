"""``dfkd list models|datasets``: what the registries hold."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    lister = subparsers.add_parser("list", help="list registered models or datasets")
    lister.add_argument("what", choices=("models", "datasets"))
    lister.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    if args.what == "models":
        from ..models import MODELS

        print("\n".join(MODELS.names() + ["tv:NAME (any torchvision classifier)"]))
    else:
        from ..data import DATASETS

        print("\n".join(DATASETS.names()))
    return 0
