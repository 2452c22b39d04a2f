"""Training and inference speed of the model zoo on this machine (prints a table; not a test).

    python benchmarks/bench_models.py --archs lenet5,lenet5_half,resnet20 --channels 1 --size 28

Figures: ms per training step (forward + backward + SGD step, batch 128), training images/s,
inference latency per image at batch 1, parameters and FLOPs per image. Run it on an idle machine:
other processes on the two cores distort the timings.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from datafree_kd.cost import count_flops, count_parameters, measure_latency
from datafree_kd.models import create_model


def train_step_ms(model: torch.nn.Module, shape: tuple[int, int, int], batch: int, steps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    model.train()
    times = []
    for i in range(steps + 3):
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="lenet5,lenet5_half,lenet5_bn,resnet8,resnet20,wrn_16_1,mobilenetv2")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    shape = (args.channels, args.size, args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {shape}, batch {args.batch}")
    print(f"{'arch':<14}{'params':>10}{'MFLOPs':>9}{'ms/step':>10}{'img/s':>9}{'ms/img@1':>10}")
    for arch in args.archs.split(","):
        model = create_model(arch, 10, args.channels, args.size)
        ms = train_step_ms(model, shape, args.batch, args.steps)
        lat = measure_latency(model, shape, batch_size=1, runs=30)["ms_per_image"]
        print(f"{arch:<14}{count_parameters(model):>10,}{count_flops(model, shape) / 1e6:>9.2f}"
              f"{ms:>10.1f}{1000 * args.batch / ms:>9.0f}{lat:>10.3f}")


if __name__ == "__main__":
    main()
