"""One harness for every parity test: identical gradients into optax and into PyTorch.

The parameter tree looks like a tiny BERT (embeddings, a LayerNorm, attention, feed-forward,
pooler and a 0-d scalar), named the PyTorch way (``encoder.layer.0.attention.self.query.weight``).
Gradients are drawn per step and per tensor with magnitudes spread over three decades, so that
clipping sometimes engages and sometimes does not; one step has an all-zero gradient tensor.

For each step the harness records, per tensor, ``max|p_jax - p_torch|`` divided by the tensor's
largest magnitude over the run (``max|p_torch|``), and the
learning rate each side reports for the next update, and returns the worst figures.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import optax_bertadam as ob

PARAM_SHAPES: dict[str, tuple[int, ...]] = {
    "embeddings.word_embeddings.weight": (40, 8),
    "embeddings.LayerNorm.weight": (8,),
    "embeddings.LayerNorm.bias": (8,),
    "encoder.layer.0.attention.self.query.weight": (8, 8),
    "encoder.layer.0.attention.self.query.bias": (8,),
    "encoder.layer.0.attention.output.LayerNorm.weight": (8,),
    "encoder.layer.0.attention.output.LayerNorm.bias": (8,),
    "encoder.layer.0.intermediate.dense.weight": (16, 8),
    "encoder.layer.0.intermediate.dense.bias": (16,),
    "pooler.dense.weight": (8, 8),
    "cls.temperature": (),
}
TORCH_NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")
DTYPES = {"float32": (jnp.float32, torch.float32), "float64": (jnp.float64, torch.float64)}


# The project's bounds: float32 parameters within 2e-5 of each tensor's largest magnitude and rates
# within 1e-6 of the peak rate; float64 within 1e-12 for both. They are ceilings: no test passes
# above them.
PARAM_TOL = {"float32": 2e-5, "float64": 1e-12}
LR_TOL = {"float32": 1e-6, "float64": 1e-12}

# Regression bounds, under the ceilings: a family (a test file of parity_tests/) is held to
# REGRESSION_FACTOR times the worst figure it measured on main, recorded below by precision and
# kind (parameters, rates), so that a change that makes a family's numbers worse fails far below
# the ceiling. Computing Adam's 1 - b2**t in float32 instead of one_minus_power's double-precision
# path raises gradient accumulation's float32 worst 3.7x (7.6e-7 -> 2.8e-6): it fails here, while
# the 2e-5 ceiling let it through. float64 figures are a few double ulps, whose count may move
# with the CPU or the XLA version: a wider factor. A test measuring exactly 0 may still round.
REGRESSION_FACTOR = {"float32": 2.0, "float64": 4.0}
REGRESSION_FLOOR = {"float32": 1e-7, "float64": 1e-15}
# family -> {(precision, kind): worst figure measured on main (2-core CPU, HYPOTHESIS_PROFILE=ci)}.
# A family not listed is held to its ceilings only; add it from a run with --parity-report.
MEASURED_WORST: dict[str, dict[tuple[str, str], float]] = {
    "accumulation": {("float32", "param"): 7.6e-7, ("float32", "rate"): 1.1e-7,
                     ("float64", "param"): 1.5e-15, ("float64", "rate"): 2.5e-16},
    "adamw": {("float32", "param"): 3.4e-6, ("float32", "rate"): 6.1e-8,
              ("float64", "param"): 2.6e-15, ("float64", "rate"): 1.8e-16},
    "published_bertadam": {("float32", "param"): 4.0e-7, ("float32", "rate"): 4.0e-7,
                           ("float64", "param"): 6.1e-16, ("float64", "rate"): 4.9e-15},
    # CI draws; 1800 examples of the thorough profile: float32 3.9e-7, float64 4.4e-16.
    "schedules_bert": {("float32", "rate"): 2.6e-7, ("float64", "rate"): 4.6e-16},
    "tf_optimizers": {("float32", "param"): 1.2e-6, ("float32", "rate"): 1.1e-7,
                      ("float64", "param"): 2.4e-15, ("float64", "rate"): 3.6e-16},
    # Measured on main by the lead (HYPOTHESIS_PROFILE=ci, --parity-report), 2026-11-25.
    "adafactor": {("float32", "param"): 1.2e-6, ("float32", "rate"): 2.2e-7,
                  ("float64", "param"): 2.0e-15, ("float64", "rate"): 3.0e-16},
    "bertadam": {("float32", "param"): 4.4e-7, ("float32", "rate"): 1.6e-7,
                 ("float64", "param"): 8.1e-16, ("float64", "rate"): 3.5e-16},
    "from_torch": {("float32", "param"): 4.2e-7, ("float32", "rate"): 2.7e-7,
                   ("float64", "param"): 9.9e-16, ("float64", "rate"): 2.8e-16},
    # Measured when the family was added (2026-11-25, second session): ReduceLROnPlateau/GreedyLR.
    "from_torch_loss_driven": {("float32", "param"): 9.7e-7, ("float32", "rate"): 1.3e-7,
                               ("float64", "param"): 1.4e-15, ("float64", "rate"): 2.2e-16},
    "from_torch_registry": {("float32", "rate"): 3.0e-7, ("float64", "rate"): 4.4e-16},
    "param_groups": {("float32", "param"): 4.4e-7, ("float32", "rate"): 9.4e-8,
                     ("float64", "param"): 1.7e-15, ("float64", "rate"): 1.8e-16},
    "registry": {("float32", "param"): 1.3e-6, ("float64", "param"): 2.5e-15},
    "schedule_registry_parity": {("float32", "rate"): 3.4e-7, ("float64", "rate"): 4.4e-16},
    # Measured when the family was added (--parity-report): both LAMBs and from_torch(timm Lamb).
    "lamb": {("float32", "param"): 2.1e-7, ("float32", "rate"): 5.8e-8,
             ("float64", "param"): 9.3e-16, ("float64", "rate"): 1.7e-16},
    "schedules_classic": {("float32", "rate"): 2.6e-7, ("float64", "rate"): 6.4e-16},
    "schedules_pytorch": {("float32", "rate"): 6.3e-7,
                          ("float64", "param"): 1.4e-15, ("float64", "rate"): 4.3e-14},
    "schedules_transformers": {("float32", "rate"): 4.3e-7, ("float64", "rate"): 2.3e-15},
    # Measured when the family was added (2026-12-07, --parity-report, 2-core CPU).
    "deepspeed_engine": {("float32", "param"): 5.3e-7, ("float32", "rate"): 7.7e-8},
    "schedules_deepspeed": {("float32", "rate"): 1.2e-7, ("float64", "rate"): 4.3e-16},
    # The compiled FusedAdam/DeepSpeedCPUAdam (2026-12-08; AVX kernels, float32 only).
    "deepspeed_compiled": {("float32", "param"): 3.5e-6, ("float32", "rate"): 7.7e-8},
}

# Every figure a parity test measures, for `python -m optax_bertadam parity` (see conftest.py).
MEASURED: list[dict[str, Any]] = []


def regression_bound(test: str, metric: str, tolerance: float) -> float | None:
    """The regression bound of a figure, or None (a family or kind without a recorded worst).

    ``test`` is pytest's id (``parity_tests/test_adamw.py::...``): its file names the family. The
    precision is that of the ceiling (float64 ceilings are below 1e-9), the kind ``param`` when the
    metric names parameters, else ``rate``. Figures in ulps state their own tight bound.
    """
    family = os.path.basename(test.split("::")[0]).removesuffix(".py")
    if not family.startswith("test_") or "ulp" in metric:
        return None
    worst = MEASURED_WORST.get(family.removeprefix("test_"), {})
    precision = "float64" if tolerance <= 1e-9 else "float32"
    kind = "param" if "param" in metric else "rate"
    if (precision, kind) not in worst:
        return None
    return max(REGRESSION_FACTOR[precision] * worst[precision, kind], REGRESSION_FLOOR[precision])


def assert_within(metric: str, value: float, tolerance: float) -> None:
    """Record a measured figure; fail if it is above its tolerance (a ceiling), or above its
    family's regression bound (:data:`MEASURED_WORST`)."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    bound = regression_bound(test, metric, tolerance)
    MEASURED.append({"test": test, "metric": metric, "value": float(value),
                     "tolerance": float(tolerance), "regression_bound": bound})
    print(f"{metric}: {value:.3e} (tolerance {tolerance:.0e})")
    assert value <= tolerance, f"{metric} = {value:.3e} is above its tolerance {tolerance:.0e}"
    assert bound is None or value <= bound, (
        f"{metric} = {value:.3e} is above its family's regression bound {bound:.2e} (the worst "
        "measured on main times REGRESSION_FACTOR, harness.MEASURED_WORST): the numbers got worse"
    )


