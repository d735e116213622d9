"""Adafactor: optax_bertadam.adafactor against the real transformers.Adafactor / AdafactorSchedule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from transformers.optimization import Adafactor, AdafactorSchedule

import optax_bertadam as ob
from optax_bertadam import optimizers
from parity_tests import harness

# Parameters within 2e-5 of each tensor's scale in float32 and 1e-12 in float64 (measured worst:
# 1.1e-6 and 2.0e-15); get_lr within 1e-6 of the peak rate in float32 (the rate is a float32 there;
# measured 6.1e-8) and 1e-12 in float64 (measured 1.7e-16). The per-tensor applied rates against
# AdafactorSchedule use the parameter bounds (measured 2.1e-7 and 2.9e-16).

DTYPES = ["float32", "float64"]
STEPS = 100
# Part of the harness's tiny BERT (ranks 0, 1 and 2, 0-d included: transformers handles it as an
# unfactored tensor; decayed and no_decay names; the zero gradient of step 3 on the LayerNorm
# weight) plus a rank-3 tensor, factored over its last two axes. Seven tensors, not twelve: the
# per-tensor Adafactor graph is large and XLA's compile time is most of each test's cost.
SHAPES = dict(harness.SMALL_SHAPES)
SHAPES["encoder.layer.0.attention.conv.kernel"] = (3, 4, 5)

LR, WARMUP, TOTAL = 0.01, 10, 80


jax_schedule, torch_lambda = harness.linear_warmup_then_decay(LR, WARMUP, TOTAL)




def state_node(state, node_type):
    """The one ``node_type`` NamedTuple inside an optax state (adafactor's is its chain's)."""
    found = [n for n in jax.tree.leaves(state, is_leaf=lambda n: isinstance(n, node_type))
             if isinstance(n, node_type)]
    assert len(found) == 1, (node_type.__name__, len(found))
    return found[0]


def applied_rates(state):
    return state_node(state, ob.ScaleByAdafactorStepSizeState).applied_learning_rates


def torch_kwargs(kwargs):
    return {("lr" if k == "learning_rate" else k): v for k, v in kwargs.items()}


def next_relative_step(opt):
    """What get_lr reports: transformers' own _get_lr for the next step, without the RMS factor."""
    group = opt.param_groups[0]
    state = opt.state[group["params"][0]]
    return float(Adafactor._get_lr({**group, "scale_parameter": False}, {"step": state["step"] + 1}))


def run(dtype, kwargs, *, masked=False, scheduled=False, steps=STEPS, start_count=0):
    """adafactor(**kwargs) against transformers.Adafactor(**kwargs) on identical gradients.

    ``masked``: decay only outside the usual no_decay group (a torch param group with
    weight_decay=0). ``scheduled``: learning_rate is a warmup/decay schedule (LambdaLR upstream).
    ``start_count``: both sides start with zero moments but ``start_count`` updates already
    counted, to reach the switches of the relative step size at t = 10**4.
    """
    weight_decay = kwargs.get("weight_decay", 0.0)

    def make_optax(params):
        mask = ob.decay_mask(params) if masked else None
        opt_kwargs = dict(kwargs, learning_rate=jax_schedule) if scheduled else kwargs
        tx = optimizers.adafactor(**opt_kwargs, mask=mask)
        if not start_count:
            return tx

        def init(params):
            return optax.tree_utils.tree_set(tx.init(params), count=jnp.asarray(start_count, jnp.int32))

        return optax.GradientTransformation(init, tx.update)

    def make_torch(named):
        groups = harness.torch_param_groups(named, weight_decay if masked else None)
        opt = Adafactor(groups, **torch_kwargs(kwargs))
        if start_count:
            beta1 = kwargs.get("beta1")
            for p in named.values():
                # transformers' own state layout at initialisation, with `step` advanced.
                state = opt.state[p]
                state["step"], state["RMS"] = start_count, 0
                if beta1 is not None:
                    state["exp_avg"] = torch.zeros_like(p)
                if p.dim() >= 2:
                    state["exp_avg_sq_row"] = torch.zeros(p.shape[:-1], dtype=p.dtype)
                    state["exp_avg_sq_col"] = torch.zeros(p.shape[:-2] + p.shape[-1:], dtype=p.dtype)
                else:
                    state["exp_avg_sq"] = torch.zeros_like(p)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, torch_lambda) if scheduled else None
        return harness.TorchSide(opt, scheduler, next_lr=lambda: next_relative_step(opt))

    return harness.run_parity(make_optax, make_torch, dtype=dtype, steps=steps, shapes=SHAPES)


