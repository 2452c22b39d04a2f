"""The ``dfkd`` command line. User errors become one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn, Sequence

from . import __version__
from .errors import DfkdError


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line, like every other user error (``dfkd: error: ...``, exit 2);
    ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        print(f"dfkd: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from .commands import distill, evaluate, listing, prior, run, sweep, synthesize, teacher

    parser = _OneLineParser(
        prog="dfkd",
        description="Data-free knowledge distillation suite.",
        epilog="Config overrides go after the options as key=value (e.g. epochs=5 lr=0.1).",
    )
    parser.add_argument("--version", action="version", version=f"dfkd {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in (run, sweep, teacher, synthesize, prior, distill, evaluate, listing):
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    unknown = [a for a in extra if a not in overrides]
    if unknown or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if overrides:
        args.overrides = overrides
    if os.environ.get("RANK", "0") not in ("", "0"):  # under torchrun, rank 0 speaks for the job
        sys.stdout = open(os.devnull, "w")
    try:
        return int(args.func(args) or 0)
    except DfkdError as exc:
        print(f"dfkd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dfkd: interrupted (resume with --resume where the command supports it)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
