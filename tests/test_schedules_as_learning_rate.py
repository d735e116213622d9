"""Every schedule of the package drives every optimizer of the package, and optax's own."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_bertadam as ob
from bert_demo.cli import all_schedules_for_plot

SCHEDULES = all_schedules_for_plot(t_total=20, warmup_steps=4)
OPTIMIZERS = {
    "bertadam": lambda lr: ob.bertadam(lr),
    "adamw": lambda lr: ob.adamw(lr, weight_decay=0.01),
    "adafactor": lambda lr: ob.adafactor(lr, relative_step=False, scale_parameter=False),
    "adam_weight_decay": lambda lr: ob.adam_weight_decay(lr, weight_decay_rate=0.01),
    "optax.adamw": lambda lr: optax.adamw(lr, weight_decay=0.0),
    "optax.sgd": lambda lr: optax.sgd(lr),
}
PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.ones((3,))}


def test_the_registry_covers_every_family():
    families = {name.split("/")[0] for name in SCHEDULES}
    assert len(SCHEDULES) >= 20 and len(families) >= 3, sorted(SCHEDULES)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_schedule_as_learning_rate(optimizer):
    grads = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p), PARAMS)
    for name, schedule in SCHEDULES.items():
        tx = OPTIMIZERS[optimizer](schedule)
        state = tx.init(PARAMS)
        params = PARAMS
        for count in range(6):  # eager: one compile per primitive, not per schedule
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
            if optimizer == "optax.adamw":
                # Constant gradients make Adam's bias-corrected direction 1: each step is the
                # scheduled rate (to float32's 1 - 0.999**t cancellation).
                np.testing.assert_allclose(-updates["b"], schedule(count), rtol=1e-4, atol=1e-9,
                                           err_msg=f"{optimizer} with {name}")
        assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(params)), name
        if not optimizer.startswith("optax."):
            np.testing.assert_allclose(ob.get_lr(state), schedule(6), rtol=1e-6, atol=1e-12,
                                       err_msg=f"{optimizer} with {name}")
