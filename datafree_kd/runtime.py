"""Seeds, devices and threads: one ``seed`` drives every RNG (DESIGN rule 7)."""

from __future__ import annotations

import random

import numpy as np
import torch

from .errors import ConfigError


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a dedicated generator for data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; an unavailable explicit device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return device


def set_threads(threads: int) -> None:
    """0 keeps torch's default; otherwise pin intra-op threads (useful for fair CPU timings)."""
    if threads < 0:
        raise ConfigError("threads must be >= 0")
    if threads:
        torch.set_num_threads(threads)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (CUDA with bf16, or a CPU with AMX or
    AVX512-BF16); elsewhere autocast emulates it, slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return device.type == "cpu" and any(probe is not None and probe() for probe in probes)


def resolve_precision(precision: str, device: torch.device) -> str:
    """A ``float32`` / ``bfloat16`` / ``auto`` setting as what runs: ``auto`` is bf16 only where
    ``device`` computes it natively (emulated bf16 is slower than float32)."""
    if precision == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    return precision
