"""Every PyTorch and transformers scheduler of the schedule registry, handed to ``from_torch``.

For each record of :data:`optax_bertadam.schedules.registry.SCHEDULES` in the ``pytorch`` and
``transformers`` families, its counterpart is built by :mod:`parity_tests.schedule_twins` (the
record's example: peak 0.01, warmup 6 of 30 updates) over a real ``torch.optim.SGD`` with
momentum and two parameter groups (the second at twice the rate), and the live optimizer and
scheduler go to :func:`optax_bertadam.from_torch`. Both then run 45 updates (through warmup, decay
and past the end; loss-driven ones stepped with the registry's scripted losses, a NaN included)
and :func:`optax_bertadam.get_last_lr` must give ``scheduler.get_last_lr()`` after every update:
``max |optax - torch| / peak`` within 1e-6 (float32) and 1e-12 (float64). The schedulers of a
Python function of the user's own (``LambdaLR``, ``MultiplicativeLR``) must be refused, saying
how to pass a jnp function instead.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_bertadam as ob
from optax_bertadam.schedules.registry import EXAMPLE_T_TOTAL, SCHEDULES, ScheduleRecord
from parity_tests import harness, schedule_twins

NUM_UPDATES = EXAMPLE_T_TOTAL + EXAMPLE_T_TOTAL // 2
# Their counterparts are Python functions of the user's own: refused by design.
USER_FUNCTIONS = ("pytorch/LambdaLR", "pytorch/MultiplicativeLR")
RECORDS = [record for record in SCHEDULES if record.family in ("pytorch", "transformers")]


def two_groups_under(record: ScheduleRecord, torch_dtype):
    """SGD with momentum over two groups and ``record``'s counterpart; the named parameters."""
    named = {"weight": torch.nn.Parameter(torch.zeros(2, 3, dtype=torch_dtype)),
             "bias": torch.nn.Parameter(torch.zeros(2, dtype=torch_dtype))}
    kwargs = dict(record.arguments(schedule_twins.EXAMPLE_LEARNING_RATE, EXAMPLE_T_TOTAL,
                                   schedule_twins.EXAMPLE_WARMUP_STEPS))
    lr = schedule_twins._optimizer_lr(record, kwargs)
    optimizer = torch.optim.SGD([{"params": [named["weight"]]},
                                 {"params": [named["bias"]], "lr": 2 * lr}], lr=lr, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = schedule_twins._scheduler(record, kwargs, optimizer)
    return named, optimizer, scheduler


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("record", RECORDS, ids=lambda record: record.name)
def test_every_registry_scheduler_through_from_torch(record: ScheduleRecord, dtype):
    jax_dtype, torch_dtype = harness.DTYPES[dtype]
    named, optimizer, scheduler = two_groups_under(record, torch_dtype)
    with jax.enable_x64(dtype == "float64"):
        params = {n: jnp.zeros(tuple(p.shape), jax_dtype) for n, p in named.items()}
        if record.name in USER_FUNCTIONS:
            with pytest.raises(ValueError, match=r"function of your own.*jax.numpy"):
                ob.from_torch(optimizer, scheduler, named_parameters=named.items(), params=params)
            return
        tx = ob.from_torch(optimizer, scheduler, named_parameters=named.items(), params=params)
        values = schedule_twins.LOSS_VALUES if record.loss_driven else None
        steps = NUM_UPDATES if values is None else len(values)
        if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
            steps = min(steps, scheduler.total_steps)  # it refuses to step past its end

        @jax.jit
        def update(state, value):
            grads = jax.tree.map(jnp.ones_like, params)
            extra = {} if values is None else {"value": value}
            _, state = tx.update(grads, state, params, **extra)
            return state, jnp.stack(ob.get_last_lr(state))

        state = tx.init(params)
        want, got = [scheduler.get_last_lr()], [np.asarray(ob.get_last_lr(state))]
        for k in range(steps):
            for p in named.values():
                p.grad = torch.ones_like(p)
            optimizer.step()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scheduler.step() if values is None else scheduler.step(values[k])
            state, rates = update(state, 0.0 if values is None else values[k])
            want.append(scheduler.get_last_lr())
            got.append(np.asarray(rates))
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    assert want.shape == got.shape == (steps + 1, 2)
    if record.name != "transformers/constant":
        assert len(set(want[:, 0].tolist())) >= 2, "the example should move the rate"
    peak = float(np.max(np.abs(want)))
    harness.assert_within(f"{record.name} lr error", float(np.max(np.abs(got - want))) / peak,
                          harness.LR_TOL[dtype])
