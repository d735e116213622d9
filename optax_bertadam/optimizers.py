"""The named optimizers, each a short ``optax.chain`` of the public transforms."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_bertadam import _validation, masks, transforms
from optax_bertadam.schedules import bert as bert_schedules

PyTree = Any
CLIP_MODES = ("per_tensor", "global")


@_validation.explains_torch_habits
def bertadam(
    learning_rate: float | Callable[[Any], Any],
    warmup: float = -1,
    t_total: int = -1,
    schedule: str = "warmup_linear",
    b1: float = 0.9,
    b2: float = 0.999,
    e: float = 1e-6,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    *,
    mask: PyTree | Callable[[PyTree], PyTree] | None = None,
    clip_mode: str = "per_tensor",
    schedule_kwargs: Mapping[str, Any] | None = None,
    clamp_lr_at_zero: bool = False,
    moment_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""BertAdam: BERT's Adam with per-tensor clipping, no bias correction, decoupled weight decay.

    Reproduces ``BertAdam(params, lr, warmup, t_total, schedule, b1, b2, e, weight_decay,
    max_grad_norm)`` from DeepSpeedExamples ``bing_bert/pytorch_pretrained_bert/optimization.py``
    (same names, defaults and checks). For each tensor, at update :math:`k`:

    .. math::
      g &\leftarrow g \cdot \min\left(1, \tfrac{\text{max\_grad\_norm}}{\lVert g\rVert_2 + 10^{-6}}\right)
          \quad\text{(if max\_grad\_norm > 0)} \\
      m &\leftarrow b_1 m + (1 - b_1) g, \qquad v \leftarrow b_2 v + (1 - b_2) g^2 \\
      u &= \frac{m}{\sqrt{v} + e} + \text{weight\_decay} \cdot p \quad\text{(where the mask is True)} \\
      p &\leftarrow p - \mathrm{lr}_k\, u, \qquad
      \mathrm{lr}_k = \mathrm{lr} \cdot \mathrm{SCHEDULE}(k / t_\mathrm{total}, \text{warmup})

    It is ``optax.chain(clip_grad_norm, scale_by_bias_free_adam, add_decayed_weights,
    scale_by_scheduled_learning_rate)``; see :mod:`optax_bertadam.transforms`.

    Deliberate differences from upstream: ``warmup_cosine`` works after warmup and the three
    global-step schedules work inside the optimizer (both raise ``TypeError`` upstream); see
    :mod:`optax_bertadam.schedules.bert`.

    Args:
      learning_rate: BertAdam's ``lr`` (``>= 0``), or an optax schedule ``count -> rate``: with
        ``t_total=-1`` it is the rate; with a ``t_total`` it plays ``group['lr']`` set by a
        PyTorch scheduler, and BertAdam's own ``schedule`` multiplies it, as in PyTorch.
      warmup: warmup as a fraction of ``t_total``, in ``[0, 1)``, or ``-1`` for none.
      t_total: total number of updates for the schedule; ``-1`` keeps the rate constant.
      schedule: one of ``warmup_cosine``, ``warmup_constant``, ``warmup_linear``,
        ``warmup_linear_decay_exp``, ``warmup_exp_decay_exp``, ``warmup_exp_decay_poly``.
      b1: first-moment decay, in ``[0, 1)``.
      b2: second-moment decay, in ``[0, 1)``.
      e: epsilon added to ``sqrt(v)``, ``>= 0``.
      weight_decay: decoupled weight decay, ``>= 0``.
      max_grad_norm: clipping threshold; ``<= 0`` (upstream uses ``-1``) disables clipping.
      mask: bool tree (or function of the params returning one), True where decay
        applies, e.g. :func:`optax_bertadam.decay_mask`; checked against the params at ``init``.
      clip_mode: ``"per_tensor"`` (BertAdam) or ``"global"`` (torch's formula over the whole tree).
      schedule_kwargs: ``decay_rate``, ``decay_steps``, ``degree``, ``warm_degree`` for the
        global-step schedules.
      clamp_lr_at_zero: opt-in: never apply a negative rate (``warmup_linear`` past ``t_total``).
      moment_dtype: dtype of ``next_m``/``next_v`` (default: the parameter's).

    Returns:
      An ``optax.GradientTransformation``; :func:`optax_bertadam.get_lr` reads the next rate from
      its state.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> params, grads = {"w": jnp.ones(2)}, {"w": jnp.array([1.0, -1.0])}
      >>> tx = ob.bertadam(0.1, weight_decay=0.0)
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # no bias correction: 0.1 * 0.1 / sqrt(0.001)
      [-0.3162, 0.3162]
      >>> tx = ob.bertadam(1e-3, warmup=0.1, t_total=100)  # warmup_linear over 10 updates
      >>> state = tx.init(params)
      >>> for _ in range(5):
      ...     updates, state = tx.update(grads, state, params)
      >>> round(float(ob.get_lr(state)), 6)
      0.0005
    """
    clip_mode = _validation.check_choice("clip_mode", clip_mode, CLIP_MODES)
    max_grad_norm = _validation.check_real("max_grad_norm", max_grad_norm)
    if callable(learning_rate):
        _validation.check_static("t_total", t_total)
        base_rate, multiplier = learning_rate, None
        if t_total != -1:
            # A PyTorch scheduler over BertAdam sets group['lr']; BertAdam still multiplies it by
            # its own schedule at every step.
            own = bert_schedules.bert_multiplier(
                schedule, t_total, warmup, schedule_kwargs=schedule_kwargs,
                clamp_at_zero=clamp_lr_at_zero,
            )
            if isinstance(learning_rate, transforms.ScaledSchedule):
                base_rate = transforms.ScaledSchedule(
                    learning_rate.learning_rate, transforms.ScheduleProduct(learning_rate.multiplier, own)
                )
            else:
                base_rate = transforms.ScheduleProduct(learning_rate, own)
    else:
        base_rate = _validation.check_range("learning_rate", learning_rate, low=0.0)
        multiplier = bert_schedules.bert_multiplier(
            schedule, t_total, warmup, schedule_kwargs=schedule_kwargs,
            clamp_at_zero=clamp_lr_at_zero,
        )
    per_tensor = clip_mode == "per_tensor"
    if _validation.is_traced(max_grad_norm):
        # Injected and known only at run time: upstream's `if max_grad_norm > 0` as a select; an
        # infinite threshold makes the clip coefficient exactly 1.
        threshold = jnp.where(max_grad_norm > 0, max_grad_norm, jnp.inf)
        clip = transforms.clip_grad_norm(threshold, per_tensor=per_tensor)
    elif max_grad_norm > 0:
        clip = transforms.clip_grad_norm(max_grad_norm, per_tensor=per_tensor)
    else:
        clip = optax.identity()
    return optax.chain(
        clip,
        transforms.scale_by_bias_free_adam(b1, b2, e, moment_dtype=moment_dtype),
        transforms.add_decayed_weights(weight_decay, mask),
        transforms.scale_by_scheduled_learning_rate(base_rate, multiplier),
    )


# ---------------------------------------------------------------------------------------------
# Shared pieces of the Adam family below.
# ---------------------------------------------------------------------------------------------


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}={value!r} is invalid: expected True or False")
    return bool(value)


def _check_patterns(name: str, patterns: Any) -> list[str] | None:
    if patterns is None:
        return None
    # regex_decay_mask compiles the patterns; on an empty tree that is all it does, so a bad
    # pattern is refused now rather than at init.
    if name == "include_in_weight_decay":
        masks.regex_decay_mask({}, include=patterns)
    else:
        masks.regex_decay_mask({}, exclude=patterns)
    return list(patterns)


# ---------------------------------------------------------------------------------------------
# transformers.AdamW
# ---------------------------------------------------------------------------------------------


