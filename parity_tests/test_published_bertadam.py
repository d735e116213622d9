"""The published ``pytorch_pretrained_bert`` 0.6.2 BertAdam, with every schedule it ships.

Its schedules are not DeepSpeed's (``torch_ref``): ``warmup_linear`` decays from 1 at the end of
warmup to 0 at ``t_total`` and stays at 0 (DeepSpeed's drops to ``1 - warmup`` and goes negative);
``warmup_cosine`` decays over the ``1 - warmup`` after warmup and rises again past ``t_total``.
``optax_bertadam.schedules.bert.pretrained_bert_schedule`` reproduces them; the published class
is the reference here, over warmup, decay and past ``t_total``, in float32 and float64:

* the rate alone, every count of several (t_total, warmup, cycles), against
  ``schedule.get_lr(step)`` of the published class: float32 within 1e-6 of the larger of the rate
  and the peak rate, float64 within 1e-12 of the same;
* the whole optimizer, ``BertAdam(params, lr, warmup, t_total, schedule)`` against
  ``ob.bertadam(pretrained_bert_schedule(...))``, within the project's bounds.

What float32 cannot reproduce exactly (the hard restarts) is refused, and tested to be.
"""

from __future__ import annotations

import logging
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_bertadam as ob
from optax_bertadam.schedules import bert
from parity_tests import harness

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pytorch_pretrained_bert import optimization as published

# It logs a warning per step past t_total ("Training beyond specified 't_total'").
logging.getLogger(published.__name__).setLevel(logging.ERROR)

CLASSES = {
    "none": published.ConstantLR,
    "warmup_constant": published.WarmupConstantSchedule,
    "warmup_linear": published.WarmupLinearSchedule,
    "warmup_cosine": published.WarmupCosineSchedule,
    "warmup_cosine_with_warmup_restarts": published.WarmupCosineWithWarmupRestartsSchedule,
}
TOL = {"float32": 1e-6, "float64": 1e-12}
LR = 3e-4


def published_schedule(name, t_total, warmup, cycles):
    kwargs = {} if cycles is None else {"cycles": cycles}
    return CLASSES[name](warmup=warmup, t_total=t_total, **kwargs)


def cases(name):
    """(t_total, warmup, cycles) per schedule: warmup -1, 0 and fractional (warmup * t_total not
    an integer too), the default and other cycles."""
    if name == "warmup_cosine_with_warmup_restarts":  # warmup > 0 and warmup * cycles < 1
        return [(100, 0.1, None), (77, 0.13, 2.0), (1000, 0.05, 3.0), (333, 0.2, 1.5)]
    base = [(100, -1, None), (100, 0.0, None), (100, 0.1, None), (77, 0.37, None),
            (1000, 0.013, None), (7, 0.5, None)]
    if name == "warmup_cosine":
        base += [(100, 0.1, 1.0), (77, 0.37, 2.0), (1000, 0.02, 3.5)]
    return base


