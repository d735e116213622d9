"""Pieces every schedule module shares: the default float dtype and the linear warmup."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

Array = Any


def as_float(x: Array) -> Array:
    """``x`` in the default float dtype: float32, or float64 under ``jax.enable_x64(True)``.

    Returns:
      A jnp array.
    """
    return jnp.asarray(x, dtype=float)


def linear_warmup(progress: Array, length: float) -> Array:
    """``progress / length``: the multiplier of a linear warmup from 0 (1 at ``progress == length``).

    ``progress`` is an update count (transformers, the tutorial: ``length = max(1, w)``) or a
    fraction of training (BertAdam: ``x / warmup``). It is exactly 0 at ``progress == 0``, also
    when ``length`` is too small for float32 and rounds to 0 (that would give 0 / 0); only
    ``progress == 0`` is in warmup then. Where it is used, the caller decides on the integer
    count whether the update is in warmup.

    Returns:
      The multiplier in the default float dtype.

    Example:
      >>> from optax_bertadam.schedules._common import linear_warmup
      >>> [float(linear_warmup(k, 4)) for k in range(5)]
      [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    progress = as_float(progress)
    return jnp.where(progress == 0, jnp.zeros_like(progress), progress / length)