@_validation.explains_torch_habits
def adamw(
    learning_rate: float | Callable[[Any], Any],
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    correct_bias: bool = True,
    *,
    mask: PyTree | Callable[[PyTree], PyTree] | None = None,
) -> optax.GradientTransformation:
    r"""transformers' ``AdamW``: Adam with decoupled weight decay, bias correction optional.

    Reproduces ``transformers.AdamW(params, lr, betas=(b1, b2), eps, weight_decay, correct_bias)``
    (transformers 4; defaults ``eps=1e-6``, ``weight_decay=0``) with ``torch.optim.AdamW``'s
    arithmetic. At update :math:`t = k + 1` (:math:`k` updates applied so far), for each tensor:

    .. math::
      p &\leftarrow p\,(1 - \mathrm{lr}_k\,\text{weight\_decay})
          \quad\text{(where the mask is True)} \\
      m &\leftarrow b_1 m + (1 - b_1) g, \qquad v \leftarrow b_2 v + (1 - b_2) g^2 \\
      p &\leftarrow p - \mathrm{lr}_k\,\frac{m / c_1}{\sqrt{v}/\sqrt{c_2} + \text{eps}},
          \qquad c_i = 1 - b_i^{t} \text{ if correct\_bias else } 1

    With ``correct_bias=True`` this is ``torch.optim.AdamW(params, lr, betas, eps, weight_decay)``
    (single-tensor and foreach paths alike); ``correct_bias=False`` is the BERT TensorFlow flavour,
    without bias correction (early updates are smaller by :math:`\sqrt{c_2}/c_1`).

    It is ``optax.chain(Adam direction, add_decayed_weights(weight_decay, mask),
    scale_by_scheduled_learning_rate(learning_rate))``: the decay is scaled by the same *scheduled*
    rate as the Adam step, as ``p.mul_(1 - lr * weight_decay)`` is with a PyTorch LR scheduler, and
    uses the parameters from before the update.

    Differences from the transformers 4 source: it added ``eps`` before the bias correction
    (:math:`\sqrt{v} + \text{eps}`, scaled by :math:`\sqrt{c_2}/c_1` afterwards) and decayed the
    already-updated parameters (``p.add_(p, alpha=-lr * weight_decay)`` after the step). Both differ
    from ``torch.optim.AdamW`` by terms of order ``eps`` and ``lr**2 * weight_decay``; this follows
    ``torch.optim.AdamW``, which transformers 5 recommends in its place.

    Args:
      learning_rate: ``lr`` (``>= 0``) or an optax schedule ``count -> rate`` (what a
        ``LambdaLR`` would make of ``lr``); :func:`optax_bertadam.get_lr` reads the next rate.
      b1: ``betas[0]``, in ``[0, 1)``.
      b2: ``betas[1]``, in ``[0, 1)``.
      eps: added to the (corrected) square root of ``v``, ``>= 0``.
      weight_decay: decoupled decay coefficient, ``>= 0``.
      correct_bias: divide the moments by :math:`1 - b_i^t` (PyTorch) or not (BERT TF).
      mask: bool tree (or function of the params returning one), True where decay applies, e.g.
        :func:`optax_bertadam.decay_mask` for the usual ``no_decay`` parameter group.

    Returns:
      An ``optax.GradientTransformation``; :func:`optax_bertadam.get_lr` reads the next rate from
      its state.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> params = {"w": jnp.ones(2)}
      >>> tx = ob.adamw(0.1, weight_decay=0.5)
      >>> updates, state = tx.update({"w": jnp.array([1.0, -1.0])}, tx.init(params), params)
      >>> [round(u, 4) for u in updates["w"].tolist()]  # -0.1 * sign(g) - 0.1 * 0.5 * p
      [-0.15, 0.05]
    """
    learning_rate = _validation.check_learning_rate_or_schedule("learning_rate", learning_rate)
    b1 = _validation.check_range("b1", b1, low=0.0, high=1.0, high_inclusive=False)
    b2 = _validation.check_range("b2", b2, low=0.0, high=1.0, high_inclusive=False)
    eps = _validation.check_range("eps", eps, low=0.0)
    weight_decay = _validation.check_range("weight_decay", weight_decay, low=0.0)
    correct_bias = _check_bool("correct_bias", correct_bias)
    return optax.chain(
        transforms.scale_by_adam(b1, b2, eps, flavour="torch", bias_correction=correct_bias),
        transforms.add_decayed_weights(weight_decay, mask),
        transforms.scale_by_scheduled_learning_rate(learning_rate),
    )


# ---------------------------------------------------------------------------------------------
# transformers.Adafactor
# ---------------------------------------------------------------------------------------------