def check_result(result: ParityResult, dtype: str) -> None:
    """Assert a :func:`run_parity` result is within the project's bounds for ``dtype`` and its
    family's regression bounds."""
    assert_within("param error", result.worst_param_error, PARAM_TOL[dtype])
    assert_within("lr error", result.worst_lr_error, LR_TOL[dtype])


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{'a.b': x}`` -> ``{'a': {'b': x}}``."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def flatten_names(tree: Any) -> list[str]:
    return ob.parameter_names(tree, separator=".")


# A slice of the tiny BERT above (every rank, decayed and no_decay names, the zero gradient of
# step 3), for optimizers whose compiled update is large (Adafactor, MultiSteps).
SMALL_SHAPES = {
    name: PARAM_SHAPES[name]
    for name in (
        "embeddings.word_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.0.attention.self.query.bias",
        "cls.temperature",
    )
}


def linear_warmup_then_decay(learning_rate: float, warmup: int, total: int):
    """One schedule both ways: (optax schedule, LambdaLR multiplier of update k).

    Linear warmup from 0 over ``warmup`` updates, linear decay to 0 at ``total``, 0 after.
    """

    def multiplier(k: int) -> float:
        if k < warmup:
            return k / warmup
        return max(0.0, (total - k) / (total - warmup))

    return ob.get_linear_schedule_with_warmup(learning_rate, warmup, total), multiplier


