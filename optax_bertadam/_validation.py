"""Argument checks shared by every optimizer and schedule.

Each check raises when the optimizer or schedule is *built*, so that a bad hyperparameter never
surfaces as a trace from inside XLA. Messages follow one pattern: the argument's name, the value
it was given, and what is allowed.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import jax
import numpy as np
import optax


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



# ---------------------------------------------------------------------------------------------
# PyTorch habits: a keyword argument PyTorch (or transformers) spells differently, parameters
# handed to the factory or to ``init`` as torch objects. Each gets a one-line answer saying what
# to write instead, rather than Python's bare "unexpected keyword argument".
# ---------------------------------------------------------------------------------------------

# PyTorch / transformers name -> this package's names for the same thing, in order of preference;
# the first one the factory has is suggested.
TORCH_ARGUMENT_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "lr": ("learning_rate", "base_lr", "init_lr", "max_lr"),
    "eps": ("e", "adam_epsilon"),
    "e": ("eps", "adam_epsilon"),
    "beta1": ("b1", "adam_beta1"),
    "beta2": ("b2", "adam_beta2"),
    "weight_decay_mask": ("mask",),
    "weight_decay": ("weight_decay_rate",),
    "num_training_steps": ("t_total", "num_train_steps", "total_steps", "max_steps", "total_iters"),
    "num_train_steps": ("t_total", "num_training_steps", "total_steps", "max_steps"),
    "t_total": ("num_training_steps", "num_train_steps", "total_steps", "max_steps"),
    "warmup_steps": ("num_warmup_steps",),
    "num_warmup_steps": ("warmup_steps",),
    "max_norm": ("max_grad_norm",),
    "adamw_mode": ("adam_w_mode",),  # DeepSpeedCPUAdam's spelling of FusedAdam's adam_w_mode
})

PARAMS_HINT = (
    "optax transformations are built from hyperparameters alone: pass the parameters to "
    "tx.init(params) (from a torch model: params = ob.params_from_torch(model.named_parameters()))"
)


def _suggest(factory_name: str, unknown: str, value: Any, accepted: set[str]) -> str | None:
    if unknown in ("params", "named_parameters", "model"):
        return f"{factory_name}({unknown}=...) is not an argument: {PARAMS_HINT}"
    if unknown == "betas":
        for first, second in (("b1", "b2"), ("adam_beta1", "adam_beta2")):
            if first in accepted and second in accepted:
                try:
                    b1, b2 = value
                    use = f"{first}={b1!r}, {second}={b2!r}"
                except (TypeError, ValueError):
                    use = f"{first}=..., {second}=..."
                return f"{factory_name}(betas=...) is PyTorch's spelling: use {use}"
        if "beta1" in accepted:
            return f"{factory_name}(betas=...) is PyTorch's spelling: use beta1="
        return None
    for candidate in TORCH_ARGUMENT_NAMES.get(unknown, ()):
        if candidate in accepted:
            return f"{factory_name}({unknown}=...) is not an argument here: use {candidate}={value!r}"
    return None


def looks_like_torch(value: Any) -> bool:
    """A torch object (tensor, parameter, module), judged by its type's module: never imports torch."""
    return type(value).__module__.split(".")[0] == "torch"


def _describes_parameters(value: Any) -> bool:
    # model.parameters() / named_parameters() (generators), a torch tensor or module, a list of
    # tensors or of PyTorch parameter groups: what PyTorch optimizers take first.
    if isinstance(value, Iterator) or looks_like_torch(value):
        return True
    if isinstance(value, (list, tuple)) and value:
        first = value[0]
        return looks_like_torch(first) or (isinstance(first, dict) and "params" in first)
    return False


def check_params_are_arrays(params: Any, argname: str = "params") -> None:
    """Refuse torch tensors or a parameter generator where a JAX pytree of arrays is expected.

    Without this, ``tx.init(model.parameters())`` or a tree of torch tensors fails deep inside
    jax (``Cannot interpret 'torch.float32' as a data type``).
    """
    if isinstance(params, Iterator):
        raise TypeError(
            f"{argname} is a {type(params).__name__} (e.g. model.parameters()): expected a pytree "
            "of JAX arrays; convert with ob.params_from_torch(model.named_parameters())"
        )
    paths_and_leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    for path, leaf in paths_and_leaves:
        if looks_like_torch(leaf):
            where = jax.tree_util.keystr(path) or "the root"
            raise TypeError(
                f"{argname} holds a {type(leaf).__module__}.{type(leaf).__name__} at {where}: "
                "expected JAX arrays; convert with ob.params_from_torch(model.named_parameters())"
            )


def _with_checked_init(tx: Any) -> Any:
    init = tx.init

    @functools.wraps(init)
    def checked_init(params):
        check_params_are_arrays(params)
        return init(params)

    return tx._replace(init=checked_init)


