"""optax-bertadam: BERT-era PyTorch optimizers and schedules as optax transformations."""

from optax_bertadam.lr import get_lr, register_learning_rate_state
from optax_bertadam.masks import decay_mask, parameter_name, parameter_names, regex_decay_mask
from optax_bertadam.optimizers import bertadam
from optax_bertadam.schedules.bert import SCHEDULE_NAMES, bert_schedule
from optax_bertadam.transforms import (
    ScaleByBiasFreeAdamState,
    ScheduledLearningRateState,
    add_decayed_weights,
    clip_grad_norm,
    scale_by_bias_free_adam,
    scale_by_scheduled_learning_rate,
)

__version__ = "0.1.0"

__all__ = [
    "SCHEDULE_NAMES",
    "ScaleByBiasFreeAdamState",
    "ScheduledLearningRateState",
    "add_decayed_weights",
    "bert_schedule",
    "bertadam",
    "clip_grad_norm",
    "decay_mask",
    "get_lr",
    "parameter_name",
    "parameter_names",
    "regex_decay_mask",
    "register_learning_rate_state",
    "scale_by_bias_free_adam",
    "scale_by_scheduled_learning_rate",
]
