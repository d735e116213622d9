r"""LAMB as DeepSpeed and NVIDIA run it: two flavours, each reproduced exactly.

* :func:`deepspeed_lamb` is ``deepspeed.ops.lamb.FusedLamb`` (the CUDA kernel
  ``fused_lamb_cuda_kernel.cu``), the optimizer of DeepSpeed's bing_bert recipe: moments without
  bias correction, a trust ratio clamped to ``[min_coeff, max_coeff]`` on every tensor, the bias
  correction folded into the step size.
* :func:`nvidia_lamb` is apex's ``FusedLAMB`` (NVIDIA's BERT), whose pure-PyTorch copy is
  ``timm.optim.Lamb``: gradients pre-normalised by their global norm, bias-corrected Adam
  moments, the trust ratio only on the decayed tensors (unless ``always_adapt``).

Both are short ``optax.chain``\ s of the transforms of this module and of
:mod:`optax_bertadam.transforms`, run as one update function with that chain's state so that
XLA keeps no parameter-sized temporary (``_fused_lamb``); ``optax.lamb`` is a third LAMB, which
differs from both (each docstring says where).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_bertadam import _validation, transforms

Array = Any
PyTree = Any
Mask = PyTree | Callable[[PyTree], PyTree] | None

# DeepSpeed's FusedLamb adds this to the group's gradient norm before comparing it with
# max_grad_norm (fused_lamb.py: ``clip = ((grad_norm / scale) + 1e-6) / max_grad_norm``).
DEEPSPEED_CLIP_EPS = 1e-6


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r} is invalid: expected True or False")
    return value


def _mask_leaves(mask: Mask, params: PyTree, argname: str) -> list[bool]:
    """The mask's bools in the order of ``params``' leaves (all True for ``None``)."""
    tree = transforms.resolve_mask(mask, params)
    leaves = jax.tree.leaves(tree)
    if len(leaves) != len(jax.tree.leaves(params)):
        transforms.check_mask_matches(tree, params, argname)
    # Python bools: a leaf outside the mask costs nothing at run time.
    return [bool(leaf) for leaf in leaves]


def _needs_params(params: PyTree, who: str) -> None:
    if params is None:
        raise ValueError(f"{who} needs the parameters: call tx.update(grads, state, params)")


class _MomentParts(NamedTuple):
    """A LAMB moments transform and how its direction follows from its new state: ``hyper(state)``
    the scalars, ``direction(m, v, g, hyper)`` one leaf's direction (the fused LAMBs recompute
    it with the scalars behind a barrier)."""

    transform: optax.GradientTransformation
    hyper: Callable[[Any], dict[str, Any]]
    direction: Callable[..., Array]


# ------------------------------------------------------------------------------ gradient norm


def clip_by_global_norm_ratio(
    max_norm: float, *, eps: float = 0.0, groups: Mask = None
) -> optax.GradientTransformation:
    r"""Divide the gradients by their norm's ratio to ``max_norm`` when it exceeds 1.

    .. math::
      g \leftarrow \frac{g}{\max\left(1, (\lVert g \rVert_2 + \text{eps}) / \text{max\_norm}\right)}

    The pre-normalisation of both LAMBs: apex's ``FusedLAMB`` and ``timm.optim.Lamb``
    (``eps=0``, the norm of every gradient of every group) and DeepSpeed's ``FusedLamb``
    (``eps=1e-6``, the norm of each parameter group, which DeepSpeed passes as ``grad_norms``).
    Unlike :func:`optax_bertadam.clip_grad_norm` (``torch.nn.utils.clip_grad_norm_``) it divides by
    the ratio, as those optimizers do, rather than multiplying by its inverse plus ``1e-6``.

    Args:
      max_norm: the norm allowed, ``>= 0``; ``0`` disables the division (DeepSpeed's
        ``max_grad_norm=0``).
      eps: added to the norm before the ratio is taken, ``>= 0``.
      groups: ``None`` (one norm over all leaves) or a tree of bools with the parameters'
        structure (or a function of the parameters returning one): the True leaves and the False
        leaves are two groups, each divided by its own norm's ratio (DeepSpeed's two parameter
        groups, decay and no-decay).

    Returns:
      An ``optax.GradientTransformation`` with an ``optax.EmptyState``; with ``groups``,
      ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> tx = ob.clip_by_global_norm_ratio(1.0)
      >>> grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}  # global norm 5
      >>> updates, _ = tx.update(grads, tx.init(grads))
      >>> updates["a"].tolist(), updates["b"].tolist()
      ([0.6000000238418579], [0.800000011920929])
    """
    return _clip_by_norm_ratio(max_norm, eps, groups, "groups").transform


def _clip_divisors(
    max_norm: Any, eps: Any, groups: Mask, groups_name: str
) -> Callable[[list[Array], PyTree], list[Array] | None]:
    """``(leaves, params) -> `` each leaf's divisor (``None``: no division), the scalar part of
    :func:`_clip_by_norm_ratio` (the fused LAMBs apply it themselves)."""

    def divisors_fn(leaves, params):
        if _validation.is_concrete_scalar(max_norm) and max_norm == 0.0:
            return None
        if groups is None:
            labels = [True] * len(leaves)
        else:
            _needs_params(params, "clip_by_global_norm_ratio with groups")
            labels = _mask_leaves(groups, params, groups_name)
        norms = transforms._l2_norms(leaves)
        divisors: dict[bool, Array] = {}
        for label in set(labels):
            squares = [jnp.square(n) for n, lab in zip(norms, labels, strict=True) if lab == label]
            ratio = (jnp.sqrt(sum(squares)) + eps) / max_norm
            divisor = jnp.maximum(ratio, 1.0)
            if not _validation.is_concrete_scalar(max_norm):
                # An injected max_norm of 0 disables the division, as a concrete one does.
                divisor = jnp.where(max_norm > 0, divisor, 1.0)
            divisors[label] = divisor
        return [divisors[lab] for lab in labels]

    return divisors_fn


def _divide(leaves: list[Array], divisors: list[Array] | None) -> list[Array]:
    if divisors is None:
        return leaves
    return [g / d.astype(g.dtype) for g, d in zip(leaves, divisors, strict=True)]


def _divide_one(g: Array, divisor: Array | None) -> Array:
    return g if divisor is None else _divide([g], [divisor])[0]


def _clip_by_norm_ratio(
    max_norm: Any, eps: Any, groups: Mask, groups_name: str
) -> optax.GradientTransformation:
    # The argument naming the groups is the caller's (deepspeed_lamb calls them `mask`).
    max_norm = _validation.check_range("max_norm", max_norm, low=0.0)
    eps = _validation.check_range("eps", eps, low=0.0)
    divisors_fn = _clip_divisors(max_norm, eps, groups, groups_name)

    def init_fn(params):
        disabled = _validation.is_concrete_scalar(max_norm) and max_norm == 0.0
        if groups is not None and not disabled:
            transforms.check_mask_matches(
                transforms.resolve_mask(groups, params), params, groups_name
            )
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        leaves, treedef = jax.tree.flatten(updates)
        divisors = divisors_fn(leaves, params)
        if divisors is None:
            return updates, state
        return jax.tree.unflatten(treedef, _divide(leaves, divisors)), state

    tx = optax.GradientTransformation(init_fn, update_fn)
    # The fused LAMBs (_fused_lamb) take the division apart from the transform.
    return _ClipParts(tx, divisors_fn)


class _ClipParts(NamedTuple):
    transform: optax.GradientTransformation
    divisors: Callable[[list[Array], PyTree], list[Array] | None]


# ------------------------------------------------------------------------------------ moments


class ScaleByDeepSpeedLambState(NamedTuple):
    """DeepSpeed FusedLamb's moments, named as its ``state`` names them."""

    exp_avg: PyTree
    exp_avg_sq: PyTree


