"""A Flax Linen ``TrainState`` loop with BertAdam, as a user writes it.

Run: python examples/linen_trainstate.py
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.training import train_state

import optax_bertadam as ob


class Regressor(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.LayerNorm()(nn.Dense(32)(x))  # auto-named LayerNorm_0: excluded from decay
        return nn.Dense(1)(jax.nn.gelu(x))


def main(steps: int = 200) -> float:
    model = Regressor()
    key = jax.random.key(0)
    params = model.init(key, jnp.ones((1, 8)))["params"]
    tx = ob.bertadam(3e-2, warmup=0.1, t_total=steps, weight_decay=0.01,
                     mask=ob.decay_mask(params))
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state, x, y):
        def loss_fn(params):
            return jnp.mean((state.apply_fn({"params": params}, x)[:, 0] - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    w_true = jax.random.normal(key, (8,))
    for step in range(steps):
        x = jax.random.normal(jax.random.fold_in(key, step), (32, 8))
        state, loss = train_step(state, x, x @ w_true)
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {float(loss):.4f}  next lr {float(ob.get_lr(state.opt_state)):.2e}")
    return float(loss)


if __name__ == "__main__":
    main()
