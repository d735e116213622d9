"""``from_deepspeed``: the optax transformation doing what a DeepSpeed engine does per micro-batch.

A DeepSpeed configuration (a JSON file, a dict, or a live ``DeepSpeedEngine``) is read into the
package's own pieces: the optimizer of its ``optimizer`` block per parameter group, the schedule
of its ``scheduler`` block (:mod:`optax_bertadam.schedules.deepspeed`), the global-norm clipping
of ``gradient_clipping``, the fp16/bf16 loss scaling (:func:`optax_bertadam.deepspeed_loss_scale`)
and the gradient accumulation of ``gradient_accumulation_steps``. Nothing here imports
``deepspeed`` or ``torch``: a live engine is read through its attributes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_bertadam import _validation, masks, optimizers, transforms
from optax_bertadam.mixed_precision import deepspeed_loss_scale
from optax_bertadam.param_groups import param_groups
from optax_bertadam.schedules import deepspeed as ds_schedules
from optax_bertadam.schedules.pytorch import CycleSchedules

PyTree = Any

#: Top-level keys that change no number of the update (logging, profiling, checkpoint I/O,
#: communication and memory layout of a single data-parallel rank); accepted and ignored.
NO_NUMBER_KEYS = frozenset({
    "steps_per_print", "wall_clock_breakdown", "memory_breakdown", "dump_state", "tensorboard",
    "wandb", "csv_monitor", "comet", "monitor_config", "flops_profiler", "comms_logger",
    "checkpoint", "activation_checkpointing", "aio", "zero_allow_untested_optimizer",
    "zero_force_ds_cpu_optimizer", "dataloader_drop_last", "autotuning", "timers",
    "elasticity_enabled", "sparse_gradients", "prescale_gradients", "gradient_predivide_factor",
    "communication_data_type", "seq_parallel_communication_data_type", "disable_allgather",
    "allreduce_always_fp32", "log_level", "use_node_local_storage", "compile", "nebula",
    "train_batch_size", "train_micro_batch_size_per_gpu",
})

#: Top-level keys whose non-trivial setting changes the mathematics and is not reproduced.
REFUSED_KEYS = {
    "amp": "apex AMP",
    "torch_autocast": "torch.autocast mixed precision",
    "compression_training": "compression (quantisation/pruning) training",
    "curriculum_learning": "curriculum learning (changes the batches)",
    "data_efficiency": "data efficiency (changes the batches)",
    "progressive_layer_drop": "progressive layer drop (changes the model)",
    "quantize_training": "quantised training",
    "sparse_attention": "sparse attention (changes the model)",
    "eigenvalue": "eigenvalue-based adaptive steps",
    "hybrid_engine": "the hybrid engine",
    "elasticity": "elastic batch sizes",
    "data_types": "a gradient accumulation dtype other than the model's",
    "pipeline": "pipeline parallelism",
}

SUPPORTED_SCHEDULERS = tuple(ds_schedules.DEEPSPEED_SCHEDULERS)


def _refuse(path: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{path}={value!r} is invalid: {allowed}")


# ------------------------------------------------------------------------------ the config


class _Settings(NamedTuple):
    optimizer_type: str  # the config's optimizer.type
    optimizer_record: Any  # catalogue.OptimizerRecord of the class the engine builds
    configured: Any  # catalogue.ConfiguredOptimizer: that class as the config builds it
    scheduler: str | None
    scheduler_params: dict[str, Any]
    accumulation: int
    clipping: float
    precision: str  # "fp32", "fp16", "bf16"
    loss_scale: dict[str, Any]
    zero_stage: int


def _load(config: Any) -> dict[str, Any]:
    if isinstance(config, (str, os.PathLike)):
        with open(config) as f:
            return json.load(f)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config={config!r} is invalid: expected a path to a DeepSpeed JSON file, a "
                    "dict, or a DeepSpeedEngine")


def _enabled(block: Any) -> bool:
    return isinstance(block, Mapping) and bool(block.get("enabled", False))


def _check_batch(config: Mapping[str, Any], world_size: int) -> int:
    train = config.get("train_batch_size")
    micro = config.get("train_micro_batch_size_per_gpu")
    accumulation = config.get("gradient_accumulation_steps")
    for key, value in (("train_batch_size", train), ("train_micro_batch_size_per_gpu", micro),
                       ("gradient_accumulation_steps", accumulation)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise _refuse(key, value, "expected an integer >= 1")
    if accumulation is None:
        if train is not None and micro is not None:
            accumulation = train // micro // world_size
        else:
            accumulation = 1
    if train is not None and micro is not None and train != micro * accumulation * world_size:
        raise ValueError(
            f"train_batch_size={train} is inconsistent with train_micro_batch_size_per_gpu={micro}"
            f", gradient_accumulation_steps={accumulation} and world_size={world_size}: DeepSpeed "
            "requires train_batch_size = micro batch * accumulation steps * world size"
        )
    return accumulation


def _read_config(config: Mapping[str, Any], world_size: int) -> _Settings:
    for key, value in config.items():
        if key in NO_NUMBER_KEYS or key in ("gradient_accumulation_steps", "gradient_clipping",
                                            "optimizer", "scheduler", "fp16", "bf16", "bfloat16",
                                            "zero_optimization"):
            continue
        if key in REFUSED_KEYS:
            if isinstance(value, Mapping) and "enabled" in value:
                trivial = not value["enabled"]
            elif key == "data_types" and isinstance(value, Mapping):
                trivial = value.get("grad_accum_dtype") is None
            else:
                trivial = value is None or value is False or value == {}
            if not trivial:
                raise _refuse(key, value, f"{REFUSED_KEYS[key]} is not reproduced")
            continue
        raise _refuse(key, value, "unknown DeepSpeed key; known keys that change no number are "
                      + ", ".join(sorted(NO_NUMBER_KEYS)))
    accumulation = _check_batch(config, world_size)
    clipping = config.get("gradient_clipping", 1.0)  # DeepSpeed's GRADIENT_CLIPPING_DEFAULT
    _validation.check_finite("gradient_clipping", clipping)
    _validation.check_range("gradient_clipping", clipping, low=0.0)

    fp16, bf16 = config.get("fp16", {}), config.get("bf16", config.get("bfloat16", {}))
    if _enabled(fp16) and _enabled(bf16):
        raise ValueError("fp16.enabled=True and bf16.enabled=True: DeepSpeed allows one of them")
    precision = "fp16" if _enabled(fp16) else "bf16" if _enabled(bf16) else "fp32"
    loss_scale: dict[str, Any] = {}
    if precision == "fp16":
        known = {"enabled", "auto_cast", "loss_scale", "initial_scale_power", "loss_scale_window",
                 "hysteresis", "consecutive_hysteresis", "min_loss_scale"}
        for key, value in fp16.items():
            if key not in known:
                raise _refuse(f"fp16.{key}", value, "expected one of " + ", ".join(sorted(known)))
        if fp16.get("auto_cast", False):
            raise _refuse("fp16.auto_cast", True, "autocast of the inputs is not reproduced")
        loss_scale = dict(
            static=float(fp16.get("loss_scale", 0)),
            power=fp16.get("initial_scale_power", 16),
            window=fp16.get("loss_scale_window", 1000),
            hysteresis=fp16.get("hysteresis", 2),
            consecutive=fp16.get("consecutive_hysteresis", False),
            min_scale=fp16.get("min_loss_scale", 1),
        )
    elif precision == "bf16":
        for key, value in bf16.items():
            if key in ("enabled", "immediate_grad_update"):
                continue
            if key == "check_grad_overflow" and value is True:
                continue
            raise _refuse(f"bf16.{key}", value, "only enabled (float32 master weights, a step "
                          "skipped on non-finite gradients) is reproduced")
    zero = config.get("zero_optimization", {}) or {}
    stage = zero.get("stage", 0) if isinstance(zero, Mapping) else zero
    if stage not in (0, 1, 2, 3):
        raise _refuse("zero_optimization.stage", stage, "expected 0, 1, 2 or 3")

    block = config.get("optimizer")
    if not isinstance(block, Mapping) or "type" not in block:
        raise _refuse("optimizer", block, "expected a block {'type': ..., 'params': {...}}: "
                      "from_deepspeed builds the optimizer DeepSpeed builds from its config")
    params = dict(block.get("params", {}) or {})
    if "max_grad_norm" in params:
        raise _refuse("optimizer.params.max_grad_norm", params["max_grad_norm"],
                      "DeepSpeed refuses it too: use the top-level gradient_clipping")
    if params.get("maximize", False):
        raise _refuse("optimizer.params.maximize", True, "negate the gradients instead")
    offload = zero.get("offload_optimizer") if isinstance(zero, Mapping) else None
    offload = isinstance(offload, Mapping) and str(offload.get("device", "none")).lower() in (
        "cpu", "nvme")
    # The class the engine builds and its group, read below by that class's own record.
    optimizer_type = _catalogue().deepspeed_optimizer_type(block["type"])
    record, configured = optimizer_type.configure(params, offload)

    block = config.get("scheduler")
    scheduler, scheduler_params = None, {}
    if block is not None:
        if not isinstance(block, Mapping) or "type" not in block:
            raise _refuse("scheduler", block, "expected a block {'type': ..., 'params': {...}}")
        scheduler = block["type"]
        if scheduler not in ds_schedules.DEEPSPEED_SCHEDULERS:
            raise _refuse("scheduler.type", scheduler,
                          "expected one of " + ", ".join(SUPPORTED_SCHEDULERS))
        scheduler_params = dict(block.get("params", {}) or {})
        _check_scheduler_params(scheduler, scheduler_params)
    return _Settings(optimizer_type.name, record, configured, scheduler, scheduler_params, accumulation,
                     float(clipping), precision, loss_scale, stage)


def _scheduler_arguments(scheduler: str) -> set[str]:
    import inspect

    names = set(inspect.signature(ds_schedules.DEEPSPEED_SCHEDULERS[scheduler]).parameters)
    return names - {"learning_rate"}


def _check_scheduler_params(scheduler: str, params: dict[str, Any]) -> None:
    last = params.pop("last_batch_iteration", -1)
    if last != -1:
        raise _refuse("scheduler.params.last_batch_iteration", last,
                      "expected -1 (a fresh run; restore a run from its state instead)")
    allowed = _scheduler_arguments(scheduler)
    for key, value in params.items():
        if key in allowed:
            continue
        owners = [other for other in SUPPORTED_SCHEDULERS
                  if other != scheduler and key in _scheduler_arguments(other)]
        owner = f" (a parameter of {', '.join(owners)})" if owners else ""
        raise _refuse(f"scheduler.params.{key}", value,
                      f"{scheduler} takes {', '.join(sorted(allowed))}{owner}")


# ------------------------------------------------------------------------ the groups' rates


def _entry(path: str, value: Any, index: int, count: int) -> Any:
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise _refuse(path, value, f"expected one value or a list of {count} (one per group)")
        return value[index]
    return value


def _group_schedules(settings: _Settings, group_lrs: Sequence[float], cycles_momentum: bool):
    """Per group: (rate: float or schedule, beta1 schedule or None)."""
    if settings.scheduler is None:
        return [(lr, None) for lr in group_lrs]
    return group_schedules(settings.scheduler, settings.scheduler_params, group_lrs,
                           cycles_momentum=cycles_momentum)


def group_schedules(scheduler: str, scheduler_params: dict[str, Any], group_lrs: Sequence[float],
                    *, cycles_momentum: bool) -> list[tuple[Any, Any]]:
    """Per group: (rate schedule, beta1 schedule or None) of a DeepSpeed scheduler's config.

    ``cycles_momentum``: the optimizer has ``betas`` (DeepSpeed's ``OneCycle`` cycles ``betas[0]``
    only then).
    """
    count = len(group_lrs)
    factory = ds_schedules.DEEPSPEED_SCHEDULERS[scheduler]
    out = []
    for index, lr in enumerate(group_lrs):
        kwargs = {key: _entry(f"scheduler.params.{key}", value, index, count)
                  for key, value in scheduler_params.items()}
        if scheduler == "WarmupCosineLR":
            kwargs["learning_rate"] = lr
        if scheduler == "WarmupLR" and kwargs.get("warmup_max_lr") is None:
            kwargs["warmup_max_lr"] = lr  # DeepSpeed's None: the group's lr
        try:
            built = factory(**kwargs)
        except (TypeError, ValueError) as error:
            raise type(error)(f"scheduler.params: {error}") from error
        if isinstance(built, CycleSchedules):
            # DeepSpeed cycles betas[0] only for an optimizer with betas.
            momentum = built.momentum if cycles_momentum else None
            out.append((built.learning_rate, momentum))
        else:
            out.append((built, None))
    return out


# -------------------------------------------------------------------------- the optimizers


# DeepSpeed's Adam lives with the package's other optimizers; it is importable from here too
# (the catalogue's DeepSpeed records and from_deepspeed name it as deepspeed.fused_adam).
fused_adam = optimizers.fused_adam


def _group_transformation(builder: Any, rate, momentum, where: str) -> optax.GradientTransformation:
    """A group's optimizer (a ``catalogue.GroupOptimizer``) at ``rate``, ``betas[0]`` cycled by
    ``momentum`` (a schedule, or None)."""
    if momentum is not None and "b2" in builder.kwargs:
        # DeepSpeed's OneCycle sets betas = (momentum, 0.99).
        builder = dataclasses.replace(builder, kwargs={**builder.kwargs, "b2": 0.99})
    try:
        return builder.build(rate, momentum)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}: {error}") from error


def _read_group(record: Any, optimizer: Any, group: Mapping[str, Any], index: int, where: str):
    try:
        return record.read_group(optimizer, group, index)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}: {error}") from error


def _catalogue():
    # Imported when used: the catalogue imports this module (its records name fused_adam).
    from optax_bertadam import catalogue

    return catalogue


def _after_zero_gradient_step(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` whose initial state is that after one update with zero gradients, the schedules'
    counts left at 0: DeepSpeed's fp16/bf16 optimizers without ZeRO (``FP16_Optimizer``,
    ``FP16_UnfusedOptimizer``) call ``optimizer.step()`` once with zero gradients when they are
    built, before the scheduler exists. Without weight decay that step moves no parameter and
    leaves zero moments; it counts one step (Adam's and Lamb's bias correction) and starts SGD's
    momentum buffer at zero (so the first real step is dampened)."""

    def is_injected(node):
        # optax.inject_hyperparams' state (InjectHyperparamsState or, in newer optax,
        # InjectStatefulHyperparamsState): its count drives the injected schedules.
        return hasattr(node, "hyperparams") and hasattr(node, "inner_state")

    def is_schedule_node(node):
        return isinstance(node, transforms.ScheduledLearningRateState) or is_injected(node)

    def init_fn(params):
        fresh = tx.init(params)
        zeros = jax.tree.map(jnp.zeros_like, params)
        _, stepped = tx.update(zeros, fresh, params)

        def keep_count(new, old):
            if isinstance(old, transforms.ScheduledLearningRateState):
                return old
            if is_injected(old):
                inner = jax.tree.map(keep_count, new.inner_state, old.inner_state,
                                     is_leaf=is_schedule_node)
                return old._replace(inner_state=inner)
            return new

        return jax.tree.map(keep_count, stepped, fresh, is_leaf=is_schedule_node)

    return optax.GradientTransformation(init_fn, tx.update)


