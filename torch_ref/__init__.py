"""PyTorch references of every algorithm in optax_bertadam, used only to check parity.

Nothing here imports optax_bertadam.
"""

from torch_ref.bertadam import SCHEDULES, BertAdam, schedule_multiplier
from torch_ref.fused_adam import FusedAdam
from torch_ref.lamb import FusedLamb
from torch_ref.optimizers import (
    AdamW,
    AdamWeightDecay,
    GradientAccumulator,
    PolynomialDecay,
    WarmUp,
    create_optimizer,
)
from torch_ref.schedules import CosineWarmupScheduler, NoamOpt

__all__ = [
    "SCHEDULES",
    "AdamW",
    "AdamWeightDecay",
    "BertAdam",
    "CosineWarmupScheduler",
    "FusedAdam",
    "FusedLamb",
    "GradientAccumulator",
    "NoamOpt",
    "PolynomialDecay",
    "WarmUp",
    "create_optimizer",
    "schedule_multiplier",
]
