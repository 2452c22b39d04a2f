"""Synthesizers: everything that turns a frozen teacher into a synthetic transfer set.

GAN inversion (DAFL, DFAD, ZSKT, DeepInversion, ...) and diffusion-based synthesis register here
by name; the engine in ``datafree_kd`` consumes what they produce.
"""

from .base import SYNTHESIZERS, OnlineSynthesizer, register_synthesizer
from . import noise  # noqa: F401  (registers)

__all__ = ["SYNTHESIZERS", "OnlineSynthesizer", "register_synthesizer"]
