"""A Flax NNX training loop with BertAdam, as a user writes it.

Run: python examples/nnx_bertadam.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import optax_bertadam as ob


class Regressor(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(8, 32, rngs=rngs)
        self.LayerNorm = nnx.LayerNorm(32, rngs=rngs)
        self.head = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, x):
        return self.head(jax.nn.gelu(self.LayerNorm(self.dense(x))))


def main(steps: int = 200) -> float:
    model = Regressor(nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    tx = ob.bertadam(
        3e-2, warmup=0.1, t_total=steps, schedule="warmup_linear", weight_decay=0.01,
        max_grad_norm=1.0, mask=ob.decay_mask(params),  # no decay: bias, LayerNorm
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    # donate_argnums: the old parameters and moments are reused for the new ones.
    @nnx.jit(donate_argnums=(0, 1))
    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x)[:, 0] - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    key = jax.random.key(0)
    w_true = jax.random.normal(key, (8,))
    for step in range(steps):
        x = jax.random.normal(jax.random.fold_in(key, step), (32, 8))
        loss = train_step(model, optimizer, x, x @ w_true)
        if step % 50 == 0 or step == steps - 1:
            next_lr = float(ob.get_lr(optimizer.opt_state))
            print(f"step {step:4d}  loss {float(loss):.4f}  next lr {next_lr:.2e}")
    return float(loss)


if __name__ == "__main__":
    main()
