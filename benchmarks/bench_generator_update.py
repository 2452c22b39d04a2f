"""Time one DAFL generator update (the measured DAFL fit's step: generator forward, the DAFL loss
through a frozen teacher, backward, Adam) with the upsampling folded into the convolutions
(:class:`generators.networks.UpsampleConv2d`, what the suite runs) against the same generator
computed as ``nn.Upsample`` + ``nn.Conv2d`` (what it ran before), alternating the two so drift of
the machine's speed hits both alike. Prints CPU seconds per update and the largest difference of
the generated images; decides nothing (results: benchmarks/RESULTS.md).

    OMP_NUM_THREADS=1 python benchmarks/bench_generator_update.py --teacher results/teachers/fmnist-lenet5/model.pt
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn


class _Unfolded(nn.Conv2d):
    """The reference: nearest x2 upsampling, then this 3x3 convolution, as two operations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


def unfolded(generator: nn.Module) -> nn.Module:
    """A copy of ``generator`` whose blocks upsample and convolve in two steps (same weights and
    state-dict keys, so the fit's re-initialisation loads into it)."""
    from generators.networks import UpsampleConv2d

    reference = copy.deepcopy(generator)
    for block in reference.blocks:
        for index, layer in enumerate(block):
            if isinstance(layer, UpsampleConv2d):
                plain = _Unfolded(layer.in_channels, layer.out_channels, 3, padding=1)
                plain.load_state_dict(layer.state_dict())
                block[index] = plain
    return reference


def cpu_s_per_update(synthesizer, teacher, updates: int, seed: int) -> float:
    synthesizer.fit_steps = updates
    start = time.process_time()
    synthesizer.fit(teacher, torch.Generator().manual_seed(seed), torch.device("cpu"))
    return (time.process_time() - start) / updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--updates", type=int, default=20, help="generator updates per timing")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two forms")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from datafree_kd.checkpoint import load_model
    from datafree_kd.synthesis import build_synthesizer
    from generators.default import measured_options

    loaded = load_model(args.teacher)
    teacher = loaded.model.eval().requires_grad_(False).to(memory_format=torch.channels_last)
    folded = build_synthesizer("dafl", loaded.info, measured_options("dafl"))
    reference = copy.deepcopy(folded)
    reference.generator = unfolded(reference.generator)
    for synthesizer in (folded, reference):  # the measured fit's layout (channels-last, float32)
        synthesizer.to(memory_format=torch.channels_last)
    z = torch.randn(64, folded.generator.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference.generator.load_state_dict(folded.generator.state_dict())
        difference = (folded.generator(z) - reference.generator(z)).abs().max().item()
    times: dict[str, list[float]] = {"folded": [], "upsample + conv": []}
    cpu_s_per_update(folded, teacher, 2, 0), cpu_s_per_update(reference, teacher, 2, 0)  # warm-up
    for round_ in range(args.rounds):
        times["folded"].append(cpu_s_per_update(folded, teacher, args.updates, round_))
        times["upsample + conv"].append(cpu_s_per_update(reference, teacher, args.updates, round_))
    base = statistics.median(times["upsample + conv"])
    print(f"DAFL generator update, batch {folded.batch_size}, width {folded.generator.base_channels}, "
          f"float32 channels-last, 1 thread; largest image difference {difference:.1e}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:16s} {median:.3f} CPU-s/update (median of {len(values)}; x{median / base:.2f})")


if __name__ == "__main__":
    main()
