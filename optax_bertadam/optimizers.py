"""The named optimizers, each a short ``optax.chain`` of the public transforms."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optax

from optax_bertadam import _validation, transforms
from optax_bertadam.schedules import bert as bert_schedules

PyTree = Any
CLIP_MODES = ("per_tensor", "global")


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
    weight_decay_mask: PyTree | Callable[[PyTree], PyTree] | None = None,
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
      learning_rate: BertAdam's ``lr`` (``>= 0``), or an optax schedule ``count -> rate`` (then
        ``t_total`` must stay ``-1``).
      warmup: warmup as a fraction of ``t_total``, in ``[0, 1)``, or ``-1`` for none.
      t_total: total number of updates for the schedule; ``-1`` keeps the rate constant.
      schedule: one of ``warmup_cosine``, ``warmup_constant``, ``warmup_linear``,
        ``warmup_linear_decay_exp``, ``warmup_exp_decay_exp``, ``warmup_exp_decay_poly``.
      b1: first-moment decay, in ``[0, 1)``.
      b2: second-moment decay, in ``[0, 1)``.
      e: epsilon added to ``sqrt(v)``, ``>= 0``.
      weight_decay: decoupled weight decay, ``>= 0``.
      max_grad_norm: clipping threshold; ``<= 0`` (upstream uses ``-1``) disables clipping.
      weight_decay_mask: bool tree (or function of the params returning one), True where decay
        applies, e.g. :func:`optax_bertadam.decay_mask`; checked against the params at ``init``.
      clip_mode: ``"per_tensor"`` (BertAdam) or ``"global"`` (torch's formula over the whole tree).
      schedule_kwargs: ``decay_rate``, ``decay_steps``, ``degree``, ``warm_degree`` for the
        global-step schedules.
      clamp_lr_at_zero: opt-in: never apply a negative rate (``warmup_linear`` past ``t_total``).
      moment_dtype: dtype of ``next_m``/``next_v`` (default: the parameter's).

    Returns:
      An ``optax.GradientTransformation``; :func:`optax_bertadam.get_lr` reads the next rate from
      its state.
    """
    clip_mode = _validation.check_choice("clip_mode", clip_mode, CLIP_MODES)
    max_grad_norm = _validation.check_real("max_grad_norm", max_grad_norm)
    if callable(learning_rate):
        if t_total != -1:
            raise ValueError(
                f"t_total={t_total!r} is invalid with a schedule as learning_rate: the schedule "
                "already sets the rate; leave t_total=-1 (and warmup, schedule at their defaults)"
            )
        lr_schedule = learning_rate
    else:
        lr_schedule = bert_schedules.bert_schedule(
            schedule,
            learning_rate,
            t_total,
            warmup,
            schedule_kwargs=schedule_kwargs,
            clamp_at_zero=clamp_lr_at_zero,
        )
    clip = (
        transforms.clip_grad_norm(max_grad_norm, per_tensor=clip_mode == "per_tensor")
        if max_grad_norm > 0
        else optax.identity()
    )
    return optax.chain(
        clip,
        transforms.scale_by_bias_free_adam(b1, b2, e, moment_dtype=moment_dtype),
        transforms.add_decayed_weights(weight_decay, weight_decay_mask),
        transforms.scale_by_scheduled_learning_rate(lr_schedule),
    )
