"""The data-free diffusion chain on Fashion-MNIST (issue 17), at equal total set sizes.

Per seed: a GAN-inversion set from the BN teacher (``--gan-method``, the default for BN teachers)
-> a diffusion prior trained on that set only -> ``N`` teacher-guided and ``N`` unguided samples
-> students, all with the same steps, on: the GAN set (``N``), the guided set, the unguided set,
and the union of GAN and guided (``N/2`` + ``N/2``). Every stage's CPU minutes (process time of
this script, measured around it) and the sampling speed are recorded. Selection: none is made
here (no default is chosen from these runs); the figure is the last-step test accuracy, and val
accuracy is reported beside it.

    python scripts/study_diffusion.py --teacher results/teachers/fmnist-lenet5-bn/model.pt \
        --seeds 0,1,2 --n 4000 --out results/diffusion --runs runs/diffusion

Writes ``OUT/runs.csv`` (one row per arm and seed) and ``OUT/summary.md`` (mean ± std).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from datafree_kd.distillation import DistillConfig, run_distillation
from datafree_kd.io import atomic_write_text
from datafree_kd.prior import PriorTrainConfig, train_prior
from datafree_kd.synthesis import SynthesizeConfig, run_synthesis


def cpu_minutes(fn, *args, **kwargs) -> tuple[Any, float]:
    began = time.process_time()
    out = fn(*args, **kwargs)
    return out, (time.process_time() - began) / 60


def run_seed(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    runs = Path(args.runs) / f"s{seed}"
    common = {"teacher": args.teacher, "seed": seed, "threads": args.threads, "preview": True}
    gan, _ = cpu_minutes(run_synthesis, SynthesizeConfig(method=args.gan_method, n=args.n, **common), runs / "gan")
    gan_cpu = gan["cpu_time_s"] / 60  # recorded by the set's run, also when it is reused
    prior, prior_cpu = cpu_minutes(train_prior, PriorTrainConfig(
        source=f"transfer:{runs / 'gan'}", width=args.prior_width, steps=args.prior_steps, batch_size=64,
        seed=seed, threads=args.threads), runs / "prior")
    sampled = {}
    for arm, scale in (("guided", args.guidance_scale), ("unguided", 0.0)):
        options = {"prior": str(runs / "prior"), "steps": args.ddim_steps, "guidance_scale": scale}
        results, _ = cpu_minutes(run_synthesis, SynthesizeConfig(method="diffusion", n=args.n, options=options,
                                                                  batch_size=128, shard_size=5120, **common), runs / arm)
        sampled[arm] = (results, results["cpu_time_s"] / 60)
    sources = {
        "gan": (f"transfer:{runs / 'gan'}", gan_cpu),
        "diffusion-guided": (f"transfer:{runs / 'guided'}", prior_cpu + sampled["guided"][1]),
        "diffusion-unguided": (f"transfer:{runs / 'unguided'}", prior_cpu + sampled["unguided"][1]),
        "union (gan + guided)": (f"transfer:{runs / 'gan'},{runs / 'guided'}",
                                 gan_cpu / 2 + prior_cpu + sampled["guided"][1] / 2),
    }
    rows = []
    for arm, (source, synth_cpu) in sources.items():
        cfg = DistillConfig(teacher=args.teacher, source=source, steps=args.student_steps, epochs=0,
                            transfer_size=args.n, seed=seed, threads=args.threads, latency_runs=0)
        result, student_cpu = cpu_minutes(run_distillation, cfg, runs / f"student-{arm.split()[0]}")
        speed = {"diffusion-guided": sampled["guided"][0].get("images_per_s"),
                 "diffusion-unguided": sampled["unguided"][0].get("images_per_s")}.get(arm)
        rows.append({"arm": arm, "seed": seed, "n": args.n, "test_accuracy": result["test_accuracy"],
                     "val_accuracy": result.get("val_accuracy"), "teacher_accuracy": result["teacher_accuracy"],
                     "data_free": result["data_free"], "synthesis_cpu_min": synth_cpu, "student_cpu_min": student_cpu,
                     "images_per_s": speed, "prior_final_loss": prior["final_loss"],
                     "mean_teacher_confidence": {"gan": gan["mean_teacher_confidence"],
                                                 "diffusion-guided": sampled["guided"][0]["mean_teacher_confidence"],
                                                 "diffusion-unguided": sampled["unguided"][0]["mean_teacher_confidence"]
                                                 }.get(arm)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def summarise(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    teacher = rows[0]["teacher_accuracy"]
    lines = [f"# Data-free diffusion chain (Fashion-MNIST, `lenet5_bn` teacher {teacher:.4f}, student `lenet5_half`)",
             "", f"Equal total size N = {args.n} per arm; students {args.student_steps} steps each (the measured "
             f"recipe for BN-teacher sets); GAN set `{args.gan_method}`; prior width {args.prior_width}, "
             f"{args.prior_steps} steps on the GAN set only; DDIM {args.ddim_steps} steps, guidance scale "
             f"{args.guidance_scale}; {args.threads} torch thread(s) per job on a 2-core CPU. Last-step test "
             "accuracy (full 10k test set), mean ± std over seeds; nothing was selected on these runs.", "",
             "| arm | test accuracy | × teacher | val accuracy | seeds | synthesis CPU min | student CPU min | images/s |",
             "|---|---|---|---|---|---|---|---|"]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        rs = [r for r in rows if r["arm"] == arm]
        acc = [r["test_accuracy"] for r in rs]
        std = f" ± {statistics.stdev(acc):.4f}" if len(acc) > 1 else ""
        val = [r["val_accuracy"] for r in rs if r["val_accuracy"] is not None]
        speed = [r["images_per_s"] for r in rs if r["images_per_s"]]
        speed_text = f"{statistics.mean(speed):.1f}" if speed else "–"
        lines.append(f"| {arm} | {statistics.mean(acc):.4f}{std} | {statistics.mean(acc) / teacher:.3f} | "
                     f"{statistics.mean(val):.4f} | {','.join(str(r['seed']) for r in rs)} | "
                     f"{statistics.mean(r['synthesis_cpu_min'] for r in rs):.1f} | "
                     f"{statistics.mean(r['student_cpu_min'] for r in rs):.1f} | {speed_text} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--gan-method", default="fast")
    parser.add_argument("--prior-width", type=int, default=16)
    parser.add_argument("--prior-steps", type=int, default=800)
    parser.add_argument("--ddim-steps", type=int, default=10)
    parser.add_argument("--guidance-scale", type=float, default=0.1)
    parser.add_argument("--student-steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows += run_seed(args, seed)
        columns = list(rows[0])
        csv = [",".join(columns)] + [",".join("" if r[c] is None else str(r[c]) for c in columns) for r in rows]
        atomic_write_text(out / "runs.csv", "\n".join(csv) + "\n")
        atomic_write_text(out / "summary.md", summarise(rows, args))


if __name__ == "__main__":
    main()
