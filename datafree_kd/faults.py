"""Named crash points, so the reliability tests can kill a run at an exact place, not a racy time.

``DFKD_FAULT=POINT:N`` in the environment makes the process SIGKILL itself the N-th time it
reaches ``crash_point(POINT)``; unset (always, outside tests) each call is one dictionary lookup.
Points: ``loop.unit`` (a unit trained, not yet logged or checkpointed), ``loop.checkpoint`` (a
checkpoint just written), ``io.before_replace`` (an atomic write's temporary file complete, not
yet renamed into place), ``transfer.shard_written`` (a shard on disk, its meta.json not yet
updated), ``synthesis.fitted`` (a synthesizer fitted, its state not yet saved),
``synthesis.batch`` (a generated batch appended) and ``attacks.batch`` (an attacked batch
journaled by ``robust_accuracy``).
"""

from __future__ import annotations

import os
import signal

_reached: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("DFKD_FAULT")
    if not spec:
        return
    point, _, count = spec.rpartition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)
