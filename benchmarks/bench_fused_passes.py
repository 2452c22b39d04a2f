"""Does batching the default recipe's two passes into one save CPU? (issue 19, item 3)

The BN recipe's step runs teacher and student on the mixed-up batch (``kd``) and again on a random
neighbour of each image (``explore`` with ``steps=0``). Both passes could go through each network
as one concatenated batch (exact for a BN-free student such as ``lenet5_half``; the teacher is in
eval mode). This times one step both ways, alternating, on one torch thread:

    python benchmarks/bench_fused_passes.py [--teacher results/teachers/fmnist-lenet5-bn/model.pt] [--steps 200]

Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from datafree_kd.teacher import load_teacher
from datafree_kd.models import create_model


def kd(t_logits: torch.Tensor, s_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    log_t = F.log_softmax(t_logits / temperature, 1)
    return temperature ** 2 * F.kl_div(F.log_softmax(s_logits / temperature, 1), log_t, reduction="batchmean",
                                       log_target=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="results/teachers/fmnist-lenet5-bn/model.pt")
    parser.add_argument("--student", default="lenet5_half")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if min(args.batch, args.steps, args.rounds) < 1:
        parser.error("--batch, --steps and --rounds must be >= 1")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    loaded = load_teacher(args.teacher)
    teacher, info = loaded.model.eval(), loaded.info
    student = create_model(args.student, info.num_classes, info.in_channels, info.image_size).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(args.batch, info.in_channels, info.image_size, info.image_size)

    def neighbours() -> torch.Tensor:
        return (x + (torch.rand_like(x) * 2 - 1) * 0.05).clamp(0, 1)

    def update(loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 5.0)
        optimizer.step()

    def separate() -> None:
        near = neighbours()
        with torch.no_grad():
            t_x, t_near = teacher(x), teacher(near)
        update(kd(t_x, student(x)) + kd(t_near, student(near)))

    def fused() -> None:
        both = torch.cat([x, neighbours()])
        with torch.no_grad():
            t_both = teacher(both)
        s_both = student(both)
        update(kd(t_both[:args.batch], s_both[:args.batch]) + kd(t_both[args.batch:], s_both[args.batch:]))

    figures: dict[str, list[float]] = {"separate": [], "fused": []}
    for _ in range(args.rounds):
        for name, step in (("separate", separate), ("fused", fused)):
            for _ in range(10):
                step()
            began = time.process_time()
            for _ in range(args.steps):
                step()
            figures[name].append((time.process_time() - began) / args.steps * 1000)
    for name, values in figures.items():
        print(f"{name:9s} CPU ms/step: " + " / ".join(f"{v:.1f}" for v in values)
              + f"  (median {sorted(values)[len(values) // 2]:.1f})")


if __name__ == "__main__":
    main()
