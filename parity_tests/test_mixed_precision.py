"""Mixed precision against PyTorch: low-precision BertAdam, GradScaler, non-finite gradients.

Tolerances, stated in units of the low-precision dtype:

* bfloat16 / float16 parameters and gradients, 120 updates of BertAdam: the JAX and PyTorch
  parameters differ by at most ``ULP_BOUND`` ulp of each tensor's largest magnitude (measured: 3
  with float32 moments, 6-7 with moments in the parameter dtype). The difference comes mostly from
  torch's clipping arithmetic in the low dtype (``clip_grad_norm_`` returns a bfloat16 norm and
  divides in bfloat16; the port accumulates and divides in float32) and from rounding the
  learning rate; it is not an error of either side: both runs are equally far (about 9 ulp with
  float32 moments) from the float64 run on the same rounded inputs, which is checked too.
* ``dynamic_loss_scale`` against the real ``torch.amp.GradScaler`` (float32 parameters, the
  usual AMP setup): the scale, growth tracker and skipped steps are identical at every step; the
  parameters agree within the float32 BertAdam bound of ``test_bertadam.py`` (2e-5 relative).
* Skipping is exact: a skipped step leaves parameters and state bit-identical, and a run with
  skipped steps is bit-identical to the run that never saw them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import optax_bertadam as ob
import torch_ref
from optax_bertadam import mixed_precision as mp
from parity_tests import harness

STEPS = 120
LOW = {"bfloat16": (jnp.bfloat16, torch.bfloat16), "float16": (jnp.float16, torch.float16)}
ULP_BOUND = {"float32": 4.0, "param": 8.0}  # moments in float32 / in the parameter dtype
BERTADAM = dict(learning_rate=0.02, warmup=0.1, t_total=100)
FLOAT32_PARAM_TOL = 2e-5


def ulp(x, dtype):
    """The spacing of ``dtype`` at magnitude ``x`` (subnormal spacing below the normal range)."""
    info = jnp.finfo(dtype)
    exponent = np.floor(np.log2(np.maximum(np.abs(np.asarray(x, np.float64)), float(info.tiny))))
    return 2.0 ** (np.maximum(exponent, info.minexp) - info.nmant)


def torch_bertadam(named, dtype=None, moment_dtype=None, **kwargs):
    kwargs = {("lr" if k == "learning_rate" else k): v for k, v in {**BERTADAM, **kwargs}.items()}
    groups = harness.torch_param_groups(named, 0.01)
    if moment_dtype is None:
        return torch_ref.BertAdam(groups, **kwargs)
    return torch_ref.BertAdam(groups, moment_dtype=moment_dtype, **kwargs)


def optax_bertadam(params, **kwargs):
    return ob.bertadam(mask=ob.decay_mask(params), **{**BERTADAM, **kwargs})


def jitted_step(tx):
    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def flat(tree):
    return dict(zip(harness.flatten_names(tree), jax.tree.leaves(tree), strict=True))


# ------------------------------------------------------------------------------------------
# bfloat16 / float16 BertAdam
# ------------------------------------------------------------------------------------------


def low_precision_runs(dtype: str, moments: str):
    """Per-step parameters (float64 numpy) of the JAX, PyTorch and float64-reference runs."""
    jax_dtype, torch_dtype = LOW[dtype]
    rounded = lambda v: np.asarray(jnp.asarray(v, jnp.float32).astype(jax_dtype), np.float64)
    init = {n: rounded(v) for n, v in harness.initial_params(0).items()}
    grads = [{n: rounded(g) for n, g in step.items()} for step in harness.gradient_stream(STEPS, 1)]

    def torch_run(dt, moment_dtype):
        named = {n: torch.nn.Parameter(torch.tensor(v).to(dt)) for n, v in init.items()}
        opt = torch_bertadam(named, moment_dtype=moment_dtype)
        out = []
        for step_grads in grads:
            for n, p in named.items():
                p.grad = torch.tensor(step_grads[n]).to(dt)
            opt.step()
            out.append({n: p.detach().to(torch.float64).numpy().copy() for n, p in named.items()})
        return out

    reference = torch_run(torch.float64, None)
    low = torch_run(torch_dtype, torch.float32 if moments == "float32" else None)

    params = harness.nest({n: jnp.asarray(v).astype(jax_dtype) for n, v in init.items()})
    tx = optax_bertadam(params, moment_dtype=jnp.float32 if moments == "float32" else None)
    stacked = harness.nest(
        {n: jnp.asarray(np.stack([g[n] for g in grads])).astype(jax_dtype) for n in init}
    )

    def body(carry, step_grads):
        params, state = carry
        updates, state = tx.update(step_grads, state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), params

    (_, state), trajectory = jax.jit(
        lambda p, g: jax.lax.scan(body, (p, tx.init(p)), g)
    )(params, stacked)
    moment_dtype = jnp.float32 if moments == "float32" else jax_dtype
    assert all(m.dtype == moment_dtype for m in jax.tree.leaves(state[1].next_m))
    trajectory = {n: np.asarray(v.astype(jnp.float32), np.float64) for n, v in flat(trajectory).items()}
    assert all(v.dtype == jax_dtype for v in jax.tree.leaves(params))
    return trajectory, low, reference


def ulp_error(run, reference_run, dtype):
    """max over steps and tensors of |run - reference| in ulp of the tensor's magnitude."""
    worst = 0.0
    for name in harness.PARAM_SHAPES:
        ref = np.stack([step[name] for step in reference_run])
        got = run[name] if isinstance(run, dict) else np.stack([step[name] for step in run])
        worst = max(worst, float(np.max(np.abs(got - ref)) / ulp(np.max(np.abs(ref)), LOW[dtype][0])))
    return worst


