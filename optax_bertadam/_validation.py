"""Argument checks shared by every optimizer and schedule.

Each check raises when the optimizer or schedule is *built*, so that a bad hyperparameter never
surfaces as a trace from inside XLA. Messages follow one pattern: the argument's name, the value
it was given, and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np


def _describe(value: Any) -> str:
    return repr(value)


def is_traced(value: Any) -> bool:
    """True for a value known only when the update runs (a tracer, e.g. from
    ``optax.inject_hyperparams`` inside ``jax.jit``): it cannot be checked when the optimizer is
    built, and nothing may branch on it in Python."""
    return isinstance(value, jax.core.Tracer)


def is_concrete_scalar(value: Any) -> bool:
    """A Python number or a 0-d concrete array: a value that can be checked and branched on."""
    return not is_traced(value) and np.ndim(value) == 0


def check_real(name: str, value: Any) -> Any:
    """Return ``value`` as a Python float; refuse bools, non-numbers and NaN.

    A traced scalar (``optax.inject_hyperparams`` under ``jax.jit``) is returned unchanged: its
    value is checked when it is concrete, i.e. when the optimizer is built or initialised.
    """
    if is_traced(value):
        if np.ndim(value) != 0 or not jax.numpy.issubdtype(value.dtype, jax.numpy.number):
            raise TypeError(
                f"{name}={_describe(value)} is invalid: expected a real scalar "
                f"(got a traced array of shape {np.shape(value)} and dtype {value.dtype})"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        # 0-d numpy / jax arrays are accepted; strings and other objects are not.
        try:
            if isinstance(value, bool) or getattr(value, "ndim", None) != 0:
                raise TypeError
            converted = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"{name}={_describe(value)} is invalid: expected a real number "
                f"(got {type(value).__name__})"
            ) from None
    else:
        converted = float(value)
    if math.isnan(converted):
        raise ValueError(f"{name}={_describe(value)} is invalid: expected a number, not NaN")
    return converted


def check_finite(name: str, value: Any) -> Any:
    converted = check_real(name, value)
    if is_traced(converted):
        return converted
    if not math.isfinite(converted):
        raise ValueError(f"{name}={_describe(value)} is invalid: expected a finite number")
    return converted


def check_range(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    allowed_extra: Iterable[float] = (),
) -> float:
    """Check ``low <(=) value <(=) high`` (or ``value in allowed_extra``) and return it as a float.

    The message states the interval in mathematical notation, e.g. ``[0, 1)``.
    """
    converted = check_real(name, value)
    if is_traced(converted):
        return converted
    extras = tuple(allowed_extra)
    if converted in extras:
        return converted
    ok = True
    if low is not None:
        ok &= converted >= low if low_inclusive else converted > low
    if high is not None:
        ok &= converted <= high if high_inclusive else converted < high
    if not ok:
        left = ("[" if low_inclusive else "(") + ("-inf" if low is None else f"{low:g}")
        right = ("inf" if high is None else f"{high:g}") + ("]" if high_inclusive else ")")
        allowed = f"a value in {left}, {right}"
        if extras:
            allowed += " or " + " or ".join(f"{e:g}" for e in extras)
        raise ValueError(f"{name}={_describe(value)} is invalid: expected {allowed}")
    return converted


def check_int(name: str, value: Any, *, low: int | None = None, allowed_extra=()) -> int:
    """Check that ``value`` is an integer (bools refused) ``>= low`` or in ``allowed_extra``.

    Integers here decide the structure of the computation (a number of steps, a boundary), so a
    traced value is refused with a pointer to ``static_args``; a concrete 0-d array is accepted.
    """
    check_static(name, value)
    if isinstance(value, (np.ndarray, jax.Array)) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(
                f"{name}={_describe(value)} is invalid: expected an integer "
                f"(got {type(value).__name__})"
            )
    value = int(value)
    if value in tuple(allowed_extra):
        return value
    if low is not None and value < low:
        extra = "".join(f" or {e}" for e in allowed_extra)
        raise ValueError(f"{name}={value!r} is invalid: expected an integer >= {low}{extra}")
    return value


def check_static(name: str, value: Any) -> None:
    """Refuse a traced value for an argument that decides the structure of the computation."""
    if is_traced(value):
        raise TypeError(
            f"{name}={_describe(value)} is invalid: {name} decides the structure of the "
            f"computation and must be a concrete value; with optax.inject_hyperparams pass "
            f"static_args=({name!r},)"
        )


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{name}={_describe(value)} is invalid: expected one of {', '.join(map(repr, choices))}"
        )
    return value


def check_callable_or_real(name: str, value: Any) -> Callable[..., Any] | float:
    if callable(value):
        return value
    return check_real(name, value)


def listing(items: Iterable[Any], limit: int | None = 20, separator: str = ", ") -> str:
    """``items`` joined for an error message, the first ``limit`` of them and a count of the rest."""
    items = [str(item) for item in items]
    if limit is None or len(items) <= limit:
        return separator.join(items)
    return separator.join(items[:limit]) + f"{separator}... ({len(items) - limit} more)"


def check_learning_rate(name: str, value: Any) -> float:
    """A finite rate ``>= 0`` (a schedule's base rate)."""
    check_finite(name, value)
    return check_range(name, value, low=0.0)


def check_learning_rate_or_schedule(name: str, value: Any) -> Any:
    """A rate ``>= 0`` (a float, or an array from ``optax.inject_hyperparams``) or a schedule."""
    if callable(value):
        return value
    return check_range(name, value, low=0.0)


def check_jnp_function(name: str, function: Any, argument_dtype: Any = int) -> Callable:
    """Trace ``function`` of the update count once now, so that one that does not trace fails when built."""
    import jax.numpy as jnp

    if not callable(function):
        raise TypeError(f"{name}={function!r} is invalid: expected a function of the update count")
    try:
        result = jax.eval_shape(
            function, jax.ShapeDtypeStruct((), jnp.asarray(0, dtype=argument_dtype).dtype)
        )
    except Exception as error:  # any failure to trace is the caller's function's fault
        raise TypeError(
            f"{name}={function!r} is invalid: expected a function written with jax.numpy "
            f"(jnp.where for branches, not `if`); tracing it failed with {type(error).__name__}: {error}"
        ) from error
    if getattr(result, "shape", None) != ():
        raise ValueError(
            f"{name}={function!r} is invalid: expected a function returning a scalar, got shape "
            f"{getattr(result, 'shape', result)!r}"
        )
    return function


class OptaxBertadamWarning(UserWarning):
    """The base class of this package's warnings: ``warnings.filterwarnings("ignore",
    category=ob.OptaxBertadamWarning)`` silences them all."""


class UncheckedReproductionWarning(OptaxBertadamWarning):
    """A reproduction of a live PyTorch object could not be checked against that object."""
