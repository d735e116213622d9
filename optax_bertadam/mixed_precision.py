"""Mixed precision: dynamic loss scaling (``torch.amp.GradScaler``) and skipping non-finite steps.

PyTorch's fp16 recipe::

  scaler = torch.amp.GradScaler()        # init_scale=2**16, growth_factor=2, backoff_factor=0.5,
  scaler.scale(loss).backward()          #   growth_interval=2000
  scaler.step(optimizer)                 # unscale; skip optimizer.step() on inf/NaN gradients
  scaler.update()                        # back off after a skip, grow after 2000 clean steps

is, in optax, one wrapper around the optimizer::

  tx = dynamic_loss_scale(ob.bertadam(1e-4, moment_dtype=jnp.float32))
  grads = jax.grad(lambda p: scale_loss(loss_fn(p), opt_state))(params)
  updates, opt_state = tx.update(grads, opt_state, params)   # unscale, skip or step, new scale

A skipped step returns updates of ``-0.0`` (``p + (-0.0)`` is ``p`` bit for bit, also for
``p == -0.0``) and leaves the wrapped optimizer's state untouched: its step count, moments and
schedule do not advance, exactly as ``optimizer.step()`` is not called by ``GradScaler.step``.

:func:`skip_nonfinite` is the same skip without loss scaling. It is not ``optax.apply_if_finite``:
that one applies a non-finite update after ``max_consecutive_errors`` skips and returns ``+0.0``
updates (which turn a ``-0.0`` parameter into ``+0.0``); this one never applies a non-finite update.

Low-precision parameters with float32 moments are ``ob.bertadam(..., moment_dtype=jnp.float32)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_bertadam import _validation

Array = Any
PyTree = Any


def all_finite(tree: PyTree) -> Array:
    """``True`` when every element of every leaf of ``tree`` is finite (``True`` for no leaves).

    Args:
      tree: a pytree of arrays, e.g. gradients.

    Returns:
      A boolean 0-d array.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> bool(ob.all_finite({"w": jnp.ones(2)})), bool(ob.all_finite({"w": jnp.array([1.0, jnp.inf])}))
      (True, False)
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.asarray(True)
    return jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]).all()


def _skipped_updates(updates: PyTree) -> PyTree:
    # -0.0 is the exact identity of IEEE addition: p + (-0.0) == p bit for bit, even for p = -0.0.
    return jax.tree.map(lambda u: jnp.full_like(u, -0.0), updates)


