"""Usage: python s33_probe_val.py PROBE_DIR

Session 33's val-only table of the probes `s33_probes.sh` ran: per probe, the set's size, the
teacher's mean confidence on it and the fit's last cross-entropy, the student's val accuracy and
val ratio, and the CPU seconds (user + system of `/usr/bin/time`) of synthesis and distillation.
Reads no test figure (the distill results.json holds some; only the val keys are taken).
"""
import json
import re
import sys
from pathlib import Path


def cpu_seconds(log: Path, recorded: float | None = None) -> float:
    """User + system of `/usr/bin/time`; a probe that reused another run's set has no synthesis log
    and takes the set's own record (``recorded``)."""
    if not log.exists() and recorded is not None:
        return recorded
    text = log.read_text()
    return sum(float(re.search(rf"{k} time \(seconds\): ([\d.]+)", text).group(1)) for k in ("User", "System"))


if len(sys.argv) != 2:
    sys.exit(__doc__)
root = Path(sys.argv[1])
print("probe        images  set-conf  fit-ce  steps  val     val-ratio  synth-cpu-s  distill-cpu-s  run-cpu-min")
for distill in sorted(root.glob("*-d/results.json")):
    name = distill.parent.name[:-2]
    config = (distill.parent / "config.yaml").read_text()
    set_dir = Path(re.search(r"source: transfer:(\S+)/transfer_set", config).group(1))
    synth = json.loads((set_dir / "results.json").read_text())
    student = json.loads(distill.read_text())
    s_cpu, d_cpu = cpu_seconds(root / f"{name}.log", synth["cpu_time_s"]), cpu_seconds(root / f"{name}-d.log")
    val, t_val = student["val_accuracy"], student["teacher_val_accuracy"]
    print(f"{name:12s} {synth['count']:6d}  {synth['mean_teacher_confidence']:.3f}     {synth['fit_logs']['ce']:.3f}  "
          f"{student['steps']:5d}  {val:.4f}  {val / t_val:.4f}     {s_cpu:7.0f}      {d_cpu:7.0f}        {(s_cpu + d_cpu) / 60:.1f}")
