"""BertAdam: optax_bertadam.bertadam against torch_ref.BertAdam (and the real upstream package)."""

from __future__ import annotations

import warnings

import jax
import pytest

import optax_bertadam as ob
import torch_ref
from parity_tests import harness

STEPS = 130  # t_total=100 below: leaves warmup, passes the end of the schedule
DECAY_KWARGS = {"decay_rate": 0.9, "decay_steps": 10}


def schedule_kwargs_for(schedule):
    if schedule in ("warmup_linear_decay_exp", "warmup_exp_decay_exp"):
        return dict(DECAY_KWARGS)
    return None




def run_bertadam(dtype, *, masked=True, **kwargs):
    weight_decay = kwargs.get("weight_decay", 0.01)

    def make_optax(params):
        mask = ob.decay_mask(params) if masked else None
        return ob.bertadam(mask=mask, **kwargs)

    def make_torch(named):
        groups = harness.torch_param_groups(named, weight_decay if masked else None)
        torch_kwargs = {("lr" if k == "learning_rate" else k): v for k, v in kwargs.items()}
        opt = torch_ref.BertAdam(groups, **torch_kwargs)
        return harness.TorchSide(opt, next_lr=lambda: opt.get_lr()[0])

    return harness.run_parity(make_optax, make_torch, dtype=dtype, steps=STEPS)


DTYPES = ["float32", "float64"]


DECAY = {"no_decay": dict(weight_decay=0.0), "masked_decay": dict(weight_decay=0.05),
         "decay_all": dict(weight_decay=0.05, masked=False)}
MOMENTS = {"default_moments": {}, "b1=0.8,b2=0.95,e=1e-8": dict(b1=0.8, b2=0.95, e=1e-8)}


CLIP_MODES = ["per_tensor", "global"]
# Every schedule x clip mode x decay x dtype, with the moments alternating between them: every
# pair of values of any two factors (moments included) meets at least once, at half the cost of
# crossing the moments with everything else.
GRID = [
    (schedule, clip_mode, decay, list(MOMENTS)[(s + c + d) % 2], dtype)
    for s, schedule in enumerate(ob.schedules.bert.SCHEDULE_NAMES)
    for c, clip_mode in enumerate(CLIP_MODES)
    for d, decay in enumerate(DECAY)
    for dtype in DTYPES
]


@pytest.mark.parametrize("schedule, clip_mode, decay, moments, dtype", GRID,
                         ids=lambda value: str(value))
def test_every_schedule_clip_mode_decay_and_moments(schedule, clip_mode, decay, moments, dtype):
    kwargs = dict(DECAY[decay], **MOMENTS[moments])
    masked = kwargs.pop("masked", True)
    result = run_bertadam(
        dtype, masked=masked, learning_rate=0.02, warmup=0.1, t_total=100, schedule=schedule,
        clip_mode=clip_mode, schedule_kwargs=schedule_kwargs_for(schedule), **kwargs,
    )
    harness.check_result(result, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "variant",
    [
        dict(b1=0.0, b2=0.5, e=0.0),
        dict(t_total=-1),
        dict(t_total=-1, clip_mode="global", weight_decay=0.0),
        dict(t_total=-1, b1=0.8, b2=0.95, e=1e-8, masked=False),
        dict(warmup=0.0),
        dict(warmup=-1),
        dict(warmup=0.37, t_total=77),
        dict(max_grad_norm=-1),
        dict(max_grad_norm=0.3),
        dict(max_grad_norm=0.3, clip_mode="global"),
    ],
    ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()),
)
def test_hyperparameter_variants(variant, dtype):
    variant = dict(variant)
    masked = variant.pop("masked", True)
    kwargs = dict(learning_rate=0.02, warmup=0.1, t_total=100, schedule="warmup_linear")
    kwargs.update(variant)
    harness.check_result(run_bertadam(dtype, masked=masked, **kwargs), dtype)


def test_decay_mask_selects_the_torch_no_decay_group():
    params = harness.nest({n: 0.0 for n in harness.PARAM_SHAPES})
    mask = dict(zip(harness.flatten_names(params), jax.tree.leaves(ob.decay_mask(params)), strict=True))
    torch_rule = {n: not any(nd in n for nd in harness.TORCH_NO_DECAY) for n in harness.PARAM_SHAPES}
    assert mask == torch_rule


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kwargs",
    [dict(t_total=-1), dict(schedule="warmup_constant", warmup=0.1, t_total=100),
     dict(schedule="warmup_constant", warmup=-1, t_total=100, max_grad_norm=0.5)],
    ids=["constant", "warmup_constant", "no_warmup"],
)
def test_against_the_real_pytorch_pretrained_bert(kwargs, dtype):
    """The published ``pytorch_pretrained_bert`` 0.6.2 BertAdam shares the update rule and, for
    ``warmup_constant`` and ``t_total=-1``, the schedule: compare with it directly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pytorch_pretrained_bert.optimization import BertAdam as UpstreamBertAdam

    def make_optax(params):
        return ob.bertadam(0.02, mask=ob.decay_mask(params), **kwargs)

    def make_torch(named):
        opt = UpstreamBertAdam(harness.torch_param_groups(named, 0.01), lr=0.02, **kwargs)
        return harness.TorchSide(opt, next_lr=lambda: opt.get_lr()[0])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = harness.run_parity(make_optax, make_torch, dtype=dtype, steps=STEPS)
    harness.check_result(result, dtype)
