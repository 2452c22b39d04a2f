"""Executors: where the runs of a sweep execute. Every executor writes the same run directories,
so a finished run is skipped wherever it ran.

``local`` runs each job as its own ``dfkd run`` process pinned to one torch thread, at most
``jobs`` at once (two torch processes of two threads each on two cores run many times slower
than one thread each); ``submitit`` (Slurm) and ``ray`` run the same unit elsewhere
(:mod:`.cluster`). An executor is ``(jobs, max_jobs, progress, options) -> [JobResult]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import save_yaml
from ..errors import ConfigError
from ..registry import Registry
from .spec import ExperimentSpec


@dataclass
class Job:
    """One run of a sweep: its experiment (already varied), run directory and the shared stage cache."""

    name: str
    spec: ExperimentSpec
    out: Path
    stages_dir: Path
    swept: dict[str, Any] = field(default_factory=dict)

    @property
    def report_path(self) -> Path:
        return self.out / "report.json"

    def finished(self) -> bool:
        """The run has a report for exactly this experiment (same digest)."""
        if not self.report_path.is_file():
            return False
        try:
            return json.loads(self.report_path.read_text()).get("digest") == self.spec.digest()
        except (OSError, ValueError):
            return False

    def command(self) -> list[str]:
        return [sys.executable, "-m", "datafree_kd.cli", "run", str(self.out / "experiment.yaml"), "--out",
                str(self.out), "--stages", str(self.stages_dir)]


@dataclass
class JobResult:
    job: Job
    status: str  # done | skipped | failed
    seconds: float = 0.0
    error: str = ""


EXECUTORS: Registry[Callable[..., list[JobResult]]] = Registry("executor")
REPO_ROOT = Path(__file__).resolve().parents[2]


def run_job(job: Job) -> JobResult:
    """One run, wherever it executes: skipped when finished, else a ``dfkd run`` subprocess on
    one torch thread with its log in the run directory."""
    if job.finished():
        return JobResult(job, "skipped")
    job.out.mkdir(parents=True, exist_ok=True)
    save_yaml(job.out / "experiment.yaml", job.spec.to_dict())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO_ROOT),
                                                   env.get("PYTHONPATH", "")] if p)
    began = time.perf_counter()
    with open(job.out / "log.txt", "w") as log:
        proc = subprocess.run(job.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        lines = (job.out / "log.txt").read_text().strip().splitlines()
        return JobResult(job, "failed", seconds, lines[-1] if lines else f"exit code {proc.returncode}")
    return JobResult(job, "done", seconds)


@EXECUTORS.register("local")
def run_local(jobs: list[Job], max_jobs: int = 1, progress: Callable[[JobResult, int, int], None] | None = None,
              options: dict[str, Any] | None = None) -> list[JobResult]:
    """Run ``jobs`` as local processes, ``max_jobs`` at a time, in the given order."""
    if options:
        raise ConfigError(f"the local executor takes no options, got {', '.join(sorted(options))}")
    results: list[JobResult] = []

    def one(job: Job) -> JobResult:
        result = run_job(job)
        results.append(result)
        if progress is not None:
            progress(result, len(results), len(jobs))
        return result

    with ThreadPoolExecutor(max_workers=max(1, max_jobs)) as pool:
        ordered = list(pool.map(one, jobs))
    return ordered


from . import cluster  # noqa: E402,F401  (registers the submitit and ray executors)