def explains_torch_habits(factory: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a public factory: PyTorch argument names and torch parameters get one-line answers.

    * a keyword the factory lacks but PyTorch/transformers uses (``lr``, ``betas``, ``eps`` for
      BertAdam's ``e``, ...) raises ``TypeError`` saying what to write (``learning_rate=2e-05``);
    * parameters passed to the factory (``adamw(model.parameters(), ...)``) raise ``TypeError``
      saying they go to ``tx.init``;
    * a returned transformation's ``init`` refuses a generator or torch tensors with a pointer
      to :func:`optax_bertadam.params_from_torch`.

    The signature (``inspect.signature``, so ``optax.inject_hyperparams``) and docstring are the
    factory's; a correct call costs one set difference.
    """
    signature = inspect.signature(factory)
    accepted = set(signature.parameters)
    takes_any_keyword = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    )
    name = factory.__name__

    @functools.wraps(factory)
    def wrapper(*args, **kwargs):
        if args and _describes_parameters(args[0]):  # before the names: lr= often comes with it
            raise TypeError(
                f"{name}'s first argument is {type(args[0]).__name__}, the parameters as a "
                f"PyTorch optimizer takes them: {PARAMS_HINT}"
            )
        if not takes_any_keyword:
            for unknown in kwargs.keys() - accepted:
                hint = _suggest(name, unknown, kwargs[unknown], accepted)
                if hint is not None:
                    raise TypeError(hint)
        result = factory(*args, **kwargs)
        if isinstance(result, optax.GradientTransformation):
            return _with_checked_init(result)
        if isinstance(result, tuple) and not hasattr(result, "_fields"):
            return type(result)(
                _with_checked_init(r) if isinstance(r, optax.GradientTransformation) else r
                for r in result
            )
        return result

    return wrapper


# ---------------------------------------------------------------------------------------------
# Warnings: silent footguns reported when an optimizer or schedule is built (never per step),
# in categories a user can filter, e.g. warnings.simplefilter("ignore", ob.OptaxBertAdamWarning).
# ---------------------------------------------------------------------------------------------


class OptaxBertAdamWarning(UserWarning):
    """Base class of this package's warnings: a setting that runs, but probably not as meant.

    Raised once when the optimizer or schedule is built, never per step. Filter them all, or one
    subclass, with Python's ``warnings``:

    >>> import warnings, optax_bertadam as ob
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", ob.OptaxBertAdamWarning)
    ...     tx = ob.bertadam(1e-3, warmup=0.1)  # no t_total: warmup ignored, warning silenced
    """


class WarmupIgnoredWarning(OptaxBertAdamWarning):
    """``warmup`` given without ``t_total``: BertAdam then runs at a constant rate (as upstream).

    >>> import warnings, optax_bertadam as ob
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     tx = ob.bertadam(1e-3, warmup=0.1)
    >>> caught[0].category.__name__
    'WarmupIgnoredWarning'
    """


class NegativeLearningRateWarning(OptaxBertAdamWarning):
    """``warmup_linear`` goes below zero past ``t_total`` (as upstream) unless clamped.

    >>> import warnings, optax_bertadam as ob
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     tx = ob.bertadam(1e-3, warmup=0.1, t_total=100)
    ...     quiet = ob.bertadam(1e-3, warmup=0.1, t_total=100, clamp_lr_at_zero=True)
    >>> [w.category.__name__ for w in caught]
    ['NegativeLearningRateWarning']
    """


_PACKAGE_DIR = __file__.rsplit("/", 1)[0].rsplit("\\", 1)[0]


def warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the user's line: the first caller outside this package."""
    import sys
    import warnings

    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)


def import_torch(feature: str) -> Any:
    """``import torch`` for ``feature``, or a one-line ``ModuleNotFoundError`` saying how to get it.

    The package never imports torch at import time; the functions that talk to PyTorch import it
    through this when called.
    """
    try:
        import torch
    except ImportError as err:
        raise ModuleNotFoundError(
            f"{feature} needs PyTorch, which is not installed: pip install optax-bertadam[torch]",
            name="torch",
        ) from err
    return torch


class UncheckedReproductionWarning(OptaxBertAdamWarning):
    """A reproduction of a live PyTorch object could not be checked against that object.

    :func:`optax_bertadam.from_torch` steps a copy of the live scheduler and compares; a scheduler
    that cannot be copied (it holds a lock, a file, ...) is read but not checked, and says so.

    >>> import threading, warnings, torch, jax.numpy as jnp, optax_bertadam as ob
    >>> model = torch.nn.Linear(2, 1)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    >>> scheduler.lock = threading.Lock()  # cannot be copied
    >>> params = {"weight": jnp.zeros((1, 2)), "bias": jnp.zeros(1)}
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     tx = ob.from_torch(optimizer, scheduler, named_parameters=model.named_parameters(),
    ...                        params=params)
    >>> caught[0].category.__name__
    'UncheckedReproductionWarning'
    """
