"""The one training-loop core every trainer plugs into (teacher training, distillation).

A trainer supplies what one *unit* of training is (an epoch of supervised training, one
distillation step) and what its periodic evaluation measures; the loop owns the rest, the same
way for all of them (Lightning's ``fit``):

* exact resume from ``last.pt`` (weights, optimisers, schedulers, data order and RNG states),
  refused under a different config;
* metrics: the unit figures averaged over each logging window, written to ``metrics.jsonl``
  (and ``metrics.csv`` at the end) and kept as ``history``;
* periodic evaluation every ``eval_every`` units and at the last one (reported, never used to
  select a model: results are last-unit);
* atomic checkpoints every ``checkpoint_every`` units and at the last one;
* divergence: a NaN or Inf among a unit's figures (every loss term, gradient norms) stops the
  run with a ``DivergenceError`` naming the figure and unit, before that unit is checkpointed;
* a progress bar over the units and a printed line now and then.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .distributed import SINGLE, Ranks
from .errors import DivergenceError
from .faults import crash_point
from .rundir import RunDir
from .training import check_same_config, load_training_state, save_training_state


def check_finite(values: dict[str, float], where: str) -> None:
    """Stop on the first NaN or Inf among logged figures (loss terms, gradient norms), naming it."""
    bad = [k for k, v in values.items() if isinstance(v, (int, float)) and not math.isfinite(v)]
    if bad:
        raise DivergenceError(f"{where}: {', '.join(f'{k} = {values[k]}' for k in bad)}")


class WindowAverage:
    """Mean of each logged figure since the last flush (metrics are written every N units)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, values: dict[str, float]) -> None:
        self.count += 1
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def flush(self) -> dict[str, float]:
        out = {k: v / max(1, self.count) for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out


@dataclass
class LoopSchedule:
    """How often the loop logs, evaluates, checkpoints and prints, in units (0: never, but the last)."""

    total: int
    unit: str = "step"
    log_every: int = 1
    eval_every: int = 0
    checkpoint_every: int = 1
    print_every: int = 1

    def due(self, every: int, done: int) -> bool:
        return done == self.total or (every > 0 and done % every == 0)


@dataclass
class TrainingLoop:
    """Runs ``train_unit`` from the resumed position to ``schedule.total``; see the module docstring.

    ``stateful`` names everything saved for an exact resume; ``config`` is the run's resolved
    config (saved with the state and compared on resume, ``saved_defaults`` filling fields older
    states lack).
    """

    run: RunDir
    stateful: dict[str, Any]
    generator: torch.Generator
    schedule: LoopSchedule
    config: dict[str, Any]
    describe: Callable[[dict[str, Any]], str]
    saved_defaults: dict[str, Any] = field(default_factory=dict)
    ranks: Ranks = SINGLE
    history: list[dict[str, Any]] = field(default_factory=list)
    start: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0

    def resume(self) -> None:
        """Continue from ``last.pt`` when there is one (the caller asked for ``--resume``)."""
        if not self.run.state_path.exists():
            return
        progress = load_training_state(self.run.state_path, self.stateful, self.generator)
        check_same_config({**self.saved_defaults, **progress.get("config", {})}, self.config, self.run.state_path)
        unit = self.schedule.unit
        self.start, self.history, self.elapsed = progress[unit], list(progress["history"]), progress["elapsed_s"]
        self.cpu = progress.get("cpu_s", 0.0)
        if self.ranks.is_main:
            print(f"resuming from {unit} {self.start} of {self.schedule.total}")

    def fit(self, train_unit: Callable[[int], dict[str, float]],
            evaluate: Callable[[], dict[str, float]] | None = None) -> list[dict[str, Any]]:
        """Train every remaining unit; return the history (one record per logging window)."""
        schedule = self.schedule
        self.run.reset_metrics(self.history)
        window = WindowAverage()
        began, cpu_began = time.perf_counter(), time.process_time()
        units = range(self.start, schedule.total)
        for index in tqdm(units, initial=self.start, total=schedule.total, desc=schedule.unit + "s",
                          disable=None if self.ranks.is_main else True):
            done = index + 1
            where = f"diverged at {schedule.unit} {done} (last good checkpoint kept)"
            try:
                values = train_unit(index)
            except DivergenceError as exc:
                raise DivergenceError(f"{where}: {exc}") from None
            check_finite(values, where)  # before anything of this unit is logged or checkpointed
            crash_point("loop.unit")
            window.add(values)
            evaluated = evaluate is not None and schedule.due(schedule.eval_every, done)
            if evaluated or schedule.due(schedule.log_every, done):  # an evaluation is never skipped for the log's rhythm
                record: dict[str, Any] = {schedule.unit: done, **window.flush()}
                if evaluated:
                    record.update(evaluate())
                record["elapsed_s"] = self.elapsed + time.perf_counter() - began
                record["cpu_s"] = self.cpu + time.process_time() - cpu_began  # the process's, all threads
                self.history.append(record)
                self.run.append_metrics(record)
                if self.ranks.is_main and (evaluated or schedule.due(schedule.print_every, done)):
                    print(self.describe(record), flush=True)
            if schedule.due(schedule.checkpoint_every, done):
                progress = {schedule.unit: done, "history": self.history, "config": self.config,
                            "elapsed_s": self.elapsed + time.perf_counter() - began,
                            "cpu_s": self.cpu + time.process_time() - cpu_began}
                if self.run.writes:
                    save_training_state(self.run.state_path, self.stateful, self.generator, progress)
                self.ranks.barrier()
                crash_point("loop.checkpoint")
        self.elapsed += time.perf_counter() - began
        self.cpu += time.process_time() - cpu_began
        self.run.write_metrics_csv(self.history)
        return self.history
