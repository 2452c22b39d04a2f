"""User-facing errors: the CLI turns these into a one-line message and exit code 2."""

from __future__ import annotations

import os


class DfkdError(Exception):
    """A problem the user can fix (bad file, bad config, missing data); never a bug."""

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ConfigError(DfkdError):
    """An impossible or malformed configuration."""


class CheckpointError(DfkdError):
    """A checkpoint that is missing, corrupt, truncated or does not fit."""


class DatasetError(DfkdError):
    """A dataset that is missing, malformed or unknown."""


class NotATransferSet(DatasetError):
    """A ``transfer:DIR`` that is neither a transfer set nor a ``dfkd synthesize`` run directory."""


class DivergenceError(DfkdError):
    """A loss term, gradient or generator output became NaN or Inf: the run stops, keeping its
    last good checkpoint, instead of training on silently."""
