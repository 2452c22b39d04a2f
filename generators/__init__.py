"""Synthesizers: everything that turns a frozen teacher into a synthetic transfer set.

GAN inversion (DAFL, DFAD, ZSKT, DeepInversion, ...) and diffusion-based synthesis register here
by name; the engine in ``datafree_kd`` consumes what they produce.
"""

from datafree_kd.registry import Registry

SYNTHESIZERS: Registry = Registry("synthesizer")

__all__ = ["SYNTHESIZERS"]
