"""The six learning-rate schedules of BertAdam (DeepSpeedExamples ``bing_bert``).

Two layers, mirroring upstream:

* The six *multiplier* functions with upstream's own signatures (``warmup_linear(x, warmup)``,
  ``warmup_exp_decay_poly(global_step, total_steps, ...)``, ...). They are pure ``jnp`` functions:
  jit, vmap and plot them.
* :func:`bert_schedule`, which turns a schedule name and BertAdam's ``lr``/``t_total``/``warmup``
  into an optax schedule ``count -> learning rate`` (``count`` = updates already applied). Update
  ``k`` uses ``lr * SCHEDULE(k / t_total, warmup)`` for the first three schedules and
  ``lr * SCHEDULE(k, ..., total_steps=t_total, warmup)`` for the three global-step ones.

Upstream behaviour kept on purpose (users rely on it): ``warmup=-1`` makes every ``x < warmup`` test
false; ``warmup_linear`` drops from 1 to ``1 - warmup`` at the end of warmup and goes negative past
``t_total`` (``clamp_at_zero=True`` in :func:`bert_schedule` is an opt-in fix).

Deliberate deviations from upstream (each is a crash there):

* ``warmup_cosine`` calls ``torch.cos`` on a Python float and raises ``TypeError`` once warmup is
  over; here it is ``0.5 * (1 + cos(pi * x))``, the evident intent.
* ``warmup_exp_decay_poly`` with a non-integer ``degree`` past ``t_total`` raises a fractional
  power of a negative number (a complex rate); here the rate stays at 0 once ``t_total`` is passed.
* ``BertAdam.step`` calls every schedule as ``SCHEDULE(step / t_total, warmup)``, which raises
  ``TypeError`` for the three global-step schedules. Here they work inside the optimizer with the
  global step, exactly as DeepSpeed's training script drives them by hand.

The branch ``x < warmup`` is decided on the integer ``count`` against a boundary computed once, in
Python double precision, when the schedule is built: a float32 ``count / t_total < warmup``
inside jit picks the other branch at the boundary step for some (warmup, t_total) pairs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax.numpy as jnp

from optax_bertadam import _validation
from optax_bertadam.schedules._common import as_float as _as_float
from optax_bertadam.schedules._common import linear_warmup

Array = Any

SCHEDULE_NAMES = (
    "warmup_cosine",
    "warmup_constant",
    "warmup_linear",
    "warmup_linear_decay_exp",
    "warmup_exp_decay_exp",
    "warmup_exp_decay_poly",
)
# Schedules that upstream calls with the global step and total_steps rather than x = step/t_total.
GLOBAL_STEP_SCHEDULES = ("warmup_linear_decay_exp", "warmup_exp_decay_exp", "warmup_exp_decay_poly")

# schedule name -> (required keyword arguments, optional keyword arguments with upstream defaults)
SCHEDULE_KWARGS: Mapping[str, tuple[tuple[str, ...], Mapping[str, float]]] = MappingProxyType({
    "warmup_cosine": ((), {}),
    "warmup_constant": ((), {}),
    "warmup_linear": ((), {}),
    "warmup_linear_decay_exp": (("decay_rate", "decay_steps"), {}),
    "warmup_exp_decay_exp": (("decay_rate", "decay_steps"), {"degree": 2.0}),
    "warmup_exp_decay_poly": ((), {"warm_degree": 1.5, "degree": 2.0}),
})


def _in_warmup(x: Array, warmup: float, in_warmup: Array | None) -> Array:
    return x < warmup if in_warmup is None else in_warmup


def warmup_cosine(x: Array, warmup: float = 0.002, *, in_warmup: Array | None = None) -> Array:
    """``x / warmup`` while ``x < warmup``, then ``0.5 * (1 + cos(pi * x))``.

    Upstream raises ``TypeError`` after warmup (``torch.cos`` of a float); this is the evident intent.

    Args:
      x: training progress ``step / t_total``.
      warmup: warmup fraction of ``t_total`` (``-1``: no warmup).
      in_warmup: optional precomputed ``x < warmup`` (see :func:`bert_schedule`).
    """
    x = _as_float(x)
    warm = linear_warmup(x, warmup)
    return jnp.where(_in_warmup(x, warmup, in_warmup), warm, 0.5 * (1.0 + jnp.cos(jnp.pi * x)))


def warmup_constant(x: Array, warmup: float = 0.002, *, in_warmup: Array | None = None) -> Array:
    """``x / warmup`` while ``x < warmup``, then ``1``."""
    x = _as_float(x)
    return jnp.where(_in_warmup(x, warmup, in_warmup), linear_warmup(x, warmup), jnp.ones_like(x))


def warmup_linear(x: Array, warmup: float = 0.002, *, in_warmup: Array | None = None) -> Array:
    """``1`` if ``warmup == 0``; else ``x / warmup`` while ``x < warmup``, then ``1 - x``.

    Faithful to upstream: the rate drops from 1 to ``1 - warmup`` at the end of warmup, and is
    negative past ``t_total`` (``x > 1``).
    """
    x = _as_float(x)
    if warmup == 0.0:
        return jnp.ones_like(x)
    return jnp.where(_in_warmup(x, warmup, in_warmup), linear_warmup(x, warmup), 1.0 - x)


def warmup_linear_decay_exp(
    global_step: Array,
    decay_rate: float,
    decay_steps: float,
    total_steps: float,
    warmup: float = 0.002,
    *,
    in_warmup: Array | None = None,
) -> Array:
    """``1`` if ``warmup == 0``; else ``x / warmup`` while ``x = global_step / total_steps < warmup``,
    then ``decay_rate ** ((global_step - warmup * total_steps) / decay_steps)``."""
    step = _as_float(global_step)
    x = step / total_steps
    if warmup == 0.0:
        return jnp.ones_like(x)
    decayed = jnp.power(decay_rate, (step - warmup * total_steps) / decay_steps)
    return jnp.where(_in_warmup(x, warmup, in_warmup), linear_warmup(x, warmup), decayed)


def warmup_exp_decay_exp(
    global_step: Array,
    decay_rate: float,
    decay_steps: float,
    total_steps: float,
    warmup: float = 0.002,
    degree: float = 2.0,
    *,
    in_warmup: Array | None = None,
) -> Array:
    """``1`` if ``warmup == 0``; else ``(x / warmup) ** degree`` while ``x < warmup``, then
    ``decay_rate ** ((global_step - warmup * total_steps) / decay_steps)``."""
    step = _as_float(global_step)
    x = step / total_steps
    if warmup == 0.0:
        return jnp.ones_like(x)
    decayed = jnp.power(decay_rate, (step - warmup * total_steps) / decay_steps)
    warm = jnp.power(linear_warmup(x, warmup), degree)
    return jnp.where(_in_warmup(x, warmup, in_warmup), warm, decayed)


def warmup_exp_decay_poly(
    global_step: Array,
    total_steps: float,
    warmup: float = 0.002,
    warm_degree: float = 1.5,
    degree: float = 2.0,
    *,
    in_warmup: Array | None = None,
) -> Array:
    """``(x / warmup) ** warm_degree`` while ``x = global_step / total_steps < warmup``, then
    ``(1 - x) ** degree``. (No ``warmup == 0`` special case upstream: it decays from step 0.)

    Past ``total_steps`` a non-integer ``degree`` gives a complex rate upstream; here it stays 0.
    """
    step = _as_float(global_step)
    x = step / total_steps
    # With warmup == 0 nothing is in warmup: where() discards the first branch.
    warm = jnp.power(linear_warmup(x, warmup), warm_degree) if warmup != 0.0 else jnp.zeros_like(x)
    # (total - step) / total rather than 1 - x: XLA may fuse 1 - step * (1/total) into a
    # multiply-add that lands a hair below 0 at the last step, and a fractional power of that is NaN.
    remaining = (total_steps - step) / total_steps
    if not float(degree).is_integer():
        # Past total_steps upstream takes a fractional power of a negative number (a complex
        # rate, then a crash); the rate stays at its final value 0 instead.
        remaining = jnp.maximum(remaining, 0.0)
    return jnp.where(_in_warmup(x, warmup, in_warmup), warm, jnp.power(remaining, degree))


SCHEDULES: Mapping[str, Callable[..., Array]] = MappingProxyType({
    "warmup_cosine": warmup_cosine,
    "warmup_constant": warmup_constant,
    "warmup_linear": warmup_linear,
    "warmup_linear_decay_exp": warmup_linear_decay_exp,
    "warmup_exp_decay_exp": warmup_exp_decay_exp,
    "warmup_exp_decay_poly": warmup_exp_decay_poly,
})


def warmup_end_count(t_total: int, warmup: float) -> int:
    """The first update count ``c >= 0`` for which upstream's ``c / t_total < warmup`` is false.

    Computed with Python floats (IEEE double), exactly as PyTorch's BertAdam decides it, so that the
    jitted schedule can test ``count < warmup_end_count`` on integers in any precision.
    """
    count = max(0, math.ceil(warmup * t_total))
    # ceil(warmup * t_total) is off by at most one step from the double-precision decision.
    while count > 0 and not ((count - 1) / t_total < warmup):
        count -= 1
    while count / t_total < warmup:
        count += 1
    return count


def validate_schedule_kwargs(schedule: str, schedule_kwargs: Mapping[str, Any] | None) -> dict:
    """Check ``schedule_kwargs`` against what ``schedule`` takes; return them with defaults filled."""
    required, optional = SCHEDULE_KWARGS[schedule]
    given = dict(schedule_kwargs or {})
    unknown = sorted(set(given) - set(required) - set(optional))
    if unknown:
        allowed = ", ".join(required + tuple(optional)) or "none"
        raise ValueError(
            f"schedule_kwargs={given!r} is invalid for schedule={schedule!r}: unknown "
            f"{', '.join(map(repr, unknown))}; allowed keys: {allowed}"
        )
    missing = [k for k in required if k not in given]
    if missing:
        raise ValueError(
            f"schedule_kwargs={schedule_kwargs!r} is invalid for schedule={schedule!r}: it needs "
            f"{', '.join(map(repr, missing))} (e.g. schedule_kwargs={{'decay_rate': 0.99, "
            f"'decay_steps': 1000}})"
        )
    resolved = {**optional, **given}
    for key, value in resolved.items():
        if key == "decay_rate":
            _validation.check_range(f"schedule_kwargs[{key!r}]", value, low=0.0, low_inclusive=False)
        elif key == "decay_steps":
            _validation.check_range(f"schedule_kwargs[{key!r}]", value, low=0.0, low_inclusive=False)
        else:
            _validation.check_finite(f"schedule_kwargs[{key!r}]", value)
        resolved[key] = float(value)
    return resolved


@_validation.explains_torch_habits
def bert_schedule(
    schedule: str,
    learning_rate: float,
    t_total: int = -1,
    warmup: float = -1,
    *,
    schedule_kwargs: Mapping[str, Any] | None = None,
    clamp_at_zero: bool = False,
) -> Callable[[Array], Array]:
    r"""BertAdam's scheduled learning rate as an optax schedule ``count -> lr``.

    For update ``k`` (``k`` updates already applied):

    .. math::
      \mathrm{lr}_k = \mathrm{lr} \cdot
      \begin{cases}
        \mathrm{SCHEDULE}(k / t_\mathrm{total}, w) & \text{first three schedules}\\
        \mathrm{SCHEDULE}(k, \ldots, t_\mathrm{total}, w) & \text{global-step schedules}\\
        1 & t_\mathrm{total} = -1
      \end{cases}

    which is what ``BertAdam(..., schedule=name).step()`` applies (DeepSpeedExamples
    ``bing_bert/pytorch_pretrained_bert/optimization.py``; for the global-step schedules, what
    DeepSpeed's training script sets as ``param_group['lr']`` before each step).

    Args:
      schedule: one of :data:`SCHEDULE_NAMES`.
      learning_rate: BertAdam's ``lr`` (>= 0).
      t_total: total number of updates, or ``-1`` for a constant rate.
      warmup: warmup as a fraction of ``t_total`` in ``[0, 1)``, or ``-1`` for none.
      schedule_kwargs: ``decay_rate``, ``decay_steps`` (required by the two ``*_decay_exp``
        schedules), ``degree``, ``warm_degree`` (optional, upstream defaults).
      clamp_at_zero: opt-in: never return a negative rate (``warmup_linear`` past ``t_total``).

    Returns:
      A pure, jittable function of the update count.

    Example:
      >>> import optax_bertadam as ob
      >>> schedule = ob.bert_schedule("warmup_linear", 1.0, t_total=10, warmup=0.2)
      >>> [round(float(schedule(k)), 6) for k in (0, 1, 2, 5, 10)]  # x / warmup, then 1 - x
      [0.0, 0.5, 0.8, 0.5, 0.0]
    """
    learning_rate = _validation.check_range("learning_rate", learning_rate, low=0.0)
    multiplier = bert_multiplier(
        schedule, t_total, warmup, schedule_kwargs=schedule_kwargs, clamp_at_zero=clamp_at_zero
    )

    def schedule_fn(count: Array) -> Array:
        return learning_rate * multiplier(count)

    return schedule_fn


@dataclasses.dataclass(frozen=True)
class BertScheduleMultiplier:
    """BertAdam's schedule multiplier of update ``count`` (the rate is ``lr`` times this).

    A value, not a closure: equal arguments give equal multipliers, so the state of
    ``optax.inject_hyperparams(bertadam)``, rebuilt at every update, keeps one tree structure.
    Build it with :func:`bert_multiplier`, which validates the arguments.
    """

    schedule: str
    t_total: int
    warmup: float
    boundary: int
    schedule_kwargs: tuple[tuple[str, float], ...]
    clamp_at_zero: bool

    def __call__(self, count: Array) -> Array:
        if self.t_total == -1:
            return jnp.ones_like(_as_float(count))
        in_warmup = jnp.asarray(count) < self.boundary
        multiplier_fn = SCHEDULES[self.schedule]
        if self.schedule in GLOBAL_STEP_SCHEDULES:
            multiplier = multiplier_fn(
                count, total_steps=self.t_total, warmup=self.warmup, in_warmup=in_warmup,
                **dict(self.schedule_kwargs),
            )
        else:
            multiplier = multiplier_fn(_as_float(count) / self.t_total, self.warmup, in_warmup=in_warmup)
        return jnp.maximum(multiplier, 0.0) if self.clamp_at_zero else multiplier


def bert_multiplier(
    schedule: str,
    t_total: int = -1,
    warmup: float = -1,
    *,
    schedule_kwargs: Mapping[str, Any] | None = None,
    clamp_at_zero: bool = False,
) -> BertScheduleMultiplier:
    """The validated :class:`BertScheduleMultiplier` of :func:`bert_schedule` (rate 1)."""
    schedule = _validation.check_choice("schedule", schedule, SCHEDULE_NAMES)
    t_total = _validation.check_int("t_total", t_total, low=1, allowed_extra=(-1,))
    warmup = _validation.check_range(
        "warmup", warmup, low=0.0, high=1.0, high_inclusive=False, allowed_extra=(-1.0,)
    )
    _validation.check_static("warmup", warmup)
    kwargs = validate_schedule_kwargs(schedule, schedule_kwargs)
    boundary = warmup_end_count(t_total, warmup) if t_total != -1 else 0
    if t_total == -1 and warmup != -1:
        _validation.warn(
            f"warmup={warmup!r} has no effect without t_total: the rate stays constant (as "
            "upstream BertAdam with t_total=-1); pass t_total=<number of updates> to warm up",
            _validation.WarmupIgnoredWarning,
        )
    if schedule == "warmup_linear" and t_total != -1 and not clamp_at_zero:
        _validation.warn(
            f"schedule='warmup_linear' gives a negative learning rate after t_total={t_total} "
            "updates (as upstream BertAdam): stop by then, or pass clamp_lr_at_zero=True "
            "(clamp_at_zero=True for bert_schedule) to stay at 0",
            _validation.NegativeLearningRateWarning,
        )
    return BertScheduleMultiplier(
        schedule=schedule,
        t_total=t_total,
        warmup=warmup,
        boundary=boundary,
        schedule_kwargs=tuple(sorted(kwargs.items())),
        clamp_at_zero=bool(clamp_at_zero),
    )


# ------------------------------------------------------------------------------------------
# The published package's schedules: pytorch_pretrained_bert 0.6.2 (``optimization.py``)
# ------------------------------------------------------------------------------------------

# Its ``BertAdam(schedule=...)`` names, and the two cosine-with-restarts classes it also ships
# (passed as ``_LRSchedule`` objects), by the name their class is known as here.
PRETRAINED_BERT_SCHEDULE_NAMES = (
    "none",
    "warmup_constant",
    "warmup_linear",
    "warmup_cosine",
    "warmup_cosine_with_warmup_restarts",
)
# Default ``cycles`` of each class (WarmupCosineSchedule: .5; WarmupCosineWithWarmupRestarts: 1).
_PRETRAINED_BERT_CYCLES = {"warmup_cosine": 0.5, "warmup_cosine_with_warmup_restarts": 1.0}


def pretrained_bert_schedule(
    schedule: str | None,
    learning_rate: float,
    t_total: int = -1,
    warmup: float = -1,
    *,
    cycles: float | None = None,
) -> Callable[[Array], Array]:
    r"""The published ``pytorch_pretrained_bert`` (0.6.2) BertAdam's rate, as an optax schedule.

    ``BertAdam(params, lr, warmup, t_total, schedule)`` from the published package applies, at
    update ``k`` (``k`` updates already applied), ``lr * m(x)`` with ``x = k / t_total`` and
    ``w = max(warmup, 0)``:

    * ``"none"`` (or ``None``), or ``t_total == -1``: :math:`m = 1`;
    * ``"warmup_constant"``: :math:`x / w` while :math:`x < w`, then :math:`1`;
    * ``"warmup_linear"``: :math:`x / w` while :math:`x < w`, then
      :math:`\max((x - 1) / (w - 1), 0)`: linear from 1 at the end of warmup to 0 at
      ``t_total``, 0 after. (Not :func:`warmup_linear`, DeepSpeed's ``1 - x``, which drops at the
      end of warmup and goes negative past ``t_total``; with ``warmup=0`` that one is constant.)
    * ``"warmup_cosine"`` (``WarmupCosineSchedule``, ``cycles=0.5``): :math:`x / w` while
      :math:`x < w`, then :math:`\tfrac12(1 + \cos(2\pi\,\mathrm{cycles}\,(x - w) / (1 - w)))`,
      which rises again past ``t_total``, as published;
    * ``"warmup_cosine_with_warmup_restarts"`` (``WarmupCosineWithWarmupRestartsSchedule``,
      ``cycles=1``): with :math:`p = (x \cdot \mathrm{cycles}) \bmod 1` and
      :math:`w' = w \cdot \mathrm{cycles}`: :math:`p / w'` while :math:`p < w'`, then
      :math:`\tfrac12(1 + \cos(\pi (p - w') / (1 - w')))`.

    The end of warmup (``x < w``) is decided on the integer count as the published code decides it
    in double precision (see :func:`warmup_end_count`). Every branch meets the next one at the
    same value, so float32 rounding near a boundary costs an ulp, not a jump.

    Refused, because float32 cannot reproduce them: ``WarmupCosineWithHardRestartsSchedule``
    (the rate jumps from 0 to 1 at every restart, at a step decided by double-precision rounding
    of ``x * cycles``), and ``warmup_cosine_with_warmup_restarts`` without warmup (the same jump).

    Args:
      schedule: one of :data:`PRETRAINED_BERT_SCHEDULE_NAMES` or ``None``.
      learning_rate: BertAdam's ``lr`` (``>= 0``).
      t_total: total number of updates (``>= 1``), or ``-1`` for a constant rate.
      warmup: warmup as a fraction of ``t_total`` in ``[0, 1)``, or ``-1`` (none).
      cycles: the cosine schedules' ``cycles`` (default 0.5 for ``warmup_cosine``, 1 for the
        restarts, which need ``cycles >= 1`` and ``warmup * cycles < 1``).

    Returns:
      A pure, jittable function of the update count; pass it as ``bertadam``'s ``learning_rate``.

    >>> import optax_bertadam as ob
    >>> rate = pretrained_bert_schedule("warmup_linear", 1e-3, t_total=100, warmup=0.1)
    >>> [round(float(rate(k)), 6) for k in (5, 10, 55, 100, 120)]
    [0.0005, 0.001, 0.0005, 0.0, 0.0]
    >>> tx = ob.bertadam(rate)  # the published BertAdam(lr=1e-3, warmup=0.1, t_total=100)
    """
    if schedule is None:
        schedule = "none"
    if schedule in ("warmup_cosine_with_hard_restarts", "WarmupCosineWithHardRestartsSchedule"):
        raise ValueError(
            f"schedule={schedule!r} is not supported: its rate jumps from 0 to 1 at every restart, "
            "at a step decided by the double-precision rounding of progress * cycles, which float32 "
            f"cannot reproduce exactly; supported: {', '.join(PRETRAINED_BERT_SCHEDULE_NAMES)} "
            "(transformers' integer-step get_cosine_with_hard_restarts_schedule_with_warmup is "
            "optax_bertadam.schedules.transformers)"
        )
    schedule = _validation.check_choice("schedule", schedule, PRETRAINED_BERT_SCHEDULE_NAMES)
    learning_rate = _validation.check_range("learning_rate", learning_rate, low=0.0)
    t_total = _validation.check_int("t_total", t_total, low=1, allowed_extra=(-1,))
    warmup = _validation.check_range(
        "warmup", warmup, low=0.0, high=1.0, high_inclusive=False, allowed_extra=(-1.0,)
    )
    if cycles is not None and schedule not in _PRETRAINED_BERT_CYCLES:
        raise ValueError(
            f"cycles={cycles!r} is invalid for schedule={schedule!r}: only "
            f"{' and '.join(_PRETRAINED_BERT_CYCLES)} take cycles"
        )
    if schedule in _PRETRAINED_BERT_CYCLES:
        cycles = _PRETRAINED_BERT_CYCLES[schedule] if cycles is None else cycles
        cycles = _validation.check_range("cycles", cycles, low=0.0, low_inclusive=False)
        cycles = float(_validation.check_finite("cycles", cycles))
    if schedule == "none" or t_total == -1:
        def constant_schedule(count: Array) -> Array:
            return jnp.full_like(_as_float(count), learning_rate)

        return constant_schedule

    if schedule == "warmup_cosine_with_warmup_restarts":
        return _pretrained_bert_warmup_restarts(learning_rate, t_total, warmup, cycles)
    w = max(warmup, 0.0)
    boundary = warmup_end_count(t_total, w)
    # Constants in Python double; count - w * t_total and t_total - count are (nearly) exact.
    warm_slope = 1.0 / (t_total * w) if w > 0.0 else 0.0
    decay_length = t_total * (1.0 - w)

    def schedule_fn(count: Array) -> Array:
        steps = _as_float(count)
        warm = steps * warm_slope
        if schedule == "warmup_constant":
            after = jnp.ones_like(steps)
        elif schedule == "warmup_linear":
            after = jnp.maximum(_as_float(t_total - jnp.asarray(count)) * (1.0 / decay_length), 0.0)
        else:  # warmup_cosine: turns (k - w T) * cycles / ((1 - w) T), modulo 1
            turns = _fractional_turns(count, cycles / decay_length, cycles * w / (1.0 - w))
            after = 0.5 * (1.0 + jnp.cos((2.0 * math.pi) * turns))
        return learning_rate * jnp.where(jnp.asarray(count) < boundary, warm, after)

    return schedule_fn


def _split12(value: float) -> tuple[float, float]:
    """``value`` as ``head + tail`` (Python doubles), ``head`` with 12 significant bits."""
    mantissa, exponent = math.frexp(value)
    head = math.ldexp(round(mantissa * 4096), exponent - 12)
    return head, value - head


def _fractional_turns(count: Array, rate: float, offset: float) -> Array:
    """``(count * rate - offset) mod 1`` for an integer ``0 <= count < 2**24``, within a few float32
    ulps of 1 turn.

    A float32 ``count * rate`` is off by an ulp of the product (and ``rate`` by an ulp of its
    own): 2e-7 of a turn at 4 turns, 1e-6 of the rate through a cosine, more far past the end.
    Here ``count = 4096 k1 + k0`` and ``rate = h1 + h2 + h3 + rest`` (each ``h`` of 12
    significant bits, split in double): ``k1 * frac(4096 h)`` and ``k0 * h`` are exact float32
    products, reduced exactly modulo 1; ``count * rest`` is below ``rate * 2**-12``; ``offset`` is
    reduced in double. What is left is a float32 rounding per partial sum, each below 2.
    """
    count = jnp.asarray(count)
    k1, k0 = _as_float(count // 4096), _as_float(count % 4096)
    turns = -_as_float(math.fmod(offset, 1.0))
    rest = rate
    for _ in range(3):
        head, rest = _split12(rest)
        for product in (k1 * math.fmod(4096.0 * head, 1.0), k0 * head):
            turns = turns + jnp.fmod(product, 1.0)
            turns = turns - jnp.floor(turns)
    turns = turns + _as_float(count) * rest
    return turns - jnp.floor(turns)


def _pretrained_bert_warmup_restarts(
    learning_rate: float, t_total: int, warmup: float, cycles: float
) -> Callable[[Array], Array]:
    """``WarmupCosineWithWarmupRestartsSchedule``: see :func:`pretrained_bert_schedule`."""
    if cycles < 1.0:
        raise ValueError(
            f"cycles={cycles!r} is invalid for schedule='warmup_cosine_with_warmup_restarts': "
            "expected cycles >= 1 (the published class asserts it)"
        )
    if warmup <= 0.0:
        raise ValueError(
            f"warmup={warmup!r} is not supported for schedule='warmup_cosine_with_warmup_restarts':"
            " without warmup the rate jumps from 0 to 1 at every restart, at a step decided by the "
            "double-precision rounding of progress * cycles, which float32 cannot reproduce "
            "exactly; expected 0 < warmup < 1 / cycles"
        )
    cycle_warmup = warmup * cycles
    if not cycle_warmup < 1.0:
        raise ValueError(
            f"warmup={warmup!r} is invalid with cycles={cycles!r} for "
            "schedule='warmup_cosine_with_warmup_restarts': expected warmup * cycles < 1 (the "
            "published class asserts it)"
        )

    def schedule_fn(count: Array) -> Array:
        # Continuous across a restart (0 on both sides) and across the end of warmup (1 on both
        # sides): a float32 p an ulp off near a boundary changes the rate by an ulp.
        p = _fractional_turns(count, cycles / t_total, 0.0)
        warm = p * (1.0 / cycle_warmup)
        cosine = 0.5 * (1.0 + jnp.cos(math.pi * ((p - cycle_warmup) * (1.0 / (1.0 - cycle_warmup)))))
        return learning_rate * jnp.where(p < cycle_warmup, warm, cosine)

    return schedule_fn
