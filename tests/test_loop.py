"""The shared training-loop core: its schedule, windowed metrics, checkpoints and exact resume."""

from __future__ import annotations

import json

import pytest
import torch

import datafree_kd.loop as loop_core
from datafree_kd.errors import ConfigError
from datafree_kd.loop import LoopSchedule, TrainingLoop, WindowAverage
from datafree_kd.rundir import RunDir


def test_schedule_is_due_at_its_period_and_at_the_last_unit():
    schedule = LoopSchedule(total=10, log_every=4, eval_every=0)
    assert [d for d in range(1, 11) if schedule.due(4, d)] == [4, 8, 10]
    assert [d for d in range(1, 11) if schedule.due(0, d)] == [10]  # 0: only the last unit


def test_window_average_means_each_figure_since_the_last_flush():
    window = WindowAverage()
    for v in (1.0, 2.0, 6.0):
        window.add({"loss": v, "acc": v / 10})
    assert window.flush() == pytest.approx({"loss": 3.0, "acc": 0.3})
    assert window.flush() == {}


class _Counter(torch.nn.Module):
    """A trainer whose every unit draws from the run's generator: resume must replay the draws."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("total", torch.zeros(()))


def _loop(tmp_path, name, counter, generator, **config):
    schedule = LoopSchedule(total=9, unit="step", log_every=2, eval_every=4, checkpoint_every=3)
    return TrainingLoop(RunDir(tmp_path / name), {"counter": counter}, generator, schedule, {"lr": 1, **config},
                        lambda record: f"step {record['step']}")


def _fit(loop, counter, generator):
    def unit(index):
        draw = torch.rand((), generator=generator)
        counter.total += draw
        return {"draw": float(draw)}

    return loop.fit(unit, lambda: {"total": float(counter.total)})


def test_interrupted_loop_resumes_to_the_same_history_and_state(tmp_path, monkeypatch):
    counter, g = _Counter(), torch.Generator().manual_seed(0)
    straight = _fit(_loop(tmp_path, "a", counter, g), counter, g)
    assert [r["step"] for r in straight] == [2, 4, 6, 8, 9]
    assert ["total" in r for r in straight] == [False, True, False, True, True]

    original = loop_core.save_training_state
    calls = []

    def stop_after_second_checkpoint(*args, **kwargs):
        original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop_core, "save_training_state", stop_after_second_checkpoint)
    counter2, g2 = _Counter(), torch.Generator().manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        _fit(_loop(tmp_path, "b", counter2, g2), counter2, g2)
    monkeypatch.setattr(loop_core, "save_training_state", original)

    counter3, g3 = _Counter(), torch.Generator().manual_seed(123)  # state comes from last.pt
    loop = _loop(tmp_path, "b", counter3, g3)
    loop.resume()
    assert loop.start == 6
    resumed = _fit(loop, counter3, g3)
    strip = lambda records: [{k: v for k, v in r.items() if k not in ("elapsed_s", "cpu_s")} for r in records]  # noqa: E731
    assert strip(resumed) == strip(straight) and torch.equal(counter3.total, counter.total)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4, 6, 8, 9]
    assert (tmp_path / "b" / "metrics.csv").read_text().startswith("step,")

    with pytest.raises(ConfigError, match="different config"):
        _loop(tmp_path, "b", _Counter(), torch.Generator(), extra=2).resume()


def test_an_evaluation_off_the_log_rhythm_still_happens(tmp_path):
    """eval_every need not be a multiple of log_every: each due evaluation gets its own record."""
    counter, g = _Counter(), torch.Generator().manual_seed(0)
    schedule = LoopSchedule(total=9, unit="step", log_every=4, eval_every=3)
    loop = TrainingLoop(RunDir(tmp_path / "r"), {"counter": counter}, g, schedule, {"lr": 1},
                        lambda record: f"step {record['step']}")
    history = _fit(loop, counter, g)
    assert [r["step"] for r in history] == [3, 4, 6, 8, 9]
    assert [r["step"] for r in history if "total" in r] == [3, 6, 9]
    assert all(r["cpu_s"] >= 0 for r in history)
