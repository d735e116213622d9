"""``ob.fused_adam`` (DeepSpeed's ``FusedAdam``/``DeepSpeedCPUAdam``) as a public optimizer.

Its parity (float32 and float64 against ``torch_ref.FusedAdam``, state migration, checkpoints)
runs over its registry entry in ``parity_tests/test_registry.py``; the twin is anchored to the
real ``FusedAdam`` in ``parity_tests/test_deepspeed_compiled.py``. Here: what is refused when it
is built, the PyTorch spellings, and the one object behind both import paths.
"""

from __future__ import annotations

import pytest

import optax_bertadam as ob
from optax_bertadam import deepspeed


def test_one_object_under_both_names():
    # The catalogue's DeepSpeed records and from_deepspeed name it as deepspeed.fused_adam.
    assert deepspeed.fused_adam is ob.fused_adam is ob.optimizers.fused_adam
    assert "fused_adam" in ob.__all__


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(learning_rate=-1e-3), ValueError,
         r"learning_rate=-0\.001 is invalid: expected a value in \[0, inf\]"),
        (dict(learning_rate="1e-3"), TypeError, "learning_rate='1e-3' is invalid: expected a real number"),
        (dict(b1=1.0), ValueError, r"b1=1\.0 is invalid: expected a value in \[0, 1\)"),
        (dict(b2=-0.5), ValueError, r"b2=-0\.5 is invalid: expected a value in \[0, 1\)"),
        (dict(eps=-1e-8), ValueError, r"eps=-1e-08 is invalid: expected a value in \[0, inf\]"),
        (dict(eps=float("nan")), ValueError, "eps=nan is invalid"),
        # The kernels ignore a negative weight_decay (they decay only when it is > 0).
        (dict(weight_decay=-0.01), ValueError, r"weight_decay=-0\.01 is invalid"),
        (dict(bias_correction=1), TypeError, "bias_correction=1 is invalid: expected True or False"),
        (dict(adam_w_mode="no"), TypeError, "adam_w_mode='no' is invalid: expected True or False"),
    ],
)
def test_argument_errors_when_built(kwargs, error, match):
    with pytest.raises(error, match=match):
        ob.fused_adam(**{"learning_rate": 1e-3, **kwargs})


@pytest.mark.parametrize(
    "kwargs, fix",
    [(dict(lr=1e-3), "use learning_rate=0.001"),
     (dict(learning_rate=1e-3, betas=(0.8, 0.9)), "use b1=0.8, b2=0.9"),
     (dict(learning_rate=1e-3, adamw_mode=False), "use adam_w_mode=False")],
)
def test_pytorch_spellings_get_what_to_write(kwargs, fix):
    with pytest.raises(TypeError, match=fix):
        ob.fused_adam(**kwargs)