class ConstructionStepState(NamedTuple):
    """State of a group whose construction-time step moves parameters: ``pending`` until the
    first applied update, which carries that step's change; ``inner`` the group's state."""

    pending: Any
    inner: Any


def _construction_step_at_first_update(
    tx: optax.GradientTransformation, at_built_lr: optax.GradientTransformation
) -> optax.GradientTransformation:
    """``tx`` preceded by DeepSpeed's construction-time zero-gradient step, for a group whose
    weight decay makes that step move its parameters.

    ``FP16_UnfusedOptimizer`` (fp16, and bf16 at ZeRO stage 0) steps its float32 master copies
    once with zero gradients when it is built, at the lr the optimizer was built with (before
    any scheduler or script sets one: ``at_built_lr``, ``tx`` built at that lr); the model's
    half-precision weights are not refreshed, so the first forward pass still sees the
    undecayed weights and only the masters moved. A transformation cannot move parameters at
    init, so the first applied update does it: it computes the zero-gradient step from a fresh
    state of ``at_built_lr``, runs the real step on the moved masters, and returns both
    changes. A skipped step (non-finite gradients) leaves it pending,
    as DeepSpeed's masters stay moved and the half-precision weights stay as they were. Rate
    nodes keep their count (the scheduler did not exist yet) and their injected rates."""

    def is_injected(node):
        return hasattr(node, "hyperparams") and hasattr(node, "inner_state")

    def is_schedule_node(node):
        return isinstance(node, transforms.ScheduledLearningRateState) or is_injected(node)

    def keep_rates(new, old):
        if isinstance(old, transforms.ScheduledLearningRateState):
            return old
        if is_injected(old):
            inner = jax.tree.map(keep_rates, new.inner_state, old.inner_state, is_leaf=is_schedule_node)
            return old._replace(inner_state=inner)
        return new

    def init_fn(params):
        return ConstructionStepState(jnp.asarray(True), tx.init(params))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("from_deepspeed's construction-time step needs params= in update")

        def construct(inner):
            zeros = jax.tree.map(jnp.zeros_like, params)
            moved, stepped = at_built_lr.update(zeros, at_built_lr.init(params), params)
            return moved, jax.tree.map(keep_rates, stepped, inner, is_leaf=is_schedule_node)

        def constructed(inner):
            return jax.tree.map(jnp.zeros_like, params), inner

        moved, inner = jax.lax.cond(state.pending, construct, constructed, state.inner)
        masters = jax.tree.map(lambda p, d: (p + d).astype(p.dtype), params, moved)
        step, inner = tx.update(updates, inner, masters)
        out = jax.tree.map(lambda d, u: (d + u).astype(u.dtype), moved, step)
        return out, ConstructionStepState(jnp.asarray(False), inner)

    return optax.GradientTransformation(init_fn, update_fn)


