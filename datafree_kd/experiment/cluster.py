"""Executors on engines users already run: Slurm through submitit, and Ray.

Each runs the same unit as the local executor (:func:`~.executor.run_job`: one ``dfkd run``
process on one torch thread, writing ``OUT/runs/NAME``), so the run directories, ``results.csv``
and the skipping of finished runs are the same whichever engine ran them. Neither library is
imported unless its executor is chosen (``pip install -e ".[slurm]"`` / ``".[ray]"``).

Options come from the experiment's ``executor:`` section and ``--executor-opt KEY=VALUE``:

* ``submitit``: ``cluster`` (``slurm``; ``local`` runs the jobs as local processes through
  submitit's own local executor; default: Slurm where ``sbatch`` exists, else local), ``folder``
  (submitit's logs, default ``OUT/submitit``), ``array_parallelism`` (default ``--jobs``), and any
  ``slurm_*`` parameter (``slurm_partition``, ``slurm_gres``...) plus ``timeout_min``,
  ``cpus_per_task``, ``gpus_per_node``, ``mem_gb``, passed to ``update_parameters``;
* ``ray``: ``address`` (``auto`` joins a running cluster; default: start a local one),
  ``num_cpus`` (per run, default 1), ``num_gpus`` (per run, default 0), ``local_cpus`` and
  ``object_store_mb`` (the local instance's size, default 2 CPUs and 256 MB).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .executor import EXECUTORS, Job, JobResult, REPO_ROOT, run_job

Progress = Callable[[JobResult, int, int], None] | None


def _import(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"--executor {module} needs the {module} package: pip install -e \".[{extra}]\"") from None


class _Tracker:
    """The results of one submission, in arrival order for the progress line and in job order at
    the end; finished runs are reported as skipped and never submitted."""

    def __init__(self, jobs: list[Job], progress: Progress) -> None:
        self.jobs, self.progress, self.results = jobs, progress, {}
        finished = {job.name: job.finished() for job in jobs}
        for job in jobs:
            if finished[job.name]:
                self._add(JobResult(job, "skipped"))
        self.todo = [job for job in jobs if not finished[job.name]]

    def record(self, job: Job, result: Callable[[], JobResult]) -> None:
        """A run's result; an engine-level failure (killed, timed out) becomes a failed run."""
        try:
            outcome = result()
        except Exception as exc:  # noqa: BLE001 - the engine's error, whatever it is, is this run's failure
            lines = str(exc).strip().splitlines()
            outcome = JobResult(job, "failed", 0.0, lines[-1] if lines else type(exc).__name__)
        self._add(outcome)

    def _add(self, result: JobResult) -> None:
        self.results[result.job.name] = result
        if self.progress is not None:
            self.progress(result, len(self.results), len(self.jobs))

    def ordered(self) -> list[JobResult]:
        return [self.results[job.name] for job in self.jobs]


def _throttled(tracker: _Tracker, limit: int, submit: Callable[[Job], Any],
               wait_any: Callable[[list[Any]], list[Any]], result_of: Callable[[Any], JobResult]) -> None:
    """At most ``limit`` runs in flight: submit, wait for any to end, record it, submit the next."""
    waiting, running = list(tracker.todo), {}
    while waiting or running:
        while waiting and len(running) < max(1, limit):
            job = waiting.pop(0)
            running[submit(job)] = job
        for handle in wait_any(list(running)):
            tracker.record(running.pop(handle), lambda: result_of(handle))


def _check_options(options: dict[str, Any], known: set[str], executor: str, prefixes: tuple[str, ...] = ()) -> None:
    unknown = sorted(k for k in options if k not in known and not k.startswith(prefixes))
    if unknown:
        raise ConfigError(f"unknown {executor} executor option(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(known))}{''.join(f', {p}*' for p in prefixes)}")


SUBMITIT_KEYS = {"cluster", "folder", "array_parallelism", "timeout_min", "cpus_per_task", "gpus_per_node",
                 "mem_gb", "nodes", "tasks_per_node", "name"}


@EXECUTORS.register("submitit")
def run_submitit(jobs: list[Job], max_jobs: int = 1, progress: Progress = None,
                 options: dict[str, Any] | None = None) -> list[JobResult]:
    """Submit the unfinished runs as one Slurm job array (or submitit's local processes, at most
    ``max_jobs`` at once) and wait for them."""
    options = dict(options or {})
    _check_options(options, SUBMITIT_KEYS, "submitit", ("slurm_",))
    submitit = _import("submitit", "slurm")
    cluster = options.pop("cluster", None) or ("slurm" if shutil.which("sbatch") else "local")
    if cluster not in ("slurm", "local", "debug"):
        raise ConfigError(f"submitit cluster must be slurm, local or debug, got {cluster!r}")
    study = jobs[0].out.parent.parent if jobs else Path(".")
    folder = Path(options.pop("folder", study / "submitit"))
    parallelism = int(options.pop("array_parallelism", max_jobs))
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    parameters = {"timeout_min": 60, "cpus_per_task": 1, "name": "dfkd", **options}
    if cluster == "slurm":
        parameters["slurm_array_parallelism"] = parallelism
    executor.update_parameters(**parameters)
    tracker = _Tracker(jobs, progress)
    if cluster == "slurm":
        handles = executor.map_array(run_job, tracker.todo)  # one array; Slurm runs `parallelism` at once
        for job, handle in zip(tracker.todo, handles):
            tracker.record(job, handle.result)
    else:  # local processes: at most `parallelism` at once, as the local executor would

        def wait_any(handles: list[Any]) -> list[Any]:
            while not any(h.done() for h in handles):
                time.sleep(0.5)
            return [h for h in handles if h.done()]

        _throttled(tracker, parallelism, lambda job: executor.submit(run_job, job), wait_any,
                   lambda handle: handle.result())
    return tracker.ordered()


RAY_KEYS = {"address", "num_cpus", "num_gpus", "local_cpus", "object_store_mb"}


@EXECUTORS.register("ray")
def run_ray(jobs: list[Job], max_jobs: int = 1, progress: Progress = None,
            options: dict[str, Any] | None = None) -> list[JobResult]:
    """Run the unfinished runs as Ray tasks (each asking for ``num_cpus``/``num_gpus``), at most
    ``max_jobs`` in flight, on a running cluster (``address=auto``) or a local instance."""
    options = dict(options or {})
    _check_options(options, RAY_KEYS, "ray")
    ray = _import("ray", "ray")
    started = False
    if not ray.is_initialized():
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
                            "OMP_NUM_THREADS": "1"}}
        if options.get("address"):
            ray.init(address=options["address"], runtime_env=env, log_to_driver=False)
        else:  # Ray starts its workers at nice 15; here the runs are the work, not background chores
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(num_cpus=int(options.get("local_cpus", 2)), include_dashboard=False, log_to_driver=False,
                     object_store_memory=int(options.get("object_store_mb", 256)) * 2**20, runtime_env=env)
        started = True
    try:
        task = ray.remote(num_cpus=float(options.get("num_cpus", 1)), num_gpus=float(options.get("num_gpus", 0)),
                          max_retries=0)(run_job)
        tracker = _Tracker(jobs, progress)
        _throttled(tracker, max_jobs, task.remote, lambda refs: ray.wait(refs, num_returns=1)[0], ray.get)
        return tracker.ordered()
    finally:
        if started:
            ray.shutdown()
