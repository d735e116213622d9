"""Learning-rate schedules: pure functions of the update count (``count -> learning rate``).

* :mod:`~optax_bertadam.schedules.bert`: BertAdam's six schedules.
* :mod:`~optax_bertadam.schedules.transformers`: every ``transformers.get_scheduler`` name.
* :mod:`~optax_bertadam.schedules.classic`: the tutorial's cosine warmup and formulas, Noam,
  ``LambdaLR`` and ``SequentialLR``.
* :mod:`~optax_bertadam.schedules.pytorch`: every ``torch.optim.lr_scheduler`` class
  (:data:`PYTORCH_SCHEDULERS`), with the momentum of the cyclical ones; ``SWALR``; and any
  composition replayed as PyTorch steps it (:func:`replay_torch_schedulers`).
* :mod:`~optax_bertadam.schedules.deepspeed`: DeepSpeed's five schedules
  (``DEEPSPEED_SCHEDULERS``), ``OneCycle`` with its momentum.
* :mod:`~optax_bertadam.schedules.loss_driven`: ``ReduceLROnPlateau`` and ``GreedyLR``, whose rate
  follows the loss (gradient transformations that take ``value=``).
* :mod:`~optax_bertadam.schedules.registry`: ``SCHEDULES``, one record of every schedule above (its
  factory, an example, its PyTorch counterpart); the tests run over it.
"""

from optax_bertadam.schedules.bert import bert_schedule
from optax_bertadam.schedules.classic import (
    constant_with_linear_cooldown,
    cosine_warmup,
    inverse_sqrt,
    lambda_lr,
    linear_decay,
    noam,
    polynomial_decay,
    sequential_lr,
)
from optax_bertadam.schedules.deepspeed import (
    lr_range_test,
    one_cycle,
    warmup_cosine_lr,
    warmup_decay_lr,
    warmup_lr,
)
from optax_bertadam.schedules.loss_driven import (
    GreedyLRState,
    ReduceLROnPlateauState,
    greedy_lr,
    reduce_lr_on_plateau,
)
from optax_bertadam.schedules.pytorch import (
    CycleSchedules,
    TorchScheduler,
    chained_scheduler,
    constant_lr,
    cosine_annealing_lr,
    cosine_annealing_warm_restarts,
    cyclic_lr,
    exponential_lr,
    linear_lr,
    multi_step_lr,
    multiplicative_lr,
    one_cycle_lr,
    polynomial_lr,
    replay_torch_schedulers,
    step_lr,
    swa_lr,
)
from optax_bertadam.schedules.transformers import (
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_hard_restarts_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    get_inverse_sqrt_schedule,
    get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
    get_scheduler,
    get_wsd_schedule,
)

# The registries and name tables stay in their modules (schedules.registry.SCHEDULES, ...), off
# the package's top level, which holds what a training script calls.
__all__ = [
    "lr_range_test",
    "one_cycle",
    "warmup_cosine_lr",
    "warmup_decay_lr",
    "warmup_lr",
    "CycleSchedules",
    "chained_scheduler",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cyclic_lr",
    "exponential_lr",
    "linear_lr",
    "multi_step_lr",
    "multiplicative_lr",
    "one_cycle_lr",
    "polynomial_lr",
    "replay_torch_schedulers",
    "step_lr",
    "TorchScheduler",
    "swa_lr",
    "ReduceLROnPlateauState",
    "bert_schedule",
    "constant_with_linear_cooldown",
    "cosine_warmup",
    "get_constant_schedule",
    "get_constant_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup_lr_rate",
    "get_inverse_sqrt_schedule",
    "get_linear_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup",
    "get_scheduler",
    "get_wsd_schedule",
    "GreedyLRState",
    "greedy_lr",
    "inverse_sqrt",
    "lambda_lr",
    "linear_decay",
    "noam",
    "polynomial_decay",
    "reduce_lr_on_plateau",
    "sequential_lr",
]