def initial_params(seed: int = 0, shapes=PARAM_SHAPES) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0.0, 0.5, shape) for name, shape in shapes.items()}


def gradient_stream(steps: int, seed: int = 1, shapes=PARAM_SHAPES) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    stream = []
    for step in range(steps):
        grads = {}
        for index, (name, shape) in enumerate(shapes.items()):
            scale = 10.0 ** rng.uniform(-2.0, 1.0)
            grads[name] = rng.normal(0.0, scale, shape)
            if step == 3 and index == 1:
                grads[name] = np.zeros(shape)
        stream.append(grads)
    return stream


def torch_param_groups(named: dict[str, torch.nn.Parameter], weight_decay: float | None):
    """DeepSpeed's grouping: ``no_decay`` parameters get weight_decay 0 (None: a single group)."""
    if weight_decay is None:
        return list(named.values())
    decay = [p for n, p in named.items() if not any(nd in n for nd in TORCH_NO_DECAY)]
    no_decay = [p for n, p in named.items() if any(nd in n for nd in TORCH_NO_DECAY)]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@dataclasses.dataclass
class TorchSide:
    """A PyTorch optimizer (and optional per-step scheduler) over the harness parameters.

    ``next_lr`` returns the rate the next update will use (None: not compared).
    """

    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    next_lr: Callable[[], float] | None = None

    def step(self, value: float | None = None) -> None:
        """``optimizer.step()``, then ``scheduler.step()`` (``scheduler.step(value)`` if given)."""
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step() if value is None else self.scheduler.step(value)


