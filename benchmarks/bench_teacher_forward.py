"""Time one frozen teacher's forward pass (what a distillation step mostly is for a large teacher)
under the graph modes PyTorch offers on CPU, against eager channels-last, with the largest output
difference. Prints; decides nothing (results: benchmarks/RESULTS.md).

    OMP_NUM_THREADS=1 python benchmarks/bench_teacher_forward.py --teacher T.pt [--batch 128]
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch


def per_batch_ms(fn, x: torch.Tensor, runs: int) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        fn(x), fn(x)  # warm-up (and compilation)
        start = time.perf_counter()
        for _ in range(runs):
            out = fn(x)
    return (time.perf_counter() - start) / runs * 1000, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from datafree_kd.checkpoint import load_model

    loaded = load_model(args.teacher)
    model = loaded.model.eval().requires_grad_(False)
    x = torch.rand(args.batch, *loaded.info.shape).contiguous(memory_format=torch.channels_last)
    eager = copy.deepcopy(model).to(memory_format=torch.channels_last)
    base_ms, ref = per_batch_ms(eager, x, args.runs)
    print(f"eager channels-last: {base_ms:.1f} ms/batch of {args.batch}")
    from torch.fx.experimental.optimization import fuse

    from datafree_kd.teacher_int8 import int8_teacher

    modes = {"fx conv-bn fuse": lambda: fuse(copy.deepcopy(model)).to(memory_format=torch.channels_last)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in recent torch; timed as a reference
        modes["jit freeze + optimize_for_inference"] = lambda: torch.jit.optimize_for_inference(
            torch.jit.freeze(torch.jit.trace(copy.deepcopy(model), x)))
        modes["torch.compile"] = lambda: torch.compile(copy.deepcopy(model))
        # what the loop runs under teacher_precision=int8 (calibrated here on random images)
        modes["int8 (teacher_precision=int8)"] = lambda: int8_teacher(model, torch.rand(256, *loaded.info.shape))
        for name, build in modes.items():
            try:
                ms, out = per_batch_ms(build(), x, args.runs)
            except Exception as exc:  # a mode this torch/toolchain cannot run is reported, not fatal
                print(f"{name}: unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
                continue
            print(f"{name}: {ms:.1f} ms/batch ({ms / base_ms:.2f} x eager), max |diff| {(out - ref).abs().max():.1e}")


if __name__ == "__main__":
    main()
