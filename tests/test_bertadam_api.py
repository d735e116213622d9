"""bertadam's argument checks, masks and get_lr through optax wrappers and flax.nnx.Optimizer."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_bertadam as ob

PARAMS = {
    "dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros((4,))},
    "LayerNorm": {"scale": jnp.ones((4,)), "bias": jnp.zeros((4,))},
}


@pytest.mark.parametrize(
    "kwargs, error, fragments",
    [
        (dict(learning_rate=-1e-3), ValueError, ["learning_rate=-0.001", "[0, inf]"]),
        (dict(learning_rate=math.nan), ValueError, ["learning_rate=nan", "NaN"]),
        (dict(learning_rate="1e-3"), TypeError, ["learning_rate='1e-3'", "real number"]),
        (dict(schedule="warmup_linearr"), ValueError, ["schedule='warmup_linearr'", "warmup_cosine",
                                                       "warmup_exp_decay_poly"]),
        (dict(warmup=1.0, t_total=10), ValueError, ["warmup=1.0", "[0, 1) or -1"]),
        (dict(warmup=-0.5, t_total=10), ValueError, ["warmup=-0.5", "[0, 1) or -1"]),
        (dict(b1=1.0), ValueError, ["b1=1.0", "[0, 1)"]),
        (dict(b2=-0.1), ValueError, ["b2=-0.1", "[0, 1)"]),
        (dict(e=-1e-6), ValueError, ["e=-1e-06", "[0, inf]"]),
        (dict(weight_decay=-0.01), ValueError, ["weight_decay=-0.01"]),
        (dict(max_grad_norm=math.nan), ValueError, ["max_grad_norm=nan"]),
        (dict(t_total=0), ValueError, ["t_total=0", "integer >= 1 or -1"]),
        (dict(t_total=-5), ValueError, ["t_total=-5"]),
        (dict(t_total=10.5), TypeError, ["t_total=10.5", "integer"]),
        (dict(clip_mode="layer"), ValueError, ["clip_mode='layer'", "'per_tensor', 'global'"]),
        (dict(schedule="warmup_linear_decay_exp", t_total=10, warmup=0.1), ValueError,
         ["schedule_kwargs=None", "'decay_rate', 'decay_steps'"]),
        (dict(schedule="warmup_exp_decay_exp", t_total=10, warmup=0.1,
              schedule_kwargs={"decay_rate": 0.9}), ValueError, ["'decay_steps'"]),
        (dict(schedule="warmup_linear", schedule_kwargs={"degree": 2.0}), ValueError,
         ["unknown 'degree'", "allowed keys: none"]),
        (dict(schedule="warmup_exp_decay_poly", t_total=10, schedule_kwargs={"degree": math.nan}),
         ValueError, ["schedule_kwargs['degree']=nan"]),
        (dict(schedule="warmup_linear_decay_exp", t_total=10,
              schedule_kwargs={"decay_rate": 0.9, "decay_steps": 0}), ValueError,
         ["schedule_kwargs['decay_steps']=0"]),
    ],
)
def test_bad_arguments_are_refused_when_built(kwargs, error, fragments):
    kwargs = {"learning_rate": 1e-3, **kwargs}
    with pytest.raises(error) as info:
        ob.bertadam(**kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_a_mismatched_mask_fails_at_init_naming_the_mask():
    tx = ob.bertadam(1e-3, mask={"dense": {"kernel": True, "bias": False}})
    with pytest.raises(ValueError, match=r"^mask does not match the parameters"):
        tx.init(PARAMS)
    bad_leaf = jax.tree.map(lambda _: 1.0, PARAMS)
    with pytest.raises(TypeError, match=r"^mask is invalid: its leaves must be"):
        ob.bertadam(1e-3, mask=bad_leaf).init(PARAMS)


def test_decay_mask_names():
    mask = ob.decay_mask(PARAMS)
    assert mask == {"dense": {"kernel": True, "bias": False},
                    "LayerNorm": {"scale": False, "bias": False}}
    linen_style = {"LayerNorm_0": {"scale": 1}, "ln_1": {"scale": 1}, "kernel": 1, "vulnerable": 1}
    assert ob.decay_mask(linen_style) == {"LayerNorm_0": {"scale": False}, "ln_1": {"scale": False},
                                          "kernel": True, "vulnerable": True}
    with pytest.raises(TypeError, match="exclude='bias'"):
        ob.decay_mask(PARAMS, exclude="bias")


def test_a_callable_mask_is_resolved_on_the_params():
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    tx_tree = ob.bertadam(1e-2, mask=ob.decay_mask(PARAMS))
    tx_fn = ob.bertadam(1e-2, mask=ob.decay_mask)
    u1, _ = tx_tree.update(grads, tx_tree.init(PARAMS), PARAMS)
    u2, _ = tx_fn.update(grads, tx_fn.init(PARAMS), PARAMS)
    jax.tree.map(np.testing.assert_array_equal, u1, u2)


def expected_lr(k):
    return 1e-2 * ob.bert_schedule("warmup_linear", 1.0, 20, 0.25)(k)


def test_get_lr_inside_jit_chain_multisteps_and_inject_hyperparams():
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    base = lambda: ob.bertadam(1e-2, warmup=0.25, t_total=20)
    wrapped = {
        "plain": base(),
        "chain": optax.chain(optax.identity(), base()),
        "multisteps": optax.MultiSteps(base(), every_k_schedule=2),
        "inject": optax.inject_hyperparams(lambda scale: optax.chain(base(), optax.scale(scale)))(
            scale=1.0),
    }
    for name, tx in wrapped.items():
        state = tx.init(PARAMS)
        assert float(ob.get_lr(state)) == pytest.approx(float(expected_lr(0))), name
        step = jax.jit(tx.update)
        for _ in range(6):
            _, state = step(grads, state, PARAMS)
        updates_applied = 3 if name == "multisteps" else 6
        assert float(jax.jit(ob.get_lr)(state)) == pytest.approx(
            float(expected_lr(updates_applied)), rel=1e-6), name


def test_get_lr_refuses_states_without_or_with_several_rates():
    with pytest.raises(ValueError, match="found no learning-rate state"):
        ob.get_lr(optax.adam(1e-3).init(PARAMS))
    two = optax.chain(ob.bertadam(1e-3), ob.bertadam(1e-3))
    with pytest.raises(ValueError, match="ambiguous"):
        ob.get_lr(two.init(PARAMS))


def test_flax_nnx_optimizer_with_mask_and_get_lr():
    from flax import nnx

    class Tiny(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(3, 4, rngs=rngs)
            self.LayerNorm = nnx.LayerNorm(4, rngs=rngs)

        def __call__(self, x):
            return self.LayerNorm(self.dense(x))

    model = Tiny(nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    tx = ob.bertadam(1e-2, warmup=0.25, t_total=20, weight_decay=0.1,
                     mask=ob.decay_mask(params))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x):
        grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
        optimizer.update(model, grads)

    before = np.asarray(model.LayerNorm.bias[...]).copy()
    for _ in range(5):
        train_step(model, optimizer, jnp.ones((2, 3)))
    assert float(ob.get_lr(optimizer.opt_state)) == pytest.approx(float(expected_lr(5)), rel=1e-6)
    assert not np.allclose(before, model.LayerNorm.bias[...])


def test_a_schedule_with_t_total_is_multiplied_by_bertadams_own_schedule():
    """A PyTorch scheduler over BertAdam(t_total=...) sets group['lr']; BertAdam multiplies it by
    its own schedule at every step (torch_ref.BertAdam._scheduled_lr): so does a schedule passed
    as learning_rate together with t_total."""
    scheduler = optax.linear_schedule(1e-3, 0.0, 50)
    tx = ob.bertadam(scheduler, warmup=0.2, t_total=20, schedule="warmup_cosine")
    own = ob.bert_schedule("warmup_cosine", 1.0, 20, 0.2)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    for count in range(6):
        assert float(ob.get_lr(state)) == pytest.approx(float(scheduler(count) * own(count)), rel=1e-6)
        _, state = tx.update({"w": jnp.ones(2)}, state, params)