@_validation.explains_torch_habits
def adafactor(
    learning_rate: float | Callable[[Any], Any] | None = None,
    eps: Sequence[float] = (1e-30, 1e-3),
    clip_threshold: float = 1.0,
    decay_rate: float = -0.8,
    beta1: float | None = None,
    weight_decay: float = 0.0,
    scale_parameter: bool = True,
    relative_step: bool = True,
    warmup_init: bool = False,
    *,
    mask: PyTree | Callable[[PyTree], PyTree] | None = None,
) -> optax.GradientTransformation:
    r"""transformers' ``Adafactor`` (fairseq's), step for step.

    Reproduces ``transformers.Adafactor(params, lr, eps, clip_threshold, decay_rate, beta1,
    weight_decay, scale_parameter, relative_step, warmup_init)``; it is *not* ``optax.adafactor``
    (different defaults, step size, clipping and decay). At update :math:`t = k + 1`, per tensor:

    .. math::
      \rho_t &= \min\left(10^{-6} t \text{ if warmup\_init else } 10^{-2},\ 1/\sqrt{t}\right)
          \text{ if relative\_step, else } \mathrm{lr}_k \\
      \alpha_t &= \rho_t \cdot \max(\epsilon_2, \mathrm{RMS}(p)) \text{ if scale\_parameter,
          else } \rho_t \\
      \hat\beta_{2t} &= 1 - t^{\text{decay\_rate}}, \qquad G = g^2 + \epsilon_1 \\
      \text{rank} \ge 2:\ & R \leftarrow \hat\beta_{2t} R + (1 - \hat\beta_{2t})\,
          \mathrm{mean}_{-1} G,\ C \leftarrow \hat\beta_{2t} C + (1 - \hat\beta_{2t})\,
          \mathrm{mean}_{-2} G,\ u = g \big/ \sqrt{(R / \mathrm{mean}_{-1} R) \otimes C} \\
      \text{rank} < 2:\ & V \leftarrow \hat\beta_{2t} V + (1 - \hat\beta_{2t}) G,\ u = g / \sqrt{V} \\
      u &\leftarrow \alpha_t\, u \,/\, \max(1, \mathrm{RMS}(u) / \text{clip\_threshold}) \\
      u &\leftarrow m \leftarrow \beta_1 m + (1 - \beta_1) u \quad\text{(if beta1 is not None)} \\
      p &\leftarrow p - \text{weight\_decay}\cdot\alpha_t\, p - u

    where :math:`\mathrm{RMS}(x) = \lVert x\rVert_2 / \sqrt{\mathrm{numel}(x)}` and the parameter
    RMS is that of :math:`p` before the update. Computation is in at least float32 (upstream
    upcasts float16/bfloat16 gradients and parameters); the update keeps the gradient's dtype.

    It is ``compute_in_float32(optax.chain(scale_by_factored_rms,
    scale_by_adafactor_step_size, ema_of_updates, add_decayed_weights_at_adafactor_step_size,
    optax.scale(-1)))`` (see :mod:`optax_bertadam.transforms`), in upstream's order: the rate
    multiplies the update *before* the first moment averages it, so it cannot be the last
    stage as in the other optimizers, and the decay uses the same per-tensor rate.

    Learning rate: :func:`optax_bertadam.get_lr` returns :math:`\rho` of the next update (see
    :class:`~optax_bertadam.transforms.ScaleByAdafactorStepSizeState`), which is the applied rate
    when ``scale_parameter=False``. With ``scale_parameter=True`` the applied rate differs per
    tensor; that state's ``applied_learning_rates`` holds, per tensor, the rate of the last
    update, i.e. what ``AdafactorSchedule`` reports (upstream reports it for the first parameter
    of each param group only).

    Args:
      learning_rate: the external ``lr``: ``None`` with ``relative_step=True`` (required), else a
        rate ``>= 0`` or an optax schedule ``count -> rate`` (what a ``LambdaLR`` makes of ``lr``).
      eps: ``(eps1, eps2)``: added to the squared gradient, and the floor of the parameter RMS;
        both ``>= 0``.
      clip_threshold: largest RMS of the unscaled update, ``> 0``.
      decay_rate: exponent of the second-moment decay :math:`1 - t^{\text{decay\_rate}}`, ``<= 0``.
      beta1: first-moment decay in ``[0, 1)``, or ``None`` for no first moment (saves memory).
      weight_decay: decay coefficient ``>= 0``, scaled by :math:`\alpha_t`.
      scale_parameter: multiply the step size by the parameter RMS.
      relative_step: use the time-dependent :math:`\rho_t` instead of ``learning_rate``.
      warmup_init: with ``relative_step``, grow :math:`\rho_t` as :math:`10^{-6} t`.
      mask: bool tree (or function of the params returning one), True where weight decay applies
        (PyTorch: a param group with ``weight_decay=0.0``); ``None`` decays every tensor.

    Raises:
      ValueError: upstream's ``Cannot combine manual `lr` and `relative_step=True` options`` and
        ```warmup_init=True` requires `relative_step=True``` (each prefixed by the offending
        argument), and for values out of range.

    Returns:
      An ``optax.GradientTransformation`` whose state is the chain's: the moments are in
      :class:`~optax_bertadam.transforms.ScaleByFactoredRmsState` and
      :class:`~optax_bertadam.transforms.EmaOfUpdatesState` (``transformers.Adafactor``'s names);
      ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> params = {"w": jnp.ones((2, 2))}
      >>> tx = ob.adafactor()  # relative step: rho_1 = min(1e-2, 1/sqrt(1))
      >>> updates, state = tx.update({"w": jnp.ones((2, 2))}, tx.init(params), params)
      >>> [round(u, 6) for u in updates["w"].ravel().tolist()], round(float(ob.get_lr(state)), 6)
      ([-0.01, -0.01, -0.01, -0.01], 0.01)
    """
    scale_parameter = _check_bool("scale_parameter", scale_parameter)
    relative_step = _check_bool("relative_step", relative_step)
    warmup_init = _check_bool("warmup_init", warmup_init)
    if learning_rate is not None and relative_step:
        raise ValueError(
            f"learning_rate={learning_rate!r} is invalid with relative_step=True: Cannot combine "
            "manual `lr` and `relative_step=True` options (pass learning_rate=None, or "
            "relative_step=False)"
        )
    if warmup_init and not relative_step:
        raise ValueError(
            "warmup_init=True is invalid with relative_step=False: `warmup_init=True` requires "
            "`relative_step=True`"
        )
    if learning_rate is None and not relative_step:
        raise ValueError(
            "learning_rate=None is invalid with relative_step=False: expected a rate >= 0 or a "
            "schedule count -> rate"
        )
    if learning_rate is not None:
        learning_rate = _validation.check_learning_rate_or_schedule("learning_rate", learning_rate)
    if isinstance(eps, (str, bytes)) or not isinstance(eps, Sequence) or len(eps) != 2:
        raise TypeError(f"eps={eps!r} is invalid: expected a pair (eps1, eps2), e.g. (1e-30, 1e-3)")
    eps1 = _validation.check_range("eps[0]", eps[0], low=0.0)
    eps2 = _validation.check_range("eps[1]", eps[1], low=0.0)
    clip_threshold = _validation.check_range(
        "clip_threshold", clip_threshold, low=0.0, low_inclusive=False
    )
    clip_threshold = _validation.check_finite("clip_threshold", clip_threshold)
    decay_rate = _validation.check_finite("decay_rate", decay_rate)
    decay_rate = _validation.check_range("decay_rate", decay_rate, high=0.0)
    if beta1 is not None:
        beta1 = _validation.check_range("beta1", beta1, low=0.0, high=1.0, high_inclusive=False)
    weight_decay = _validation.check_range("weight_decay", weight_decay, low=0.0)

    # transformers' relative_step=True is the transforms' learning_rate=None.
    rate = dict(learning_rate=None if relative_step else learning_rate, warmup_init=warmup_init,
                scale_parameter=scale_parameter, eps2=eps2)
    # Upstream's order, which is why the rate is not the last stage: the rate multiplies the
    # clipped update, the first moment averages the scaled updates (exp_avg is of lr * update),
    # and the decay, at the same per-tensor rate, is added outside the average; then the sign.
    # In float32 throughout for low-precision gradients, as upstream's `grad.float()`.
    return transforms.compute_in_float32(optax.chain(
        transforms.scale_by_factored_rms(decay_rate, eps1, clip_threshold),
        transforms.scale_by_adafactor_step_size(**rate),
        optax.identity() if beta1 is None else transforms.ema_of_updates(beta1),
        transforms.add_decayed_weights_at_adafactor_step_size(weight_decay, **rate, mask=mask),
        optax.scale(-1.0),
    ))


# ---------------------------------------------------------------------------------------------
# transformers' TensorFlow optimizers: AdamWeightDecay, WarmUp, create_optimizer
# ---------------------------------------------------------------------------------------------

KERAS_NO_DECAY = ("LayerNorm", "layer_norm", "bias")


