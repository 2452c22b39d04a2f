"""Diffusion sampling throughput at 28 px on this machine: images/s unguided, guided (gradient at
x0_hat, the default) and guided through the UNet (``backprop_unet``), for the prior widths the
suite uses, DDIM at the CPU default of 10 steps.

    python benchmarks/bench_diffusion.py [--threads 2] [--batch 64] [--steps 10] [--widths 16,32]

The teacher is a ``lenet5_bn`` fitted to random labels (its weights do not change the cost); the
prior an initialised UNet of the given width (training changes its weights, not its cost). Run it
on an idle machine. Target (issue 17, ambition): guided sampling >= 10 images/s on 2 cores.
Results: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--widths", default="16,32")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from conftest import fitted_bn_lenet

    from datafree_kd.data.info import DatasetInfo
    from generators.diffusion import DiffusionSettings, GuidedSampler, class_targets
    from generators.diffusion_prior import untrained_prior

    info = DatasetInfo("fashion-mnist", 10, 1, 28, (0.286,), (0.353,))
    teacher = fitted_bn_lenet(0)
    modes = {"unguided": dict(guidance_scale=0.0), "guided": dict(guidance_scale=0.1),
             "guided, backprop_unet": dict(guidance_scale=0.1, backprop_unet=True)}
    print(f"threads {args.threads}, batch {args.batch}, DDIM {args.steps} steps, 28x28x1, torch {torch.__version__}")
    print(f"{'width':>5}  {'params':>8}  {'mode':<22}  {'images/s':>8}")
    for width in (int(w) for w in args.widths.split(",")):
        prior = untrained_prior(1, 28, width, torch.Generator().manual_seed(0))
        params = sum(p.numel() for p in prior.unet.parameters())
        for mode, options in modes.items():
            sampler = GuidedSampler(prior, info, DiffusionSettings(steps=args.steps, **options))
            targets = class_targets("balanced", args.batch, 10, torch.Generator().manual_seed(0))
            sampler.sample(teacher, targets[:8], torch.Generator().manual_seed(0), torch.device("cpu"))  # warm-up
            best = float("inf")
            for r in range(args.repeats):
                began = time.perf_counter()
                sampler.sample(teacher, targets, torch.Generator().manual_seed(r), torch.device("cpu"))
                best = min(best, time.perf_counter() - began)
            print(f"{width:>5}  {params:>8}  {mode:<22}  {args.batch / best:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
