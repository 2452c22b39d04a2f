"""How a distillation step's CPU time splits between teacher and student passes.

Why: the plain default's recipe runs the teacher forward twice per step (the augmented batch and
the explore term's random neighbours) because the augmentations are drawn anew every step. If
those passes are a large share of the step, a pool of pre-augmented, teacher-labelled copies is
the lever for a cheaper distillation; if not, it is not worth the lost freshness.

    python benchmarks/bench_step_parts.py [--teacher lenet5] [--student lenet5_half] [--batch 128] [--repeats 200]

Times, on one torch thread, the median over ``--repeats`` of: a teacher forward under
``inference_mode`` and a student forward + backward + SGD step, both on a random batch of
28 px images, and prints the share of two teacher passes in "2 teacher + 2 student" (one step of
the recipe). Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from datafree_kd.models import create_model


def median_ms(fn, repeats: int) -> float:
    for _ in range(10):  # warm-up
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="lenet5")
    parser.add_argument("--student", default="lenet5_half")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    teacher = create_model(args.teacher, 10, 1, 28).eval()
    student = create_model(args.student, 10, 1, 28).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=1e-3)
    x = torch.rand(args.batch, 1, 28, 28)
    target = torch.softmax(torch.randn(args.batch, 10), 1)

    def teacher_pass() -> None:
        with torch.inference_mode():
            teacher(x)

    def student_pass() -> None:
        loss = F.cross_entropy(student(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    t_ms, s_ms = median_ms(teacher_pass, args.repeats), median_ms(student_pass, args.repeats)
    print(f"batch {args.batch}, one thread: teacher ({args.teacher}) forward {t_ms:.2f} ms, "
          f"student ({args.student}) forward+backward+step {s_ms:.2f} ms")
    print(f"two teacher passes are {2 * t_ms / (2 * t_ms + 2 * s_ms):.0%} of 2 teacher + 2 student passes")


if __name__ == "__main__":
    main()