@_validation.explains_torch_habits
def adam_weight_decay(
    learning_rate: float | Callable[[Any], Any] = 1e-3,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    amsgrad: bool = False,
    weight_decay_rate: float = 0.0,
    include_in_weight_decay: Sequence[str] | None = None,
    exclude_from_weight_decay: Sequence[str] | None = None,
) -> optax.GradientTransformation:
    r"""transformers' TensorFlow ``AdamWeightDecay``: Keras Adam plus decoupled weight decay.

    Reproduces ``AdamWeightDecay(learning_rate, beta_1, beta_2, epsilon, amsgrad,
    weight_decay_rate, include_in_weight_decay, exclude_from_weight_decay)`` (a
    ``tf.keras.optimizers.Adam`` subclass). With :math:`k` updates applied so far, :math:`t = k + 1`
    and :math:`\mathrm{lr}_k` = ``learning_rate(k)`` (Keras evaluates a schedule at
    ``optimizer.iterations``), for each variable:

    .. math::
      p &\leftarrow p - \mathrm{lr}_k\,\text{weight\_decay\_rate}\; p
          \quad\text{(if decayed, see below)} \\
      m &\leftarrow m + (1 - \beta_1)(g - m), \qquad v \leftarrow v + (1 - \beta_2)(g^2 - v) \\
      p &\leftarrow p - \mathrm{lr}_k \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}
          \frac{m}{\sqrt{\hat v} + \epsilon}, \qquad
          \hat v = \max(\hat v, v) \text{ if amsgrad else } v

    The decay uses the scheduled rate ``lr_t``, not the bias-corrected one. A parameter is decayed
    when ``weight_decay_rate > 0`` and, on its ``/``-joined path name (e.g.
    ``encoder/layer/0/attention/bias``): some ``include_in_weight_decay`` pattern
    ``re.search``-es it, or else no ``exclude_from_weight_decay`` pattern does
    (``_do_use_weight_decay``; :func:`optax_bertadam.regex_decay_mask`). With
    ``weight_decay_rate=0`` it is exactly ``tf.keras.optimizers.Adam``.

    Not reproduced: the ``clipnorm``/``clipvalue``/``decay`` Keras keyword arguments (chain
    ``optax.clip``/``optax.clip_by_global_norm`` in front instead), and TensorFlow's float32
    evaluation of the schedule for float64 variables.

    Args:
      learning_rate: a rate ``>= 0`` or a schedule ``count -> rate`` (e.g. :func:`warmup`).
      beta_1: first-moment decay, in ``[0, 1)``.
      beta_2: second-moment decay, in ``[0, 1)``.
      epsilon: Keras's "epsilon hat", added to :math:`\sqrt{v}`, ``>= 0``.
      amsgrad: normalise by the running maximum of :math:`v`.
      weight_decay_rate: decoupled decay coefficient, ``>= 0``.
      include_in_weight_decay: regexes of parameter names always decayed (they win).
      exclude_from_weight_decay: regexes of parameter names not decayed.

    Returns:
      An ``optax.GradientTransformation``; ``update`` needs ``params`` when
      ``weight_decay_rate > 0``.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> params = {"kernel": jnp.ones(2), "bias": jnp.ones(2)}
      >>> tx = ob.adam_weight_decay(0.1, weight_decay_rate=0.1, exclude_from_weight_decay=["bias"])
      >>> zeros = {"kernel": jnp.zeros(2), "bias": jnp.zeros(2)}
      >>> updates, state = tx.update(zeros, tx.init(params), params)
      >>> [round(u, 6) for u in updates["kernel"].tolist()], updates["bias"].tolist()
      ([-0.01, -0.01], [-0.0, -0.0])
    """
    learning_rate = _validation.check_learning_rate_or_schedule("learning_rate", learning_rate)
    beta_1 = _validation.check_range("beta_1", beta_1, low=0.0, high=1.0, high_inclusive=False)
    beta_2 = _validation.check_range("beta_2", beta_2, low=0.0, high=1.0, high_inclusive=False)
    epsilon = _validation.check_range("epsilon", epsilon, low=0.0)
    amsgrad = _check_bool("amsgrad", amsgrad)
    weight_decay_rate = _validation.check_range("weight_decay_rate", weight_decay_rate, low=0.0)
    include = _check_patterns("include_in_weight_decay", include_in_weight_decay)
    exclude = _check_patterns("exclude_from_weight_decay", exclude_from_weight_decay)

    def decay_mask(params):
        return masks.regex_decay_mask(params, include=include, exclude=exclude)

    return optax.chain(
        transforms.scale_by_adam(beta_1, beta_2, epsilon, flavour="keras", amsgrad=amsgrad),
        transforms.add_decayed_weights(weight_decay_rate, decay_mask),
        transforms.scale_by_scheduled_learning_rate(learning_rate),
    )


def _check_power(name: str, value: Any) -> float:
    value = _validation.check_finite(name, value)
    return _validation.check_range(name, value, low=0.0, low_inclusive=False)


@_validation.explains_torch_habits
def warmup(
    initial_learning_rate: float,
    decay_schedule_fn: Callable[[Any], Any],
    warmup_steps: int,
    power: float = 1.0,
) -> Callable[[Any], Any]:
    r"""transformers' TensorFlow ``WarmUp`` schedule, as an optax schedule ``count -> rate``.

    .. math::
      \mathrm{lr}(k) = \begin{cases}
        \text{initial\_learning\_rate}\,(k / \text{warmup\_steps})^{\text{power}}
            & k < \text{warmup\_steps} \\
        \text{decay\_schedule\_fn}(k - \text{warmup\_steps}) & \text{otherwise}
      \end{cases}

    ``WarmUp(initial_learning_rate, decay_schedule_fn, warmup_steps, power)``; Keras calls it
    with ``optimizer.iterations``, the number of updates already applied, which is optax's
    ``count``: update ``k`` uses ``lr(k)``, so the first update uses rate 0.

    Args:
      initial_learning_rate: the rate reached at the end of warmup, ``>= 0``.
      decay_schedule_fn: schedule ``steps since the end of warmup -> rate`` (a jnp function).
      warmup_steps: length of the warmup in updates, an integer ``>= 0``.
      power: exponent of the warmup ramp (1: linear), ``> 0``.

    Returns:
      A schedule ``count -> learning rate`` (jittable).

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.warmup(0.1, lambda k: 0.1 * 0.5**k, warmup_steps=2)
      >>> [round(float(schedule(k)), 6) for k in range(5)]
      [0.0, 0.05, 0.1, 0.05, 0.025]
    """
    initial_learning_rate = _validation.check_range(
        "initial_learning_rate", initial_learning_rate, low=0.0
    )
    if not callable(decay_schedule_fn):
        raise TypeError(
            f"decay_schedule_fn={decay_schedule_fn!r} is invalid: expected a schedule "
            "count -> learning rate"
        )
    warmup_steps = _validation.check_int("warmup_steps", warmup_steps, low=0)
    power = _check_power("power", power)

    def schedule(count):
        step = jnp.asarray(count, dtype=float)
        # warmup_steps >= 1 here whenever the warmup branch can be taken (count >= 0).
        ramp = initial_learning_rate * jnp.power(step / max(warmup_steps, 1), power)
        # Keras only calls decay_schedule_fn(step - warmup_steps) after warmup; clamping keeps
        # the unused branch of jnp.where away from negative steps.
        decayed = decay_schedule_fn(jnp.maximum(count - warmup_steps, 0))
        return jnp.where(count < warmup_steps, ramp, jnp.asarray(decayed, dtype=float))

    return schedule


def _keras_polynomial_decay(
    initial_learning_rate: float, decay_steps: int, end_learning_rate: float, power: float
) -> Callable[[Any], Any]:
    """``tf.keras.optimizers.schedules.PolynomialDecay`` with ``cycle=False``."""

    def schedule(count):
        # global_step = min(step, decay_steps); p = global_step / decay_steps; the remaining
        # fraction 1 - p is formed as (decay_steps - global_step) / decay_steps, exactly 0 at the
        # end: XLA turns `1 - x / c` into a multiply-add by 1/c that ends at -2e-8 in float32, and
        # a fractional power of that is NaN.
        step = jnp.minimum(jnp.asarray(count, dtype=float), decay_steps)
        remaining = (decay_steps - step) / decay_steps
        return (initial_learning_rate - end_learning_rate) * jnp.power(
            remaining, power
        ) + end_learning_rate

    return schedule


