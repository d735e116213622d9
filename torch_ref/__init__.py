"""PyTorch references of every algorithm in optax_bertadam, used only to check parity.

Nothing here imports optax_bertadam.
"""

from torch_ref.bertadam import SCHEDULES, BertAdam, schedule_multiplier

__all__ = ["SCHEDULES", "BertAdam", "schedule_multiplier"]