OPTION_SETS = {
    "defaults": (dict(), {}),
    "warmup_init-beta1-decay": (dict(warmup_init=True, beta1=0.9, weight_decay=0.1), dict(masked=True)),
    "unscaled-clip": (dict(scale_parameter=False, clip_threshold=0.5), {}),
    # transformers' recommended T5 fine-tuning setup: external warmup/decay schedule, no scaling.
    "manual-schedule-beta1": (
        dict(scale_parameter=False, relative_step=False, learning_rate=LR, beta1=0.9),
        dict(scheduled=True),
    ),
    "manual-scaled-decay": (
        dict(relative_step=False, learning_rate=0.003, eps=(1e-20, 1e-2), decay_rate=-0.5,
             weight_decay=0.02, beta1=0.0),
        {},
    ),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPTION_SETS)
def test_option_combinations(name, dtype):
    kwargs, run_kwargs = OPTION_SETS[name]
    harness.check_result(run(dtype, kwargs, **run_kwargs), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("warmup_init", [False, True])
def test_relative_step_crosses_its_switch(warmup_init, dtype):
    """From t = 9990 to 10020: min(1e-2 or 1e-6 t, 1/sqrt(t)) changes branch at t = 10**4."""
    result = run(dtype, dict(warmup_init=warmup_init), steps=30, start_count=9989)
    harness.check_result(result, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_applied_rates_match_adafactor_schedule(dtype):
    """The step size's applied_learning_rates are, per tensor, what AdafactorSchedule.get_lr() reports.

    Upstream reports one rate per param group (its first parameter): one group per tensor here.
    """
    jax_dtype, torch_dtype = harness.DTYPES[dtype]
    kwargs = dict(warmup_init=True, beta1=0.9)
    steps = 60
    names = list(SHAPES)
    with jax.enable_x64(dtype == "float64"):
        init = harness.initial_params(5, SHAPES)
        grads = harness.gradient_stream(steps, 6, SHAPES)

        named = {n: torch.nn.Parameter(torch.tensor(v, dtype=torch_dtype)) for n, v in init.items()}
        opt = Adafactor([{"params": [p]} for p in named.values()], **kwargs)
        schedule = AdafactorSchedule(opt)
        torch_rates = [[float(r) for r in schedule.get_last_lr()]]  # initial_lr=0.0 before stepping
        for step_grads in grads:
            for n, p in named.items():
                p.grad = torch.tensor(step_grads[n], dtype=torch_dtype)
            opt.step()
            schedule.step()
            torch_rates.append([float(r) for r in schedule.get_last_lr()])

        params = harness.nest({n: jnp.asarray(v, jax_dtype) for n, v in init.items()})
        tx = optimizers.adafactor(**kwargs)
        stacked = harness.nest(
            {n: jnp.asarray(np.stack([g[n] for g in grads]), jax_dtype) for n in names}
        )

        def rates_by_name(state):
            flat = dict(zip(harness.flatten_names(params),
                            jax.tree.leaves(applied_rates(state)), strict=True))
            return jnp.stack([flat[n] for n in names])

        def body(carry, step_grads):
            params, state = carry
            updates, state = tx.update(step_grads, state, params)
            return (optax.apply_updates(params, updates), state), rates_by_name(state)

        state0 = tx.init(params)
        _, rates = jax.jit(lambda p, g: jax.lax.scan(body, (p, state0), g))(params, stacked)
        jax_rates = np.concatenate([np.asarray(rates_by_name(state0))[None], np.asarray(rates)])

    torch_rates = np.asarray(torch_rates)
    error = np.max(np.abs(jax_rates - torch_rates)) / np.max(np.abs(torch_rates))
    harness.assert_within("applied-rate error", error, harness.PARAM_TOL[dtype])


@pytest.mark.parametrize(
    "kwargs, upstream_message, argument",
    [
        (dict(learning_rate=1e-3), "Cannot combine manual `lr` and `relative_step=True` options",
         "learning_rate=0.001"),
        (dict(learning_rate=1e-3, relative_step=False, warmup_init=True),
         "`warmup_init=True` requires `relative_step=True`", "warmup_init=True"),
    ],
)
def test_upstream_option_errors(kwargs, upstream_message, argument):
    """The two errors transformers raises at construction, with its message inside ours."""
    with pytest.raises(ValueError) as upstream:
        Adafactor([torch.nn.Parameter(torch.zeros(2))], **torch_kwargs(kwargs))
    assert str(upstream.value) == upstream_message
    with pytest.raises(ValueError) as ours:
        optimizers.adafactor(**kwargs)
    assert upstream_message in str(ours.value)
    assert str(ours.value).startswith(f"{argument} is invalid")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(relative_step=False), ValueError, "learning_rate=None is invalid with relative_step=False"),
        (dict(relative_step=False, learning_rate=-0.1), ValueError, r"learning_rate=-0\.1 is invalid"),
        (dict(relative_step=False, learning_rate="0.1"), TypeError, "learning_rate='0.1' is invalid"),
        (dict(eps=1e-30), TypeError, r"eps=1e-30 is invalid: expected a pair"),
        (dict(eps=(1e-30,)), TypeError, r"eps=\(1e-30,\) is invalid: expected a pair"),
        (dict(eps=(-1e-30, 1e-3)), ValueError, r"eps\[0\]=-1e-30 is invalid"),
        (dict(eps=(1e-30, None)), TypeError, r"eps\[1\]=None is invalid"),
        (dict(clip_threshold=0.0), ValueError,
         r"clip_threshold=0\.0 is invalid: expected a value in \(0, inf\]"),
        (dict(clip_threshold=float("inf")), ValueError, "clip_threshold=inf is invalid"),
        (dict(decay_rate=0.5), ValueError, r"decay_rate=0\.5 is invalid: expected a value in \[-inf, 0\]"),
        (dict(decay_rate=float("-inf")), ValueError, "decay_rate=-inf is invalid: expected a finite number"),
        (dict(beta1=1.0), ValueError, r"beta1=1\.0 is invalid: expected a value in \[0, 1\)"),
        (dict(beta1=-0.5), ValueError, r"beta1=-0\.5 is invalid"),
        (dict(weight_decay=-0.1), ValueError, r"weight_decay=-0\.1 is invalid"),
        (dict(scale_parameter="yes"), TypeError, "scale_parameter='yes' is invalid: expected True or False"),
        (dict(relative_step=None), TypeError, "relative_step=None is invalid"),
        (dict(warmup_init=0), TypeError, "warmup_init=0 is invalid"),
    ],
)
def test_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        optimizers.adafactor(**kwargs)