@pytest.mark.parametrize(
    "dtype, moments",
    # float16 moments in float16 are left out: both sides agree (4 ulp) but both are ~600 ulp
    # from the float64 run (v underflows), which is why moment_dtype=float32 exists.
    [("bfloat16", "float32"), ("float16", "float32"), ("bfloat16", "param")],
)
def test_low_precision_bertadam_matches_torch(dtype, moments):
    jax_run, torch_run, reference = low_precision_runs(dtype, moments)
    vs_torch = ulp_error(jax_run, torch_run, dtype)
    jax_vs_ref = ulp_error(jax_run, reference, dtype)
    torch_vs_ref = ulp_error(torch_run, reference, dtype)
    print(f"{dtype} params, {moments} moments: jax vs torch {vs_torch:.1f} ulp; from the float64 run: "
          f"jax {jax_vs_ref:.1f} ulp, torch {torch_vs_ref:.1f} ulp")
    assert vs_torch <= ULP_BOUND[moments]
    # The port is as accurate as PyTorch in the same precision.
    assert jax_vs_ref <= torch_vs_ref + 2.0


# ------------------------------------------------------------------------------------------
# Dynamic loss scaling against torch.amp.GradScaler
# ------------------------------------------------------------------------------------------

SCALER = dict(init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=4)
LOSS_SCALE_STEPS = 40


def raw_gradient_stream():
    """float32 gradients with a NaN, an inf and a burst of huge values that overflow once scaled."""
    stream = [{n: g.astype(np.float32) for n, g in step.items()}
              for step in harness.gradient_stream(LOSS_SCALE_STEPS, 1)]
    stream[3]["pooler.dense.weight"][2, 5] = np.nan
    stream[4]["cls.temperature"] = np.float32(np.inf)
    for k in range(14, 19):
        stream[k]["embeddings.word_embeddings.weight"] *= np.float32(3e33)
    return stream