def scale_by_deepspeed_lamb(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *, eps_inside_sqrt: bool = False
) -> optax.GradientTransformation:
    r"""DeepSpeed FusedLamb's Adam direction: moments without bias correction.

    .. math::
      m \leftarrow b_1 m + (1 - b_1) g, \quad v \leftarrow b_2 v + (1 - b_2) g^2, \quad
      u = \frac{m}{\sqrt{v} + \text{eps}} \;\;\text{or, with eps\_inside\_sqrt,}\;\;
      \frac{m}{\sqrt{v + \text{eps}}}

    The first lines of ``lamb_cuda_kernel_part1`` (``eps_inside_sqrt`` is its ``ADAM_MODE_0``).
    The bias correction is not here: FusedLamb folds it into the step size, after the trust ratio
    (:func:`scale_by_bias_correction`).

    Args:
      b1: ``betas[0]``, in ``[0, 1)``.
      b2: ``betas[1]``, in ``[0, 1)``.
      eps: ``>= 0``.
      eps_inside_sqrt: add ``eps`` under the square root.

    Returns:
      An ``optax.GradientTransformation`` with a :class:`ScaleByDeepSpeedLambState`.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> tx = ob.scale_by_deepspeed_lamb(0.9, 0.999, 0.0)
      >>> updates, _ = tx.update({"w": jnp.array([2.0])}, tx.init({"w": jnp.zeros(1)}))
      >>> round(updates["w"].item(), 4)  # 0.1 g / sqrt(0.001 g^2): no correction
      3.1623
    """
    return _scale_by_deepspeed_lamb(b1, b2, eps, eps_inside_sqrt).transform


def _scale_by_deepspeed_lamb(b1, b2, eps, eps_inside_sqrt) -> _MomentParts:
    b1 = _validation.check_range("b1", b1, low=0.0, high=1.0, high_inclusive=False)
    b2 = _validation.check_range("b2", b2, low=0.0, high=1.0, high_inclusive=False)
    eps = _validation.check_range("eps", eps, low=0.0)
    eps_inside_sqrt = _check_bool("eps_inside_sqrt", eps_inside_sqrt)

    def init_fn(params):
        return ScaleByDeepSpeedLambState(
            jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params)
        )

    def update_fn(updates, state, params=None):
        del params
        # astype: injected (array) hyperparameters must not promote the moments' dtype.
        exp_avg = jax.tree.map(
            lambda m, g: (b1 * m + (1.0 - b1) * g).astype(m.dtype), state.exp_avg, updates
        )
        exp_avg_sq = jax.tree.map(
            lambda v, g: (b2 * v + (1.0 - b2) * g * g).astype(v.dtype), state.exp_avg_sq, updates
        )

        hyper = _deepspeed_hyper(eps, eps_inside_sqrt)
        scaled = jax.tree.map(
            lambda m, v, g: _deepspeed_direction(m, v, g, hyper), exp_avg, exp_avg_sq, updates
        )
        return scaled, ScaleByDeepSpeedLambState(exp_avg, exp_avg_sq)

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyper_of = lambda state: _deepspeed_hyper(eps, eps_inside_sqrt)
    return _MomentParts(tx, hyper_of, _deepspeed_direction)


