"""What bf16 autocast and channels-last buy on this CPU, per model pair and for the DAFL fit.

Why: issue 19 asks for half the CPU per result. The passes that dominate a run are convolutions;
CPUs with bf16 matrix units (Intel AMX) run them much faster in bf16, and oneDNN prefers NHWC.
This prints, on one torch thread, the median time of: a teacher forward (inference mode), a
student forward + backward + SGD step, and one update of the default 64-wide DAFL generator
(batch 256, no teacher), each in float32, float32 + channels-last, and bf16 + channels-last.
Run it on an otherwise idle machine:

    python benchmarks/bench_precision.py [--pairs lenet5:lenet5_half,resnet20:resnet8,wrn_16_2:wrn_16_1] [--repeats 20]

The options it measures: `dfkd synthesize fit_precision=bfloat16 channels_last=true` and
`dfkd distill precision=bfloat16 channels_last=true`.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F

from datafree_kd.models import create_model
from generators.networks import DCGANGenerator

from bench_step_parts import median_ms  # same directory: run as `python benchmarks/bench_precision.py`

MODES = ("float32", "float32+NHWC", "bf16+NHWC")


def numerics(mode: str):
    if mode.startswith("bf16"):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def layout(mode: str, *modules: torch.nn.Module) -> None:
    fmt = torch.channels_last if "NHWC" in mode else torch.contiguous_format
    for module in modules:
        module.to(memory_format=fmt)


def pair_times(teacher_arch: str, student_arch: str, batch: int, repeats: int) -> dict[str, tuple[float, float]]:
    torch.manual_seed(0)
    teacher = create_model(teacher_arch, 10, 1, 28).eval()
    student = create_model(student_arch, 10, 1, 28).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, 28, 28)
    target = torch.softmax(torch.randn(batch, 10), 1)
    out = {}
    for mode in MODES:
        layout(mode, teacher, student)

        def teacher_pass() -> None:
            with torch.inference_mode(), numerics(mode):
                teacher(x)

        def student_pass() -> None:
            with numerics(mode):
                logits = student(x)
            loss = F.cross_entropy(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        out[mode] = (median_ms(teacher_pass, repeats), median_ms(student_pass, repeats))
    return out


def generator_times(repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    net = DCGANGenerator(1, 28, latent_dim=100, base_channels=64)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    z = torch.randn(256, 100)
    out = {}
    for mode in MODES:
        layout(mode, net)
        net.compute_dtype = torch.bfloat16 if mode.startswith("bf16") else None

        def update() -> None:
            loss = net(z).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        out[mode] = median_ms(update, repeats)
    net.compute_dtype = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", default="lenet5:lenet5_half,resnet20:resnet8,wrn_16_2:wrn_16_1")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, one thread, "
          f"batch {args.batch}; median ms")
    print(f"{'pair / part':34s} " + " ".join(f"{m:>14s}" for m in MODES) + "   speed-up")
    for spec in args.pairs.split(","):
        t_arch, s_arch = spec.split(":")
        times = pair_times(t_arch, s_arch, args.batch, args.repeats)
        for i, part in enumerate(("teacher forward", "student fwd+bwd+step")):
            row = [times[m][i] for m in MODES]
            print(f"{t_arch + '->' + s_arch + ' ' + part:34s} " + " ".join(f"{v:14.1f}" for v in row)
                  + f"   {row[0] / row[-1]:.2f}x")
    g = generator_times(max(5, args.repeats // 2))
    row = [g[m] for m in MODES]
    print(f"{'DAFL generator update (w64, b256)':34s} " + " ".join(f"{v:14.1f}" for v in row) + f"   {row[0] / row[-1]:.2f}x")


if __name__ == "__main__":
    main()
