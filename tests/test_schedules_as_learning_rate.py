"""Every schedule of the registry drives every optimizer of the registry, and optax's own.

Schedules come from :data:`optax_bertadam.schedules.registry.SCHEDULES` (each record's example:
peak 0.01, warmup 6 of 30 updates), optimizers from :data:`optax_bertadam.algorithms.ALGORITHMS`
(each built with its ``example``, the schedule as ``learning_rate``) plus ``optax.adamw`` and
``optax.sgd``. Each pair runs 6 updates; the parameters stay finite, ``get_lr`` follows the
schedule (rtol 1e-6), and optax's AdamW steps by exactly the scheduled rate (rtol 1e-4).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_bertadam as ob
from optax_bertadam.schedules.registry import SCHEDULES
from parity_tests.twins import ALGORITHMS

RATE_SCHEDULES = [record for record in SCHEDULES if not record.loss_driven]
# BertAdam refuses its own schedule (t_total, warmup) next to a schedule as learning_rate.
OWN_SCHEDULE_OFF = {"bertadam": dict(t_total=-1, warmup=-1)}
OPTIMIZERS = {
    **{
        entry.name: (lambda lr, entry=entry: entry.build(learning_rate=lr,
                                                         **OWN_SCHEDULE_OFF.get(entry.name, {})))
        for entry in ALGORITHMS
    },
    "optax.adamw": lambda lr: optax.adamw(lr, weight_decay=0.0),
    "optax.sgd": lambda lr: optax.sgd(lr),
}
PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.ones((3,))}
GRADS = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p), PARAMS)
STEPS = 6


def test_the_registry_covers_every_family():
    families = {record.family for record in RATE_SCHEDULES}
    assert len(RATE_SCHEDULES) >= 30
    assert families == {"bert", "transformers", "classic", "pytorch", "deepspeed"}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_schedule_as_learning_rate(optimizer):
    schedules = [record.schedule() for record in RATE_SCHEDULES]
    branches = [lambda count, s=s: jnp.asarray(s(count), jnp.float32) for s in schedules]

    # lax.switch picks the schedule by index: one compile per optimizer, not one per schedule.
    @jax.jit
    def run(index):
        tx = OPTIMIZERS[optimizer](lambda count: jax.lax.switch(index, branches, count))

        def step(carry, _):
            params, state = carry
            updates, state = tx.update(GRADS, state, params)
            return (optax.apply_updates(params, updates), state), -updates["b"][0]

        (params, state), steps = jax.lax.scan(step, (PARAMS, tx.init(PARAMS)), length=STEPS)
        next_lr = jnp.zeros([]) if optimizer.startswith("optax.") else ob.get_lr(state)
        return params, steps, next_lr

    for index, record in enumerate(RATE_SCHEDULES):
        params, steps, next_lr = run(index)
        rates = np.asarray(jax.vmap(schedules[index])(jnp.arange(STEPS + 1)))
        assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(params)), record.name
        if optimizer == "optax.adamw":
            # Constant gradients make Adam's bias-corrected direction 1: each step is the
            # scheduled rate (to float32's 1 - 0.999**t cancellation).
            np.testing.assert_allclose(steps, rates[:STEPS], rtol=1e-4, atol=1e-9,
                                       err_msg=f"{optimizer} with {record.name}")
        if not optimizer.startswith("optax."):
            np.testing.assert_allclose(next_lr, rates[STEPS], rtol=1e-6, atol=1e-12,
                                       err_msg=f"{optimizer} with {record.name}")