def _deepspeed_hyper(eps, eps_inside_sqrt):
    return {"eps": eps, "eps_inside_sqrt": eps_inside_sqrt}


def _deepspeed_direction(m, v, g, hyper, divisor=None):
    del divisor  # the gradient gives the dtype only
    eps = hyper["eps"]
    denom = jnp.sqrt(v + eps) if hyper["eps_inside_sqrt"] else jnp.sqrt(v) + eps
    return (m / denom).astype(g.dtype)




class ScaleByNvidiaLambState(NamedTuple):
    """apex/timm Lamb's moments, named as ``timm.optim.Lamb``'s ``state`` names them; ``count``
    is the group's ``step``."""

    count: Array
    exp_avg: PyTree
    exp_avg_sq: PyTree


def _torch_lerp(start: Array, end: Array, weight: Any) -> Array:
    # torch.lerp's two formulas, chosen on the weight as ATen does (exact at weight 1).
    low = start + weight * (end - start)
    high = end - (end - start) * (1.0 - weight)
    if _validation.is_concrete_scalar(weight):
        return low if abs(float(weight)) < 0.5 else high
    return jnp.where(jnp.abs(weight) < 0.5, low, high)


def scale_by_nvidia_lamb(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6, *, bias_correction: bool = True,
    grad_averaging: bool = True, caution: bool = False,
) -> optax.GradientTransformation:
    r"""apex/timm Lamb's Adam direction: bias-corrected moments, optional grad averaging and caution.

    With :math:`t` the update number, :math:`c_i = 1 - b_i^t` (1 without bias correction):

    .. math::
      m \leftarrow b_1 m + (1 - b_1) g \;\;(\text{grad\_averaging, else } b_1 m + g), \quad
      v \leftarrow b_2 v + (1 - b_2) g^2, \quad
      u = \frac{m / c_1}{\sqrt{v} / \sqrt{c_2} + \text{eps}}

    and with ``caution`` (Cautious Optimizers), :math:`u \leftarrow u \cdot \phi / \max(\bar\phi,
    10^{-3})` with :math:`\phi = [u g > 0]` and :math:`\bar\phi` its mean over the tensor.
    The moment and direction lines of ``timm.optim.lamb._single_tensor_lamb``.

    Args:
      b1: ``betas[0]``, in ``[0, 1)``.
      b2: ``betas[1]``, in ``[0, 1)``.
      eps: added to the corrected square root of ``v``, ``>= 0``.
      bias_correction: divide by :math:`1 - b_i^t`.
      grad_averaging: weigh the gradient by ``1 - b1`` in the first moment.
      caution: zero the entries whose sign disagrees with the gradient (rescaled).

    Returns:
      An ``optax.GradientTransformation`` with a :class:`ScaleByNvidiaLambState`.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> tx = ob.scale_by_nvidia_lamb(eps=0.0)
      >>> updates, _ = tx.update({"w": jnp.array([2.0, -0.5])}, tx.init({"w": jnp.zeros(2)}))
      >>> updates["w"].tolist()  # the first step is the gradient's sign
      [1.0, -1.0]
    """
    return _scale_by_nvidia_lamb(b1, b2, eps, bias_correction, grad_averaging, caution).transform


