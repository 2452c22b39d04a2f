"""datafree_kd: knowledge distillation without the original training data.

The engine (data, models, teachers, evaluation, CLI) lives here; everything that turns a frozen
teacher into a transfer set lives in the sibling package ``generators``.
"""

__version__ = "0.1.0"