def test_update_needs_params_and_a_matching_mask():
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    tx = optimizers.adafactor()
    state = tx.init(params)
    with pytest.raises(ValueError, match="scale_by_adafactor_step_size needs the parameters"):
        tx.update(params, state)
    with pytest.raises(ValueError, match="mask does not match the parameters"):
        optimizers.adafactor(weight_decay=0.1, mask={"w": True}).init(params)


def test_state_layout_and_get_lr():
    """Factored moments for rank >= 2, get_lr = next relative step, applied rates start at 0."""
    params = {"w": jnp.ones((2, 3, 4)), "b": jnp.ones(3), "s": jnp.ones(())}
    tx = optimizers.adafactor(warmup_init=True)
    state = tx.init(params)
    is_ema = lambda n: isinstance(n, ob.EmaOfUpdatesState)  # noqa: E731
    assert not any(map(is_ema, jax.tree.leaves(state, is_leaf=is_ema)))  # beta1=None: no moment
    moments = state_node(state, ob.ScaleByFactoredRmsState)
    assert moments.exp_avg_sq_row["w"].shape == (2, 3) and moments.exp_avg_sq_col["w"].shape == (2, 4)
    assert moments.exp_avg_sq["b"].shape == (3,) and moments.exp_avg_sq["s"].shape == ()
    assert float(ob.get_lr(state)) == pytest.approx(1e-6)
    assert all(float(r) == 0.0 for r in jax.tree.leaves(applied_rates(state)))
    _, state = jax.jit(tx.update)(params, state, params)
    assert float(ob.get_lr(state)) == pytest.approx(2e-6)
    # scale_parameter: rho(1) * max(eps2, RMS(p)) with RMS(ones) = 1.
    assert float(applied_rates(state)["w"]) == pytest.approx(1e-6)
    assert state_node(optimizers.adafactor(beta1=0.9).init(params), ob.EmaOfUpdatesState
                      ).exp_avg["w"].shape == (2, 3, 4)
