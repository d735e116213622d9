"""deepspeed_lamb / nvidia_lamb (a private fused update) equal their public optax.chain, and their
compiled update keeps no parameter-sized temporary (benchmarks/README.md, "LAMB")."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_bertadam as ob
from optax_bertadam import lamb, transforms

MASK = {"w": True, "b": False, "v": True}
BIG_MASK = {"w": True, "w2": True, "b": False, "v": True}


def _public_deepspeed(lr, b1=0.9, b2=0.999, eps=1e-8, eps_inside_sqrt=False, weight_decay=0.0,
                      max_grad_norm=0.0, max_coeff=10.0, min_coeff=0.01, bias_correction=True,
                      mask=None):
    return optax.chain(
        lamb._clip_by_norm_ratio(max_grad_norm, lamb.DEEPSPEED_CLIP_EPS, mask, "mask").transform,
        ob.scale_by_deepspeed_lamb(b1, b2, eps, eps_inside_sqrt=eps_inside_sqrt),
        ob.add_decayed_weights(weight_decay, mask),
        ob.scale_by_clamped_trust_ratio(min_coeff, max_coeff),
        *([ob.scale_by_bias_correction(b1, b2)] if bias_correction else []),
        transforms.scale_by_scheduled_learning_rate(lr),
    )


def _public_nvidia(lr, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, grad_averaging=True,
                   max_grad_norm=1.0, bias_correction=True, trust_clip=False, always_adapt=False,
                   caution=False, mask=None):
    return optax.chain(
        *([] if max_grad_norm is None else [ob.clip_by_global_norm_ratio(max_grad_norm)]),
        ob.scale_by_nvidia_lamb(b1, b2, eps, bias_correction=bias_correction,
                                grad_averaging=grad_averaging, caution=caution),
        ob.add_decayed_weights(weight_decay, mask),
        lamb._nvidia_trust_ratio(weight_decay, trust_clip, always_adapt, mask).transform,
        transforms.scale_by_scheduled_learning_rate(lr),
    )


CASES = [
    ("deepspeed", dict()),
    ("deepspeed", dict(weight_decay=0.01, max_coeff=0.3, bias_correction=False, mask=MASK)),
    ("deepspeed", dict(weight_decay=0.1, max_grad_norm=0.5, mask=MASK)),
    ("deepspeed", dict(eps_inside_sqrt=True, max_grad_norm=0.5, min_coeff=0.5)),
    ("nvidia", dict()),
    ("nvidia", dict(mask=MASK, max_grad_norm=None, trust_clip=True)),
    ("nvidia", dict(weight_decay=0.0, always_adapt=True, bias_correction=False,
                    grad_averaging=False)),
    ("nvidia", dict(caution=True, mask=MASK, max_grad_norm=0.1)),
]


def _tree(rng, dtype):
    return {k: jnp.asarray(rng.normal(0, 1, s), dtype)
            for k, s in (("w", (7, 5)), ("b", (5,)), ("v", (300,)))}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("kind,kwargs", CASES)
def test_fused_equals_public_chain(kind, kwargs, dtype):
    # x64 for this test only: a global switch would leak into the tests that follow in the worker.
    with jax.enable_x64(dtype == jnp.float64):
        _check_fused_equals_public_chain(kind, kwargs, dtype)


def _check_fused_equals_public_chain(kind, kwargs, dtype):
    rng = np.random.default_rng(0)
    fused = (ob.deepspeed_lamb if kind == "deepspeed" else ob.nvidia_lamb)(1e-2, **kwargs)
    chain = (_public_deepspeed if kind == "deepspeed" else _public_nvidia)(1e-2, **kwargs)
    params = _tree(rng, dtype)
    s_fused, s_chain = fused.init(params), chain.init(params)
    assert jax.tree.structure(s_fused) == jax.tree.structure(s_chain)
    step_f = jax.jit(fused.update)
    step_c = jax.jit(chain.update)
    worst = 0.0  # in ulps of each tensor's largest magnitude
    for _ in range(4):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(0, 1, p.shape), dtype), params)
        # Both from the same state: each step's difference, not a drift of two trajectories.
        u_f, s_fused = step_f(grads, s_chain, params)
        u_c, s_chain = step_c(grads, s_chain, params)
        for a, b in zip(jax.tree.leaves((u_f, s_fused)), jax.tree.leaves((u_c, s_chain)),
                        strict=True):
            a, b = np.asarray(a), np.asarray(b)
            assert a.dtype == b.dtype
            if b.dtype.kind != "f" or not b.size:  # the step counts
                np.testing.assert_array_equal(a, b)
                continue
            scale_ulp = np.spacing(np.max(np.abs(b)))
            worst = max(worst, float(np.max(np.abs(a - b)) / scale_ulp))
        params = optax.apply_updates(params, u_c)
    print(f"{kind} {kwargs} {np.dtype(dtype).name}: worst {worst:g} ulps of the tensor's scale")
    # Eager (op by op) the two are bit for bit equal. Compiled, XLA contracts multiplications
    # and additions into FMAs as its fusions allow, and the fused update's fusions differ from the
    # chain's (the divided gradients and the trust ratio's norm recomputed inside loops rather
    # than read from buffers): a few ulps of each tensor's largest entry (measured 0-4; 0 in
    # most unclipped cases).
    assert worst <= 4, worst


def _temp_mib(tx, params):
    grads = jax.tree.map(lambda p: p * 0.1, params)
    state = tx.init(params)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


# Not caution: nvidia_lamb(caution=True) runs its plain chain (three tensor-sized temporaries, as
# before; lamb.py says why).
@pytest.mark.parametrize("kind,kwargs", [c for c in CASES if not c[1].get("caution")])
def test_no_parameter_sized_temporary(kind, kwargs):
    # Two 16 MiB float32 tensors of one shape (XLA shares what tensors of one shape have in
    # common: a broadcast constant was a 16 MiB buffer). A whole-tensor intermediate shows as
    # >= 16 MiB of temporaries; the goal is BERT-base under 64 MiB. Compiled only: nothing runs.
    params = {"w": jnp.zeros((2048, 2048)), "w2": jnp.zeros((2048, 2048)), "b": jnp.zeros(2048),
              "v": jnp.zeros(300)}
    if "mask" in kwargs:
        kwargs = {**kwargs, "mask": BIG_MASK}
    tx = (ob.deepspeed_lamb if kind == "deepspeed" else ob.nvidia_lamb)(1e-3, **kwargs)
    assert _temp_mib(tx, params) < 4.0