# ------------------------------------------------------- accumulation and the master weights


class DeepSpeedAccumulationState(NamedTuple):
    """Micro-batches seen since the last boundary, their accumulated gradients, the inner state."""

    micro_step: Any
    accumulated: PyTree
    inner_state: Any


def _accumulate(inner: optax.GradientTransformation, steps: int, dtype: Any):
    """DeepSpeed's accumulation: ``grad += g / steps`` per micro-batch (``loss / steps``
    backpropagated into ``.grad``, in the gradients' dtype), ``inner`` at every ``steps``-th."""
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        zeros = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), dtype or jnp.asarray(p).dtype), params)
        return DeepSpeedAccumulationState(jnp.zeros([], jnp.int32), zeros, inner.init(params))

    def rounded(x, dtype):
        # Under jit XLA:CPU computes a chain of half-precision operations in float32 and rounds
        # once at the end; torch rounds ``g / steps`` and every ``+=`` of ``.grad``. Each rounding
        # is made explicit so that the sum is torch's bit for bit.
        if jnp.dtype(dtype).itemsize >= 4:
            return x.astype(dtype)
        info = jnp.finfo(dtype)
        return jax.lax.reduce_precision(x, info.nexp, info.nmant).astype(dtype)

    def add(a, g):
        wide = jnp.promote_types(a.dtype, jnp.float32)
        share = rounded(g.astype(wide) / steps, a.dtype).astype(wide)
        return rounded(a.astype(wide) + share, a.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        accumulated = jax.tree.map(add, state.accumulated, updates)
        boundary = state.micro_step + 1 == steps
        new_updates, new_inner = inner.update(accumulated, state.inner_state, params, **extra_args)
        zeros = jax.tree.map(jnp.zeros_like, new_updates)
        out = jax.tree.map(lambda u, z: jnp.where(boundary, u, z), new_updates, zeros)
        inner_state = jax.tree.map(lambda n, o: jnp.where(boundary, n, o), new_inner, state.inner_state)
        accumulated = jax.tree.map(lambda a: jnp.where(boundary, jnp.zeros_like(a), a), accumulated)
        micro_step = jnp.where(boundary, 0, state.micro_step + 1).astype(jnp.int32)
        return out, DeepSpeedAccumulationState(micro_step, accumulated, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _to_master_dtype() -> optax.GradientTransformation:
    """Low-precision gradients to the (float32) master weights' dtype, as DeepSpeed's fp16/bf16
    optimizers copy ``.grad`` into the fp32 copy before the step."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("from_deepspeed with fp16/bf16 needs params= in update (the float32 "
                             "master weights)")
        return jax.tree.map(lambda g, p: g.astype(p.dtype), updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


class ScriptLearningRateState(NamedTuple):
    """State of ``from_deepspeed(..., learning_rate=rate)``: micro-batches seen (``count``), the
    script's rate (a :class:`optax_bertadam.StaticSchedule` of the micro-batch count, tree
    structure), the engine's state."""

    count: Any
    rate: transforms.StaticSchedule
    inner_state: Any

    def next_learning_rate(self) -> jax.Array:
        """The rate the script sets before the next optimizer step (hides the groups' nodes)."""
        return self.rate.fn(self.count)


@dataclasses.dataclass(frozen=True)
class _AtBoundaries:
    """``rate(micro_batches // accumulation)``: the rate of the optimizer step a micro-batch
    belongs to (a value, so that equal transformations have equal state structures)."""

    rate: Callable[[jax.Array], jax.Array]
    accumulation: int

    def __call__(self, micro_batches: jax.Array) -> jax.Array:
        return self.rate(jnp.asarray(micro_batches) // self.accumulation)


def _script_learning_rate(inner, rate, accumulation: int):
    """A script's ``group["lr"] = rate(k)`` before optimizer step ``k``, ``k`` counting
    boundaries (a step skipped on overflow too, as a script's ``global_step``): the groups'
    rates are ``rate`` as schedules, and their counts are set to ``k`` before every update."""
    inner = optax.with_extra_args_support(inner)
    schedule = transforms.StaticSchedule(_AtBoundaries(rate, accumulation))

    def is_rate(node):
        return isinstance(node, transforms.ScheduledLearningRateState)

    def init_fn(params):
        return ScriptLearningRateState(jnp.zeros([], jnp.int32), schedule, inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        step = state.count // accumulation
        inner_state = jax.tree.map(
            lambda node: node._replace(count=step.astype(node.count.dtype)) if is_rate(node) else node,
            state.inner_state, is_leaf=is_rate)
        updates, inner_state = inner.update(updates, inner_state, params, **extra_args)
        return updates, ScriptLearningRateState(state.count + 1, schedule, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ------------------------------------------------------------------------------ the engine


def _is_engine(obj: Any) -> bool:
    return hasattr(obj, "basic_optimizer") and hasattr(obj, "_config")


def _engine_config(engine: Any) -> dict[str, Any]:
    config = engine.config if isinstance(engine.config, Mapping) else engine._config._param_dict
    return dict(config)


def _live_groups(engine, named_parameters, params, name_map, transform):
    """The engine's parameter groups as ``ob.param_groups`` selectors (group ``i`` the basic
    optimizer's group ``i``; then the frozen parameters, if any)."""
    groups = list(engine.basic_optimizer.param_groups)
    # Under fp16/bf16 (and ZeRO) the basic optimizer holds float32 copies; the wrapper keeps the
    # model's own tensors group by group.
    tensors = [g["params"] for g in groups]
    for attribute in ("fp16_groups", "bf16_groups", "bit16_groups"):
        if hasattr(engine.optimizer, attribute):
            tensors = list(getattr(engine.optimizer, attribute))
            break
    named = {str(n): p for n, p in named_parameters}
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [masks.parameter_name(path) for path, _ in paths_and_leaves]
    mapping = {p: p.replace("/", ".") for p in paths} if name_map is None else dict(name_map)
    group_of = {id(p): i for i, group in enumerate(tensors) for p in group}
    problems, labels = [], []
    for path, (_, leaf) in zip(paths, paths_and_leaves, strict=True):
        name = mapping.get(path)
        if name not in named:
            problems.append(f"{path} (torch name {name!r} not in named_parameters)")
            labels.append(None)
            continue
        tensor = named[name]
        shape = tuple(tensor.shape)
        if transform is not None:
            shape = np.shape(transform(path, np.broadcast_to(np.zeros((), np.float32), shape)))
        if tuple(shape) != tuple(np.shape(leaf)):
            problems.append(f"{path}: torch {name} has shape {shape}, Flax {np.shape(leaf)}")
        labels.append(group_of.get(id(tensor)))
    if problems:
        raise ValueError("from_deepspeed: the parameters do not match: " + "; ".join(problems[:20]))
    selectors = []
    for index in range(len(groups)):
        selectors.append(jax.tree.unflatten(treedef, [label == index for label in labels]))
    spec = []
    for index in range(len(groups)):
        if not any(label == index for label in labels):
            raise ValueError(f"from_deepspeed: param_groups[{index}] of the engine's optimizer has "
                             "no Flax parameter")
        spec.append({"params": selectors[index]})
    if any(label is None for label in labels):
        spec.append({"params": jax.tree.unflatten(treedef, [lbl is None for lbl in labels]),
                     "frozen": True})
    return spec


def _live_scheduler(engine: Any) -> tuple[str | None, dict[str, Any], list[float] | None]:
    """The engine's scheduler as (type, params, per-group base lrs), read from its attributes."""
    scheduler = engine.lr_scheduler
    if scheduler is None:
        return None, {}, None
    name = type(scheduler).__name__
    if name not in ds_schedules.DEEPSPEED_SCHEDULERS:
        raise _refuse("engine.lr_scheduler", name,
                      "expected one of " + ", ".join(SUPPORTED_SCHEDULERS))
    if scheduler.last_batch_iteration != -1 or engine.global_steps != 0:
        raise _refuse("engine.lr_scheduler.last_batch_iteration", scheduler.last_batch_iteration,
                      "expected -1: from_deepspeed reads an engine before its first step")
    return scheduler_settings(scheduler)


def scheduler_settings(scheduler: Any) -> tuple[str, dict[str, Any], list[float] | None]:
    """A live ``deepspeed.runtime.lr_schedules`` scheduler as (type, its config ``params``, the
    per-group base lrs where the schedule scales them (``WarmupCosineLR``), else None)."""
    name = type(scheduler).__name__
    if name in ("WarmupLR", "WarmupDecayLR"):
        params = dict(warmup_min_lr=list(scheduler.min_lrs), warmup_max_lr=list(scheduler.max_lrs),
                      warmup_num_steps=scheduler.warmup_num_steps,
                      warmup_type=scheduler.warmup_type)
        if name == "WarmupDecayLR":
            params["total_num_steps"] = scheduler.total_num_steps
        return name, params, None
    if name == "WarmupCosineLR":
        return name, dict(total_num_steps=scheduler.total_num_steps,
                          warmup_min_ratio=scheduler.warmup_min_ratio,
                          warmup_num_steps=scheduler.warmup_num_steps,
                          cos_min_ratio=scheduler.cos_min_ratio,
                          warmup_type=scheduler.warmup_type), [float(x) for x in scheduler.org_lrs]
    if name == "LRRangeTest":
        return name, dict(lr_range_test_min_lr=list(scheduler.min_lr),
                          lr_range_test_step_size=scheduler.step_size,
                          lr_range_test_step_rate=scheduler.step_rate,
                          lr_range_test_staircase=scheduler.staircase), None
    params = dict(cycle_min_lr=list(scheduler.min_lrs), cycle_max_lr=list(scheduler.max_lrs),
                  cycle_first_step_size=scheduler.first_step_size,
                  cycle_second_step_size=scheduler.second_step_size,
                  cycle_first_stair_count=scheduler.first_stair_count,
                  cycle_second_stair_count=scheduler.second_stair_count,
                  decay_step_size=scheduler.decay_step_size,
                  decay_lr_rate=0.0 if scheduler.skip_lr_decay else scheduler.decay_lr_rate,
                  cycle_momentum=scheduler.cycle_momentum)
    if scheduler.cycle_momentum:
        params.update(cycle_min_mom=[m[0] for m in scheduler.min_moms],
                      cycle_max_mom=[m[0] for m in scheduler.max_moms],
                      decay_mom_rate=0.0 if scheduler.skip_mom_decay else scheduler.decay_mom_rate)
    return name, params, None


# ---------------------------------------------------------------------------- from_deepspeed


def from_deepspeed(
    config: Any,
    *,
    params: PyTree,
    groups: Sequence[Mapping[str, Any]] | None = None,
    named_parameters: Iterable[tuple[str, Any]] | None = None,
    name_map: Mapping[str, str] | None = None,
    transform: Callable[[str, np.ndarray], np.ndarray] | None = None,
    world_size: int = 1,
    learning_rate: Callable[[jax.Array], jax.Array] | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""The optax transformation doing, per ``update``, what a DeepSpeed engine does per micro-batch.

    One ``tx.update(grads, state, params)`` is one ``engine.backward(loss); engine.step()``:
    ``grads`` is the gradient of that micro-batch's loss as computed, *not* divided by
    ``gradient_accumulation_steps`` (under fp16, the gradient of
    :func:`optax_bertadam.scale_loss` of it, as with :func:`optax_bertadam.dynamic_loss_scale`).
    With :math:`N` = ``gradient_accumulation_steps`` the transformation accumulates
    :math:`\sum_i g_i / N` in the gradients' dtype (DeepSpeed's ``loss / N`` backpropagated into
    ``.grad``) and at every :math:`N`-th micro-batch (the boundary) runs

    1. fp16/bf16: skip the step if an accumulated gradient is inf/NaN (updates ``-0.0``, optimizer
       state and schedule unchanged: DeepSpeed does not step its scheduler then), update the fp16
       loss scale (:func:`optax_bertadam.deepspeed_loss_scale`: ``initial_scale_power``,
       ``loss_scale_window``, ``hysteresis``, ``min_loss_scale``, ``consecutive_hysteresis``;
       ``loss_scale > 0`` is static), unscale, and move the gradients to the dtype of ``params``
       (the float32 master weights);
    2. ``gradient_clipping`` :math:`c > 0`: :math:`g \leftarrow g \cdot \min(1, c / (\lVert g
       \rVert_2 + 10^{-6}))`, the global norm over every parameter (DeepSpeed's
       ``clip_grad_norm_``);
    3. the ``optimizer`` block per parameter group, at the rate of the ``scheduler`` block
       (:mod:`optax_bertadam.schedules.deepspeed`), which counts applied steps.

    The other micro-batches return zero updates. ``zero_optimization`` stages change no number
    (they shard the optimizer state, gradients and parameters over data-parallel ranks: use
    ``jax.sharding`` for that); except that DeepSpeed's fp16 optimizers without ZeRO ignore
    ``hysteresis`` (stage 0: hysteresis 1), which is reproduced; and that fp16/bf16 without
    ZeRO (``FP16_UnfusedOptimizer``) steps the float32 masters once with zero gradients when it
    is built, at the configured lr: counted in the optimizer state at init, and where weight
    decay makes it move the masters, that move is part of the first applied update (the first
    forward pass sees the unmoved half-precision weights, as in DeepSpeed).

    Optimizer types (the records ``catalogue.DEEPSPEED_OPTIMIZER_TYPES``: each builds the class
    the engine builds, whose catalogue record reads its group as ``from_torch`` reads a live
    one): ``Adam`` (``FusedAdam``, ``DeepSpeedCPUAdam`` with ZeRO-Offload, both
    :func:`optax_bertadam.fused_adam`; or ``torch.optim.AdamW``/``Adam`` with ``torch_adam:
    true``; AdamW unless ``adam_w_mode: false``, then L2 decay; ``bias_correction``),
    ``AdamW``, ``Lamb``
    (``FusedLamb``: :func:`optax_bertadam.deepspeed_lamb`) and ``SGD`` (``torch.optim.SGD``);
    a key the class's constructor does not take is refused. Scheduler types:
    ``WarmupLR``, ``WarmupDecayLR``, ``WarmupCosineLR``, ``OneCycle`` (with ``betas[0]`` cycling
    and ``betas[1] = 0.99`` for Adam and Lamb, as DeepSpeed), ``LRRangeTest``; a per-group list in
    its params is one value per group. Refused with a ``ValueError`` naming the key path: other
    optimizer and scheduler types (1-bit Adam/LAMB, 0/1 Adam, Lion, ...), a parameter of another
    scheduler, inconsistent batch sizes, ``amsgrad`` (but with ``torch_adam``), and the keys of
    :data:`REFUSED_KEYS`; keys of :data:`NO_NUMBER_KEYS` are accepted; any other key is refused
    as unknown.

    :func:`optax_bertadam.get_last_lr` lists each group's rate of the next step,
    :func:`optax_bertadam.get_loss_scale` the loss scale.

    Args:
      config: a DeepSpeed JSON file path, the config dict, or a live ``DeepSpeedEngine``
        (before its first step; its optimizer's groups and scheduler are read).
      params: the parameter tree (the master weights: float32 under fp16/bf16).
      groups: parameter groups in :func:`optax_bertadam.param_groups`' format (``params``
        selector, overrides of the optimizer params such as ``lr``/``weight_decay``/``betas``,
        ``frozen``); default one group of every parameter. Not with an engine.
      named_parameters: with an engine: ``model.named_parameters()``.
      name_map: with an engine: Flax path (``/``-joined) -> torch name; default the path with
        ``.``.
      transform: with an engine: ``transform(path, array)`` from torch's layout to Flax's
        (e.g. :func:`optax_bertadam.transpose_kernels`), used to check shapes.
      world_size: data-parallel ranks, for the batch-size check (the gradients given are then
        the ranks' mean, what DeepSpeed's all-reduce gives).
      learning_rate: a training script's rate ``k -> lr`` that it assigns to every group before
        optimizer step ``k`` (``k`` counts boundaries from 0, a step skipped on overflow
        included, as bing_bert's ``global_step``); the config's lr then serves only the fp16/bf16
        wrapper's construction-time step. Not with a ``scheduler`` block.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> config = {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4,
      ...           "gradient_clipping": 1.0,
      ...           "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "weight_decay": 0.01}},
      ...           "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 10}}}
      >>> params = {"w": jnp.ones(3), "b": jnp.zeros(1)}
      >>> tx = ob.from_deepspeed(config, params=params,
      ...                        groups=[{"params": "w"}, {"params": "b", "weight_decay": 0.0}])
      >>> state = tx.init(params)
      >>> grads = {"w": jnp.ones(3), "b": jnp.ones(1)}
      >>> updates, state = tx.update(grads, state, params)  # micro-batch 1 of 2: no step
      >>> float(updates["w"][0]), [float(lr) for lr in ob.get_last_lr(state)]
      (0.0, [0.0, 0.0])
    """
    engine = config if _is_engine(config) else None
    if engine is not None:
        if groups is not None:
            raise ValueError("groups= is invalid with a DeepSpeedEngine: its optimizer's groups "
                             "are read")
        if named_parameters is None:
            raise TypeError("named_parameters= is required with a DeepSpeedEngine "
                            "(model.named_parameters())")
        raw = _engine_config(engine)
        world_size = int(getattr(engine, "world_size", world_size))
    else:
        raw = _load(config)
    world_size = _validation.check_int("world_size", world_size, low=1)
    settings = _read_config(raw, world_size)
    if engine is not None:
        name, scheduler_params, base_lrs = _live_scheduler(engine)
        if name is not None and settings.scheduler is None:
            raise _refuse("engine.lr_scheduler", name,
                          "a scheduler not from the config (a client scheduler) is not read")
        settings = settings._replace(scheduler=name, scheduler_params=scheduler_params)
        groups = _live_groups(engine, named_parameters, params, name_map, transform)
        live_lrs = [float(g["lr"]) for g in engine.basic_optimizer.param_groups]
        # A scheduler other than WarmupCosineLR overwrote the groups' lr when it was built: the
        # lr the optimizer was built with (that of the fp16/bf16 wrapper's construction step)
        # is gone.
        overwritten = name if name is not None and base_lrs is None else None
        if base_lrs is None and name is None:
            base_lrs = live_lrs
        for index, group in enumerate(groups):
            if not group.get("frozen", False):
                group["lr"] = (base_lrs or live_lrs)[index]
    else:
        overwritten = None
        if groups is None:
            groups = [{"params": lambda path, leaf: True}]
    if isinstance(groups, (str, bytes, Mapping)) or not isinstance(groups, Sequence) or not groups:
        raise TypeError(f"groups={groups!r} is invalid: expected a non-empty list of dicts "
                        '{"params": selector, **optimizer params}')

    record = settings.optimizer_record
    trained = [i for i, g in enumerate(groups) if not g.get("frozen", False)]
    builders, lrs = {}, []
    if engine is not None:
        # The live optimizer, read by its own record, as from_torch reads it.
        basic = engine.basic_optimizer
        if not record.recognises(basic):
            raise _refuse("engine.basic_optimizer", _catalogue().class_of(basic),
                          f"optimizer.type={settings.optimizer_type!r} builds {record.name}")
        live = list(basic.param_groups)
        for index in trained:
            builders[index] = _read_group(record, basic, live[index], index,
                                          "engine.basic_optimizer")
            lrs.append(groups[index]["lr"])
    else:
        configured = settings.configured
        allowed = configured.param_groups[0]
        for index in trained:
            overrides = {k: v for k, v in groups[index].items() if k not in ("params", "frozen")}
            for key in overrides:
                if key not in allowed:
                    raise _refuse(f"groups[{index}].{key}", overrides[key],
                                  "expected one of " + ", ".join(sorted(allowed)))
            group = {**allowed, **overrides}
            builders[index] = _read_group(record, configured, group, index,
                                          "optimizer.params" if not overrides else f"groups[{index}]")
            lrs.append(group["lr"])
    if learning_rate is not None:
        if not callable(learning_rate):
            raise TypeError(f"learning_rate={learning_rate!r} is invalid: expected a function "
                            "step -> rate, or None")
        if settings.scheduler is not None:
            raise _refuse("scheduler", {"type": settings.scheduler},
                          "with learning_rate= the script sets the rate: expected no scheduler")
        rates = {index: (learning_rate, None) for index in trained}
    else:
        cycles = any(builders[index].momentum_name == "b1" for index in trained)
        rates = dict(zip(trained, _group_schedules(settings, lrs, cycles), strict=True))
    built = {index: _group_transformation(builders[index], *rates[index], where=f"groups[{index}]")
             for index in trained}
    built_lrs = dict(zip(trained, lrs, strict=True))
    if settings.precision != "fp32" and settings.zero_stage == 0:
        for index in trained:
            decay = builders[index].kwargs["weight_decay"]
            if _validation.is_concrete_scalar(decay) and decay == 0:
                built[index] = _after_zero_gradient_step(built[index])
            else:
                # The wrapper steps before any scheduler or script sets a rate: at the lr the
                # optimizer was built with.
                if overwritten is not None:
                    raise _refuse(
                        "engine.lr_scheduler", overwritten,
                        f"from_deepspeed(engine) cannot read the lr param_groups[{index}] had when "
                        f"DeepSpeed's {settings.precision} optimizer stepped it once at "
                        f"construction (weight_decay={decay} makes that step move the master "
                        f"weights): {overwritten} has overwritten it since; pass the config (a "
                        "dict or file) with groups= instead")
                at_built_lr = _group_transformation(builders[index], built_lrs[index], None,
                                                    where=f"groups[{index}]")
                built[index] = _construction_step_at_first_update(built[index], at_built_lr)

    def group_factory(group: int) -> optax.GradientTransformation:
        return built[group]

    spec = [{"params": g["params"], "frozen": True} if g.get("frozen", False)
            else {"params": g["params"], "group": i} for i, g in enumerate(groups)]
    tx = param_groups(group_factory, spec)
    if settings.clipping > 0:
        tx = optax.chain(transforms.clip_grad_norm(settings.clipping), tx)
    gradient_dtype = None
    if settings.precision != "fp32":
        # The overflow check, the unscaling and the step on the float32 master copy of the
        # accumulated half-precision gradients, as DeepSpeed's fp16/bf16 optimizers do.
        if settings.precision == "bf16":
            tx = deepspeed_loss_scale(tx, 1.0, dynamic=False)
            gradient_dtype = jnp.bfloat16
        else:
            tx = _fp16_loss_scale(tx, settings)
            gradient_dtype = jnp.float16
        tx = optax.chain(_to_master_dtype(), tx)
    if settings.accumulation > 1:
        tx = _accumulate(tx, settings.accumulation, gradient_dtype)
    if learning_rate is not None:
        tx = _script_learning_rate(tx, learning_rate, settings.accumulation)
    return optax.with_extra_args_support(tx)


def _fp16_loss_scale(tx, settings: _Settings):
    scale = settings.loss_scale
    if scale["static"] > 0:
        return deepspeed_loss_scale(tx, scale["static"], dynamic=False)
    power = _validation.check_int("fp16.initial_scale_power", scale["power"])
    # Without ZeRO, DeepSpeed's FP16_Optimizer/FP16_UnfusedOptimizer have no hysteresis.
    hysteresis = scale["hysteresis"] if settings.zero_stage > 0 else 1
    try:
        return deepspeed_loss_scale(
            tx, float(2**power), scale_window=scale["window"], min_scale=float(scale["min_scale"]),
            hysteresis=hysteresis, consecutive_hysteresis=scale["consecutive"])
    except (TypeError, ValueError) as error:
        raise type(error)(f"fp16: {error}") from error


# fused_adam is importable from here but documented (and exported) as optax_bertadam.fused_adam.
__all__ = ["from_deepspeed", "NO_NUMBER_KEYS", "REFUSED_KEYS", "DeepSpeedAccumulationState",
           "ConstructionStepState", "ScriptLearningRateState"]