@dataclasses.dataclass
class ParityResult:
    param_error: np.ndarray  # per step: worst tensor's max|diff| / max|torch|
    worst_tensor: str  # the tensor behind the worst param_error
    lr_error: np.ndarray | None  # per step: |lr_jax - lr_torch| / peak torch lr
    peak_lr: float | None

    @property
    def worst_param_error(self) -> float:
        return float(self.param_error.max())

    @property
    def worst_lr_error(self) -> float:
        return 0.0 if self.lr_error is None else float(self.lr_error.max())


def run_parity(
    make_optax: Callable[[Any], optax.GradientTransformation],
    make_torch: Callable[[dict[str, torch.nn.Parameter]], TorchSide],
    *,
    dtype: str = "float32",
    steps: int = 120,
    seed: int = 0,
    shapes: dict[str, tuple[int, ...]] = PARAM_SHAPES,
    compare_lr: bool = True,
) -> ParityResult:
    """Run both optimizers ``steps`` updates on identical gradients; compare after every update.

    ``make_optax(params)`` returns the transformation (it gets the JAX parameter tree, e.g. to
    build a mask); ``make_torch(named_parameters)`` returns a :class:`TorchSide`.
    """
    jax_dtype, torch_dtype = DTYPES[dtype]
    with jax.enable_x64(dtype == "float64"):
        init = initial_params(seed, shapes)
        grads = gradient_stream(steps, seed + 1, shapes)

        named = {n: torch.nn.Parameter(torch.tensor(v, dtype=torch_dtype)) for n, v in init.items()}
        side = make_torch(named)
        torch_params, torch_lrs = [], []
        for step_grads in grads:
            for name, p in named.items():
                p.grad = torch.tensor(step_grads[name], dtype=torch_dtype)
            side.step()
            torch_params.append({n: p.detach().numpy().copy() for n, p in named.items()})
            if compare_lr and side.next_lr is not None:
                torch_lrs.append(float(side.next_lr()))

        params = nest({n: jnp.asarray(v, dtype=jax_dtype) for n, v in init.items()})
        tx = make_optax(params)
        with_lr = compare_lr and side.next_lr is not None

        # One jitted step driven from Python: compiling one update is much cheaper than a scan.
        @jax.jit
        def step(params, state, step_grads):
            updates, state = tx.update(step_grads, state, params)
            params = optax.apply_updates(params, updates)
            return params, state, ob.get_lr(state) if with_lr else jnp.zeros([])

        state = tx.init(params)
        trajectory, jax_lrs = [], []
        for step_grads in grads:
            # numpy leaves: jit moves them to the device itself, much faster than jnp.asarray each.
            tree = nest({n: np.asarray(g, dtype=jax_dtype) for n, g in step_grads.items()})
            params, state, lr = step(params, state, tree)
            trajectory.append(params)
            jax_lrs.append(lr)
        jax_params = jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(trajectory))
        jax_flat = dict(zip(flatten_names(jax_params), jax.tree.leaves(jax_params), strict=True))
        for name in shapes:
            assert jax_flat[name].dtype == jax_dtype, (name, jax_flat[name].dtype)
        jax_lrs = np.asarray(jax.device_get(jax_lrs), dtype=np.float64)

    per_tensor = {}
    for name in shapes:
        reference = np.stack([p[name] for p in torch_params]).reshape(steps, -1)
        # A tensor's scale is its largest magnitude over the run: a 0-d parameter that passes
        # through zero would otherwise turn a 1e-9 absolute difference into a large ratio.
        scale = max(float(np.max(np.abs(reference))), 1e-30)
        diff = np.max(np.abs(jax_flat[name].reshape(steps, -1) - reference), axis=1)
        per_tensor[name] = diff / scale
    errors = np.stack(list(per_tensor.values()))
    param_error = errors.max(axis=0)
    worst_tensor = list(per_tensor)[int(np.unravel_index(errors.argmax(), errors.shape)[0])]

    lr_error = peak = None
    if with_lr:
        torch_lrs = np.asarray(torch_lrs)
        peak = float(np.max(np.abs(torch_lrs)))
        lr_error = np.abs(jax_lrs - torch_lrs) / max(peak, 1e-30)
    return ParityResult(param_error=param_error, worst_tensor=worst_tensor, lr_error=lr_error, peak_lr=peak)


