"""Loss terms registered by name, and the weighted ``Objective`` that combines them."""

from .base import LOSS_TERMS, DistillBatch, LossTerm, register_term
from .objective import Objective, parse_objective
from . import response, feature, relation, discriminator, robust, exploration  # noqa: F401  (registers the terms)

__all__ = ["LOSS_TERMS", "DistillBatch", "LossTerm", "register_term", "Objective", "parse_objective"]