def test_dynamic_loss_scale_matches_torch_grad_scaler():
    raw = raw_gradient_stream()
    named = {n: torch.nn.Parameter(torch.tensor(v, dtype=torch.float32))
             for n, v in harness.initial_params(0).items()}
    opt = torch_bertadam(named)
    scaler = torch.amp.GradScaler("cpu", **SCALER)
    torch_log = []
    for step_grads in raw:
        scaled_one = scaler.scale(torch.ones((), dtype=torch.float32))
        for n, p in named.items():
            p.grad = torch.tensor(step_grads[n]) * scaled_one
        scaler.step(opt)
        found_inf = scaler._per_optimizer_states[id(opt)]["found_inf_per_device"]
        found_inf = sum(v.item() for v in found_inf.values())
        scaler.update()
        torch_log.append((scaler.get_scale(), int(scaler._growth_tracker), bool(found_inf),
                          {n: p.detach().numpy().copy() for n, p in named.items()}, opt.get_lr()[0]))

    params = harness.nest({n: jnp.asarray(v, jnp.float32) for n, v in harness.initial_params(0).items()})
    tx = mp.dynamic_loss_scale(optax_bertadam(params), **SCALER)
    step = jitted_step(tx)
    state = tx.init(params)
    for k, step_grads in enumerate(raw):
        scaled_one = mp.scale_loss(jnp.float32(1.0), state)
        assert float(scaled_one) == float(scaler_scale_before(torch_log, k))
        grads = harness.nest({n: jnp.asarray(g) * scaled_one for n, g in step_grads.items()})
        skips = int(state.skip_count)
        params, state = step(params, state, grads)
        scale, tracker, skipped, torch_params, torch_lr = torch_log[k]
        assert float(state.scale) == scale, (k, float(state.scale), scale)
        assert int(state.growth_tracker) == tracker, k
        assert (int(state.skip_count) - skips == 1) == skipped, k
        jax_params = flat(params)
        for n, ref in torch_params.items():
            error = np.max(np.abs(np.asarray(jax_params[n]) - ref), initial=0) / np.max(np.abs(ref))
            assert error <= FLOAT32_PARAM_TOL, (k, n, error)
        np.testing.assert_allclose(float(ob.get_lr(state)), torch_lr, rtol=1e-6)
    skipped_steps = [k for k, entry in enumerate(torch_log) if entry[2]]
    scales = sorted({entry[0] for entry in torch_log})
    print(f"GradScaler parity: skipped steps {skipped_steps}, scales visited {scales}")
    assert int(state.skip_count) == len(skipped_steps) >= 4
    assert len(scales) >= 4  # grew and backed off


def test_loss_scale_at_the_float32_ceiling_stays_finite_and_steps_apply():
    """Growth that would overflow float32 keeps the old scale (GradScaler does the same), and the
    steps at the largest scale, 2**127 (whose float32 reciprocal is subnormal), are applied as
    torch applies them. A scale that became inf would skip every later step; a reciprocal flushed
    to zero would unscale every gradient to 0."""
    steps, bad_step = 10, 6
    raw = [{n: (g * 1e-3).astype(np.float32) for n, g in step.items()}  # |g * 2**127| < 3.4e38
           for step in harness.gradient_stream(steps, 1)]
    raw[bad_step]["cls.temperature"] = np.float32(np.inf)  # back off from the ceiling, grow again
    ceiling = dict(init_scale=2.0**125, growth_factor=2.0, backoff_factor=0.5, growth_interval=1)

    named = {n: torch.nn.Parameter(torch.tensor(v, dtype=torch.float32))
             for n, v in harness.initial_params(0).items()}
    opt = torch_bertadam(named, t_total=-1)  # a constant rate: every applied step moves every tensor
    scaler = torch.amp.GradScaler("cpu", **ceiling)
    params = harness.nest({n: jnp.asarray(v, jnp.float32) for n, v in harness.initial_params(0).items()})
    tx = mp.dynamic_loss_scale(optax_bertadam(params, t_total=-1), **ceiling)
    step, state = jitted_step(tx), tx.init(params)
    scales = []
    for k, step_grads in enumerate(raw):
        torch_scale = scaler.get_scale()
        for n, p in named.items():
            p.grad = torch.tensor(step_grads[n]) * scaler.scale(torch.ones((), dtype=torch.float32))
        scaler.step(opt)
        scaler.update()

        assert float(mp.get_loss_scale(state)) == torch_scale, k
        grads = harness.nest({n: jnp.asarray(g) * mp.get_loss_scale(state) for n, g in step_grads.items()})
        new_params, state = step(params, state, grads)
        scales.append(float(state.scale))
        assert float(state.scale) == scaler.get_scale() and np.isfinite(scales[-1]), (k, scales)
        moved = [bool((a != b).any()) for a, b in zip(jax.tree.leaves(new_params),
                                                      jax.tree.leaves(params), strict=True)]
        assert all(moved) == (k != bad_step) and any(moved) == (k != bad_step), (k, moved)
        params = new_params
        for n, ref in {n: p.detach().numpy() for n, p in named.items()}.items():
            error = np.max(np.abs(np.asarray(flat(params)[n]) - ref), initial=0) / np.max(np.abs(ref))
            assert error <= FLOAT32_PARAM_TOL, (k, n, error)
    print(f"loss scales at the ceiling: {[f'2**{np.log2(s):.0f}' for s in scales]}")
    expected = [2.0**126] + [2.0**127] * (bad_step - 1) + [2.0**126] + [2.0**127] * (steps - bad_step - 1)
    assert scales == expected
    assert int(state.skip_count) == 1


