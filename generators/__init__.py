"""Synthesizers: everything that turns a frozen teacher into a synthetic transfer set.

GAN inversion (DAFL, DFAD, ZSKT, DeepInversion, ...) and diffusion-based synthesis register here
by name; the engine in ``datafree_kd`` consumes what they produce.
"""

from .base import SYNTHESIZERS, MaterializingSynthesizer, OnlineSynthesizer, register_synthesizer
from . import noise  # noqa: F401  (registers)
from . import dafl, dfad, random_generator, zskt  # noqa: F401  (register the GAN-inversion methods)
from . import deepinversion, fast  # noqa: F401  (register deepinversion, adi, adi-online, fast, fast-online)
from . import diffusion  # noqa: F401  (registers diffusion: teacher-guided sampling from a diffusion prior)
from . import cmi, nayer  # noqa: F401  (register cmi, cmi-online, nayer, nayer-online)
from . import procedural  # noqa: F401  (registers dead-leaves: procedural images the teacher chooses among)

__all__ = ["SYNTHESIZERS", "MaterializingSynthesizer", "OnlineSynthesizer", "register_synthesizer"]