def schedule_error(name, t_total, warmup, cycles, dtype):
    counts = np.arange(0, int(2 * t_total) + 1)  # warmup, decay, and as long again past t_total
    reference = published_schedule(name, t_total, warmup, cycles)
    expected = np.array([LR * reference.get_lr(int(k), nowarn=True) for k in counts])
    with jax.enable_x64(dtype == "float64"):
        fn = bert.pretrained_bert_schedule(name, LR, t_total, warmup, cycles=cycles)
        got = np.asarray(jax.jit(jax.vmap(fn))(jnp.asarray(counts)), dtype=np.float64)
        assert got.dtype == np.float64 and fn(0).dtype == jnp.dtype(dtype)
    return float(np.max(np.abs(got - expected) / np.maximum(np.abs(expected), LR)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", bert.PRETRAINED_BERT_SCHEDULE_NAMES)
def test_every_published_schedule_through_warmup_decay_and_past_t_total(name, dtype):
    worst = max(schedule_error(name, *case, dtype) for case in cases(name))
    harness.assert_within("lr error", worst, TOL[dtype])


STEPS, T_TOTAL = 110, 77  # warmup * 77 is fractional for 0.1 and 0.37; 33 steps past t_total
OPTIMIZER_CASES = {
    "none": dict(warmup=0.1),
    "warmup_constant": dict(warmup=0.37),
    "warmup_linear": dict(warmup=0.1),
    "warmup_linear,warmup=-1": dict(warmup=-1),
    "warmup_cosine": dict(warmup=0.1),
    "warmup_cosine_with_warmup_restarts": dict(warmup=0.1, cycles=2.0),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", OPTIMIZER_CASES)
def test_published_bertadam_with_each_schedule(case, dtype):
    name = case.split(",")[0]
    kwargs = OPTIMIZER_CASES[case]
    cycles = kwargs.get("cycles")

    def make_optax(params):
        rate = bert.pretrained_bert_schedule(name, 0.02, T_TOTAL, kwargs["warmup"], cycles=cycles)
        return ob.bertadam(rate, mask=ob.decay_mask(params))

    def make_torch(named):
        groups = harness.torch_param_groups(named, 0.01)
        if cycles is None:  # by name, as BertAdam users pass it
            opt = published.BertAdam(groups, lr=0.02, warmup=kwargs["warmup"], t_total=T_TOTAL,
                                     schedule=name)
        else:  # the restarts class is passed as an object
            schedule = published_schedule(name, T_TOTAL, kwargs["warmup"], cycles)
            opt = published.BertAdam(groups, lr=0.02, schedule=schedule)
        return harness.TorchSide(opt, next_lr=lambda: opt.get_lr()[0])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = harness.run_parity(make_optax, make_torch, dtype=dtype, steps=STEPS)
    harness.check_result(result, dtype)


def test_deepspeed_schedules_of_the_same_name_are_not_the_published_ones():
    """Why a second function: bert_schedule follows DeepSpeed (torch_ref); only its
    warmup_constant (and t_total=-1) is the published schedule."""
    t_total, warmup = 100, 0.1
    counts = jnp.arange(0, 2 * t_total)
    gaps = {}
    for name in ("warmup_constant", "warmup_linear", "warmup_cosine"):
        reference = published_schedule(name, t_total, warmup, None)
        expected = np.array([reference.get_lr(int(k), nowarn=True) for k in counts])
        deepspeed = np.asarray(jax.vmap(bert.bert_schedule(name, 1.0, t_total, warmup))(counts))
        gaps[name] = float(np.max(np.abs(deepspeed - expected)))
    assert gaps["warmup_constant"] <= 1e-6, gaps
    # Not rounding: DeepSpeed's warmup_linear jumps by `warmup` at the end of warmup and goes
    # negative; its cosine runs over the whole t_total instead of the part after warmup.
    assert gaps["warmup_linear"] >= warmup and gaps["warmup_cosine"] >= 0.05, gaps


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(schedule="warmup_cosine_with_hard_restarts"), "is not supported: its rate jumps"),
        (dict(schedule="warmup_cosine_with_warmup_restarts", warmup=-1),
         r"warmup=-1(\.0)? is not supported for schedule='warmup_cosine_with_warmup_restarts'"),
        (dict(schedule="warmup_cosine_with_warmup_restarts", warmup=0.0), "warmup=0.0 is not supported"),
        (dict(schedule="warmup_cosine_with_warmup_restarts", cycles=0.5), "cycles=0.5 is invalid"),
        (dict(schedule="warmup_cosine_with_warmup_restarts", warmup=0.4, cycles=3.0),
         r"expected warmup \* cycles < 1"),
        (dict(schedule="warmup_linear", cycles=2.0), "cycles=2.0 is invalid for schedule='warmup_linear'"),
        (dict(schedule="warmup_cosine", cycles=float("inf")), "cycles=inf is invalid"),
        (dict(schedule="warmup_exp_decay_exp"), "schedule='warmup_exp_decay_exp' is invalid"),
        (dict(schedule="warmup_linear", warmup=1.0), "warmup=1.0 is invalid"),
        (dict(schedule="warmup_linear", t_total=0), "t_total=0 is invalid"),
    ],
)
def test_what_cannot_be_reproduced_or_is_invalid_is_refused(kwargs, message):
    kwargs = {"warmup": 0.1, "t_total": 100, **kwargs}
    with pytest.raises(ValueError, match=message):
        bert.pretrained_bert_schedule(kwargs.pop("schedule"), 1e-3, **kwargs)


def test_the_refused_restarts_do_jump_where_double_rounding_decides():
    """The hard restarts really are discontinuous at a restart (so an ulp decides a jump of 1)."""
    schedule = published.WarmupCosineWithHardRestartsSchedule(warmup=0.1, t_total=100, cycles=2.0)
    rates = [schedule.get_lr(k, nowarn=True) for k in range(50, 60)]
    assert max(abs(a - b) for a, b in zip(rates[:-1], rates[1:], strict=True)) > 0.9, rates