def _scale_by_nvidia_lamb(b1, b2, eps, bias_correction, grad_averaging, caution) -> _MomentParts:
    b1 = _validation.check_range("b1", b1, low=0.0, high=1.0, high_inclusive=False)
    b2 = _validation.check_range("b2", b2, low=0.0, high=1.0, high_inclusive=False)
    eps = _validation.check_range("eps", eps, low=0.0)
    bias_correction = _check_bool("bias_correction", bias_correction)
    grad_averaging = _check_bool("grad_averaging", grad_averaging)
    caution = _check_bool("caution", caution)

    def hyper_of(state):
        # Corrections in the default float dtype, as timm computes them on the host in double.
        t = jnp.asarray(state.count, dtype=float)
        c1 = transforms.one_minus_power(b1, t) if bias_correction else jnp.ones_like(t)
        c2 = transforms.one_minus_power(b2, t) if bias_correction else jnp.ones_like(t)
        return {"c1": c1, "c2": c2, "eps": eps, "caution": caution, "zero": 0.0, "floor": 1e-3}

    def init_fn(params):
        return ScaleByNvidiaLambState(
            count=jnp.zeros([], jnp.int32),
            exp_avg=jax.tree.map(jnp.zeros_like, params),
            exp_avg_sq=jax.tree.map(jnp.zeros_like, params),
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)

        def first(m, g):
            if grad_averaging:
                return _torch_lerp(m, g, 1.0 - b1).astype(m.dtype)
            return (b1 * m + g).astype(m.dtype)

        exp_avg = jax.tree.map(first, state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(
            lambda v, g: (b2 * v + (1.0 - b2) * (g * g)).astype(v.dtype), state.exp_avg_sq, updates
        )

        new_state = ScaleByNvidiaLambState(count, exp_avg, exp_avg_sq)
        hyper = hyper_of(new_state)
        scaled = jax.tree.map(
            lambda m, v, g: _nvidia_direction(m, v, g, hyper), exp_avg, exp_avg_sq, updates
        )
        return scaled, new_state

    return _MomentParts(optax.GradientTransformation(init_fn, update_fn), hyper_of,
                        _nvidia_direction)


def _nvidia_direction(m, v, g, hyper, divisor=None):
    # denom = (exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(eps)
    denom = jnp.sqrt(v) / jnp.sqrt(hyper["c2"]).astype(v.dtype) + hyper["eps"]
    u = ((m / hyper["c1"].astype(m.dtype)) / denom).astype(g.dtype)
    if hyper["caution"]:
        agree = (u * _divide_one(g, divisor) > hyper["zero"]).astype(g.dtype)
        u = u * (agree / jnp.maximum(jnp.mean(agree), hyper["floor"]))
    return u


# -------------------------------------------------------------------------------- trust ratio


def _trust_ratios(
    min_ratio: Any, max_ratio: Any, applies: Callable[[PyTree], list[Any]], norm_leaves: list[Array],
    params: PyTree,
) -> list[Array | None]:
    """Each leaf's trust ratio (``None`` where none applies), the norms those of ``norm_leaves``."""
    _needs_params(params, "the LAMB trust ratio")
    param_leaves = jax.tree.leaves(params)
    which = applies(params)
    chosen = [i for i, a in enumerate(which) if a is not False]
    param_norms = transforms._l2_norms([param_leaves[i] for i in chosen])
    update_norms = transforms._l2_norms([norm_leaves[i] for i in chosen])
    ratios: list[Array | None] = [None] * len(norm_leaves)
    for i, w, u in zip(chosen, param_norms, update_norms, strict=True):
        # Both upstreams clamp the ratio only where both norms are nonzero; elsewhere it is 1.
        ratio = jnp.maximum(jnp.minimum(w / u, max_ratio), min_ratio)
        ratio = jnp.where((w > 0) & (u > 0), ratio, 1.0)
        if which[i] is not True:
            ratio = jnp.where(which[i], ratio, 1.0)
        ratios[i] = ratio
    return ratios


def _scale_by_ratios(leaves: list[Array], ratios: list[Array | None]) -> list[Array]:
    return [u if r is None else u * r.astype(u.dtype) for u, r in zip(leaves, ratios, strict=True)]


class _TrustParts(NamedTuple):
    """A trust ratio transform and its parts (the fused LAMBs take its norms elsewhere)."""

    transform: optax.GradientTransformation
    min_ratio: Any
    max_ratio: Any
    applies: Callable[[PyTree], list[Any]]


def _trust_ratio(
    min_ratio: Any, max_ratio: Any, applies: Callable[[PyTree], list[Any]],
    init_fn: Callable[[PyTree], Any],
) -> _TrustParts:
    """A trust ratio on the leaves where ``applies(params)`` is not False (a Python bool, or a
    traced one, for an injected weight decay)."""

    def update_fn(updates, state, params=None):
        leaves, treedef = jax.tree.flatten(updates)
        ratios = _trust_ratios(min_ratio, max_ratio, applies, leaves, params)
        return jax.tree.unflatten(treedef, _scale_by_ratios(leaves, ratios)), state

    return _TrustParts(
        optax.GradientTransformation(init_fn, update_fn), min_ratio, max_ratio, applies
    )


def scale_by_clamped_trust_ratio(
    min_ratio: float = 0.0, max_ratio: float = math.inf, *, mask: Mask = None
) -> optax.GradientTransformation:
    r"""LAMB's layer-wise trust ratio, clamped: ``u <- u * clamp(||p|| / ||u||, min, max)``.

    .. math::
      u \leftarrow u \cdot \begin{cases}
        \min(\max(\lVert p \rVert / \lVert u \rVert, \ldots)) \text{ clamped to }
        [\text{min\_ratio}, \text{max\_ratio}] & \lVert p \rVert > 0,\ \lVert u \rVert > 0 \\
        1 & \text{otherwise (not clamped)}
      \end{cases}

    per tensor, the norms those of the whole tensor. DeepSpeed's FusedLamb uses ``min_coeff`` and
    ``max_coeff`` (``lamb_cuda_kernel_part3``: the maximum is applied first, so ``min_ratio``
    wins when the two cross); timm's ``trust_clip`` is ``max_ratio=1``. With the defaults it is
    ``optax.scale_by_trust_ratio()`` (whose ``trust_coefficient=1``, ``eps=0``).

    Args:
      min_ratio: the smallest ratio, ``>= 0``.
      max_ratio: the largest ratio, ``>= 0`` (``inf``: no upper bound).
      mask: tree of bools (or a function of the parameters returning one): the tensors that get
        the ratio; ``None``: all.

    Returns:
      An ``optax.GradientTransformation`` with an ``optax.EmptyState``; ``update`` needs
      ``params``.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> params = {"w": jnp.array([3.0, 4.0])}  # norm 5
      >>> tx = ob.scale_by_clamped_trust_ratio(max_ratio=2.0)
      >>> updates, _ = tx.update({"w": jnp.array([1.0, 0.0])}, tx.init(params), params)
      >>> updates["w"].tolist()  # ratio 5, clamped to 2
      [2.0, 0.0]
    """
    min_ratio = _validation.check_range("min_ratio", min_ratio, low=0.0)
    max_ratio = _validation.check_range("max_ratio", max_ratio, low=0.0)

    def init_fn(params):
        if mask is not None:
            transforms.check_mask_matches(transforms.resolve_mask(mask, params), params, "mask")
        return optax.EmptyState()

    return _clamped_trust_ratio(min_ratio, max_ratio, mask, init_fn).transform


def _clamped_trust_ratio(min_ratio, max_ratio, mask, init_fn) -> _TrustParts:
    applies = lambda params: _mask_leaves(mask, params, "mask")
    return _trust_ratio(min_ratio, max_ratio, applies, init_fn)


def scale_by_bias_correction(b1: float = 0.9, b2: float = 0.999) -> optax.GradientTransformation:
    r"""Scale by Adam's bias correction of the step size: ``u <- u * sqrt(1 - b2^t) / (1 - b1^t)``.

    :math:`t` is the update number (1 for the first). DeepSpeed's FusedLamb applies it to the step
    size (``step_size = lr * sqrt(1 - beta2^t) / (1 - beta1^t)``), after the trust ratio was taken
    on the uncorrected update.

    Args:
      b1: ``betas[0]``, in ``[0, 1)``.
      b2: ``betas[1]``, in ``[0, 1)``.

    Returns:
      An ``optax.GradientTransformation`` whose state is an ``optax.ScaleByScheduleState``
      (its ``count``).

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> tx = ob.scale_by_bias_correction(0.9, 0.999)
      >>> updates, _ = tx.update({"w": jnp.ones(1)}, tx.init({"w": jnp.ones(1)}))
      >>> round(updates["w"].item(), 4)  # sqrt(0.001) / 0.1
      0.3162
    """
    b1 = _validation.check_range("b1", b1, low=0.0, high=1.0, high_inclusive=False)
    b2 = _validation.check_range("b2", b2, low=0.0, high=1.0, high_inclusive=False)

    def init_fn(params):
        del params
        return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        t = jnp.asarray(count, dtype=float)
        factor = jnp.sqrt(transforms.one_minus_power(b2, t)) / transforms.one_minus_power(b1, t)
        updates = jax.tree.map(lambda u: u * factor.astype(u.dtype), updates)
        return updates, optax.ScaleByScheduleState(count=count)

    return optax.GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------- optimizers


def _fused_lamb(
    clip: _ClipParts | None,
    moments: _MomentParts,
    weight_decay: Any,
    mask: Mask,
    trust: _TrustParts,
    post: list[optax.GradientTransformation],
) -> optax.GradientTransformationExtraArgs:
    """``optax.chain(clip, moments, add_decayed_weights(weight_decay, mask), trust, *post)``: its
    state, its updates, computed without a parameter-sized temporary.

    In the chain, the direction ``u`` (the moments' direction plus the decay) has two consumers,
    the trust ratio's norm and ``u * ratio``: XLA:CPU computes ``u`` once into a buffer the size
    of the tensor, which its reduction kernel (a YNNPACK fusion) then reads. Here the norm is
    taken of a second computation of ``u`` from the new moments, the gradients and the
    parameters, all behind an optimization barrier so that XLA cannot merge it with the first:
    the reduction computes ``u`` in its own loop, the scaling in another. The scalars (``eps``,
    the decay, ...) pass the barrier too: the reduction kernel takes a broadcast scalar operand
    but materialises a broadcast constant (benchmarks/README.md, "LAMB"). Same values as the
    chain (tests/test_lamb_fused.py).
    """
    decay = transforms.add_decayed_weights(weight_decay, mask)
    parts = ([] if clip is None else [clip.transform]) + [moments.transform, decay]
    reference = optax.chain(*parts, trust.transform, *post)
    first = len(parts) - 2  # the index of the moments' state in the chain's
    decays = not (_validation.is_concrete_scalar(weight_decay) and weight_decay == 0.0)

    def update_fn(updates, state, params=None, **extra_args):
        leaves, treedef = jax.tree.flatten(updates)
        divisors = None if clip is None else clip.divisors(leaves, params)
        grads = jax.tree.unflatten(treedef, _divide(leaves, divisors))
        moments_state, decay_state, trust_state = state[first:first + 3]
        u, new_moments = moments.transform.update(grads, moments_state, params)
        u, new_decay = decay.update(u, decay_state, params)
        _needs_params(params, "the LAMB trust ratio")
        if divisors is not None:
            # Both moments read the divided gradients: the second moment reads its own division
            # (behind a barrier), or the divided gradients would be a buffer of their own.
            again = jax.tree.unflatten(treedef, _divide(*jax.lax.optimization_barrier(
                (leaves, divisors))))
            _, second = moments.transform.update(again, moments_state, params)
            new_moments = new_moments._replace(exp_avg_sq=second.exp_avg_sq)
            hyper = moments.hyper(new_moments)
            u = jax.tree.unflatten(treedef, [
                moments.direction(m, v, g, hyper, d) for m, v, g, d in zip(
                    jax.tree.leaves(new_moments.exp_avg), jax.tree.leaves(new_moments.exp_avg_sq),
                    leaves, divisors, strict=True)
            ])
            u, _ = decay.update(u, decay_state, params)
        decayed = _mask_leaves(mask, params, "mask") if decays else [False] * len(leaves)
        # The copy of u for the norms (see above). Its gradients are divided after the barrier:
        # before it, the divided gradients would be a buffer of their own.
        hyper = moments.hyper(new_moments)
        flags = {k: x for k, x in hyper.items() if isinstance(x, bool)}  # static switches
        scalars = {k: x for k, x in hyper.items() if k not in flags}
        param_leaves = jax.tree.leaves(params)
        inputs = (leaves, divisors, jax.tree.leaves(new_moments.exp_avg),
                  jax.tree.leaves(new_moments.exp_avg_sq), param_leaves)
        g_b, div_b, m_b, v_b, p_b = jax.lax.optimization_barrier(inputs)
        div_b = [None] * len(leaves) if div_b is None else div_b
        # XLA propagates constants through the barrier, and a broadcast constant shared by the
        # tensors of one shape becomes a buffer of that shape. The scalars plus a zero known only
        # at run time (from the parameter's norm, which the trust ratio takes anyway) are the
        # same values but no constants. A NaN norm makes it NaN, where the ratio is 1 anyway.
        zeros = [jnp.minimum(n, 0).astype(p.dtype) for n, p in
                 zip(transforms._l2_norms(param_leaves), param_leaves, strict=True)]
        u_again = []
        for g, div, m, v, p, d, zero in zip(g_b, div_b, m_b, v_b, p_b, decayed, zeros,
                                            strict=True):
            x = moments.direction(m, v, g, {k: a + zero for k, a in scalars.items()} | flags, div)
            # add_decayed_weights' formula
            u_again.append(x + ((weight_decay + zero) * p).astype(x.dtype) if d else x)
        ratios = _trust_ratios(trust.min_ratio, trust.max_ratio, trust.applies, u_again, params)
        u_leaves, u_treedef = jax.tree.flatten(u)
        out = jax.tree.unflatten(u_treedef, _scale_by_ratios(u_leaves, ratios))
        new_state = [*state[:first], new_moments, new_decay, trust_state]
        for tx, tx_state in zip(post, state[first + 3:], strict=True):
            out, tx_state = optax.with_extra_args_support(tx).update(
                out, tx_state, params, **extra_args
            )
            new_state.append(tx_state)
        return out, tuple(new_state)

    return optax.GradientTransformationExtraArgs(reference.init, update_fn)



def deepspeed_lamb(
    learning_rate: float | Callable[[Array], Array],
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_inside_sqrt: bool = False,
    weight_decay: float = 0.0,
    max_grad_norm: float = 0.0,
    max_coeff: float = 10.0,
    min_coeff: float = 0.01,
    bias_correction: bool = True,
    *,
    mask: Mask = None,
) -> optax.GradientTransformation:
    r"""DeepSpeed's ``FusedLamb``: LAMB with a clamped trust ratio on every tensor.

    Reproduces ``deepspeed.ops.lamb.FusedLamb(params, lr, bias_correction, betas=(b1, b2), eps,
    eps_inside_sqrt, weight_decay, max_grad_norm, max_coeff, min_coeff)`` (the CUDA kernel
    ``fused_lamb_cuda_kernel.cu``), computed in the parameters' dtype. Per tensor, at update
    :math:`t`:

    .. math::
      m &\leftarrow b_1 m + (1 - b_1) g, \qquad v \leftarrow b_2 v + (1 - b_2) g^2 \\
      u &= \frac{m}{\sqrt{v} + \text{eps}} + \text{wd}\, p
          \qquad (\text{eps\_inside\_sqrt: } m / \sqrt{v + \text{eps}}) \\
      r &= \operatorname{clamp}\left(\frac{\lVert p \rVert}{\lVert u \rVert},
          \text{min\_coeff}, \text{max\_coeff}\right)
          \text{ if both norms are nonzero, else } 1 \\
      p &\leftarrow p - \mathrm{lr}_k\, \frac{\sqrt{1 - b_2^t}}{1 - b_1^t}\, r\, u
          \qquad (\text{without bias correction: } \mathrm{lr}_k\, r\, u)

    It is ``optax.chain(clip_by_global_norm_ratio(max_grad_norm, eps=1e-6, groups=mask),
    scale_by_deepspeed_lamb(b1, b2, eps), add_decayed_weights(weight_decay, mask),
    scale_by_clamped_trust_ratio(min_coeff, max_coeff), scale_by_bias_correction(b1, b2),
    scale_by_scheduled_learning_rate(learning_rate))``.

    ``max_grad_norm > 0``: FusedLamb divides a group's gradients by
    ``(grad_norm + 1e-6) / max_grad_norm`` when that exceeds 1, ``grad_norm`` the norm its caller
    passes per group (DeepSpeed's fp16 optimizer passes each group's gradient norm; a plain
    ``optimizer.step()`` with ``max_grad_norm > 0`` fails in DeepSpeed). Here the groups are the
    mask's two (decayed, not decayed), each divided by its own norm's ratio; without a mask, one
    group. DeepSpeed's loss ``scale`` is :func:`optax_bertadam.dynamic_loss_scale`'s business.
    The DeepSpeed engine's ``gradient_clipping`` with ``"type": "Lamb"`` (fp16, the bing_bert
    recipe) reaches FusedLamb through that ``scale``: every gradient divided by
    ``max(1, (global_norm + 1e-6) / gradient_clipping)``, all groups together, i.e.
    ``optax.chain(clip_by_global_norm_ratio(gradient_clipping, eps=1e-6), deepspeed_lamb(...))``.

    How it differs from ``optax.lamb``: optax corrects the moments' bias before the direction
    (``eps`` on the corrected scale) and takes the trust ratio of the corrected update, unclamped;
    FusedLamb takes it on the uncorrected update, clamps it to ``[min_coeff, max_coeff]``, and
    applies the correction to the step size. optax's ``mask`` limits the decay alone, as here.

    Args:
      learning_rate: ``lr`` (``>= 0``) or a schedule ``count -> rate``;
        :func:`optax_bertadam.get_lr` reads the next rate.
      b1: ``betas[0]``, in ``[0, 1)``.
      b2: ``betas[1]``, in ``[0, 1)``.
      eps: ``>= 0``, added to :math:`\sqrt{v}`.
      eps_inside_sqrt: add ``eps`` under the square root.
      weight_decay: ``>= 0``, added to the direction as ``wd * p`` where the mask is True.
      max_grad_norm: ``>= 0``; ``0`` does not clip.
      max_coeff: the largest trust ratio, ``>= 0``.
      min_coeff: the smallest trust ratio, ``>= 0``.
      bias_correction: scale the step by :math:`\sqrt{1 - b_2^t} / (1 - b_1^t)`.
      mask: bool tree (or function of the params returning one), True where decay applies (the
        decay group); e.g. :func:`optax_bertadam.decay_mask`.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> tx = ob.deepspeed_lamb(0.1, max_coeff=2.0)
      >>> updates, _ = tx.update({"w": jnp.array([1.0, -1.0])}, tx.init(params), params)
      >>> [round(x, 4) for x in updates["w"].tolist()]  # ||p|| / ||u|| ~ 1.1, corrected step 0.1
      [-0.1118, 0.1118]
    """
    learning_rate = _validation.check_learning_rate_or_schedule("learning_rate", learning_rate)
    eps_inside_sqrt = _check_bool("eps_inside_sqrt", eps_inside_sqrt)
    bias_correction = _check_bool("bias_correction", bias_correction)
    weight_decay = _validation.check_range("weight_decay", weight_decay, low=0.0)
    max_grad_norm = _validation.check_range("max_grad_norm", max_grad_norm, low=0.0)
    max_coeff = _validation.check_range("max_coeff", max_coeff, low=0.0)
    min_coeff = _validation.check_range("min_coeff", min_coeff, low=0.0)
    direction = _scale_by_deepspeed_lamb(b1, b2, eps, eps_inside_sqrt)
    return _fused_lamb(
        _clip_by_norm_ratio(max_grad_norm, DEEPSPEED_CLIP_EPS, mask, "mask"),
        direction,
        weight_decay,
        mask,
        _clamped_trust_ratio(min_coeff, max_coeff, None, lambda params: optax.EmptyState()),
        [
            *([scale_by_bias_correction(b1, b2)] if bias_correction else []),
            transforms.scale_by_scheduled_learning_rate(learning_rate),
        ],
    )


def _nvidia_trust_ratio(
    weight_decay: Any, trust_clip: bool, always_adapt: bool, mask: Mask
) -> _TrustParts:
    """timm's ``if weight_decay != 0 or always_adapt``: the trust ratio of the decay group (the
    mask's True leaves) while its decay is nonzero, of every tensor with ``always_adapt``."""

    def applies(params):
        if always_adapt:
            return [True] * len(jax.tree.leaves(params))
        if _validation.is_concrete_scalar(weight_decay):
            decaying = bool(weight_decay != 0)
        else:
            decaying = weight_decay != 0  # an injected decay: decided when the update runs
        return [decaying if leaf else False for leaf in _mask_leaves(mask, params, "mask")]

    return _trust_ratio(
        0.0, 1.0 if trust_clip else math.inf, applies, lambda params: optax.EmptyState()
    )


def nvidia_lamb(
    learning_rate: float | Callable[[Array], Array],
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.01,
    grad_averaging: bool = True,
    max_grad_norm: float | None = 1.0,
    bias_correction: bool = True,
    trust_clip: bool = False,
    always_adapt: bool = False,
    caution: bool = False,
    decoupled_decay: bool = False,
    *,
    mask: Mask = None,
) -> optax.GradientTransformation:
    r"""NVIDIA apex's ``FusedLAMB`` (NVLAMB) as ``timm.optim.Lamb`` runs it.

    Reproduces ``timm.optim.Lamb([{"params": decay}, {"params": no_decay, "weight_decay": 0}],
    lr, bias_correction, betas=(b1, b2), eps, weight_decay, grad_averaging, max_grad_norm,
    trust_clip, always_adapt, caution)`` (timm 1.0, single-tensor and foreach paths), the
    pure-PyTorch copy of ``apex.optimizers.FusedLAMB(params, lr, bias_correction, betas, eps,
    weight_decay, grad_averaging, max_grad_norm, use_nvlamb)``; apex's ``use_nvlamb`` is
    ``always_adapt``, ``adam_w_mode=True`` (apex's default) is the decay added to the direction.
    At update :math:`t`, first over all parameters of all groups, then per tensor:

    .. math::
      g &\leftarrow g / \max(1, \lVert g_{\text{all}} \rVert / \text{max\_grad\_norm}) \\
      m &\leftarrow b_1 m + (1 - b_1) g \;\;(\text{no grad\_averaging: } b_1 m + g), \quad
      v \leftarrow b_2 v + (1 - b_2) g^2 \\
      u &= \frac{m / c_1}{\sqrt{v} / \sqrt{c_2} + \text{eps}} + \text{wd}\, p, \qquad
      c_i = 1 - b_i^t \text{ (1 without bias\_correction)} \\
      p &\leftarrow p - \mathrm{lr}_k\, r\, u, \qquad
      r = \lVert p \rVert / \lVert u \rVert \text{ (1 where either is 0; at most 1 with
      trust\_clip)}

    The trust ratio :math:`r` applies to the decay group (``mask`` True) while ``weight_decay``
    is nonzero, to the other tensors only with ``always_adapt`` (else :math:`r = 1`): with one
    optimizer over the whole tree, the ``mask`` leaves are timm's decay group and the others its
    no-decay group (``weight_decay=0``). ``caution`` multiplies the Adam direction by the
    rescaled agreement mask (:func:`scale_by_nvidia_lamb`).

    It is ``optax.chain(clip_by_global_norm_ratio(max_grad_norm), scale_by_nvidia_lamb(...),
    add_decayed_weights(weight_decay, mask), <trust ratio>, scale_by_scheduled_learning_rate(lr))``.

    Not reproduced: timm's ``decoupled_decay=True`` (and so ``corrected_weight_decay``, which only
    acts with it), whose trust ratio reads the parameters after an lr-dependent shrink: refused.

    How it differs from ``optax.lamb``: optax has no gradient pre-normalisation (``max_grad_norm``
    must be ``None`` to match), applies the trust ratio to every tensor (its ``mask`` limits the
    decay alone: here ``always_adapt=True``) and has no ``grad_averaging``, ``trust_clip`` or
    ``caution``. ``nvidia_lamb(lr, b1, b2, eps, wd, max_grad_norm=None, always_adapt=True,
    mask=m)`` is ``optax.lamb(lr, b1, b2, eps, weight_decay=wd, mask=m)`` for ``wd > 0``.

    Args:
      learning_rate: ``lr`` (``>= 0``) or a schedule ``count -> rate``;
        :func:`optax_bertadam.get_lr` reads the next rate.
      b1: ``betas[0]``, in ``[0, 1)``.
      b2: ``betas[1]``, in ``[0, 1)``.
      eps: ``>= 0``, added to the corrected :math:`\sqrt{v}`.
      weight_decay: ``>= 0``, the decay group's; ``0`` also switches its trust ratio off.
      grad_averaging: weigh the gradient by ``1 - b1`` in the first moment.
      max_grad_norm: ``> 0``, the global norm the gradients are pre-normalised to; ``None``:
        no pre-normalisation.
      bias_correction: correct the moments by :math:`1 - b_i^t`.
      trust_clip: clamp the trust ratio at 1 (LAMBC).
      always_adapt: the trust ratio on every tensor (apex ``use_nvlamb=True``).
      caution: Cautious Optimizers' sign-agreement mask on the direction.
      decoupled_decay: must be False (see above).
      mask: bool tree (or function of the params returning one), True for the decay group; e.g.
        :func:`optax_bertadam.decay_mask`. ``None``: every tensor is in the decay group.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> params = {"w": jnp.array([3.0, 4.0]), "bias": jnp.array([1.0])}
      >>> tx = ob.nvidia_lamb(0.1, eps=0.0, weight_decay=0.0, max_grad_norm=None,
      ...                     mask=ob.decay_mask)
      >>> grads = {"w": jnp.array([1.0, -1.0]), "bias": jnp.array([2.0])}
      >>> updates, _ = tx.update(grads, tx.init(params), params)
      >>> updates["w"].tolist(), updates["bias"].tolist()  # no decay: no trust ratio, -lr sign(g)
      ([-0.10000000149011612, 0.10000000149011612], [-0.10000000149011612])
    """
    learning_rate = _validation.check_learning_rate_or_schedule("learning_rate", learning_rate)
    weight_decay = _validation.check_range("weight_decay", weight_decay, low=0.0)
    for name, value in (("grad_averaging", grad_averaging), ("bias_correction", bias_correction),
                        ("trust_clip", trust_clip), ("always_adapt", always_adapt),
                        ("caution", caution), ("decoupled_decay", decoupled_decay)):
        _check_bool(name, value)
    if decoupled_decay:
        raise ValueError(
            "decoupled_decay=True is invalid: timm's decoupled decay shrinks the parameters by an "
            "lr-dependent factor before their trust ratio is taken, which nvidia_lamb does not "
            "reproduce; expected False (apex's adam_w_mode: the decay added to the direction)"
        )
    if max_grad_norm is not None:
        max_grad_norm = _validation.check_range(
            "max_grad_norm", max_grad_norm, low=0.0, low_inclusive=False
        )
    clip = None if max_grad_norm is None else _clip_by_norm_ratio(max_grad_norm, 0.0, None, "groups")
    moments = _scale_by_nvidia_lamb(b1, b2, eps, bias_correction, grad_averaging, caution)
    trust = _nvidia_trust_ratio(weight_decay, trust_clip, always_adapt, mask)
    lr = transforms.scale_by_scheduled_learning_rate(learning_rate)
    if caution:
        # Its agreement mean is one more reduction over the direction, which XLA:CPU takes from
        # whole-tensor buffers fused or not (3 per tensor, as before); the fused update, which
        # would need that reduction twice, keeps one more: caution runs the plain chain.
        return optax.chain(
            *([] if clip is None else [clip.transform]), moments.transform,
            transforms.add_decayed_weights(weight_decay, mask), trust.transform, lr)
    return _fused_lamb(clip, moments, weight_decay, mask, trust, [lr])
