"""Building blocks of BertAdam and friends, each an ``optax.GradientTransformation``.

``bertadam`` is a chain of these; users can also compose them by hand::

  optax.chain(
      clip_grad_norm(1.0, per_tensor=True),       # torch.nn.utils.clip_grad_norm_(p, 1.0), per p
      scale_by_bias_free_adam(0.9, 0.999, 1e-6),   # next_m / (sqrt(next_v) + e)
      add_decayed_weights(0.01, mask),             # + weight_decay * p
      scale_by_scheduled_learning_rate(schedule),  # * -lr_t, with get_lr() support
  )

``adafactor`` is, in ``transformers.Adafactor``'s order (the rate comes before the first moment)::

  compute_in_float32(optax.chain(
      scale_by_factored_rms(decay_rate, eps1, clip_threshold),   # g / sqrt(V), RMS clip
      scale_by_adafactor_step_size(lr, scale_parameter=True),     # * rho_t * max(eps2, RMS(p))
      ema_of_updates(beta1),                                      # exp_avg of the scaled updates
      add_decayed_weights_at_adafactor_step_size(wd, lr, mask=mask),  # + wd * alpha_t * p
      optax.scale(-1.0),
  ))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_bertadam import _validation, masks

Array = Any
PyTree = Any

# torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing.
TORCH_CLIP_EPS = 1e-6


def _torch_clip_coefficient(norm: Array, max_norm: float) -> Array:
    # torch: clip_coef = max_norm / (total_norm + 1e-6); grads *= clamp(clip_coef, max=1.0).
    return jnp.minimum(max_norm / (norm + TORCH_CLIP_EPS), 1.0)


def _l2_norm(x: Array) -> Array:
    # Accumulate low-precision gradients in float32, as torch's vector_norm does.
    acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
    if x.dtype != acc_dtype:
        # The barrier is free at run time. Without it XLA:CPU materializes the float32 copy of a
        # gradient that the moment updates also read: a parameter-sized temporary buffer and one
        # more pass over memory per tensor (benchmarks/README.md).
        x = jax.lax.optimization_barrier(x)
    return jnp.sqrt(jnp.sum(jnp.square(x.astype(acc_dtype))))


# Tensors of at most this many elements (biases, LayerNorm parameters) that share a shape and a
# dtype get their norms from one reduction over the stacked tensors instead of one small
# reduction each: a BERT has about a hundred of them, each otherwise costing several kernels.
_SMALL_TENSOR_SIZE = 4096


def _l2_norms(leaves: list[Array]) -> list[Array]:
    """The L2 norm of each leaf, accumulated in (at least) float32."""
    norms: list[Array | None] = [None] * len(leaves)
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(leaves):
        if x.size <= _SMALL_TENSOR_SIZE:
            groups.setdefault((x.shape, jnp.dtype(x.dtype)), []).append(i)
        else:
            norms[i] = _l2_norm(x)
    for (_, dtype), indices in groups.items():
        if len(indices) == 1:
            norms[indices[0]] = _l2_norm(leaves[indices[0]])
            continue
        stacked = jnp.stack([leaves[i] for i in indices])
        squares = jnp.square(stacked.astype(jnp.promote_types(dtype, jnp.float32)))
        group_norms = jnp.sqrt(jnp.sum(squares, axis=tuple(range(1, stacked.ndim))))
        for k, i in enumerate(indices):
            norms[i] = group_norms[k]
    return norms


class ClipGradNormState(NamedTuple):
    """State of :func:`clip_grad_norm`: the norm(s) the last update measured, before clipping.

    Attributes:
      grad_norm: with ``per_tensor=False`` a scalar, the global norm of the gradients
        (``clip_grad_norm_``'s return value, what the transformers Trainer logs as
        ``grad_norm``); with ``per_tensor=True`` a tree of scalars, each tensor's own norm
        (BertAdam clips each tensor by it). Zeros before the first update. Accumulated in (at
        least) float32, as torch's ``vector_norm``.
    """

    grad_norm: Any


@_validation.explains_torch_habits
def clip_grad_norm(max_norm: float, *, per_tensor: bool = False) -> optax.GradientTransformation:
    r"""Clip gradients exactly as ``torch.nn.utils.clip_grad_norm_`` does.

    .. math::
      g \leftarrow g \cdot \min\left(1, \frac{\text{max\_norm}}{\lVert g \rVert_2 + 10^{-6}}\right)

    With ``per_tensor=True`` the norm is that of each tensor alone, which is what BertAdam does
    (``clip_grad_norm_(p, max_grad_norm)`` inside its loop over parameters). With
    ``per_tensor=False`` it is the global norm of the whole tree, i.e.
    ``clip_grad_norm_(model.parameters(), max_norm)``. Unlike ``optax.clip_by_global_norm``, the
    coefficient carries torch's ``+1e-6`` and is applied even when it is 1. ``max_norm=inf``
    measures without clipping (the coefficient is exactly 1), as the transformers Trainer does
    with ``max_grad_norm=0``. The pre-clip norm is kept in the state:
    :func:`get_grad_norm` reads it.

    Args:
      max_norm: the largest norm allowed (> 0; ``inf``: measure only).
      per_tensor: clip each tensor by its own norm (BertAdam) instead of the global norm.

    Returns:
      An ``optax.GradientTransformation`` with a :class:`ClipGradNormState`.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.5])}
      >>> tx = ob.clip_grad_norm(1.0, per_tensor=True)
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> [round(x, 4) for x in updates["a"].tolist()], updates["b"].tolist()
      ([0.6, 0.8], [0.5])
      >>> float(ob.get_grad_norm(state)["a"])  # per tensor: each tensor's norm
      5.0
    """
    max_norm = _validation.check_range("max_norm", max_norm, low=0.0, low_inclusive=False)

    def norm_dtype(leaves):
        return jnp.result_type(jnp.float32, *[jnp.asarray(x).dtype for x in leaves])

    def init_fn(params):
        if per_tensor:
            return ClipGradNormState(jax.tree.map(
                lambda p: jnp.zeros([], jnp.promote_types(jnp.asarray(p).dtype, jnp.float32)),
                params,
            ))
        return ClipGradNormState(jnp.zeros([], norm_dtype(jax.tree.leaves(params))))

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        norms = _l2_norms(leaves)
        if per_tensor:
            coefficients = [_torch_clip_coefficient(norm, max_norm) for norm in norms]
            measured = jax.tree.unflatten(treedef, norms)
            # The state keeps init's dtypes (a jitted loop carries it unchanged).
            measured = jax.tree.map(lambda n, old: n.astype(old.dtype), measured, state.grad_norm)
        else:
            total = jnp.sqrt(sum(jnp.square(norm) for norm in norms))
            coefficients = [_torch_clip_coefficient(total, max_norm)] * len(leaves)
            measured = jnp.asarray(total).astype(jnp.asarray(state.grad_norm).dtype)
        clipped = [g * c.astype(g.dtype) for g, c in zip(leaves, coefficients, strict=True)]
        return jax.tree.unflatten(treedef, clipped), ClipGradNormState(measured)

    return optax.GradientTransformation(init_fn, update_fn)


def get_grad_norm(opt_state: Any) -> Any:
    """The gradient norm the last update measured before clipping, found inside ``opt_state``.

    Reads the :class:`ClipGradNormState` of :func:`clip_grad_norm` (the first one in tree order,
    i.e. the first clipping transform of a chain), also inside ``optax.chain``,
    ``optax.MultiSteps`` (updated at each real update only), ``optax.partition``,
    :func:`optax_bertadam.from_trainer`'s transformation or ``flax.nnx.Optimizer``'s state.

    * A global clip (``per_tensor=False``; the Trainer's ``max_grad_norm``, including its
      measure-only ``max_grad_norm=0``, DeepSpeed BertAdam's ``clip_mode="global"``): a scalar,
      what ``torch.nn.utils.clip_grad_norm_`` returns and the Trainer logs as ``grad_norm``.
    * BertAdam's per-tensor clip (``per_tensor=True``): a tree of scalars with the gradients'
      structure, each tensor's own norm (the norm each was clipped by); there is no global norm in
      BertAdam, so none is invented. Inside ``optax.partition`` the leaves other groups own are
      ``optax.MaskedNode``.

    Args:
      opt_state: an optax state.

    Returns:
      A scalar array, or a tree of scalars for a per-tensor clip.

    Raises:
      ValueError: if ``opt_state`` holds no clipping state.

    Example:
      >>> import jax.numpy as jnp, optax, optax_bertadam as ob
      >>> tx = optax.chain(ob.clip_grad_norm(1.0), optax.sgd(0.1))
      >>> grads = {"a": jnp.array([3.0, 4.0])}
      >>> _, state = tx.update(grads, tx.init(grads))
      >>> float(ob.get_grad_norm(state))
      5.0
    """
    is_clip = lambda node: isinstance(node, ClipGradNormState)  # noqa: E731
    for node in jax.tree.leaves(opt_state, is_leaf=is_clip):
        if is_clip(node):
            return jax.tree.map(
                lambda leaf: leaf.get_value() if callable(getattr(leaf, "get_value", None)) else leaf,
                node.grad_norm, is_leaf=lambda leaf: callable(getattr(leaf, "get_value", None)),
            )
    raise ValueError(
        "opt_state holds no gradient norm: no clip_grad_norm inside it (bertadam with "
        "max_grad_norm > 0, from_training_arguments / from_trainer, or chain "
        "ob.clip_grad_norm(max_norm) in front)"
    )


class ScaleByBiasFreeAdamState(NamedTuple):
    """BertAdam's moments, named as upstream names them."""

    next_m: PyTree
    next_v: PyTree


@_validation.explains_torch_habits
def scale_by_bias_free_adam(
    b1: float = 0.9, b2: float = 0.999, e: float = 1e-6, *, moment_dtype: Any = None
) -> optax.GradientTransformation:
    r"""Adam's moments without bias correction, ``e`` outside the square root (BertAdam).

    .. math::
      m \leftarrow b_1 m + (1 - b_1) g, \quad
      v \leftarrow b_2 v + (1 - b_2) g^2, \quad
      u = \frac{m}{\sqrt{v} + e}

    Reproduces the moment lines of ``BertAdam.step``: ``next_m.mul_(b1).add_(g, alpha=1-b1)``,
    ``next_v.mul_(b2).addcmul_(g, g, value=1-b2)``, ``next_m / (next_v.sqrt() + e)``. Unlike
    ``optax.scale_by_adam`` there is no ``1 - b^t`` correction, so early updates are small.

    Args:
      b1: decay of the first moment, in ``[0, 1)``.
      b2: decay of the second moment, in ``[0, 1)``.
      e: added to ``sqrt(v)``, ``>= 0``.
      moment_dtype: dtype of ``next_m``/``next_v`` (default: that of each parameter), e.g.
        ``jnp.float32`` for bfloat16 parameters.

    Returns:
      An ``optax.GradientTransformation`` with a :class:`ScaleByBiasFreeAdamState`.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> tx = ob.scale_by_bias_free_adam(b1=0.9, b2=0.999, e=1e-6)
      >>> state = tx.init({"w": jnp.ones(2)})
      >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0])}, state)
      >>> [round(x, 4) for x in updates["w"].tolist()]  # 0.1 g / sqrt(0.001 g^2): no correction
      [3.1622, -3.1622]
    """
    b1 = _validation.check_range("b1", b1, low=0.0, high=1.0, high_inclusive=False)
    b2 = _validation.check_range("b2", b2, low=0.0, high=1.0, high_inclusive=False)
    e = _validation.check_range("e", e, low=0.0)

    def init_fn(params):
        zeros = lambda p: jnp.zeros_like(p, dtype=moment_dtype or p.dtype)
        return ScaleByBiasFreeAdamState(jax.tree.map(zeros, params), jax.tree.map(zeros, params))

    def update_fn(updates, state, params=None):
        del params
        # astype: injected (array) hyperparameters must not promote the moments' dtype.
        next_m = jax.tree.map(
            lambda m, g: (b1 * m + (1.0 - b1) * g.astype(m.dtype)).astype(m.dtype),
            state.next_m, updates,
        )
        next_v = jax.tree.map(
            lambda v, g: (b2 * v + (1.0 - b2) * jnp.square(g.astype(v.dtype))).astype(v.dtype),
            state.next_v, updates,
        )
        # The update keeps the gradient's dtype so that parameters keep theirs.
        scaled = jax.tree.map(
            lambda m, v, g: (m / (jnp.sqrt(v) + e)).astype(g.dtype), next_m, next_v, updates
        )
        return scaled, ScaleByBiasFreeAdamState(next_m, next_v)

    return optax.GradientTransformation(init_fn, update_fn)


def check_mask_matches(mask: PyTree, params: PyTree, argname: str) -> None:
    """Refuse a mask whose tree structure differs from the parameters', naming the argument.

    The message names the entries that differ (a few of them), not the two tree structures: a
    ``flax.nnx`` state prints as a thousand characters of ``PyTreeDef``.
    """
    mask_structure = jax.tree.structure(mask)
    params_structure = jax.tree.structure(params)
    if mask_structure != params_structure:
        mask_names = masks.parameter_names(mask)
        param_names = masks.parameter_names(params)
        extra = [n for n in mask_names if n not in set(param_names)]
        missing = [n for n in param_names if n not in set(mask_names)]
        parts = []
        if extra:
            parts.append(f"the mask has {len(extra)} entries the parameters lack ({_some(extra)})")
        if missing:
            parts.append(f"it lacks {len(missing)} parameters ({_some(missing)})")
        if not parts:
            parts.append(
                f"same names, different containers ({type(mask).__name__} vs {type(params).__name__})"
            )
        if extra and type(mask).__module__.startswith("flax.nnx"):
            fix = (
                "build it from the parameters alone: ob.decay_mask(nnx.state(model, nnx.Param)), "
                "or pass the function itself (mask=ob.decay_mask)"
            )
        else:
            fix = "build it from the same tree, e.g. optax_bertadam.decay_mask(params)"
        raise ValueError(f"{argname} does not match the parameters: {'; '.join(parts)}; {fix}")
    for leaf in jax.tree.leaves(mask):
        if not isinstance(leaf, (bool, np.bool_)):
            raise TypeError(
                f"{argname} is invalid: its leaves must be Python bools (True = apply), got a "
                f"{type(leaf).__name__} leaf {leaf!r}"
            )


def _some(names: list[str], count: int = 3) -> str:
    shown = ", ".join(map(repr, names[:count]))
    return shown + (", ..." if len(names) > count else "")


def _is_masked_node(node: Any) -> bool:
    return isinstance(node, optax.MaskedNode)


def resolve_mask(mask: PyTree | Callable[[PyTree], PyTree] | None, params: PyTree) -> PyTree:
    """The bool tree of ``mask`` for ``params``: all True for None, ``mask(params)`` if callable.

    Inside ``optax.partition``/``optax.multi_transform``/``optax.masked`` the parameters hold an
    ``optax.MaskedNode`` where another transform owns the leaf; a mask built for the full tree
    has a bool there, which is dropped so that the mask matches what this transform sees.
    """
    if mask is None:
        return jax.tree.map(lambda _: True, params)
    tree = mask(params) if callable(mask) else mask
    if not any(map(_is_masked_node, jax.tree.leaves(params, is_leaf=_is_masked_node))):
        return tree
    if jax.tree.structure(tree) != jax.tree.structure(params, is_leaf=_is_masked_node):
        return tree  # not a full-tree mask: check_mask_matches names the mismatch
    return jax.tree.map(
        lambda node, leaf: node if _is_masked_node(node) else leaf,
        params, tree, is_leaf=_is_masked_node,
    )


@_validation.explains_torch_habits
def add_decayed_weights(
    weight_decay: float, mask: PyTree | Callable[[PyTree], PyTree] | None = None
) -> optax.GradientTransformation:
    r"""Decoupled weight decay: ``u <- u + weight_decay * p`` where the mask is True.

    This is BertAdam's ``update += weight_decay * p.data`` (applied to the Adam direction, before
    the learning rate multiplies it), and what ``param_groups`` with ``weight_decay=0.0`` for
    ``no_decay = ['bias', 'LayerNorm.bias', 'LayerNorm.weight']`` express in PyTorch.

    Unlike ``optax.add_decayed_weights``, the mask is checked against the parameters at ``init``
    (a mismatch raises ``ValueError`` naming the mask), and its leaves are static Python bools, so
    excluded tensors cost nothing at run time.

    Args:
      weight_decay: decay coefficient, ``>= 0``; ``0`` makes this the identity, as upstream's
        ``if weight_decay > 0.0``.
      mask: a tree of bools with the parameters' structure, or a function of the parameters
        returning one; ``None`` decays every parameter.

    Returns:
      An ``optax.GradientTransformation`` with an ``optax.EmptyState``; ``update`` needs
      ``params``.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> params = {"w": jnp.ones(2), "bias": jnp.ones(2)}
      >>> tx = ob.add_decayed_weights(0.1, mask=ob.decay_mask)
      >>> zeros = {"w": jnp.zeros(2), "bias": jnp.zeros(2)}
      >>> updates, _ = tx.update(zeros, tx.init(params), params)
      >>> updates["w"].tolist(), updates["bias"].tolist()
      ([0.10000000149011612, 0.10000000149011612], [0.0, 0.0])
    """
    weight_decay = _validation.check_range("weight_decay", weight_decay, low=0.0)

    def init_fn(params):
        if mask is not None:
            check_mask_matches(resolve_mask(mask, params), params, "mask")
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if _validation.is_concrete_scalar(weight_decay) and weight_decay == 0.0:
            return updates, state
        if params is None:
            raise ValueError(
                "add_decayed_weights needs the parameters: call tx.update(grads, state, params)"
            )
        # The mask is matched by leaf order, not tree structure: flax.nnx.Optimizer hands init
        # the Variable-wrapped state but update bare arrays (same leaves, other structure).
        mask_leaves = jax.tree.leaves(resolve_mask(mask, params))
        update_leaves, treedef = jax.tree.flatten(updates)
        param_leaves = jax.tree.leaves(params)
        if not len(mask_leaves) == len(update_leaves) == len(param_leaves):
            raise ValueError(
                f"mask has {len(mask_leaves)} leaves but the updates have "
                f"{len(update_leaves)} and the parameters {len(param_leaves)}"
            )
        decayed = [
            u + (weight_decay * p).astype(u.dtype) if decay else u
            for u, p, decay in zip(update_leaves, param_leaves, mask_leaves, strict=True)
        ]
        return jax.tree.unflatten(treedef, decayed), state

    return optax.GradientTransformation(init_fn, update_fn)


def one_minus_power(base: float, exponent: Any) -> Any:
    """``1 - base ** exponent`` for ``0 <= base < 1``, accurate in float32.

    Written as ``-expm1(exponent * log(base))`` with ``log(base)`` taken in Python double: in float32,
    ``1 - 0.999 ** 1`` is off by 1.3e-5 relative because 0.999 itself is rounded; this is within
    a few ulp of the double-precision value PyTorch and Keras compute on the host.
    """
    if _validation.is_traced(base):
        # An injected hyperparameter: log in its own precision (it is already rounded to it).
        return -jnp.expm1(exponent * jnp.log(base))
    if base == 0.0:
        return jnp.ones_like(exponent)
    return -jnp.expm1(exponent * math.log(base))


class AdamMomentsState(NamedTuple):
    """Adam's moments, named as ``torch.optim.AdamW`` names them.

    ``count`` is the number of updates applied; ``max_exp_avg_sq`` is ``None`` without amsgrad.
    """

    count: Any
    exp_avg: PyTree
    exp_avg_sq: PyTree
    max_exp_avg_sq: PyTree


@_validation.explains_torch_habits
def scale_by_adam(
    b1: float, b2: float, eps: float, *, flavour: str, bias_correction: bool = True,
    amsgrad: bool = False,
) -> optax.GradientTransformation:
    r"""Adam's direction, without the learning rate, in PyTorch's or Keras's arithmetic.

    With :math:`t` the update number (1 for the first), :math:`c_i = 1 - b_i^t` (or 1 without bias
    correction) and :math:`m \leftarrow m + (1-b_1)(g-m)`:

    * ``flavour="torch"`` (``torch.optim.AdamW``, single-tensor and foreach):
      :math:`v \leftarrow b_2 v + (1-b_2) g^2`,
      :math:`u = \frac{m / c_1}{\sqrt{v} / \sqrt{c_2} + \epsilon}` (epsilon on the corrected
      scale).
    * ``flavour="keras"`` (``tf.keras.optimizers.Adam``, i.e. TensorFlow's ``ApplyAdam`` kernel):
      :math:`v \leftarrow v + (1-b_2)(g^2-v)`,
      :math:`u = \frac{m \sqrt{c_2} / c_1}{\sqrt{\hat v} + \epsilon}` ("epsilon hat", on the
      uncorrected scale), :math:`\hat v = \max(\hat v, v)` with amsgrad, else :math:`v`.

    The learning rate multiplies ``u`` later in the chain, so that decoupled weight decay, added
    in between, is scaled by the same scheduled rate.

    Args:
      b1: first-moment decay, in ``[0, 1)``.
      b2: second-moment decay, in ``[0, 1)``.
      eps: added to the square root of the second moment.
      flavour: ``"torch"`` or ``"keras"``: whose arithmetic to reproduce.
      bias_correction: divide by ``1 - b^t`` (``False``: transformers' ``correct_bias=False``).
      amsgrad: use the running maximum of ``v`` (Keras/torch ``amsgrad=True``).

    Returns:
      An ``optax.GradientTransformation`` with an :class:`AdamMomentsState`.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> tx = ob.scale_by_adam(0.9, 0.999, 1e-8, flavour="torch")
      >>> state = tx.init({"w": jnp.ones(2)})
      >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0])}, state)
      >>> [round(x, 4) for x in updates["w"].tolist()], int(state.count)  # first step: sign(g)
      ([1.0, -1.0], 1)
    """

    b1 = _validation.check_range("b1", b1, low=0.0, high=1.0, high_inclusive=False)
    b2 = _validation.check_range("b2", b2, low=0.0, high=1.0, high_inclusive=False)
    eps = _validation.check_range("eps", eps, low=0.0)
    flavour = _validation.check_choice("flavour", flavour, ("torch", "keras"))

    def init_fn(params):
        zeros = lambda p: jnp.zeros_like(p)
        return AdamMomentsState(
            count=jnp.zeros([], jnp.int32),
            exp_avg=jax.tree.map(zeros, params),
            exp_avg_sq=jax.tree.map(zeros, params),
            max_exp_avg_sq=jax.tree.map(zeros, params) if amsgrad else None,
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        # Bias corrections in the default float dtype, as the host computes them in double.
        t = jnp.asarray(count, dtype=float)
        c1 = one_minus_power(b1, t) if bias_correction else jnp.ones_like(t)
        c2 = one_minus_power(b2, t) if bias_correction else jnp.ones_like(t)
        # torch: exp_avg.lerp_(grad, 1 - beta1); TF: m += (grad - m) * (1 - beta1).
        # astype: injected (array) hyperparameters must not promote the moments' dtype.
        exp_avg = jax.tree.map(
            lambda m, g: (m + (1.0 - b1) * (g - m)).astype(m.dtype), state.exp_avg, updates
        )
        if flavour == "torch":
            # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            exp_avg_sq = jax.tree.map(
                lambda v, g: (b2 * v + (1.0 - b2) * (g * g)).astype(v.dtype),
                state.exp_avg_sq, updates,
            )
        else:
            # v += (grad * grad - v) * (1 - beta2)
            exp_avg_sq = jax.tree.map(
                lambda v, g: (v + (1.0 - b2) * (g * g - v)).astype(v.dtype),
                state.exp_avg_sq, updates,
            )
        if amsgrad:
            max_exp_avg_sq = jax.tree.map(jnp.maximum, state.max_exp_avg_sq, exp_avg_sq)
            second = max_exp_avg_sq
        else:
            max_exp_avg_sq = None
            second = exp_avg_sq

        def direction(m, v):
            # Scalars take the moment's dtype so that float32 moments stay float32 under x64.
            if flavour == "torch":
                # denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps);
                # param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
                denom = jnp.sqrt(v) / jnp.sqrt(c2).astype(v.dtype) + eps
                return (m / denom) / c1.astype(m.dtype)
            # alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t); var -= m * alpha / (sqrt(v) + eps)
            ratio = (jnp.sqrt(c2) / c1).astype(m.dtype)
            return m * ratio / (jnp.sqrt(v) + eps)

        scaled = jax.tree.map(
            lambda m, v, g: direction(m, v).astype(g.dtype), exp_avg, second, updates
        )
        return scaled, AdamMomentsState(count, exp_avg, exp_avg_sq, max_exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)


def constant_schedule(count: Array) -> Array:
    """The multiplier of a constant learning rate: 1 for every update count."""
    return jnp.ones_like(jnp.asarray(count, dtype=float))


def scheduled_rate(learning_rate: Any, schedule: Callable[[Array], Array], count: Array) -> Array:
    """``learning_rate * schedule(count)`` in the default float dtype: the rate of update ``count``."""
    # Both factors in the default float before the product: a Python-float base rate is weakly
    # typed, and weak * float32 is float32, which would round a float64 run's rate to float32.
    return jnp.asarray(learning_rate, dtype=float) * jnp.asarray(schedule(count), dtype=float)


class StaticSchedule:
    """A schedule held in a state as tree structure, not as a leaf.

    A pytree node without leaves whose auxiliary data is the function: it survives ``jit``,
    ``optax.MultiSteps``'s ``cond`` and checkpoints (nothing to save), and two states compare equal
    in structure when their functions compare equal.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Array], Array]):
        self.fn = fn

    def __call__(self, count: Array) -> Array:
        return self.fn(count)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, StaticSchedule) and self.fn == other.fn

    def __hash__(self) -> int:
        return hash(self.fn)

    def __repr__(self) -> str:
        return f"StaticSchedule({self.fn!r})"


jax.tree_util.register_pytree_node(
    StaticSchedule, lambda node: ((), node.fn), lambda fn, children: StaticSchedule(fn)
)


@dataclasses.dataclass(frozen=True)
class BoundSchedule:
    """A module-level function of the count with its other arguments bound: ``function(count, *arguments)``.

    A value (frozen dataclass) where a closure would be a new object per build: two schedules
    built from the same arguments compare equal, so optimizers built twice (by hand and by
    :func:`optax_bertadam.from_torch`, say) have equal state tree structures and load each other's
    checkpoints.

    >>> import jax.numpy as jnp
    >>> def halve_every(count, period):
    ...     return 0.5 ** (jnp.asarray(count) // period)
    >>> BoundSchedule(halve_every, (2,)) == BoundSchedule(halve_every, (2,))
    True
    >>> float(BoundSchedule(halve_every, (2,))(5))
    0.25
    """

    function: Callable[..., Array]
    arguments: tuple[Any, ...] = ()

    def __call__(self, count: Array) -> Array:
        """``function(count, *arguments)``."""
        return self.function(count, *self.arguments)


@dataclasses.dataclass(frozen=True)
class ScaledSchedule:
    """A base rate times a scheduler's multiplier, kept apart: ``learning_rate * multiplier(count)``.

    PyTorch's split of a scheduled rate: the optimizer's (per group) ``lr``, its ``initial_lr``
    under a scheduler, and the scheduler's factor (``LambdaLR``: ``initial_lr * lr_lambda(k)``;
    ``StepLR``: ``initial_lr * gamma ** (k // step_size)``). The one type of such rates: every
    multiplicative ``torch.optim.lr_scheduler`` reproduction (:func:`~optax_bertadam.step_lr`, ...)
    returns one, and so does :func:`~optax_bertadam.from_torch`. Passed as ``learning_rate`` to
    any optimizer of this package, it is called like a schedule;
    :func:`scale_by_scheduled_learning_rate` keeps the base as its state's ``learning_rate`` and
    the multiplier as its ``schedule``. A value (frozen dataclass), so that equal rates give
    equal state tree structures.

    Attributes:
      learning_rate: the base rate (PyTorch's ``initial_lr``).
      multiplier: ``count -> factor``.
      scheduler: the PyTorch class it reproduces, e.g. ``"StepLR"`` (``None``: none in
        particular); a label only, not compared.

    >>> float(ScaledSchedule(0.5, lambda k: 1.0 / (k + 1))(1))
    0.25
    """

    learning_rate: float
    multiplier: Callable[[Array], Array]
    scheduler: str | None = dataclasses.field(default=None, compare=False)

    def __call__(self, count: Array) -> Array:
        """The rate of update ``count``.

        Returns:
          ``learning_rate * multiplier(count)``, in the default float dtype.
        """
        return scheduled_rate(self.learning_rate, self.multiplier, count)


@dataclasses.dataclass(frozen=True)
class ScheduleProduct:
    """Two schedules multiplied: ``first(count) * second(count)``.

    What PyTorch computes when a scheduler sets a group's ``lr`` and the optimizer multiplies it
    by a schedule of its own (a ``LambdaLR`` over ``BertAdam(t_total=...)``). A value (frozen
    dataclass), so that equal products give equal state tree structures.

    >>> float(ScheduleProduct(lambda k: 0.5, lambda k: k / 10)(4))
    0.2
    """

    first: Callable[[Array], Array]
    second: Callable[[Array], Array]

    def __call__(self, count: Array) -> Array:
        """The product at update ``count``.

        Returns:
          ``first(count) * second(count)``.
        """
        return self.first(count) * self.second(count)


class ScheduledLearningRateState(NamedTuple):
    """State of :func:`scale_by_scheduled_learning_rate`.

    Attributes:
      count: updates applied so far (PyTorch's ``state["step"]``, the scheduler's ``last_epoch``).
      learning_rate: the base rate (the optimizer's ``lr``; PyTorch's ``initial_lr`` under a
        scheduler), 1 when the whole schedule was given as ``learning_rate``.
      schedule: the multiplier ``count -> factor``, a :class:`StaticSchedule` (tree structure,
        not a leaf).

    The rate of the next update is not stored: :meth:`next_learning_rate` computes it from the
    count, so that a state whose count was set by hand (a checkpoint, a PyTorch state dict, a
    wrapper that skipped updates) reports the right rate.
    """

    count: Array
    learning_rate: Array
    schedule: StaticSchedule

    def next_learning_rate(self) -> Array:
        """``learning_rate * schedule(count)``: the rate the next update applies."""
        return scheduled_rate(self.learning_rate, self.schedule, self.count)


@_validation.explains_torch_habits
def scale_by_scheduled_learning_rate(
    learning_rate: float | Callable[[Array], Array],
    schedule: Callable[[Array], Array] | None = None,
) -> optax.GradientTransformation:
    r"""Multiply updates by ``-learning_rate * schedule(count)``; ``get_lr`` reads the next rate.

    .. math:: u \leftarrow -\mathrm{lr}\, s(k)\, u, \qquad k \leftarrow k + 1

    Like ``optax.scale_by_learning_rate``, with PyTorch's split of a scheduled rate into the
    optimizer's base ``lr`` and a scheduler's multiplier (``LambdaLR``: ``base_lr * lr_lambda(k)``),
    so that :func:`optax_bertadam.get_lr` (``optimizer.param_groups[i]['lr']``) and
    :func:`optax_bertadam.get_last_lr` compute the rate of the next update from the state.
    The base rate may be an array (``optax.inject_hyperparams``): the injected value is applied.

    Args:
      learning_rate: the base rate (``>= 0``), or a whole schedule ``count -> rate`` (then
        ``schedule`` must be ``None``).
      schedule: the multiplier ``count -> factor``; ``None``: constant 1. It is part of the
        state's tree structure: pass the same object (or an equal one) to every call.

    Returns:
      An ``optax.GradientTransformation`` with a :class:`ScheduledLearningRateState`.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> tx = ob.scale_by_scheduled_learning_rate(0.1, lambda k: 1.0 / (k + 1))
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> updates, state = tx.update({"w": jnp.ones(2)}, state)
      >>> updates["w"].tolist(), float(ob.get_lr(state))
      ([-0.10000000149011612, -0.10000000149011612], 0.05000000074505806)
    """
    if isinstance(learning_rate, ScaledSchedule) and schedule is None:
        # The base rate stays the state's learning_rate (PyTorch's initial_lr of the group).
        learning_rate, schedule = learning_rate.learning_rate, learning_rate.multiplier
    if callable(learning_rate):
        if schedule is not None:
            raise ValueError(
                f"schedule={schedule!r} is invalid with a schedule as learning_rate: pass the "
                "base rate as learning_rate, or the whole schedule as learning_rate alone"
            )
        learning_rate, schedule = 1.0, learning_rate
    else:
        learning_rate = _validation.check_real("learning_rate", learning_rate)
        if schedule is None:
            schedule = constant_schedule
        elif not callable(schedule):
            raise TypeError(
                f"schedule={schedule!r} is invalid: expected a function count -> multiplier or None"
            )

    def init_fn(params):
        del params
        return ScheduledLearningRateState(
            count=jnp.zeros([], jnp.int32),
            learning_rate=jnp.asarray(learning_rate, dtype=float),
            schedule=StaticSchedule(schedule),
        )

    def update_fn(updates, state, params=None):
        del params
        rate = scheduled_rate(learning_rate, schedule, state.count)
        updates = jax.tree.map(lambda u: (-rate).astype(u.dtype) * u, updates)
        return updates, ScheduledLearningRateState(
            count=optax.safe_increment(state.count),
            learning_rate=jnp.asarray(learning_rate, dtype=jnp.asarray(state.learning_rate).dtype),
            schedule=StaticSchedule(schedule),
        )

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# transformers.Adafactor, split into its stages (optimizers.adafactor chains them in upstream's
# order). Each stage computes in at least float32, as upstream upcasts float16/bfloat16.
# ---------------------------------------------------------------------------------------------


def _compute_dtype(x: Array) -> Any:
    return jnp.promote_types(jnp.asarray(x).dtype, jnp.float32)


def _rms(x: Array) -> Array:
    # Adafactor._rms: tensor.norm(2) / (tensor.numel() ** 0.5)
    return jnp.sqrt(jnp.sum(jnp.square(x))) / math.sqrt(max(x.size, 1))


def _structured_like(tree: PyTree, leaves: list[Array]) -> PyTree:
    """``leaves`` in the structure of ``tree`` (a state field keeps the structure init gave it:
    ``flax.nnx.Optimizer`` hands init Variable-wrapped parameters, update bare arrays)."""
    return jax.tree.unflatten(jax.tree.structure(tree), leaves)


def _check_leaf_counts(who: str, **leaves: list[Any]) -> None:
    counts = {name: len(listed) for name, listed in leaves.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"the {name} {count}" for name, count in counts.items())
        raise ValueError(f"{who}: {listed} leaves; they must match")


class ScaleByFactoredRmsState(NamedTuple):
    """State of :func:`scale_by_factored_rms`; moment names are ``transformers.Adafactor``'s.

    Attributes:
      count: updates applied so far (upstream's ``state["step"]``; the decay reads it).
      exp_avg_sq_row, exp_avg_sq_col: factored second moment of tensors of rank >= 2: the
        averages over the last axis and over the one before (shape ``(1,)`` placeholders for
        tensors of rank < 2, for which upstream keeps neither).
      exp_avg_sq: second moment of tensors of rank < 2 (``(1,)`` placeholders for the others).
    """

    count: Array
    exp_avg_sq_row: PyTree
    exp_avg_sq_col: PyTree
    exp_avg_sq: PyTree


@_validation.explains_torch_habits
def scale_by_factored_rms(
    decay_rate: float = -0.8, eps1: float = 1e-30, clip_threshold: float = 1.0
) -> optax.GradientTransformation:
    r"""Adafactor's direction: the gradient over its (factored) RMS, then clipped by its own RMS.

    At update :math:`t = k + 1`, per tensor, with :math:`G = g^2 + \epsilon_1` and
    :math:`\hat\beta_{2t} = 1 - t^{\text{decay\_rate}}`:

    .. math::
      \text{rank} \ge 2:\ & R \leftarrow \hat\beta_{2t} R + (1 - \hat\beta_{2t})\,
          \mathrm{mean}_{-1} G,\ C \leftarrow \hat\beta_{2t} C + (1 - \hat\beta_{2t})\,
          \mathrm{mean}_{-2} G,\ u = g \big/ \sqrt{(R / \mathrm{mean}_{-1} R) \otimes C} \\
      \text{rank} < 2:\ & V \leftarrow \hat\beta_{2t} V + (1 - \hat\beta_{2t}) G,\ u = g / \sqrt{V} \\
      u &\leftarrow u \,/\, \max(1, \mathrm{RMS}(u) / \text{clip\_threshold}), \qquad
          \mathrm{RMS}(x) = \lVert x\rVert_2 / \sqrt{\mathrm{numel}(x)}

    Reproduces the lines of ``transformers.Adafactor.step`` from ``update = grad**2 + eps[0]``
    to ``update.div_((self._rms(update) / clip_threshold).clamp_(min=1.0))``, i.e. everything
    before ``update.mul_(lr)``. Unlike ``optax.scale_by_factored_rms``, every tensor of rank >= 2
    is factored (over its last two axes), the decay is :math:`1 - t^{\text{decay\_rate}}`, the
    row statistic is normalised by its mean, and the RMS clip is included. Computed in at least
    float32; the update keeps the gradient's dtype.

    Args:
      decay_rate: exponent of the second-moment decay, ``<= 0`` (finite).
      eps1: added to the squared gradient (upstream's ``eps[0]``), ``>= 0``.
      clip_threshold: largest RMS of the update, ``> 0`` (finite).

    Returns:
      An ``optax.GradientTransformation`` with a :class:`ScaleByFactoredRmsState`.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> tx = ob.scale_by_factored_rms(clip_threshold=0.5)
      >>> state = tx.init({"w": jnp.zeros((2, 2))})
      >>> updates, state = tx.update({"w": jnp.array([[3.0, -3.0], [1.0, 1.0]])}, state)
      >>> [[round(u, 6) for u in row] for row in updates["w"].tolist()]  # t = 1: sign(g) at RMS 0.5
      [[0.5, -0.5], [0.5, 0.5]]
      >>> state.exp_avg_sq_row["w"].shape, state.exp_avg_sq_col["w"].shape
      ((2,), (2,))
    """
    decay_rate = _validation.check_finite("decay_rate", decay_rate)
    decay_rate = _validation.check_range("decay_rate", decay_rate, high=0.0)
    eps1 = _validation.check_range("eps1", eps1, low=0.0)
    clip_threshold = _validation.check_range(
        "clip_threshold", clip_threshold, low=0.0, low_inclusive=False
    )
    clip_threshold = _validation.check_finite("clip_threshold", clip_threshold)

    def init_fn(params):
        def placeholder(p):
            return jnp.zeros((1,), _compute_dtype(p))

        def row(p):
            return jnp.zeros(p.shape[:-1], _compute_dtype(p)) if p.ndim >= 2 else placeholder(p)

        def col(p):
            shape = p.shape[:-2] + p.shape[-1:]
            return jnp.zeros(shape, _compute_dtype(p)) if p.ndim >= 2 else placeholder(p)

        def full(p):
            return placeholder(p) if p.ndim >= 2 else jnp.zeros(p.shape, _compute_dtype(p))

        return ScaleByFactoredRmsState(
            count=jnp.zeros([], jnp.int32),
            exp_avg_sq_row=jax.tree.map(row, params),
            exp_avg_sq_col=jax.tree.map(col, params),
            exp_avg_sq=jax.tree.map(full, params),
        )

    def update_fn(updates, state, params=None):
        del params
        # beta2t = 1.0 - math.pow(state["step"], decay_rate), the step counted from 1; in the
        # default float dtype (the host's double under x64).
        t = jnp.asarray(state.count, dtype=float) + 1.0
        beta2t = 1.0 - jnp.power(t, decay_rate)
        # Leaves in order: the state's fields keep init's structure (see _structured_like).
        grads, treedef = jax.tree.flatten(updates)
        rows = jax.tree.leaves(state.exp_avg_sq_row)
        cols = jax.tree.leaves(state.exp_avg_sq_col)
        fulls = jax.tree.leaves(state.exp_avg_sq)
        _check_leaf_counts("scale_by_factored_rms", updates=grads, state=rows)
        out, new_rows, new_cols, new_fulls = [], [], [], []
        for g, r, c, v in zip(grads, rows, cols, fulls, strict=True):
            cd = jnp.promote_types(_compute_dtype(g), r.dtype)
            g32 = g.astype(cd)
            b2t = beta2t.astype(cd)
            square = g32 * g32 + eps1
            if g.ndim >= 2:
                # exp_avg_sq_row.mul_(beta2t).add_(update.mean(dim=-1), alpha=1 - beta2t), the
                # same for the column along dim -2; then _approx_sq_grad(row, col) * grad.
                r = (b2t * r + (1.0 - b2t) * jnp.mean(square, axis=-1)).astype(r.dtype)
                c = (b2t * c + (1.0 - b2t) * jnp.mean(square, axis=-2)).astype(c.dtype)
                r_factor = jax.lax.rsqrt(r / jnp.mean(r, axis=-1, keepdims=True))[..., None]
                c_factor = jax.lax.rsqrt(c)[..., None, :]
                u = (r_factor * c_factor) * g32
            else:
                v = (b2t * v + (1.0 - b2t) * square).astype(v.dtype)
                u = jax.lax.rsqrt(v) * g32
            # update.div_((self._rms(update) / clip_threshold).clamp_(min=1.0))
            u = u / jnp.maximum(_rms(u) / clip_threshold, 1.0)
            out.append(u.astype(g.dtype))
            new_rows.append(r)
            new_cols.append(c)
            new_fulls.append(v)
        return jax.tree.unflatten(treedef, out), ScaleByFactoredRmsState(
            count=optax.safe_increment(state.count),
            exp_avg_sq_row=_structured_like(state.exp_avg_sq_row, new_rows),
            exp_avg_sq_col=_structured_like(state.exp_avg_sq_col, new_cols),
            exp_avg_sq=_structured_like(state.exp_avg_sq, new_fulls),
        )

    return optax.GradientTransformation(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class AdafactorRelativeStep:
    """Adafactor's relative step size of update ``count``: ``min(1e-6 t or 1e-2, 1/sqrt(t))``.

    With ``t = count + 1`` (upstream's ``state["step"]``) and ``1e-6 t`` when ``warmup_init``.
    A value (not a closure) so that two equal optimizers have equal states' tree structures.

    >>> round(float(AdafactorRelativeStep(warmup_init=False)(0)), 6)
    0.01
    """

    warmup_init: bool

    def __call__(self, count: Any) -> Any:
        """The relative step size :math:`\\rho` of update ``count``."""
        t = jnp.asarray(count, dtype=float) + 1.0
        min_step = 1e-6 * t if self.warmup_init else 1e-2
        return jnp.minimum(min_step, 1.0 / jnp.sqrt(t))


def _adafactor_rate_rule(
    learning_rate: Any, warmup_init: Any, scale_parameter: Any, eps2: Any, who: str
) -> tuple[Any, Callable[[Array], Array], bool, Any]:
    """Check the step-size arguments shared by the two transforms that apply Adafactor's rate.

    Returns ``(base_rate, schedule, scale_parameter, eps2)``: the rate of update ``k`` before the
    parameter scale is ``base_rate * schedule(k)`` (``AdafactorRelativeStep`` for ``None``).
    """
    for name, flag in (("warmup_init", warmup_init), ("scale_parameter", scale_parameter)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name}={flag!r} is invalid: expected True or False")
    eps2 = _validation.check_range("eps2", eps2, low=0.0)
    if learning_rate is None:
        return 1.0, AdafactorRelativeStep(bool(warmup_init)), bool(scale_parameter), eps2
    if warmup_init:
        raise ValueError(
            f"warmup_init=True is invalid with learning_rate={learning_rate!r} in {who}: the "
            "warmup grows the relative step size, which learning_rate=None selects"
        )
    learning_rate = _validation.check_learning_rate_or_schedule("learning_rate", learning_rate)
    if callable(learning_rate):
        return 1.0, learning_rate, bool(scale_parameter), eps2
    return learning_rate, constant_schedule, bool(scale_parameter), eps2


def _adafactor_rate(rho: Array, p: Array | None, u: Array, scale_parameter: bool, eps2: Any) -> Array:
    """Adafactor._get_lr of one tensor: ``max(eps2, RMS(p)) * rho`` (``rho`` without scaling).

    ``p`` is the parameter before the update (``state["RMS"] = self._rms(p_data_fp32)``), in
    whose (at least float32) dtype the rate is computed; ``None`` (not needed without
    ``scale_parameter``): the update's.
    """
    cd = _compute_dtype(u if p is None else p)
    rate = rho.astype(cd)
    if scale_parameter:
        rate = jnp.maximum(jnp.asarray(eps2, cd), _rms(p.astype(cd))) * rate
    return rate


class ScaleByAdafactorStepSizeState(NamedTuple):
    """State of :func:`scale_by_adafactor_step_size`.

    Attributes:
      step_size: the update count (upstream's ``state["step"]``) and the rule of the step size
        :math:`\\rho` of the next update before the parameter scale: what
        :func:`optax_bertadam.get_lr` returns. With ``scale_parameter=False`` it is the rate the
        next update applies to every tensor.
      applied_learning_rates: per parameter (a scalar per leaf), the rate the last update
        applied, :math:`\\rho \\max(\\epsilon_2, \\mathrm{RMS}(p))`: what
        ``AdafactorSchedule.get_lr()`` reports for that tensor (0 before the first update, like
        ``AdafactorSchedule(optimizer, initial_lr=0.0)``).
    """

    step_size: ScheduledLearningRateState
    applied_learning_rates: PyTree


@_validation.explains_torch_habits
def scale_by_adafactor_step_size(
    learning_rate: float | Callable[[Array], Array] | None = None,
    *,
    warmup_init: bool = False,
    scale_parameter: bool = True,
    eps2: float = 1e-3,
) -> optax.GradientTransformation:
    r"""Multiply each tensor's update by Adafactor's step size, scaled by the parameter's RMS.

    At update :math:`t = k + 1`, per tensor (:math:`p` before the update):

    .. math::
      \rho_t &= \min\left(10^{-6} t \text{ if warmup\_init else } 10^{-2},\ 1/\sqrt{t}\right)
          \text{ if learning\_rate is None, else } \mathrm{lr}_k \\
      \alpha_t &= \rho_t \cdot \max(\epsilon_2, \mathrm{RMS}(p)) \text{ if scale\_parameter,
          else } \rho_t, \qquad u \leftarrow \alpha_t\, u

    Reproduces ``Adafactor._get_lr`` and ``update.mul_(lr)`` of ``transformers.Adafactor.step``
    (``learning_rate=None`` is ``relative_step=True``). The sign is not applied here: in
    :func:`optax_bertadam.adafactor` the first moment averages the scaled update, then the decay
    is added and the sum negated. :func:`optax_bertadam.get_lr` reads :math:`\rho` of the next
    update; ``state.applied_learning_rates`` holds each tensor's :math:`\alpha` of the last one.
    Computed in at least float32; the update keeps its dtype.

    Args:
      learning_rate: ``None`` for the relative step size :math:`\rho_t`, else the rate ``>= 0``
        or a schedule ``count -> rate``.
      warmup_init: with ``learning_rate=None``, grow :math:`\rho_t` as :math:`10^{-6} t`.
      scale_parameter: multiply the step size by :math:`\max(\epsilon_2, \mathrm{RMS}(p))`.
      eps2: the floor of the parameter RMS (upstream's ``eps[1]``), ``>= 0``.

    Returns:
      An ``optax.GradientTransformation`` with a :class:`ScaleByAdafactorStepSizeState`;
      ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> params = {"w": jnp.full((2, 2), 3.0)}
      >>> tx = ob.scale_by_adafactor_step_size()  # rho_1 = 1e-2, RMS(p) = 3
      >>> updates, state = tx.update({"w": jnp.ones((2, 2))}, tx.init(params), params)
      >>> round(updates["w"][0, 0].item(), 6), round(float(ob.get_lr(state)), 6)
      (0.03, 0.01)
      >>> round(float(state.applied_learning_rates["w"]), 6)
      0.03
    """
    base_rate, schedule, scale_parameter, eps2 = _adafactor_rate_rule(
        learning_rate, warmup_init, scale_parameter, eps2, "scale_by_adafactor_step_size"
    )

    def init_fn(params):
        return ScaleByAdafactorStepSizeState(
            step_size=ScheduledLearningRateState(
                count=jnp.zeros([], jnp.int32),
                learning_rate=jnp.asarray(base_rate, dtype=float),
                schedule=StaticSchedule(schedule),
            ),
            applied_learning_rates=jax.tree.map(
                lambda p: jnp.zeros([], _compute_dtype(p)), params
            ),
        )

    def update_fn(updates, state, params=None):
        if params is None and scale_parameter:
            raise ValueError(
                "scale_by_adafactor_step_size needs the parameters (their RMS scales the step): "
                "call tx.update(grads, state, params)"
            )
        count = state.step_size.count
        rho = scheduled_rate(base_rate, schedule, count)
        leaves, treedef = jax.tree.flatten(updates)
        applied = jax.tree.leaves(state.applied_learning_rates)
        param_leaves = [None] * len(leaves) if params is None else jax.tree.leaves(params)
        _check_leaf_counts("scale_by_adafactor_step_size", updates=leaves,
                           parameters=param_leaves, state=applied)
        out, rates = [], []
        for u, p, old in zip(leaves, param_leaves, applied, strict=True):
            rate = _adafactor_rate(rho, p, u, scale_parameter, eps2)
            # update.mul_(lr)
            out.append((u.astype(jnp.promote_types(u.dtype, rate.dtype)) * rate).astype(u.dtype))
            rates.append(rate.astype(old.dtype))
        return jax.tree.unflatten(treedef, out), ScaleByAdafactorStepSizeState(
            step_size=ScheduledLearningRateState(
                count=optax.safe_increment(count),
                learning_rate=jnp.asarray(base_rate, dtype=state.step_size.learning_rate.dtype),
                schedule=StaticSchedule(schedule),
            ),
            applied_learning_rates=_structured_like(state.applied_learning_rates, rates),
        )

    return optax.GradientTransformation(init_fn, update_fn)


class EmaOfUpdatesState(NamedTuple):
    """State of :func:`ema_of_updates`.

    Attributes:
      exp_avg: the running average of the updates (``transformers.Adafactor``'s name), per
        parameter, in at least float32.
    """

    exp_avg: PyTree


@_validation.explains_torch_habits
def ema_of_updates(beta1: float) -> optax.GradientTransformation:
    r"""Replace the update by the running average of updates: Adafactor's first moment.

    .. math:: m \leftarrow \beta_1 m + (1 - \beta_1)\, u \quad (m_0 = 0), \qquad u \leftarrow m

    Reproduces ``exp_avg.mul_(beta1).add_(update, alpha=1 - beta1); update = exp_avg`` of
    ``transformers.Adafactor.step``: no bias correction, and the average is of updates already
    multiplied by their step size. Like ``optax.ema(beta1, debias=False)``, with the moment kept
    in at least float32 under torch's name (so that PyTorch state migrates to it).

    Args:
      beta1: decay of the average, in ``[0, 1)``.

    Returns:
      An ``optax.GradientTransformation`` with an :class:`EmaOfUpdatesState`.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> tx = ob.ema_of_updates(0.5)
      >>> state = tx.init({"w": jnp.zeros(1)})
      >>> u1, state = tx.update({"w": jnp.full(1, 2.0)}, state)
      >>> u2, state = tx.update({"w": jnp.full(1, 2.0)}, state)
      >>> u1["w"].tolist(), u2["w"].tolist()  # 0.5 * 2, then 0.5 * 1 + 0.5 * 2
      ([1.0], [1.5])
    """
    beta1 = _validation.check_range("beta1", beta1, low=0.0, high=1.0, high_inclusive=False)

    def init_fn(params):
        return EmaOfUpdatesState(
            jax.tree.map(lambda p: jnp.zeros(p.shape, _compute_dtype(p)), params)
        )

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        moments = jax.tree.leaves(state.exp_avg)
        _check_leaf_counts("ema_of_updates", updates=leaves, state=moments)
        # astype: injected (array) hyperparameters must not promote the moment's dtype.
        new = [(beta1 * m + (1.0 - beta1) * u.astype(m.dtype)).astype(m.dtype)
               for u, m in zip(leaves, moments, strict=True)]
        out = [m.astype(u.dtype) for u, m in zip(leaves, new, strict=True)]
        return jax.tree.unflatten(treedef, out), EmaOfUpdatesState(
            _structured_like(state.exp_avg, new)
        )

    return optax.GradientTransformation(init_fn, update_fn)


class AddAdafactorDecayState(NamedTuple):
    """State of :func:`add_decayed_weights_at_adafactor_step_size`.

    Attributes:
      count: updates applied so far: the step size of update ``count`` scales the decay.
    """

    count: Array


@_validation.explains_torch_habits
def add_decayed_weights_at_adafactor_step_size(
    weight_decay: float,
    learning_rate: float | Callable[[Array], Array] | None = None,
    *,
    warmup_init: bool = False,
    scale_parameter: bool = True,
    eps2: float = 1e-3,
    mask: PyTree | Callable[[PyTree], PyTree] | None = None,
) -> optax.GradientTransformation:
    r"""Decoupled weight decay at Adafactor's per-tensor step size: ``u <- u + wd * alpha_t * p``.

    .. math:: u \leftarrow u + (\text{weight\_decay}\cdot\alpha_t)\, p
        \quad\text{(where the mask is True)}

    with :math:`\alpha_t` the step size of :func:`scale_by_adafactor_step_size` built with the
    same ``learning_rate``, ``warmup_init``, ``scale_parameter`` and ``eps2`` (pass the same
    values: the decay recomputes it from the update count and the parameter before the update).
    Reproduces ``p_data_fp32.add_(p_data_fp32, alpha=-weight_decay * lr)`` of
    ``transformers.Adafactor.step`` once the update is negated, as in
    :func:`optax_bertadam.adafactor`. Computed in at least float32; the update keeps its dtype.

    Args:
      weight_decay: decay coefficient, ``>= 0``; ``0`` makes this the identity, as upstream's
        ``if group["weight_decay"] != 0``.
      learning_rate: as :func:`scale_by_adafactor_step_size` (``None``: the relative step).
      warmup_init: as :func:`scale_by_adafactor_step_size`.
      scale_parameter: as :func:`scale_by_adafactor_step_size`.
      eps2: as :func:`scale_by_adafactor_step_size`.
      mask: bool tree (or function of the params returning one), True where the decay applies
        (PyTorch: a param group with ``weight_decay=0.0``); ``None`` decays every tensor.

    Returns:
      An ``optax.GradientTransformation`` with an :class:`AddAdafactorDecayState`; ``update``
      needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> params = {"w": jnp.full(2, 3.0)}
      >>> tx = ob.add_decayed_weights_at_adafactor_step_size(0.5)  # alpha_1 = 1e-2 * RMS(p) = 0.03
      >>> updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
      >>> [round(u, 6) for u in updates["w"].tolist()]  # 0.5 * 0.03 * 3
      [0.045, 0.045]
    """
    weight_decay = _validation.check_range("weight_decay", weight_decay, low=0.0)
    base_rate, schedule, scale_parameter, eps2 = _adafactor_rate_rule(
        learning_rate, warmup_init, scale_parameter, eps2,
        "add_decayed_weights_at_adafactor_step_size",
    )

    def init_fn(params):
        if mask is not None:
            check_mask_matches(resolve_mask(mask, params), params, "mask")
        return AddAdafactorDecayState(jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        count = optax.safe_increment(state.count)
        if _validation.is_concrete_scalar(weight_decay) and weight_decay == 0.0:
            return updates, AddAdafactorDecayState(count)
        if params is None:
            raise ValueError(
                "add_decayed_weights_at_adafactor_step_size needs the parameters: call "
                "tx.update(grads, state, params)"
            )
        rho = scheduled_rate(base_rate, schedule, state.count)
        # Matched by leaf order (see add_decayed_weights).
        mask_leaves = jax.tree.leaves(resolve_mask(mask, params))
        leaves, treedef = jax.tree.flatten(updates)
        param_leaves = jax.tree.leaves(params)
        _check_leaf_counts("add_decayed_weights_at_adafactor_step_size", updates=leaves,
                           parameters=param_leaves, mask=mask_leaves)
        out = []
        for u, p, decay in zip(leaves, param_leaves, mask_leaves, strict=True):
            if decay:
                rate = _adafactor_rate(rho, p, u, scale_parameter, eps2)
                # p.add_(p, alpha=-weight_decay * lr), on the parameter before the update.
                decayed = u.astype(rate.dtype) + (weight_decay * rate) * p.astype(rate.dtype)
                u = decayed.astype(u.dtype)
            out.append(u)
        return jax.tree.unflatten(treedef, out), AddAdafactorDecayState(count)

    return optax.GradientTransformation(init_fn, update_fn)


def compute_in_float32(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Run ``inner`` on the updates upcast to (at least) float32; its output gets their dtype back.

    What ``transformers.Adafactor`` does with float16/bfloat16 gradients (``grad.float()``, the
    whole step in float32, one rounding at the end): a chain of transforms that each keep the
    gradient's dtype would round every intermediate update to bfloat16. float32 and float64
    updates pass through unchanged. The state is ``inner``'s own (nothing is added).

    Args:
      inner: the transformation to run in float32.

    Returns:
      An ``optax.GradientTransformation`` with ``inner``'s state.

    Example:
      >>> import jax.numpy as jnp, optax, optax_bertadam as ob
      >>> tx = ob.compute_in_float32(optax.scale(1.0 / 3.0))
      >>> updates, _ = tx.update({"w": jnp.ones(1, jnp.bfloat16)}, tx.init({"w": jnp.ones(1)}))
      >>> updates["w"].dtype
      dtype(bfloat16)
    """

    def update_fn(updates, state, params=None, **extra_args):
        upcast = jax.tree.map(lambda u: u.astype(_compute_dtype(u)), updates)
        out, state = inner.update(upcast, state, params, **extra_args)
        return jax.tree.map(lambda o, u: o.astype(u.dtype), out, updates), state

    return optax.GradientTransformation(inner.init, update_fn)