@_validation.explains_torch_habits
def create_optimizer(
    init_lr: float,
    num_train_steps: int,
    num_warmup_steps: int,
    min_lr_ratio: float = 0.0,
    adam_beta1: float = 0.9,
    adam_beta2: float = 0.999,
    adam_epsilon: float = 1e-8,
    weight_decay_rate: float = 0.0,
    power: float = 1.0,
    include_in_weight_decay: Sequence[str] | None = None,
) -> tuple[optax.GradientTransformation, Callable[[Any], Any]]:
    r"""transformers' TensorFlow ``create_optimizer``: warmup, polynomial decay, AdamWeightDecay.

    Returns ``(tx, schedule)`` like ``create_optimizer(...)`` returns ``(optimizer,
    lr_schedule)``. The schedule is Keras ``PolynomialDecay`` from ``init_lr`` to
    ``init_lr * min_lr_ratio`` over ``num_train_steps - num_warmup_steps`` updates (constant at
    the end value afterwards), behind a linear :func:`warmup` of ``num_warmup_steps`` (none if 0):

    .. math::
      \mathrm{lr}(k) = \begin{cases}
        \text{init\_lr}\; k / W & k < W \\
        (\text{init\_lr} - \text{end})\,(1 - \min(k - W, D) / D)^{\text{power}} + \text{end}
            & \text{otherwise}
      \end{cases}

    with :math:`W` = ``num_warmup_steps``, :math:`D` = ``num_train_steps - num_warmup_steps``.
    The optimizer is :func:`adam_weight_decay` excluding ``["LayerNorm", "layer_norm", "bias"]``
    from decay when ``weight_decay_rate > 0``, and plain Keras Adam (the same without decay)
    otherwise. ``adam_clipnorm``/``adam_global_clipnorm`` are not arguments here: chain
    ``optax.clip_by_global_norm`` in front.

    Args:
      init_lr: the rate at the end of warmup, ``>= 0``.
      num_train_steps: total number of updates, an integer ``> num_warmup_steps``.
      num_warmup_steps: warmup length, an integer ``>= 0``.
      min_lr_ratio: final rate as a fraction of ``init_lr``, ``>= 0``.
      adam_beta1: Adam's ``beta_1``, in ``[0, 1)``.
      adam_beta2: Adam's ``beta_2``, in ``[0, 1)``.
      adam_epsilon: Adam's epsilon, ``>= 0``.
      weight_decay_rate: decoupled decay coefficient, ``>= 0``.
      power: exponent of the polynomial decay, ``> 0``.
      include_in_weight_decay: regexes of parameter names decayed even if excluded.

    Returns:
      ``(tx, schedule)``: the ``optax.GradientTransformation`` and its schedule
      ``count -> learning rate``.

    Example:
      >>> import optax_bertadam as ob
      >>> tx, schedule = ob.create_optimizer(1e-3, num_train_steps=10, num_warmup_steps=2)
      >>> [round(float(schedule(k)), 6) for k in (0, 1, 2, 6, 10, 11)]
      [0.0, 0.0005, 0.001, 0.0005, 0.0, 0.0]
    """
    init_lr = _validation.check_range("init_lr", init_lr, low=0.0)
    num_train_steps = _validation.check_int("num_train_steps", num_train_steps, low=1)
    num_warmup_steps = _validation.check_int("num_warmup_steps", num_warmup_steps, low=0)
    if num_warmup_steps >= num_train_steps:
        raise ValueError(
            f"num_warmup_steps={num_warmup_steps!r} is invalid with num_train_steps="
            f"{num_train_steps!r}: expected fewer warmup steps than training steps (the decay "
            "lasts num_train_steps - num_warmup_steps updates)"
        )
    min_lr_ratio = _validation.check_finite("min_lr_ratio", min_lr_ratio)
    min_lr_ratio = _validation.check_range("min_lr_ratio", min_lr_ratio, low=0.0)
    power = _check_power("power", power)
    weight_decay_rate = _validation.check_range("weight_decay_rate", weight_decay_rate, low=0.0)
    # Checked here too so that the message names create_optimizer's own arguments.
    for name, value in (("adam_beta1", adam_beta1), ("adam_beta2", adam_beta2)):
        _validation.check_range(name, value, low=0.0, high=1.0, high_inclusive=False)
    _validation.check_range("adam_epsilon", adam_epsilon, low=0.0)
    schedule = _keras_polynomial_decay(
        init_lr, num_train_steps - num_warmup_steps, init_lr * min_lr_ratio, power
    )
    if num_warmup_steps:
        schedule = warmup(init_lr, schedule, num_warmup_steps)
    if weight_decay_rate > 0.0:
        tx = adam_weight_decay(
            schedule, adam_beta1, adam_beta2, adam_epsilon,
            weight_decay_rate=weight_decay_rate,
            include_in_weight_decay=include_in_weight_decay,
            exclude_from_weight_decay=list(KERAS_NO_DECAY),
        )
    else:
        # tf.keras.optimizers.Adam: AdamWeightDecay without decay.
        tx = adam_weight_decay(schedule, adam_beta1, adam_beta2, adam_epsilon)
    return tx, schedule


# ---------------------------------------------------------------------------------------------
# Gradient accumulation
# ---------------------------------------------------------------------------------------------


