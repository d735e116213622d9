"""Every schedule record with a PyTorch counterpart matches it, through the one comparator.

For each record of :data:`optax_bertadam.schedules.registry.SCHEDULES` the example (peak 0.01,
warmup 6 of 30 updates) runs at counts ``0 .. 44`` (through warmup, decay and past the end)
under its counterpart, built from the record by :mod:`parity_tests.schedule_twins`, and
through ``jax.jit(jax.vmap)`` in float32 (x64 off) and float64 (``jax.enable_x64(True)``).
Loss-driven records are driven by the same scripted losses on both sides.

Error measure: ``max_k |optax_k - torch_k| / max_k |torch_k|`` (relative to the peak rate).
Tolerances: 1e-6 in float32, 1e-12 in float64 (``harness.LR_TOL``). The family files
(``test_schedules_*.py``) cover each schedule over many more arguments.
"""

from __future__ import annotations

import pytest

from optax_bertadam.schedules.registry import EXAMPLE_T_TOTAL, SCHEDULES, ScheduleRecord
from parity_tests import harness, schedule_twins

NUM_UPDATES = EXAMPLE_T_TOTAL + EXAMPLE_T_TOTAL // 2
WITH_COUNTERPART = [record for record in SCHEDULES if schedule_twins.counterpart_path(record) is not None]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("record", WITH_COUNTERPART, ids=lambda record: record.name)
def test_every_schedule_matches_its_counterpart(record: ScheduleRecord, dtype):
    if record.loss_driven:
        values = schedule_twins.LOSS_VALUES
        expected = schedule_twins.torch_rates(record, len(values) + 1, values=values)
        assert len(set(expected.tolist())) >= 3, "the losses should change the rate twice"
        harness.check_schedule(record.name, record.build, expected, dtype, values=values)
    else:
        expected = schedule_twins.torch_rates(record, NUM_UPDATES)
        # One compile per case: the jitted scalar path is the family files' job.
        harness.check_schedule(record.name, record.schedule, expected, dtype, jit_scalar=False)


def test_every_record_has_a_counterpart():
    # Every schedule of the package reproduces a PyTorch or transformers one.
    assert [record.name for record in SCHEDULES if schedule_twins.counterpart_path(record) is None] == []