def check_schedule(
    metric: str,
    build: Callable[[], Any],
    expected: Any,
    dtype: str,
    *,
    counts: Any = None,
    peak: float = 0.0,
    jit_scalar: bool = True,
    values: Any = None,
) -> float:
    """Compare an optax schedule with the rates PyTorch ran at: the one schedule comparator.

    ``build()`` is called under ``dtype``'s x64 setting (float32: x64 off; float64: on), so that
    the schedule computes in that dtype. Its rates are taken at ``counts`` (default ``0 .. n-1``
    for ``n = len(expected)``, as int32 like optax's count) through ``jax.jit(jax.vmap)`` and,
    with ``jit_scalar``, also as a jitted scalar call at up to 25 of them, ends included. With
    ``values`` (a loss-driven transform, e.g. ``reduce_lr_on_plateau``), ``build()`` returns the
    transform instead; it is driven by one ``update(..., value=v)`` per value and its rates are
    ``get_lr`` of the state before each update and after the last (``len(values) + 1``, as
    ``param_groups[0]['lr']`` read before each ``optimizer.step(); scheduler.step(v)`` and after
    the last).

    The error is ``max_k |optax_k - torch_k| / max(max_k |torch_k|, peak)``: relative to the peak
    rate (``peak`` raises the scale to a base rate the schedule may never reach). It is recorded
    and must be within :data:`LR_TOL` (float32 1e-6, float64 1e-12).

    Returns:
      The measured error.

    Example:
      >>> check_schedule("constant", lambda: lambda count: 0.1 + 0.0 * count, [0.1] * 4, "float32")
      constant: 0.000e+00 (tolerance 1e-06)
      0.0
    """
    expected = np.asarray(expected, dtype=np.float64)
    with jax.enable_x64(dtype == "float64"):
        if values is not None:
            got = np.asarray(_loss_driven_rates(build(), values), dtype=np.float64)
            scalars = None
        else:
            schedule = build()
            counts = jnp.arange(len(expected), dtype=jnp.int32) if counts is None else (
                jnp.asarray(counts, dtype=jnp.int32))
            vectorised = jax.jit(jax.vmap(schedule))(counts)
            assert vectorised.dtype == jnp.dtype(dtype), vectorised.dtype
            got = np.asarray(vectorised, dtype=np.float64)
            scalars = None
            if jit_scalar:
                jitted = jax.jit(schedule)
                picked = np.unique(np.linspace(0, len(expected) - 1, 25).astype(np.int64))
                scalars = (picked, np.array([float(jitted(counts[i])) for i in picked]))
    scale = max(float(np.max(np.abs(expected))), peak, 1e-30)
    error = float(np.max(np.abs(got - expected))) / scale
    if scalars is not None:
        picked, at_picked = scalars
        error = max(error, float(np.max(np.abs(at_picked - expected[picked]))) / scale)
    assert_within(metric, error, LR_TOL[dtype])
    return error


def _loss_driven_rates(tx: optax.GradientTransformationExtraArgs, values: Any) -> jax.Array:
    """``get_lr`` before each ``update(zeros, state, value=v)`` and after the last."""
    values = jnp.asarray(values, dtype=float)
    updates = jnp.zeros((), dtype=values.dtype)

    def step(state, value):
        _, state = tx.update(updates, state, value=value)
        return state, ob.get_lr(state)

    state = tx.init(updates)
    _, after = jax.lax.scan(jax.jit(step), state, values)
    return jnp.concatenate([ob.get_lr(state)[None], after])