def _select(pred: Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    return jax.tree.map(
        lambda a, b: jnp.where(pred, a, b).astype(jnp.result_type(b)), on_true, on_false
    )


class SkipNonfiniteState(NamedTuple):
    """``skip_count``: updates skipped so far; ``inner_state``: the wrapped optimizer's state."""

    skip_count: Array
    inner_state: Any


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Skip every update whose gradients hold an inf or NaN; count the skips.

    On a skipped update the returned updates are ``-0.0`` (so ``optax.apply_updates`` leaves the
    parameters bit-identical) and ``inner``'s state is returned unchanged, bit for bit.
    Otherwise this is ``inner``. The inner update is computed in both cases and selected
    (cheap, and the same under ``jit``, ``vmap`` and sharding).

    Args:
      inner: the optimizer to protect.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with :class:`SkipNonfiniteState`.

    Example:
      >>> import jax.numpy as jnp, optax, optax_bertadam as ob
      >>> tx = ob.skip_nonfinite(optax.sgd(0.1))
      >>> state = tx.init({"w": jnp.ones(2)})
      >>> updates, state = tx.update({"w": jnp.array([1.0, jnp.nan])}, state)
      >>> updates["w"].tolist(), int(state.skip_count)
      ([-0.0, -0.0], 1)
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return SkipNonfiniteState(skip_count=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        finite = all_finite(updates)
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        skip_count = jnp.where(finite, state.skip_count, optax.safe_increment(state.skip_count))
        return _select(finite, new_updates, _skipped_updates(new_updates)), SkipNonfiniteState(
            skip_count=skip_count, inner_state=_select(finite, new_inner, state.inner_state)
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# Scales above this have a subnormal float32 reciprocal.
_SUBNORMAL_RECIPROCAL_ABOVE = 2.0**126


class DynamicLossScaleState(NamedTuple):
    """The state of :func:`dynamic_loss_scale`, the fields of ``torch.amp.GradScaler``.

    ``scale``: the float32 loss scale (``GradScaler.get_scale()``); ``growth_tracker``: clean
    steps since the last change of scale; ``skip_count``: steps skipped so far;
    ``inner_state``: the wrapped optimizer's state.
    """

    scale: Array
    growth_tracker: Array
    skip_count: Array
    inner_state: Any


def dynamic_loss_scale(
    inner: optax.GradientTransformation,
    init_scale: float = 2.0**16,
    growth_factor: float = 2.0,
    backoff_factor: float = 0.5,
    growth_interval: int = 2000,
) -> optax.GradientTransformationExtraArgs:
    r"""Dynamic loss scaling around ``inner``, as ``torch.amp.GradScaler`` does it.

    ``update`` receives the gradients of the *scaled* loss (see :func:`scale_loss`). With
    :math:`s` the current scale:

    * if any gradient element is inf or NaN: the step is skipped (updates ``-0.0``, ``inner``'s
      state unchanged), :math:`s \leftarrow s \cdot \text{backoff\_factor}`, the growth tracker
      is reset and ``skip_count`` grows by one;
    * otherwise the gradients are unscaled, :math:`g \leftarrow g \cdot (1/s)` (the reciprocal in
      float32, the product in the gradient's dtype, upcast to float32 for half types; above
      :math:`2^{126}`, where the reciprocal is subnormal, as :math:`(g \cdot (1/(s \cdot
      2^{-32}))) \cdot 2^{-32}`, since XLA flushes subnormals to zero on CPU), ``inner``
      is applied, and after ``growth_interval`` consecutive clean steps
      :math:`s \leftarrow s \cdot \text{growth\_factor}` (kept only if finite) and the tracker
      is reset.

    This is ``scaler.step(optimizer); scaler.update()``: the same scale trajectory, the same
    skipped steps. The scale is float32 like torch's; with factors exactly representable in
    float32 (the defaults, any power of two) every scale is bit-identical to torch's; other
    factors may differ by one float32 ulp per change, as torch multiplies in double. Unlike
    ``GradScaler`` (which refuses float16 gradients), any float dtype is accepted.

    Args:
      inner: the optimizer applied to the unscaled gradients.
      init_scale: the first scale, finite and ``> 0``.
      growth_factor: multiplier after ``growth_interval`` clean steps, ``> 1``.
      backoff_factor: multiplier after a skipped step, in ``(0, 1)``.
      growth_interval: clean steps between growths, an integer ``>= 1``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with :class:`DynamicLossScaleState`.

    Example:
      >>> import jax.numpy as jnp, optax, optax_bertadam as ob
      >>> tx = ob.dynamic_loss_scale(optax.sgd(0.1), init_scale=1024.0)
      >>> state = tx.init({"w": jnp.ones(2)})
      >>> updates, state = tx.update({"w": jnp.full(2, 512.0)}, state)  # unscaled: 0.5
      >>> updates["w"].tolist(), float(ob.get_loss_scale(state))
      ([-0.05000000074505806, -0.05000000074505806], 1024.0)
      >>> updates, state = tx.update({"w": jnp.array([jnp.inf, 1.0])}, state)  # skipped
      >>> updates["w"].tolist(), float(ob.get_loss_scale(state)), int(state.skip_count)
      ([-0.0, -0.0], 512.0, 1)
    """
    init_scale = _validation.check_range("init_scale", init_scale, low=0.0, low_inclusive=False)
    init_scale = _validation.check_finite("init_scale", init_scale)
    growth_factor = _validation.check_range(
        "growth_factor", growth_factor, low=1.0, low_inclusive=False
    )
    growth_factor = _validation.check_finite("growth_factor", growth_factor)
    backoff_factor = _validation.check_range(
        "backoff_factor", backoff_factor, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False
    )
    growth_interval = _validation.check_int("growth_interval", growth_interval, low=1)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return DynamicLossScaleState(
            scale=jnp.asarray(init_scale, jnp.float32),
            growth_tracker=jnp.zeros([], jnp.int32),
            skip_count=jnp.zeros([], jnp.int32),
            inner_state=inner.init(params),
        )

    def unscale(g, inv_scale, post_scale):
        compute_dtype = jnp.promote_types(g.dtype, jnp.float32)
        product = g.astype(compute_dtype) * inv_scale.astype(compute_dtype)
        return (product * post_scale.astype(compute_dtype)).astype(g.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        finite = all_finite(updates)
        # torch multiplies by the float32 reciprocal of the scale. Above 2**126 that reciprocal is
        # subnormal and XLA on CPU flushes it to zero: every gradient would unscale to 0 at the
        # float32 ceiling. There the reciprocal of scale * 2**-32 is taken (a normal number) and
        # the product multiplied by 2**-32: exact, the same bits as torch for power-of-two scales.
        above = state.scale > jnp.float32(_SUBNORMAL_RECIPROCAL_ABOVE)
        inv_scale = jnp.float32(1.0) / jnp.where(above, state.scale * jnp.float32(2.0**-32), state.scale)
        post_scale = jnp.where(above, jnp.float32(2.0**-32), jnp.float32(1.0))
        unscaled = jax.tree.map(lambda g: unscale(g, inv_scale, post_scale), updates)
        new_updates, new_inner = inner.update(unscaled, state.inner_state, params, **extra_args)

        tracker = state.growth_tracker + 1
        grown = state.scale * jnp.float32(growth_factor)
        grow = tracker == growth_interval
        scale = jnp.where(
            finite,
            jnp.where(grow & jnp.isfinite(grown), grown, state.scale),
            state.scale * jnp.float32(backoff_factor),
        )
        tracker = jnp.where(finite & ~grow, tracker, 0).astype(jnp.int32)
        skip_count = jnp.where(finite, state.skip_count, optax.safe_increment(state.skip_count))
        new_state = DynamicLossScaleState(
            scale=scale,
            growth_tracker=tracker,
            skip_count=skip_count,
            inner_state=_select(finite, new_inner, state.inner_state),
        )
        return _select(finite, new_updates, _skipped_updates(new_updates)), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class DeepSpeedLossScaleState(NamedTuple):
    """The state of :func:`deepspeed_loss_scale`, the fields of DeepSpeed's ``DynamicLossScaler``.

    ``scale``: the float32 loss scale (``cur_scale``); ``cur_iter``: steps seen (applied or
    skipped); ``last_overflow_iter``: the step of the last overflow (-1: none yet);
    ``cur_hysteresis``: overflows still tolerated before the scale drops; ``skip_count``:
    steps skipped so far (the engine's ``skipped_steps``); ``inner_state``: the wrapped state.
    """

    scale: Array
    cur_iter: Array
    last_overflow_iter: Array
    cur_hysteresis: Array
    skip_count: Array
    inner_state: Any


def deepspeed_loss_scale(
    inner: optax.GradientTransformation,
    init_scale: float = 2.0**16,
    *,
    dynamic: bool = True,
    scale_window: int = 1000,
    min_scale: float = 1.0,
    hysteresis: int = 2,
    consecutive_hysteresis: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Loss scaling around ``inner`` as DeepSpeed's fp16/bf16 optimizers do it.

    ``update`` receives the gradients of the *scaled* loss (:func:`scale_loss`). If any element is
    inf or NaN the step is skipped (updates ``-0.0``, ``inner``'s state, hence its schedule,
    unchanged: DeepSpeed's engine does not step its lr scheduler after an overflow) and, with
    ``dynamic``, the scale follows ``deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler
    .update_scale``: after an overflow, if ``hysteresis == 1`` or the remaining hysteresis is 1,
    :math:`s \leftarrow \max(s / 2, 	ext{min\_scale})`, else the hysteresis drops by one; after
    a clean step with :math:`n` = steps since the last overflow minus one, :math:`s \leftarrow 2s`
    when :math:`n > 0` and :math:`n \bmod \text{scale\_window} = 0` (which also refills the
    hysteresis; ``consecutive_hysteresis`` refills it after every clean step). Otherwise the
    gradients are unscaled, :math:`g \leftarrow g \cdot (1/s)` (in at least float32, kept in
    their dtype), and
    ``inner`` is applied. ``dynamic=False`` is a static scale (fp16 ``loss_scale > 0``, or bf16's
    scale of 1): the same skip, a constant scale.

    DeepSpeed's fp16 optimizers without ZeRO (``FP16_Optimizer``, ``FP16_UnfusedOptimizer``) have
    no hysteresis: ``hysteresis=1``. ``DynamicLossScaler`` raises once an overflow happens at
    ``min_scale``; here the step is skipped and the scale stays at ``min_scale``. Scales are
    float32; ``init_scale`` and ``min_scale`` must be exact in float32 so that every scale is
    DeepSpeed's (halving and doubling them is exact).

    Args:
      inner: the optimizer applied to the unscaled gradients.
      init_scale: the first scale (DeepSpeed: ``2 ** initial_scale_power``), finite, ``> 0``.
      dynamic: dynamic (``True``) or static scale.
      scale_window: clean steps between doublings, an integer ``>= 1``.
      min_scale: the lowest scale, ``> 0``.
      hysteresis: overflows tolerated before the scale drops (``delayed_shift``), ``>= 1``.
      consecutive_hysteresis: refill the hysteresis after every clean step.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with :class:`DeepSpeedLossScaleState`;
      :func:`get_loss_scale` and :func:`scale_loss` find it.

    Example:
      >>> import jax.numpy as jnp, optax, optax_bertadam as ob
      >>> tx = ob.deepspeed_loss_scale(optax.sgd(0.1), init_scale=1024.0, hysteresis=2)
      >>> state = tx.init({"w": jnp.ones(1)})
      >>> for g in (jnp.inf, jnp.inf, 512.0):
      ...     updates, state = tx.update({"w": jnp.array([g])}, state)
      ...     print(float(ob.get_loss_scale(state)), updates["w"].tolist())
      1024.0 [-0.0]
      512.0 [-0.0]
      512.0 [-0.10000000149011612]
    """
    init_scale = _validation.check_finite("init_scale", init_scale)
    init_scale = _validation.check_range("init_scale", init_scale, low=0.0, low_inclusive=False)
    min_scale = _validation.check_finite("min_scale", min_scale)
    min_scale = _validation.check_range("min_scale", min_scale, low=0.0, low_inclusive=False)
    for name, value in (("init_scale", init_scale), ("min_scale", min_scale)):
        if isinstance(value, (int, float)) and float(np.float32(value)) != value:
            raise ValueError(f"{name}={value!r} is invalid: expected a value exact in float32 "
                             "(e.g. a power of two), so that every scale is DeepSpeed's")
    scale_window = _validation.check_int("scale_window", scale_window, low=1)
    hysteresis = _validation.check_int("hysteresis", hysteresis, low=1)
    for name, flag in (("dynamic", dynamic), ("consecutive_hysteresis", consecutive_hysteresis)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}={flag!r} is invalid: expected True or False")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return DeepSpeedLossScaleState(
            scale=jnp.asarray(init_scale, jnp.float32),
            cur_iter=jnp.zeros([], jnp.int32),
            last_overflow_iter=jnp.full([], -1, jnp.int32),
            cur_hysteresis=jnp.asarray(hysteresis, jnp.int32),
            skip_count=jnp.zeros([], jnp.int32),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        finite = all_finite(updates)
        inv_scale = jnp.float32(1.0) / state.scale
        # Unscaled in at least float32, returned in the gradients' dtype (from_deepspeed moves
        # half-precision gradients to the float32 master dtype before this, as DeepSpeed does).
        unscaled = jax.tree.map(
            lambda g: (g.astype(jnp.promote_types(g.dtype, jnp.float32)) * inv_scale).astype(g.dtype),
            updates,
        )
        new_updates, new_inner = inner.update(unscaled, state.inner_state, params, **extra_args)
        scale, hyst, last = state.scale, state.cur_hysteresis, state.last_overflow_iter
        if dynamic:
            drop = (hysteresis == 1) | (hyst == 1)
            overflow_scale = jnp.where(drop, jnp.maximum(scale / 2, jnp.float32(min_scale)), scale)
            overflow_hyst = jnp.where(drop, hyst, hyst - 1)
            stable = state.cur_iter - last - 1
            grow = (stable > 0) & (stable % scale_window == 0)
            clean_hyst = jnp.asarray(hysteresis, jnp.int32) if consecutive_hysteresis else hyst
            clean_hyst = jnp.where(grow, jnp.int32(hysteresis), clean_hyst)
            scale = jnp.where(finite, jnp.where(grow, scale * 2, scale), overflow_scale)
            hyst = jnp.where(finite, clean_hyst, overflow_hyst).astype(jnp.int32)
            last = jnp.where(finite, last, state.cur_iter)
        new_state = DeepSpeedLossScaleState(
            scale=scale,
            cur_iter=optax.safe_increment(state.cur_iter),
            last_overflow_iter=last,
            cur_hysteresis=hyst,
            skip_count=jnp.where(finite, state.skip_count, optax.safe_increment(state.skip_count)),
            inner_state=_select(finite, new_inner, state.inner_state),
        )
        return _select(finite, new_updates, _skipped_updates(new_updates)), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _find_loss_scale_state(opt_state: Any) -> DynamicLossScaleState | DeepSpeedLossScaleState:
    kinds = (DynamicLossScaleState, DeepSpeedLossScaleState)
    found = [
        node
        for node in jax.tree.leaves(opt_state, is_leaf=lambda node: isinstance(node, kinds))
        if isinstance(node, kinds)
    ]
    if len(found) != 1:
        raise ValueError(
            f"opt_state holds {len(found)} loss scale state(s): pass the state of a "
            "dynamic_loss_scale(...) or deepspeed_loss_scale(...) optimizer (exactly one)"
        )
    return found[0]


def get_loss_scale(opt_state: Any) -> Array:
    """The current loss scale (``GradScaler.get_scale()``), found anywhere inside ``opt_state``.

    Args:
      opt_state: a state holding exactly one :class:`DynamicLossScaleState` or
        :class:`DeepSpeedLossScaleState`.

    Returns:
      The scale, a float32 0-d array.

    Raises:
      ValueError: if ``opt_state`` holds no :class:`DynamicLossScaleState`, or several.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> tx = ob.dynamic_loss_scale(ob.bertadam(1e-3))
      >>> float(ob.get_loss_scale(tx.init({"w": jnp.ones(2)})))
      65536.0
    """
    scale = _find_loss_scale_state(opt_state).scale
    # flax.nnx.Optimizer keeps its state in Variables; their array is `.value`.
    return jnp.asarray(getattr(scale, "value", scale))


def scale_loss(loss: Array, opt_state: Any) -> Array:
    """``loss * scale`` (``GradScaler.scale(loss)``): differentiate this, not ``loss``.

    ``opt_state`` is (or contains) the state of :func:`dynamic_loss_scale`. A float16 or
    bfloat16 scalar loss is promoted to float32, as torch does for a 0-d loss.

    Args:
      loss: the loss, a scalar.
      opt_state: a state holding exactly one :class:`DynamicLossScaleState`.

    Returns:
      The scaled loss, float32 or wider.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> state = ob.dynamic_loss_scale(ob.bertadam(1e-3), init_scale=1024.0).init({"w": jnp.ones(2)})
      >>> float(ob.scale_loss(jnp.float16(0.5), state))
      512.0
    """
    scale = get_loss_scale(opt_state)
    loss = jnp.asarray(loss)
    return loss * scale.astype(jnp.promote_types(loss.dtype, jnp.float32))