@_validation.explains_torch_habits
def gradient_accumulation(
    tx: optax.GradientTransformation,
    every_k_steps: int,
    *,
    average: bool = True,
    accumulator_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""Apply ``tx`` once every ``every_k_steps`` micro-batches, to their accumulated gradients.

    A thin wrapper of ``optax.MultiSteps(tx, every_k_steps, use_grad_mean=average)``. For micro-
    batches :math:`g_1, \dots, g_k`, ``tx`` sees

    * ``average=True``: :math:`\frac1k \sum_i g_i`, PyTorch's ``(loss / k).backward()`` on each
      micro-batch followed by ``optimizer.step(); optimizer.zero_grad()`` (the sum of
      ``grad / k`` equals the mean, to rounding);
    * ``average=False``: :math:`\sum_i g_i`, transformers' TensorFlow ``GradientAccumulator``
      (``accumulator(grads)`` per micro-batch, then ``apply_gradients(accumulator.gradients)``
      and ``accumulator.reset()``).

    The other micro-steps return zero updates and leave the inner state (hence the learning rate
    schedule, which counts real updates) untouched; :func:`optax_bertadam.get_lr` finds the inner
    rate through the wrapper. ``optax.MultiSteps(...).has_updated(state)`` works on the state.

    Args:
      tx: any transformation of this package (or optax).
      every_k_steps: micro-batches per update, an integer ``>= 1``.
      average: mean (PyTorch ``loss / k``) or sum (TF ``GradientAccumulator``) of the gradients.
      accumulator_dtype: dtype of the accumulated gradients; default: float32, or wider if a
        parameter is wider (float64 parameters accumulate in float64, unlike
        ``optax.MultiSteps``'s float32 default).

    Returns:
      An ``optax.GradientTransformation`` with an ``optax.MultiStepsState``.

    Example:
      >>> import jax.numpy as jnp, optax, optax_bertadam as ob
      >>> params = {"w": jnp.ones(2)}
      >>> tx = ob.gradient_accumulation(optax.sgd(1.0), every_k_steps=2)
      >>> state = tx.init(params)
      >>> u1, state = tx.update({"w": jnp.array([1.0, 3.0])}, state, params)
      >>> u2, state = tx.update({"w": jnp.array([3.0, 5.0])}, state, params)
      >>> u1["w"].tolist(), u2["w"].tolist()  # nothing, then the mean of the two
      ([0.0, 0.0], [-2.0, -4.0])
    """
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(f"tx={tx!r} is invalid: expected an optax.GradientTransformation")
    every_k_steps = _validation.check_int("every_k_steps", every_k_steps, low=1)
    average = _check_bool("average", average)
    if accumulator_dtype is not None:
        try:
            floating = jnp.issubdtype(jnp.dtype(accumulator_dtype), jnp.floating)
        except TypeError:
            floating = False
        if not floating:
            raise TypeError(
                f"accumulator_dtype={accumulator_dtype!r} is invalid: expected None or a floating "
                "dtype, e.g. jnp.float32"
            )

    def multi_steps(dtype):
        return optax.MultiSteps(
            tx, every_k_steps, use_grad_mean=average, accumulator_dtype=dtype
        )

    def init_fn(params):
        dtype = accumulator_dtype
        if dtype is None:
            dtype = jnp.result_type(jnp.float32, *jax.tree.leaves(params))
        return multi_steps(dtype).init(params)

    def update_fn(updates, state, params=None):
        # The dtype chosen at init is the accumulator's.
        leaves = jax.tree.leaves(state.acc_grads)
        dtype = leaves[0].dtype if leaves else jnp.float32
        return multi_steps(dtype).update(updates, state, params)

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# torch.optim.Adam and torch.optim.SGD
# ---------------------------------------------------------------------------------------------


@_validation.explains_torch_habits
def adam(
    learning_rate: float | Callable[[Any], Any],
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    decoupled_weight_decay: bool = False,
    mask: PyTree | Callable[[PyTree], PyTree] | None = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.Adam``: Adam with L2 weight decay added to the gradient, amsgrad optional.

    Reproduces ``torch.optim.Adam(params, lr, betas=(b1, b2), eps, weight_decay, amsgrad,
    decoupled_weight_decay)`` (single-tensor and foreach paths alike). At update :math:`t = k + 1`:

    .. math::
      g &\leftarrow g + \text{weight\_decay}\cdot p \quad\text{(L2; where the mask is True)} \\
      m &\leftarrow b_1 m + (1 - b_1) g, \qquad v \leftarrow b_2 v + (1 - b_2) g^2,
          \qquad \hat v = \max(\hat v, v) \text{ if amsgrad else } v \\
      p &\leftarrow p - \mathrm{lr}_k\,\frac{m / (1 - b_1^t)}{\sqrt{\hat v}/\sqrt{1 - b_2^t} + \text{eps}}

    The decay is L2 regularisation: it goes through the moments (unlike :func:`adamw`). With
    ``decoupled_weight_decay=True`` it is ``torch.optim.AdamW`` instead (``p *= 1 - lr * wd``
    before the step), which also gives ``AdamW(amsgrad=True)``. ``maximize=True`` has no argument
    here: negate the gradients.

    Args:
      learning_rate: ``lr`` (``>= 0``) or a schedule ``count -> rate``.
      b1: ``betas[0]``, in ``[0, 1)``.
      b2: ``betas[1]``, in ``[0, 1)``.
      eps: added to the bias-corrected square root of the second moment, ``>= 0``.
      weight_decay: L2 coefficient (decoupled with ``decoupled_weight_decay``), ``>= 0``.
      amsgrad: normalise by the running maximum of the second moment.
      decoupled_weight_decay: decay the parameters directly (``torch.optim.AdamW``).
      mask: bool tree (or function of the params returning one), True where decay applies.

    Returns:
      An ``optax.GradientTransformation``; its state holds ``exp_avg``, ``exp_avg_sq`` and
      ``max_exp_avg_sq`` (amsgrad) under torch's names.

    >>> import jax.numpy as jnp, optax_bertadam as ob
    >>> tx = ob.adam(0.1, weight_decay=0.5)
    >>> state = tx.init({"w": jnp.ones(2)})
    >>> updates, state = tx.update({"w": jnp.zeros(2)}, state, {"w": jnp.ones(2)})
    >>> [round(u, 6) for u in updates["w"].tolist()]  # L2 alone: -lr * sign of the gradient
    [-0.1, -0.1]
    """
    learning_rate = _validation.check_learning_rate_or_schedule("learning_rate", learning_rate)
    b1 = _validation.check_range("b1", b1, low=0.0, high=1.0, high_inclusive=False)
    b2 = _validation.check_range("b2", b2, low=0.0, high=1.0, high_inclusive=False)
    eps = _validation.check_range("eps", eps, low=0.0)
    weight_decay = _validation.check_range("weight_decay", weight_decay, low=0.0)
    amsgrad = _check_bool("amsgrad", amsgrad)
    decoupled_weight_decay = _check_bool("decoupled_weight_decay", decoupled_weight_decay)
    return _torch_adam_chain(learning_rate, b1, b2, eps, weight_decay, decoupled_weight_decay, mask,
                             amsgrad=amsgrad)


def _torch_adam_chain(learning_rate, b1, b2, eps, weight_decay, decoupled: bool, mask, **moments):
    """The Adam chain with weight decay on either side of the direction: L2 added to the gradient
    (torch ``Adam``, DeepSpeed ``adam_w_mode=False``) or decoupled after it (``AdamW``)."""
    decay = transforms.add_decayed_weights(weight_decay, mask)
    return optax.chain(
        optax.identity() if decoupled else decay,
        transforms.scale_by_adam(b1, b2, eps, flavour="torch", **moments),
        decay if decoupled else optax.identity(),
        transforms.scale_by_scheduled_learning_rate(learning_rate),
    )


# ---------------------------------------------------------------------------------------------
# DeepSpeed's FusedAdam and DeepSpeedCPUAdam
# ---------------------------------------------------------------------------------------------


@_validation.explains_torch_habits
def fused_adam(
    learning_rate: float | Callable[[Any], Any],
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    bias_correction: bool = True,
    adam_w_mode: bool = True,
    *,
    mask: PyTree | Callable[[PyTree], PyTree] | None = None,
) -> optax.GradientTransformation:
    r"""DeepSpeed's Adam: ``FusedAdam``, ``DeepSpeedCPUAdam``, bias correction optional in both modes.

    Reproduces ``deepspeed.ops.adam.FusedAdam(params, lr, bias_correction, betas=(b1, b2), eps,
    adam_w_mode, weight_decay)`` and ``deepspeed.ops.adam.DeepSpeedCPUAdam(params, lr,
    bias_correction, betas, eps, weight_decay, adamw_mode=adam_w_mode)`` (the engine's
    ``"type": "Adam"``/``"AdamW"``). At update :math:`t = k + 1`, :math:`c_i = 1 - b_i^t` (1
    without ``bias_correction``), for each tensor:

    .. math::
      g &\leftarrow g + \text{wd}\, p \quad (\text{adam\_w\_mode false: L2}) \\
      m &\leftarrow b_1 m + (1 - b_1) g, \qquad v \leftarrow b_2 v + (1 - b_2) g^2 \\
      p &\leftarrow p - \mathrm{lr}_k \left(\frac{m / c_1}{\sqrt{v}/\sqrt{c_2} + \text{eps}}
          + \text{wd}\, p \,[\text{adam\_w\_mode}]\right)

    With ``bias_correction`` it is :func:`adamw` (``adam_w_mode``) or :func:`adam` (L2); without
    it, in L2 mode, neither has the option. ``FusedAdam`` counts one step per parameter group
    (kept in the state of the group's last parameter); :func:`optax_bertadam.load_torch_state_dict`
    reads that layout and :func:`optax_bertadam.to_torch_state_dict` writes it.

    Args:
      learning_rate: ``lr`` (``>= 0``) or a schedule ``count -> rate``.
      b1: ``betas[0]``, in ``[0, 1)``.
      b2: ``betas[1]``, in ``[0, 1)``.
      eps: added to the corrected square root of ``v``, ``>= 0``.
      weight_decay: decoupled (``adam_w_mode``) or L2 coefficient, ``>= 0``, where ``mask`` is
        True.
      bias_correction: divide the moments by :math:`1 - b_i^t`.
      adam_w_mode: decoupled weight decay (AdamW) or L2 added to the gradient (``FusedAdam``'s
        ``adam_w_mode``, ``DeepSpeedCPUAdam``'s ``adamw_mode``).
      mask: bool tree (or function of the params returning one), True where decay applies.

    Returns:
      An ``optax.GradientTransformation``; its state holds ``exp_avg``/``exp_avg_sq`` under
      torch's names and the rate :func:`optax_bertadam.get_lr` reads.

    >>> import jax.numpy as jnp, optax_bertadam as ob
    >>> tx = ob.fused_adam(0.1, weight_decay=0.5, bias_correction=False, adam_w_mode=False)
    >>> params = {"w": jnp.ones(2)}
    >>> updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
    >>> # L2 alone, uncorrected: -lr * (1 - b1) / sqrt(1 - b2) = -0.1 * 0.1 / sqrt(0.001)
    >>> [round(u, 4) for u in updates["w"].tolist()]
    [-0.3162, -0.3162]
    """
    learning_rate = _validation.check_learning_rate_or_schedule("learning_rate", learning_rate)
    b1 = _validation.check_range("b1", b1, low=0.0, high=1.0, high_inclusive=False)
    b2 = _validation.check_range("b2", b2, low=0.0, high=1.0, high_inclusive=False)
    eps = _validation.check_range("eps", eps, low=0.0)
    # The kernels apply the decay only when weight_decay > 0: a negative one would be ignored.
    weight_decay = _validation.check_range("weight_decay", weight_decay, low=0.0)
    bias_correction = _check_bool("bias_correction", bias_correction)
    adam_w_mode = _check_bool("adam_w_mode", adam_w_mode)
    return _torch_adam_chain(learning_rate, b1, b2, eps, weight_decay, adam_w_mode, mask,
                             bias_correction=bias_correction)


class SGDMomentumState(NamedTuple):
    """State of :func:`sgd`'s momentum, named as ``torch.optim.SGD`` names it.

    Attributes:
      count: updates applied so far (the first update initialises the buffer to the gradient).
      momentum_buffer: the buffer per parameter; ``None`` without momentum (as torch keeps none).
    """

    count: Any
    momentum_buffer: PyTree


@_validation.explains_torch_habits
def sgd(
    learning_rate: float | Callable[[Any], Any],
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    *,
    mask: PyTree | Callable[[PyTree], PyTree] | None = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.SGD``: momentum with dampening and nesterov, L2 weight decay.

    Reproduces ``torch.optim.SGD(params, lr, momentum, dampening, weight_decay, nesterov)``:

    .. math::
      g &\leftarrow g + \text{weight\_decay}\cdot p \quad\text{(where the mask is True)} \\
      b &\leftarrow g \text{ at the first update, else } \mu b + (1 - \text{dampening})\, g \\
      d &= g + \mu b \text{ if nesterov else } b, \qquad p \leftarrow p - \mathrm{lr}_k\, d

    The first update sets the buffer to the gradient itself (no dampening), as torch does when
    ``momentum_buffer`` is ``None``; unlike ``optax.sgd``, whose trace starts from zeros. With
    ``momentum=0`` it is plain SGD and the state holds no buffer. A momentum given as an array
    (``optax.inject_hyperparams``, e.g. ``OneCycleLR`` cycling it) keeps the buffer.

    Args:
      learning_rate: ``lr`` (``>= 0``) or a schedule ``count -> rate``.
      momentum: :math:`\mu`, ``>= 0``.
      dampening: ``>= 0``; must be 0 with nesterov.
      weight_decay: L2 coefficient, ``>= 0``.
      nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening = 0``, as in torch).
      mask: bool tree (or function of the params returning one), True where decay applies.

    Returns:
      An ``optax.GradientTransformation`` whose state holds torch's ``momentum_buffer``.

    >>> import jax.numpy as jnp, optax_bertadam as ob
    >>> tx = ob.sgd(0.1, momentum=0.9, dampening=0.5)
    >>> state = tx.init({"w": jnp.zeros(1)})
    >>> u1, state = tx.update({"w": jnp.ones(1)}, state)
    >>> u2, state = tx.update({"w": jnp.ones(1)}, state)
    >>> [round(u1["w"].item(), 6), round(u2["w"].item(), 6)]  # buffers 1, then 0.9 + 0.5
    [-0.1, -0.14]
    """
    # A Python 0 means no buffer; an array (inject_hyperparams: concrete at init, traced in
    # update) may become nonzero, so it keeps one and the state's structure stays the same.
    with_buffer = not (isinstance(momentum, (int, float)) and momentum == 0)
    learning_rate = _validation.check_learning_rate_or_schedule("learning_rate", learning_rate)
    momentum = _validation.check_range("momentum", momentum, low=0.0)
    dampening = _validation.check_real("dampening", dampening)
    weight_decay = _validation.check_range("weight_decay", weight_decay, low=0.0)
    nesterov = _check_bool("nesterov", nesterov)
    if nesterov and (
        (_validation.is_concrete_scalar(momentum) and momentum <= 0)
        or (_validation.is_concrete_scalar(dampening) and dampening != 0)
    ):
        raise ValueError(
            f"nesterov=True is invalid with momentum={momentum!r}, dampening={dampening!r}: "
            "Nesterov momentum requires a momentum and zero dampening"
        )

    def init_fn(params):
        buffer = jax.tree.map(jnp.zeros_like, params) if with_buffer else None
        return SGDMomentumState(jnp.zeros([], jnp.int32), buffer)

    def update_fn(updates, state, params=None):
        del params
        if not with_buffer:
            return updates, SGDMomentumState(optax.safe_increment(state.count), None)
        first = state.count == 0
        # astype: injected (array) hyperparameters must not promote the buffer's dtype.
        buffer = jax.tree.map(
            lambda b, g: jnp.where(first, g, momentum * b + (1.0 - dampening) * g).astype(b.dtype),
            state.momentum_buffer, updates,
        )
        if nesterov:
            direction = jax.tree.map(lambda g, b: (g + momentum * b).astype(g.dtype), updates, buffer)
        else:
            direction = jax.tree.map(lambda g, b: b.astype(g.dtype), updates, buffer)
        return direction, SGDMomentumState(optax.safe_increment(state.count), buffer)

    return optax.chain(
        transforms.add_decayed_weights(weight_decay, mask),
        optax.GradientTransformation(init_fn, update_fn),
        transforms.scale_by_scheduled_learning_rate(learning_rate),
    )


# ---------------------------------------------------------------------------------------------
# torch.optim.Adagrad and torch.optim.RMSprop
# ---------------------------------------------------------------------------------------------


class AdagradState(NamedTuple):
    """State of :func:`adagrad`'s accumulator, named as ``torch.optim.Adagrad`` names it.

    Attributes:
      count: updates applied so far (torch's ``state["step"]``; ``lr_decay`` reads it).
      sum: the running sum of squared gradients per parameter (starts at
        ``initial_accumulator_value``).
    """

    count: Any
    sum: PyTree


def adagrad(
    learning_rate: float | Callable[[Any], Any] = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    mask: PyTree | Callable[[PyTree], PyTree] | None = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.Adagrad``: per-coordinate rates from the sum of squared gradients.

    Reproduces ``torch.optim.Adagrad(params, lr, lr_decay, weight_decay,
    initial_accumulator_value, eps)`` (dense gradients). At update :math:`t = k + 1`:

    .. math::
      g &\leftarrow g + \text{weight\_decay}\cdot p \quad\text{(L2; where the mask is True)} \\
      s &\leftarrow s + g^2 \qquad (s_0 = \text{initial\_accumulator\_value}) \\
      p &\leftarrow p - \frac{\mathrm{lr}_k}{1 + k\,\text{lr\_decay}}\,
          \frac{g}{\sqrt{s} + \text{eps}}

    ``lr_decay`` divides the (scheduled) rate inside the step, as torch's ``clr`` does:
    :func:`optax_bertadam.get_lr` reports ``lr_k`` (``param_groups[i]['lr']``, what a scheduler
    and the transformers Trainer report), not ``clr``. ``maximize=True`` has no argument here:
    negate the gradients. ``foreach``/``differentiable`` change no number.

    Args:
      learning_rate: ``lr`` (``>= 0``) or a schedule ``count -> rate``.
      lr_decay: ``>= 0``; the step's rate is ``lr / (1 + k * lr_decay)``.
      weight_decay: L2 coefficient, ``>= 0``.
      initial_accumulator_value: the sum's starting value, ``>= 0``.
      eps: added to ``sqrt(s)``, ``>= 0``.
      mask: bool tree (or function of the params returning one), True where the L2 term applies
        (torch expresses it as a group with ``weight_decay=0``).

    Returns:
      An ``optax.GradientTransformation`` whose state holds torch's ``sum`` (and ``step`` as
      ``count``).

    >>> import jax.numpy as jnp, optax_bertadam as ob
    >>> tx = ob.adagrad(0.1, lr_decay=1.0)
    >>> state = tx.init({"w": jnp.zeros(1)})
    >>> u1, state = tx.update({"w": jnp.full(1, 3.0)}, state)
    >>> u2, state = tx.update({"w": jnp.full(1, 4.0)}, state)
    >>> [round(u1["w"].item(), 6), round(u2["w"].item(), 6)]  # -0.1 * 3/3, -0.1/2 * 4/5
    [-0.1, -0.04]
    """
    learning_rate = _validation.check_learning_rate_or_schedule("learning_rate", learning_rate)
    lr_decay = _validation.check_range("lr_decay", lr_decay, low=0.0)
    weight_decay = _validation.check_range("weight_decay", weight_decay, low=0.0)
    initial_accumulator_value = _validation.check_range(
        "initial_accumulator_value", initial_accumulator_value, low=0.0
    )
    eps = _validation.check_range("eps", eps, low=0.0)

    def init_fn(params):
        return AdagradState(
            jnp.zeros([], jnp.int32),
            jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params),
        )

    def update_fn(updates, state, params=None):
        del params
        # clr = lr / (1 + (step - 1) * lr_decay), step counted from 1; in the default float dtype.
        divisor = 1.0 + jnp.asarray(state.count, dtype=float) * lr_decay
        sums = jax.tree.map(lambda s, g: (s + g * g).astype(s.dtype), state.sum, updates)
        direction = jax.tree.map(
            lambda g, s: ((g / (jnp.sqrt(s) + eps)) / divisor.astype(g.dtype)).astype(g.dtype),
            updates, sums,
        )
        return direction, AdagradState(optax.safe_increment(state.count), sums)

    return optax.chain(
        transforms.add_decayed_weights(weight_decay, mask),
        optax.GradientTransformation(init_fn, update_fn),
        transforms.scale_by_scheduled_learning_rate(learning_rate),
    )


class RMSpropState(NamedTuple):
    """State of :func:`rmsprop`, named as ``torch.optim.RMSprop`` names it.

    Attributes:
      count: updates applied so far (torch's ``state["step"]``).
      square_avg: running average of squared gradients.
      grad_avg: running average of gradients (``centered=True``), else ``None``.
      momentum_buffer: the momentum buffer (``momentum`` given), else ``None``.
    """

    count: Any
    square_avg: PyTree
    grad_avg: PyTree
    momentum_buffer: PyTree


def rmsprop(
    learning_rate: float | Callable[[Any], Any] = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    *,
    mask: PyTree | Callable[[PyTree], PyTree] | None = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.RMSprop``: gradients divided by a running RMS, optionally centered, momentum.

    Reproduces ``torch.optim.RMSprop(params, lr, alpha, eps, weight_decay, momentum, centered)``:

    .. math::
      g &\leftarrow g + \text{weight\_decay}\cdot p \quad\text{(L2; where the mask is True)} \\
      v &\leftarrow \alpha v + (1 - \alpha) g^2, \qquad
          \bar g \leftarrow \bar g + (1 - \alpha)(g - \bar g) \text{ (centered)} \\
      a &= \sqrt{v - \bar g^2} + \text{eps} \text{ if centered else } \sqrt{v} + \text{eps} \\
      b &\leftarrow \mu b + g / a \quad (b_0 = 0), \qquad
          p \leftarrow p - \mathrm{lr}_k\,(b \text{ if } \mu > 0 \text{ else } g / a)

    Unlike ``optax.rmsprop``, eps is added outside the square root and the momentum buffer
    starts from zero and holds ``g / a`` before the rate, as torch's does. With ``momentum=0``
    the state holds no buffer; a momentum given as an array (``optax.inject_hyperparams``, e.g.
    ``OneCycleLR`` cycling it) keeps one. ``maximize=True`` has no argument here: negate the
    gradients. ``foreach``/``differentiable``/``capturable`` change no number.

    Args:
      learning_rate: ``lr`` (``>= 0``) or a schedule ``count -> rate``.
      alpha: smoothing constant, ``>= 0`` (torch's check).
      eps: added to the root, ``>= 0``.
      weight_decay: L2 coefficient, ``>= 0``.
      momentum: :math:`\mu`, ``>= 0``.
      centered: normalise by the estimated variance (subtract the squared mean gradient).
      mask: bool tree (or function of the params returning one), True where the L2 term applies.

    Returns:
      An ``optax.GradientTransformation`` whose state holds torch's ``square_avg``,
      ``grad_avg`` and ``momentum_buffer``.

    >>> import jax.numpy as jnp, optax_bertadam as ob
    >>> tx = ob.rmsprop(0.1, alpha=0.75)
    >>> state = tx.init({"w": jnp.zeros(1)})
    >>> updates, state = tx.update({"w": jnp.full(1, 2.0)}, state)
    >>> round(updates["w"].item(), 5)  # -0.1 * 2 / sqrt(0.25 * 4)
    -0.2
    """
    with_buffer = not (isinstance(momentum, (int, float)) and momentum == 0)
    learning_rate = _validation.check_learning_rate_or_schedule("learning_rate", learning_rate)
    alpha = _validation.check_range("alpha", alpha, low=0.0)
    eps = _validation.check_range("eps", eps, low=0.0)
    weight_decay = _validation.check_range("weight_decay", weight_decay, low=0.0)
    momentum = _validation.check_range("momentum", momentum, low=0.0)
    centered = _check_bool("centered", centered)

    def init_fn(params):
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return RMSpropState(
            jnp.zeros([], jnp.int32), zeros(), zeros() if centered else None,
            zeros() if with_buffer else None,
        )

    def update_fn(updates, state, params=None):
        del params
        # square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        square_avg = jax.tree.map(
            lambda v, g: (alpha * v + (1.0 - alpha) * (g * g)).astype(v.dtype),
            state.square_avg, updates,
        )
        if centered:
            # grad_avg.lerp_(grad, 1 - alpha); square_avg.addcmul(grad_avg, grad_avg, value=-1)
            grad_avg = jax.tree.map(
                lambda m, g: (m + (1.0 - alpha) * (g - m)).astype(m.dtype), state.grad_avg, updates
            )
            avg = jax.tree.map(lambda v, m: jnp.sqrt(v - m * m) + eps, square_avg, grad_avg)
        else:
            grad_avg = None
            avg = jax.tree.map(lambda v: jnp.sqrt(v) + eps, square_avg)
        if with_buffer:
            buffer = jax.tree.map(
                lambda b, g, a: (momentum * b + g / a).astype(b.dtype),
                state.momentum_buffer, updates, avg,
            )
            direction = jax.tree.map(lambda b, g: b.astype(g.dtype), buffer, updates)
        else:
            buffer = None
            direction = jax.tree.map(lambda g, a: (g / a).astype(g.dtype), updates, avg)
        return direction, RMSpropState(
            optax.safe_increment(state.count), square_avg, grad_avg, buffer
        )

    return optax.chain(
        transforms.add_decayed_weights(weight_decay, mask),
        optax.GradientTransformation(init_fn, update_fn),
        transforms.scale_by_scheduled_learning_rate(learning_rate),
    )
