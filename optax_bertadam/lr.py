"""``get_lr``: the learning rate the next update will apply, read from any optax state."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from optax_bertadam.masks import parameter_name
from optax_bertadam.transforms import ScheduledLearningRateState

# State types whose `learning_rate` field is the rate of the next update. Optimizers with their
# own rate logic (e.g. Adafactor's relative step) register theirs here.
LEARNING_RATE_STATES: tuple[type, ...] = (ScheduledLearningRateState,)


def register_learning_rate_state(state_type: type) -> type:
    """Let :func:`get_lr` find ``state_type`` (a NamedTuple with a ``learning_rate`` field)."""
    global LEARNING_RATE_STATES
    if state_type not in LEARNING_RATE_STATES:
        LEARNING_RATE_STATES = LEARNING_RATE_STATES + (state_type,)
    return state_type


def _unwrap(value: Any) -> Any:
    # flax.nnx.Optimizer keeps its state in Variables, whose array is `get_value()`.
    get_value = getattr(value, "get_value", None)
    return get_value() if callable(get_value) else value


def get_lr(opt_state: Any) -> jax.Array:
    """The learning rate the next update will apply, found anywhere inside ``opt_state``.

    Works on the state of :func:`~optax_bertadam.bertadam` and every optimizer of this package,
    also when wrapped in ``optax.chain``, ``optax.MultiSteps``, ``optax.inject_hyperparams`` or
    held by ``flax.nnx.Optimizer`` (``get_lr(optimizer.opt_state)``), inside or outside jit.

    It is the optax counterpart of ``BertAdam.get_lr()`` and of
    ``optimizer.param_groups[0]['lr']``. One difference: upstream ``get_lr()`` returns ``[0]``
    before the first step (it has no state yet); this returns the rate update 0 will use.

    Raises:
      ValueError: if ``opt_state`` holds no scheduled rate, or several (name the one you want by
        passing that part of the state).
    """
    found = []
    paths_and_states, _ = jax.tree_util.tree_flatten_with_path(
        opt_state, is_leaf=lambda node: isinstance(node, LEARNING_RATE_STATES)
    )
    for path, node in paths_and_states:
        if isinstance(node, LEARNING_RATE_STATES):
            found.append((parameter_name(path) or "<root>", node))
    if not found:
        raise ValueError(
            "get_lr(opt_state) found no learning-rate state in opt_state: pass the state of an "
            "optax_bertadam optimizer (or a chain/wrapper containing one)"
        )
    if len(found) > 1:
        where = ", ".join(path for path, _ in found)
        raise ValueError(
            f"get_lr(opt_state) is ambiguous: opt_state holds {len(found)} learning-rate states "
            f"(at {where}); pass the part of the state you mean"
        )
    return jnp.asarray(_unwrap(found[0][1].learning_rate))
