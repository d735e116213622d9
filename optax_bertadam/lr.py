"""``get_lr``: the learning rate the next update will apply, read from any optax state."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import optax

from optax_bertadam.masks import parameter_name


@runtime_checkable
class LearningRateState(Protocol):
    """A state node that knows the rate of the next update.

    Every learning-rate state of this package is one: :class:`ScheduledLearningRateState` computes
    it from its count, loss-driven states (``ReduceLROnPlateauState``) hold it. A state type of
    your own becomes visible to :func:`get_lr` by defining this method; nothing is registered.

    Example:
      >>> from typing import NamedTuple
      >>> import jax.numpy as jnp, optax, optax_bertadam as ob
      >>> class HalvingState(NamedTuple):
      ...     count: jnp.ndarray
      ...     def next_learning_rate(self):
      ...         return 0.5 ** self.count
      >>> state = (optax.EmptyState(), HalvingState(jnp.asarray(3)))
      >>> isinstance(state[1], ob.LearningRateState), float(ob.get_lr(state))
      (True, 0.125)
    """

    def next_learning_rate(self) -> jax.Array:
        """The rate the next update applies.

        Returns:
          A 0-d array; or a 1-d array with one rate per parameter group, for a node that holds
          several groups' rates (the groups under one loss-driven scheduler).
        """
        ...


def _is_variable(node: Any) -> bool:
    # flax.nnx.Optimizer keeps its state in Variables, whose array is `get_value()`.
    return callable(getattr(node, "get_value", None))


def _unwrap(node: Any) -> Any:
    return jax.tree.map(
        lambda leaf: leaf.get_value() if _is_variable(leaf) else leaf, node, is_leaf=_is_variable
    )


def learning_rate_states(opt_state: Any) -> list[tuple[str, LearningRateState]]:
    """Every learning-rate state inside ``opt_state``, as ``(path, state)`` in tree order.

    The path is ``/``-joined (``"1/inner_state/3"``; ``"<root>"`` for the state itself).
    """
    paths_and_nodes, _ = jax.tree_util.tree_flatten_with_path(
        opt_state, is_leaf=lambda node: isinstance(node, LearningRateState)
    )
    return [
        (parameter_name(path) or "<root>", _unwrap(node))
        for path, node in paths_and_nodes
        if isinstance(node, LearningRateState)
    ]


def _refuse_injected_schedules(opt_state: Any, caller: str) -> None:
    """Refuse a state whose learning rate ``optax.inject_hyperparams`` evaluates from a schedule.

    There the inner optimizer gets a constant rate, ``schedule(count)``, at every update, so its
    state knows the rate of the update just applied, never the next one; and the schedule itself
    lives in the transformation, not in the state.
    """
    is_injected = lambda node: isinstance(node, optax.InjectStatefulHyperparamsState)  # noqa: E731
    for node in jax.tree.leaves(opt_state, is_leaf=is_injected):
        if is_injected(node) and "learning_rate" in node.hyperparams_states:
            if learning_rate_states(node.inner_state):
                raise ValueError(
                    f"{caller}(opt_state) cannot tell the next rate: optax.inject_hyperparams "
                    "evaluates the learning_rate schedule before each update, so the state holds "
                    "the rate of the last update only. Pass the schedule as learning_rate to the "
                    "optimizer itself (every optax_bertadam optimizer takes one), or read "
                    "state.hyperparams['learning_rate'] (the last update's rate)"
                )


def _group_rates(opt_state: Any, caller: str) -> list[tuple[str, jax.Array]]:
    """``(path, rate)`` of every group, in tree order: a 1-d rate is one entry per element."""
    _refuse_injected_schedules(opt_state, caller)
    rates = []
    for path, state in learning_rate_states(opt_state):
        rate = jnp.asarray(state.next_learning_rate())
        if rate.ndim == 1:
            rates.extend((f"{path}[{i}]", element) for i, element in enumerate(rate))
        else:
            rates.append((path, rate))
    return rates


def get_lr(opt_state: Any) -> jax.Array:
    """The learning rate the next update will apply, found anywhere inside ``opt_state``.

    Works on the state of :func:`~optax_bertadam.bertadam` and every optimizer of this package,
    also when wrapped in ``optax.chain``, ``optax.MultiSteps``, ``optax.inject_hyperparams``,
    ``optax.apply_if_finite`` or held by ``flax.nnx.Optimizer`` (``get_lr(optimizer.opt_state)``),
    inside or outside jit. The rate is computed from the state's update count (it is not stored),
    so it is right after a checkpoint restore or :func:`optax_bertadam.load_torch_state_dict`.

    It is the optax counterpart of ``BertAdam.get_lr()`` and of
    ``optimizer.param_groups[0]['lr']``. One difference: upstream ``get_lr()`` returns ``[0]``
    before the first step (it has no state yet); this returns the rate update 0 will use.
    With several parameter groups use :func:`optax_bertadam.get_last_lr`.

    Returns:
      The rate as a 0-d array in the default float dtype.

    Raises:
      ValueError: if ``opt_state`` holds no learning-rate state, or several (name the one you want
        by passing that part of the state, or use ``get_last_lr``), or if the rate is a schedule
        that ``optax.inject_hyperparams`` evaluates (its state knows only the last rate).

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> tx = ob.bertadam(1e-3, warmup=0.1, t_total=100)
      >>> state = tx.init({"w": jnp.zeros(3)})
      >>> float(ob.get_lr(state))  # update 0 of a linear warmup
      0.0
    """
    found = _group_rates(opt_state, "get_lr")
    if not found:
        raise ValueError(
            "get_lr(opt_state) found no learning-rate state in opt_state: pass the state of an "
            "optax_bertadam optimizer (or a chain/wrapper containing one)"
        )
    if len(found) > 1:
        where = ", ".join(path for path, _ in found)
        raise ValueError(
            f"get_lr(opt_state) is ambiguous: opt_state holds {len(found)} learning rates "
            f"(at {where}); pass the part of the state you mean, or use get_last_lr(opt_state) "
            "for the rate of every group"
        )
    return found[0][1]


def get_last_lr(opt_state: Any) -> list[jax.Array]:
    """The rate of the next update of every parameter group, in group order.

    The optax counterpart of ``scheduler.get_last_lr()`` (and of
    ``[g['lr'] for g in optimizer.param_groups]``): one entry per learning-rate state inside
    ``opt_state`` (a state holding several groups' rates gives one entry each), in tree order,
    which for :func:`optax_bertadam.param_groups` and
    :func:`optax_bertadam.from_torch` is the order of the groups (frozen groups have no rate and
    are not listed). A single-group optimizer gives a list of one entry, ``[get_lr(opt_state)]``.

    Returns:
      A list of 0-d arrays in the default float dtype.

    Raises:
      ValueError: if ``opt_state`` holds no learning-rate state, or a rate that
        ``optax.inject_hyperparams`` evaluates from a schedule (as :func:`get_lr`).

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> tx = ob.param_groups(ob.adamw, [{"params": "bias", "lr": 0.5}, {"params": "kernel"}],
      ...                      learning_rate=0.1)
      >>> state = tx.init({"bias": jnp.zeros(2), "kernel": jnp.zeros((2, 2))})
      >>> [round(float(lr), 6) for lr in ob.get_last_lr(state)]
      [0.5, 0.1]
    """
    found = _group_rates(opt_state, "get_last_lr")
    if not found:
        raise ValueError(
            "get_last_lr(opt_state) found no learning-rate state in opt_state: pass the state of an "
            "optax_bertadam optimizer (or a chain/wrapper containing one)"
        )
    return [rate for _, rate in found]