def scaler_scale_before(torch_log, k):
    return SCALER["init_scale"] if k == 0 else torch_log[k - 1][0]


def test_scale_loss_dtypes_follow_torch():
    state = mp.dynamic_loss_scale(optax.sgd(0.1)).init({"w": jnp.zeros(3)})
    scaler = torch.amp.GradScaler("cpu")
    for jax_dtype, torch_dtype in [(jnp.float32, torch.float32), (jnp.float16, torch.float16),
                                   (jnp.bfloat16, torch.bfloat16)]:
        ours = mp.scale_loss(jnp.asarray(1.5, jax_dtype), state)
        theirs = scaler.scale(torch.tensor(1.5, dtype=torch_dtype))
        assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch.")
        assert float(ours) == theirs.item() == 1.5 * 2**16
    assert float(mp.get_loss_scale(state)) == 2.0**16


def test_float16_gradients_overflow_back_off_then_train():
    """float16 parameters and gradients, float32 moments: the scaled gradients overflow float16
    until the scale has backed off enough (GradScaler refuses float16 gradients: no torch twin)."""
    params = {"w": jnp.asarray(np.linspace(-1, 1, 16), jnp.float16)}
    tx = mp.dynamic_loss_scale(ob.bertadam(1e-2, moment_dtype=jnp.float32))
    step, state = jitted_step(tx), tx.init(params)
    raw = np.linspace(-3, 3, 16)  # |g| * 2**16 and * 2**15 exceed float16's 65504
    history = []
    for _ in range(4):
        grads = {"w": (jnp.asarray(raw, jnp.float32) * mp.get_loss_scale(state)).astype(jnp.float16)}
        new_params, state = step(params, state, grads)
        moved = bool((new_params["w"] != params["w"]).any())
        history.append((float(state.scale), int(state.skip_count), moved))
        params = new_params
    assert history == [(2.0**15, 1, False), (2.0**14, 2, False), (2.0**14, 2, True), (2.0**14, 2, True)]
    assert params["w"].dtype == jnp.float16
    assert state.inner_state[1].next_m["w"].dtype == jnp.float32


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(init_scale=0.0), "init_scale"), (dict(init_scale=float("inf")), "init_scale"),
     (dict(growth_factor=1.0), "growth_factor"), (dict(backoff_factor=1.0), "backoff_factor"),
     (dict(backoff_factor=0.0), "backoff_factor"), (dict(growth_interval=0), "growth_interval"),
     (dict(growth_interval=2.5), "growth_interval")],
)
def test_dynamic_loss_scale_arguments(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        mp.dynamic_loss_scale(optax.sgd(0.1), **kwargs)


# ------------------------------------------------------------------------------------------
# Skipping non-finite steps, and NaN propagation without it
# ------------------------------------------------------------------------------------------


def bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def small_stream(dtype=jnp.float32):
    stream = [harness.nest({n: jnp.asarray(g, dtype) for n, g in step.items()})
              for step in harness.gradient_stream(6, 1)]
    for grads in stream:  # a tensor that never moves: its -0.0 entry must stay -0.0
        grads["embeddings"]["LayerNorm"]["bias"] = jnp.zeros(8, dtype)
    return stream


def with_bad_value(grads, value):
    bad = jax.tree.map(lambda g: g, grads)
    bad["pooler"]["dense"]["weight"] = bad["pooler"]["dense"]["weight"].at[1, 2].set(value)
    return bad


@pytest.mark.parametrize("wrapper", ["skip_nonfinite", "dynamic_loss_scale"])
def test_skipped_steps_are_exact(wrapper):
    """A skipped step changes nothing but the counters, and skipping equals never seeing the step."""
    params = harness.nest({n: jnp.asarray(v, jnp.float32) for n, v in harness.initial_params(0).items()})
    # Its gradient is always 0: the update is -lr * 0 = -0.0, and p + (+0.0) would flip the sign.
    params["embeddings"]["LayerNorm"]["bias"] = params["embeddings"]["LayerNorm"]["bias"].at[0].set(-0.0)
    plain = optax_bertadam(params)
    # A power-of-two scale makes scaling and unscaling exact, so the runs must agree bit for bit.
    tx = (mp.skip_nonfinite(plain) if wrapper == "skip_nonfinite"
          else mp.dynamic_loss_scale(plain, init_scale=2.0**10, growth_interval=2))
    step, plain_step = jitted_step(tx), jitted_step(plain)
    stream = small_stream()
    bad_steps = {2: np.nan, 3: np.inf, 5: -np.inf}

    def run(with_bad_steps):
        state, p = tx.init(params), params
        trajectory = []
        for k in range(8):
            if k in bad_steps and not with_bad_steps:
                continue
            grads = stream[k % len(stream)]
            if k in bad_steps:
                grads = with_bad_value(grads, bad_steps[k])
            if wrapper == "dynamic_loss_scale":
                scale = mp.get_loss_scale(state)
                grads = jax.tree.map(lambda g, scale=scale: g * scale, grads)
            before = (p, state.inner_state)
            p, state = step(p, state, grads)
            if k in bad_steps:
                assert bits((p, state.inner_state)) == bits(before), k
            else:
                trajectory.append(bits((p, state.inner_state)))
        return trajectory, p, state

    clean_run, _, _ = run(with_bad_steps=False)
    bad_run, wrapped_params, state = run(with_bad_steps=True)
    assert bad_run == clean_run
    assert int(state.skip_count) == len(bad_steps)
    assert np.signbit(flat(wrapped_params)["embeddings.LayerNorm.bias"][0])

    # And the wrapper is the plain optimizer on finite steps (another program: not bitwise).
    plain_state, plain_params = plain.init(params), params
    for k in range(8):
        if k not in bad_steps:
            plain_params, plain_state = plain_step(plain_params, plain_state, stream[k % len(stream)])
    for a, b in zip(jax.tree.leaves(wrapped_params), jax.tree.leaves(plain_params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("clip_mode", ["per_tensor", "global"])
def test_without_skipping_non_finite_values_propagate_as_in_torch(clip_mode, bad):
    """One NaN/inf gradient element: the same elements turn NaN on both sides (its tensor with
    per-tensor clipping, every tensor for a NaN under global clipping), the others stay equal
    within the float32 bound."""
    stream = small_stream()
    stream[2] = with_bad_value(stream[2], bad)
    params = harness.nest({n: jnp.asarray(v, jnp.float32) for n, v in harness.initial_params(0).items()})
    tx = optax_bertadam(params, clip_mode=clip_mode)
    step, state = jitted_step(tx), tx.init(params)
    named = {n: torch.nn.Parameter(torch.tensor(v, dtype=torch.float32))
             for n, v in harness.initial_params(0).items()}
    opt = torch_bertadam(named, clip_mode=clip_mode)
    for grads in stream:
        params, state = step(params, state, grads)
        for n, g in flat(grads).items():
            named[n].grad = torch.tensor(np.asarray(g))
        opt.step()
        ours = flat(params)
        for n, p in named.items():
            theirs = p.detach().numpy()
            np.testing.assert_array_equal(np.isnan(ours[n]), np.isnan(theirs), err_msg=n)
            finite = ~np.isnan(theirs)
            if finite.any():
                diff = np.abs(np.asarray(ours[n])[finite] - theirs[finite])
                error = np.max(diff) / np.max(np.abs(theirs[finite]))
                assert error <= FLOAT32_PARAM_TOL, (n, error)
    nan_tensors = sorted(n for n, v in ours.items() if np.isnan(v).any())
    # A NaN norm makes every clipped gradient NaN; an infinite norm makes the coefficient 0, and
    # only inf * 0 is NaN.
    spreads = clip_mode == "global" and np.isnan(bad)
    expected = sorted(harness.PARAM_SHAPES) if spreads else ["pooler.dense.weight"]
    assert nan_tensors == expected
