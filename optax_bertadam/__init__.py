"""optax-bertadam: BERT-era PyTorch optimizers and schedules as optax transformations."""

from optax_bertadam.checkpoint import restore_train_state, save_train_state
from optax_bertadam.compare import compare_training
from optax_bertadam.deepspeed import from_deepspeed
from optax_bertadam.from_torch import from_torch
from optax_bertadam.lamb import (
    ScaleByDeepSpeedLambState,
    ScaleByNvidiaLambState,
    clip_by_global_norm_ratio,
    deepspeed_lamb,
    nvidia_lamb,
    scale_by_bias_correction,
    scale_by_clamped_trust_ratio,
    scale_by_deepspeed_lamb,
    scale_by_nvidia_lamb,
)
from optax_bertadam.lr import LearningRateState, get_last_lr, get_lr
from optax_bertadam.masks import decay_mask, parameter_name, parameter_names, regex_decay_mask
from optax_bertadam.mixed_precision import (
    DeepSpeedLossScaleState,
    DynamicLossScaleState,
    SkipNonfiniteState,
    all_finite,
    deepspeed_loss_scale,
    dynamic_loss_scale,
    get_loss_scale,
    scale_loss,
    skip_nonfinite,
)
from optax_bertadam.optimizers import (
    KERAS_NO_DECAY,
    AdafactorState,
    SGDMomentumState,
    adafactor,
    adam,
    adam_weight_decay,
    adamw,
    bertadam,
    create_optimizer,
    gradient_accumulation,
    sgd,
    warmup,
)
from optax_bertadam.param_groups import layerwise_lr_decay_groups, param_groups
from optax_bertadam.recipes import (
    BING_BERT_DEEPSPEED_CONFIGS,
    BING_BERT_NO_DECAY,
    BING_BERT_TRAINING,
    BingBertRate,
    bing_bert_deepspeed_config,
    bing_bert_lamb,
    bing_bert_rate,
)
from optax_bertadam.schedules import *  # noqa: F403  (every schedule, listed in schedules.__all__)
from optax_bertadam.schedules import __all__ as _schedule_names
from optax_bertadam.torch_state import (
    load_torch_state_dict,
    to_torch_state_dict,
    torch_parameter_names,
    transpose_kernels,
)
from optax_bertadam.transforms import (
    AdamMomentsState,
    ScaleByBiasFreeAdamState,
    ScaledSchedule,
    ScheduledLearningRateState,
    add_decayed_weights,
    clip_grad_norm,
    scale_by_adam,
    scale_by_bias_free_adam,
    scale_by_scheduled_learning_rate,
)

__version__ = "0.1.0"

__all__ = [
    "DeepSpeedLossScaleState",
    "deepspeed_loss_scale",
    "from_deepspeed",
    "DynamicLossScaleState",
    "SkipNonfiniteState",
    "all_finite",
    "dynamic_loss_scale",
    "get_loss_scale",
    "load_torch_state_dict",
    "restore_train_state",
    "save_train_state",
    "scale_loss",
    "skip_nonfinite",
    "to_torch_state_dict",
    "torch_parameter_names",
    "transpose_kernels",
    "KERAS_NO_DECAY",
    "AdafactorState",
    "AdamMomentsState",
    "ScaleByBiasFreeAdamState",
    "ScheduledLearningRateState",
    "adafactor",
    "adam_weight_decay",
    "adamw",
    "add_decayed_weights",
    "bertadam",
    "clip_grad_norm",
    "create_optimizer",
    "decay_mask",
    "get_lr",
    "gradient_accumulation",
    "parameter_name",
    "parameter_names",
    "regex_decay_mask",
    "LearningRateState",
    "scale_by_adam",
    "scale_by_bias_free_adam",
    "scale_by_scheduled_learning_rate",
    "warmup",
    "adam",
    "sgd",
    "SGDMomentumState",
    "ScaledSchedule",
    "get_last_lr",
    "from_torch",
    "compare_training",
    "param_groups",
    "layerwise_lr_decay_groups",
    "ScaleByDeepSpeedLambState",
    "ScaleByNvidiaLambState",
    "clip_by_global_norm_ratio",
    "deepspeed_lamb",
    "nvidia_lamb",
    "scale_by_bias_correction",
    "scale_by_clamped_trust_ratio",
    "scale_by_deepspeed_lamb",
    "scale_by_nvidia_lamb",
    "BING_BERT_DEEPSPEED_CONFIGS",
    "BING_BERT_NO_DECAY",
    "BING_BERT_TRAINING",
    "BingBertRate",
    "bing_bert_deepspeed_config",
    "bing_bert_lamb",
    "bing_bert_rate",
    *_schedule_names,
]
