"""The schedule registry: one record per schedule, every public factory and dispatch name covered.

A new public schedule factory without a record, or a dispatch name (``SCHEDULE_NAMES``,
``SCHEDULER_NAMES``, ``PYTORCH_SCHEDULERS``, ``DEEPSPEED_SCHEDULERS``) without one, fails here.
"""

from __future__ import annotations

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_bertadam.schedules as schedules
from optax_bertadam.schedules import bert, deepspeed, pytorch
from optax_bertadam.schedules import transformers as hf
from optax_bertadam.schedules.registry import SCHEDULES, schedule_record

# get_scheduler dispatches by name to factories that have records of their own (checked below).
DISPATCHERS = (hf.get_scheduler,)
PUBLIC_FACTORIES = {
    name: obj
    for name in schedules.__all__
    if inspect.isfunction(obj := getattr(schedules, name))
    and obj is not schedule_record and obj not in DISPATCHERS
}


def test_every_public_schedule_factory_has_exactly_one_record():
    for name, factory in PUBLIC_FACTORIES.items():
        records = [record.name for record in SCHEDULES if record.factory is factory]
        if factory is bert.bert_schedule:  # one record per BertAdam schedule name
            assert records == [f"bert/{n}" for n in bert.SCHEDULE_NAMES], records
        else:
            assert len(records) == 1, f"{name}: {records}"
    public = set(PUBLIC_FACTORIES.values())
    assert [r.name for r in SCHEDULES if r.factory not in public] == []


def test_names_are_unique_and_immutable():
    names = [name for record in SCHEDULES for name in (record.name, *record.aliases)]
    assert len(names) == len(set(names)), names
    families = {record.family for record in SCHEDULES}
    assert families == {"bert", "transformers", "classic", "pytorch", "deepspeed"}
    assert isinstance(SCHEDULES, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SCHEDULES[0].name = "renamed"


def test_every_dispatch_name_has_its_record():
    for name in bert.SCHEDULE_NAMES:
        assert schedule_record(f"bert/{name}").example["schedule"] == name
    for name, factory in pytorch.PYTORCH_SCHEDULERS.items():
        assert schedule_record(f"pytorch/{name}").factory is factory, name
    for name in hf.SCHEDULER_NAMES:
        schedule_record(f"transformers/{name}")
    for name, factory in deepspeed.DEEPSPEED_SCHEDULERS.items():
        assert schedule_record(f"deepspeed/{name}").factory is factory, name


@pytest.mark.parametrize("name", hf.SCHEDULER_NAMES)
def test_get_scheduler_builds_each_transformers_record(name):
    record = schedule_record(f"transformers/{name}")
    kwargs = dict(record.example)
    built = hf.get_scheduler(
        name, kwargs.pop("learning_rate"), kwargs.pop("num_warmup_steps", None),
        kwargs.pop("num_training_steps", None), kwargs,
    )
    if record.loss_driven:
        assert type(built.init(jnp.zeros(1))) is type(record.build().init(jnp.zeros(1)))
        return
    counts = jnp.arange(45)
    np.testing.assert_array_equal(jax.vmap(built)(counts), jax.vmap(record.schedule())(counts))


def test_loss_driven_records_refuse_to_be_a_function_of_the_count():
    loss_driven = [record.name for record in SCHEDULES if record.loss_driven]
    assert loss_driven == ["transformers/greedy", "pytorch/ReduceLROnPlateau"]
    with pytest.raises(TypeError, match="is loss-driven"):
        schedule_record("transformers/greedy").schedule()


def test_examples_scale_to_any_length():
    # The demo's plot builds every example for its own t_total and warmup.
    for t_total, warmup_steps in ((1, 0), (2, 1), (1000, 100), (10, 9)):
        for record in SCHEDULES:
            record.build(1.0, t_total, warmup_steps)


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_every_schedule_takes_an_array_of_counts_as_optax_schedules_do(x64):
    """``schedule(jnp.arange(n))`` (to plot or log a schedule) gives what vmap gives, also for the
    schedules that loop over the counts (MultiplicativeLR, CosineAnnealingLR's float64 replay)."""
    counts = jnp.arange(24).reshape(2, 12)
    with jax.enable_x64(x64):
        for record in SCHEDULES:
            if record.loss_driven:
                continue
            schedule = record.schedule()
            got = np.asarray(schedule(counts))
            assert got.shape == counts.shape, record.name
            for row, column in ((0, 0), (0, 7), (1, 11)):  # the first, a middle and the last
                want = schedule(counts[row, column])
                np.testing.assert_allclose(got[row, column], want, rtol=1e-6, err_msg=record.name)
