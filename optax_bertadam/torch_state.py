"""Move optimizer state between PyTorch and optax mid-training, parameter by parameter.

A PyTorch ``optimizer.state_dict()`` keys each parameter's state by an integer id: its position
in the optimizer's parameters (``param_groups`` concatenated). The caller names those parameters
(``param_names``, e.g. from :func:`torch_parameter_names`) and says which Flax parameter each one
is (``name_map``: Flax path -> torch name, a dict or a function; by default the Flax path with
``.`` separators), plus an optional per-tensor ``transform`` for layouts that differ (e.g.
:func:`optax_bertadam.transpose_kernels`: a ``torch.nn.Linear`` weight is ``(out, in)``, a Flax
``Dense`` kernel ``(in, out)``). Names are paired by the one matcher of
:mod:`optax_bertadam.torch_params` (:func:`~optax_bertadam.torch_params.match_names`), as in
:func:`optax_bertadam.from_torch` and :func:`optax_bertadam.compare.compare_training`.

Which optax state field receives which torch key:

==============================================  ========================================================
optax state                                     torch per-parameter state
==============================================  ========================================================
``ScaleByBiasFreeAdamState.next_m/next_v``      ``BertAdam``: ``next_m``, ``next_v``
``optax.ScaleByAdamState.mu/nu``                ``torch.optim.Adam/AdamW``: ``exp_avg``, ``exp_avg_sq``
``optax.ScaleByAmsgradState.nu_max``            ``max_exp_avg_sq`` (``amsgrad=True``)
``ScaleByFactoredRmsState.exp_avg_sq_row/col``  ``transformers.Adafactor``: the same keys (rank >= 2;
                                                swapped when ``transform`` transposes the kernel)
``ScaleByFactoredRmsState.exp_avg_sq``          ``exp_avg_sq`` (parameters of rank < 2)
``EmaOfUpdatesState.exp_avg``                   Adafactor's ``exp_avg`` (``beta1`` given)
``AdagradState.sum``                            ``torch.optim.Adagrad``: ``sum``
``RMSpropState.square_avg/grad_avg/...``        ``torch.optim.RMSprop``: the same keys
any field named ``next_m``, ``exp_avg``, ...    the torch key of the same name
every integer ``count`` field                   ``step`` (the same for every parameter; DeepSpeed's
                                                ``FusedAdam``: the group's, in its last parameter)
==============================================  ========================================================

DeepSpeed's ``FusedAdam`` keeps one count per parameter group, in the state of the group's last
parameter (the others stay at ``group['step']``, 0): its state_dict is recognised by its groups'
keys (:func:`optax_bertadam.catalogue.deepspeed_adam_class`), read that way (anything else is
refused as ambiguous) and written that way, with ``int`` steps as ``FusedAdam`` and
``DeepSpeedCPUAdam`` keep them.

:func:`optax_bertadam.get_lr` computes the rate from the restored count. Nothing here imports
torch at module level: tensors or numpy arrays are accepted, and torch is imported only to
build the tensors of :func:`to_torch_state_dict`.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_bertadam import _validation, catalogue
from optax_bertadam.masks import parameter_name

# The one parameter matcher; transpose_kernels lived here first and is still importable from here.
from optax_bertadam.torch_params import NameMap, inverse_of, match_names
from optax_bertadam.torch_params import transpose_kernels as transpose_kernels

PyTree = Any
Transform = Callable[[str, np.ndarray], np.ndarray]

# Per-parameter state keys of the PyTorch optimizers of the catalogue; a NamedTuple field with
# one of these names is filled from the key of the same name.
TORCH_STATE_KEYS = catalogue.torch_state_keys()
# transformers.Adafactor factors the second moment of a parameter of rank >= 2 into the mean
# over its last axis ("row") and over the one before ("col"), and keeps the full "exp_avg_sq" only
# for the others; a state with these fields keeps (1,) placeholders where torch keeps nothing.
_FACTORED_KEYS = ("exp_avg_sq_row", "exp_avg_sq_col")
# Per-parameter values torch recomputes at every step before using them (Adafactor's "RMS" of
# the parameter): nothing to carry over.
_DERIVED_KEYS = ("RMS",)
# torch.optim.Adam/AdamW/Adagrad/RMSprop keep `step` as a float32 tensor; BertAdam a Python int.
_TENSOR_STEP_KEYS = ("exp_avg", "sum", "square_avg")
# States made of these keys only keep no `step` (torch.optim.SGD).
_STEPLESS_KEYS = tuple(key for record in catalogue.OPTIMIZERS if not record.writes_step
                       for key in record.state_keys)

# optax's own states name their moments otherwise; this package's states use the torch names.
_OPTAX_FIELD_MAPS: Mapping[type, Mapping[str, str]] = {
    optax.ScaleByAdamState: {"mu": "exp_avg", "nu": "exp_avg_sq"},
    optax.ScaleByAmsgradState: {"mu": "exp_avg", "nu": "exp_avg_sq", "nu_max": "max_exp_avg_sq"},
}


def _is_named_tuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _field_map(node: Any) -> dict[str, str]:
    if type(node) in _OPTAX_FIELD_MAPS:
        return _OPTAX_FIELD_MAPS[type(node)]
    return {f: f for f in node._fields if f in TORCH_STATE_KEYS}


def _all_named_tuples(tree: PyTree) -> list[Any]:
    """Every NamedTuple node inside ``tree``, outermost first (depth-first, in field order)."""
    found = []
    for node in jax.tree.leaves(tree, is_leaf=_is_named_tuple):
        if _is_named_tuple(node):
            found.append(node)
            for field in node._fields:
                found.extend(_all_named_tuples(getattr(node, field)))
    return found


def _state_nodes(opt_state: PyTree) -> list[Any]:
    """Every NamedTuple node of ``opt_state`` that holds torch-mapped fields."""
    return [n for n in _all_named_tuples(opt_state) if _field_map(n)]


def _replace_nodes(tree: PyTree, replace: Callable[[Any], Any]) -> PyTree:
    """Rebuild ``tree`` with every NamedTuple node passed through ``replace`` (outermost first)."""

    def visit(node):
        if not _is_named_tuple(node):
            return node
        node = replace(node)
        return node._make([_replace_nodes(getattr(node, f), replace) for f in node._fields])

    return jax.tree.map(visit, tree, is_leaf=_is_named_tuple)


def _to_numpy(value: Any) -> np.ndarray:
    """A numpy copy of a numpy array, jax array or torch tensor (half types upcast exactly)."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        return value.numpy().copy()
    return np.array(value)


def _to_step(value: Any, where: str) -> int:
    step = float(_to_numpy(value)) if not isinstance(value, numbers.Number) else float(value)
    if not step.is_integer() or step < 0:
        raise ValueError(f"{where}: step={step!r} is invalid: expected a non-negative integer")
    return int(step)


def torch_parameter_names(named_parameters: Iterable[tuple[str, Any]], optimizer: Any) -> list[str]:
    """Names of ``optimizer``'s parameters in ``state_dict()`` id order (param groups concatenated).

    Args:
      named_parameters: ``model.named_parameters()``.
      optimizer: a ``torch.optim.Optimizer`` over (some of) those parameters.

    Returns:
      A list of torch parameter names, one per ``state_dict()`` id.

    Raises:
      ValueError: if the optimizer holds parameters that ``named_parameters`` does not name.

    Example:
      >>> import torch, optax_bertadam as ob
      >>> model = torch.nn.Linear(3, 2)
      >>> optimizer = torch.optim.AdamW(model.parameters())
      >>> ob.torch_parameter_names(model.named_parameters(), optimizer)
      ['weight', 'bias']
    """
    name_of = {id(p): n for n, p in named_parameters}
    names, unnamed = [], []
    for g, group in enumerate(optimizer.param_groups):
        for i, p in enumerate(group["params"]):
            if id(p) in name_of:
                names.append(name_of[id(p)])
            else:
                unnamed.append(f"param_groups[{g}]['params'][{i}]")
    if unnamed:
        raise ValueError(
            f"optimizer holds parameters that named_parameters does not name: {_validation.listing(unnamed)}"
        )
    return names


def _stateful_paths(opt_state: PyTree) -> list[str] | None:
    """Flax paths the state keeps torch-mapped moments for; None: it keeps no moments at all."""
    paths: set[str] = set()
    found = False
    for node in _state_nodes(opt_state):
        for field in _field_map(node):
            tree = getattr(node, field)
            if jax.tree.leaves(tree):
                found = True
                paths.update(_flax_paths(tree))
    return sorted(paths) if found else None


def _flax_paths(params: PyTree) -> list[str]:
    paths_and_leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    return [parameter_name(path) for path, _ in paths_and_leaves]


def _group_ids(param_groups: Sequence[Mapping[str, Any]]) -> list[Any]:
    return [pid for group in param_groups for pid in group["params"]]


def load_torch_state_dict(
    state_dict: Mapping[str, Any],
    tx: optax.GradientTransformation,
    params: PyTree,
    param_names: Sequence[str],
    *,
    name_map: NameMap = None,
    transform: Transform | None = None,
    step: int | None = None,
    scheduler_state: Mapping[str, Any] | None = None,
) -> PyTree:
    """The optax state of ``tx`` equivalent to a PyTorch optimizer's ``state_dict()``.

    Continuing with ``tx`` from the returned state applies the same updates PyTorch would have
    applied (DeepSpeedExamples' ``BertAdam`` -> :func:`optax_bertadam.bertadam`, ``torch.optim.AdamW`` ->
    ``optax.adamw``, with the same hyperparameters).

    Args:
      state_dict: ``optimizer.state_dict()`` (tensors or numpy arrays), e.g. from ``torch.load``.
      tx: the optax optimizer that continues the run.
      params: the current Flax parameters (the values matching the torch parameters).
      param_names: torch names of the optimizer's parameters in ``state_dict`` id order, e.g.
        ``torch_parameter_names(model.named_parameters(), optimizer)``; with a single parameter
        group, ``[n for n, _ in model.named_parameters()]``.
      name_map: Flax path (``/``-joined, as :func:`optax_bertadam.parameter_names`) -> torch name,
        a dict or a function of the path (as :func:`optax_bertadam.from_torch` takes it);
        ``None``: the Flax path with ``.`` instead of ``/``.
      transform: ``transform(flax_path, array) -> array`` applied to every torch tensor before it
        goes into the Flax layout, e.g. :func:`optax_bertadam.transpose_kernels`.
      step: the number of updates applied, for states that keep no ``step`` (``torch.optim.SGD``)
        or to check it against a scheduler's: pass ``scheduler.last_epoch``. A ``step`` in the
        state that differs is refused (one optax count drives both the moments and the rate).
      scheduler_state: ``scheduler.state_dict()``, to continue its schedule too: its
        ``last_epoch`` is the step (checked like ``step``); a loss-driven scheduler's
        (``ReduceLROnPlateau``, transformers' ``GreedyLR``) best value, counters, window and
        per-group rates (``_last_lr``) go into the state node of ``tx`` that reproduces it (a node
        with a ``with_scheduler_state`` method; exactly one must exist).

    Returns:
      ``tx.init(params)`` with moments and counts taken from ``state_dict`` (and the scheduler's
      state from ``scheduler_state``).

    Raises:
      ValueError: names that do not match (listed), shapes that do not match (listed), state keys
        that ``tx``'s state has no place for or lacks, or parameters whose steps differ (for
        ``FusedAdam``: groups whose counts differ, or a group whose count is ambiguous).

    Example:
      >>> import torch, jax.numpy as jnp, optax_bertadam as ob
      >>> model = torch.nn.Linear(3, 2)
      >>> optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
      >>> model(torch.ones(1, 3)).sum().backward()
      >>> optimizer.step()  # one PyTorch step: exp_avg = 0.1 * grad = 0.1
      >>> params = {"kernel": jnp.asarray(model.weight.detach().numpy().T),
      ...           "bias": jnp.asarray(model.bias.detach().numpy())}
      >>> names = ob.torch_parameter_names(model.named_parameters(), optimizer)
      >>> state = ob.load_torch_state_dict(
      ...     optimizer.state_dict(), ob.adamw(1e-3, weight_decay=0.01), params, names,
      ...     name_map={"kernel": "weight", "bias": "bias"}, transform=ob.transpose_kernels)
      >>> int(state[0].count), [round(x, 6) for x in state[0].exp_avg["bias"].tolist()]
      (1, [0.1, 0.1])
    """
    if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
        raise ValueError(
            "state_dict is invalid: expected optimizer.state_dict(), a dict with 'state' and "
            "'param_groups'"
        )
    ids = _group_ids(state_dict["param_groups"])
    if len(ids) != len(param_names):
        raise ValueError(
            f"param_names has {len(param_names)} names but state_dict['param_groups'] holds "
            f"{len(ids)} parameters"
        )
    flax_paths = _flax_paths(params)
    template = tx.init(params)
    # Parameters tx keeps no moments for (frozen: not in the torch optimizer, or without
    # requires_grad, so never stepped) need no torch name or no torch state.
    all_state = {name: state_dict["state"].get(pid, {}) for pid, name in zip(ids, param_names, strict=True)}
    to_torch = match_names(
        flax_paths, param_names, name_map, torch_names_arg="param_names",
        required_paths=_stateful_paths(template),
        required_names=[n for n, state in all_state.items() if len(state)],
    )
    torch_state = {name: all_state[name] for name in to_torch.values()}

    # One step for all: optax has one update count.
    with_state = {n: s for n, s in torch_state.items() if len(s)}
    if with_state and len(with_state) != len(torch_state):
        without = [n for n, s in torch_state.items() if not len(s)]
        raise ValueError(
            "state_dict has no state for some parameters (never updated: no gradient?), which one "
            f"optax count cannot represent: {_validation.listing(without)}"
        )
    if catalogue.deepspeed_adam_class(state_dict["param_groups"]) == "FusedAdam":
        # One count per group, held by the group's last parameter: each parameter takes its group's.
        group_steps = _fused_adam_group_steps(state_dict, dict(zip(ids, param_names, strict=True)))
        steps = {n: group_steps[n] for n in with_state}
    else:
        steps = {n: _to_step(s["step"], f"state of {n!r}") for n, s in with_state.items() if "step" in s}
    if len(set(steps.values())) > 1:
        by_step = {}
        for n, s in steps.items():
            by_step.setdefault(s, []).append(n)
        raise ValueError(
            "the parameters' steps differ, which one optax count cannot represent: "
            + "; ".join(f"step {s}: {_validation.listing(names, 5)}" for s, names in sorted(by_step.items()))
        )
    torch_step = next(iter(steps.values()), None)
    if isinstance(scheduler_state, Mapping) and "last_epoch" not in scheduler_state:
        # A ChainedScheduler keeps no count of its own: its members' (stepped together) is it.
        first = scheduler_state
        while isinstance(first, Mapping) and "last_epoch" not in first and first.get("_schedulers"):
            first = first["_schedulers"][0]
        if isinstance(first, Mapping) and "last_epoch" in first:
            scheduler_state = {**scheduler_state, "last_epoch": first["last_epoch"]}
    if scheduler_state is not None:
        if not isinstance(scheduler_state, Mapping) or "last_epoch" not in scheduler_state:
            raise ValueError(
                "scheduler_state is invalid: expected scheduler.state_dict(), a dict with "
                "'last_epoch'"
            )
        scheduler_step = _to_step(scheduler_state["last_epoch"], "scheduler_state['last_epoch']")
        if step is not None and _to_step(step, "step") != scheduler_step:
            raise ValueError(
                f"step={step!r} is invalid: scheduler_state['last_epoch'] is {scheduler_step}"
            )
        step = scheduler_step
    if step is not None:
        step = _to_step(step, "step")
        if torch_step is not None and torch_step != step:
            raise ValueError(
                f"step={step!r} is invalid: the optimizer's state is at step {torch_step} (was the "
                "scheduler stepped once per optimizer.step()?)"
            )
    elif torch_step is not None:
        step = torch_step
    elif with_state:
        raise ValueError(
            "state_dict keeps no step (torch.optim.SGD does not): pass step=, the number of "
            "updates applied, e.g. scheduler.last_epoch"
        )
    else:
        step = 0
    torch_keys = sorted({k for s in with_state.values() for k in s if k != "step"})

    param_shapes = {parameter_name(path): np.shape(leaf)
                    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    filled_keys: set[str] = set()
    wanted_keys: set[str] = set()
    shape_errors: list[str] = []

    def fill(node):
        updates = {}
        factored = any(f in _FACTORED_KEYS for f in node._fields)
        for field, key in _field_map(node).items():
            tree = getattr(node, field)
            if not jax.tree.leaves(tree):
                continue
            if not any(_keeps(key, factored, param_shapes[p]) for p in _flax_paths(tree)):
                continue  # placeholders only
            wanted_keys.add(key)
            if not with_state:
                continue  # no update yet: torch has no state, optax has zeros
            if key not in torch_keys:
                continue
            filled_keys.add(key)

            def load_leaf(path, leaf, key=key):
                flax_path = parameter_name(path)
                torch_name = to_torch[flax_path]
                entry = torch_state[torch_name]
                if not _keeps(key, factored, param_shapes[flax_path]):
                    if key in entry:
                        shape_errors.append(f"{torch_name}: {key!r} in its state, which a "
                                            f"parameter of shape {param_shapes[flax_path]} lacks")
                    return leaf  # a placeholder: torch keeps nothing for this parameter
                if key in _FACTORED_KEYS and all(k in entry for k in _FACTORED_KEYS):
                    row, col = (np.shape(_to_numpy(entry[k])) for k in _FACTORED_KEYS)
                    key = _factored_key(key, row, col, flax_path, transform, shape_errors)
                if key not in entry:
                    shape_errors.append(f"{torch_name}: no {key!r} in its state")
                    return leaf
                value = _to_numpy(entry[key])
                if transform is not None and key not in _FACTORED_KEYS:
                    value = np.asarray(transform(flax_path, value))
                if value.shape != leaf.shape:
                    shape_errors.append(
                        f"{flax_path} ({key}): torch {tuple(value.shape)} vs optax {tuple(leaf.shape)}"
                    )
                    return leaf
                out = jnp.asarray(value, dtype=leaf.dtype)
                return jax.device_put(out, leaf.sharding) if isinstance(leaf, jax.Array) else out

            updates[field] = jax.tree_util.tree_map_with_path(load_leaf, tree)
        return node._replace(**updates) if updates else node

    state = _set_counts(_replace_nodes(template, fill), step)
    if scheduler_state is not None:
        state = _load_scheduler_state(state, scheduler_state)
    if not wanted_keys and torch_keys:
        raise ValueError(
            "tx's state has no moments this module can fill from torch (known: "
            f"{', '.join(TORCH_STATE_KEYS)})"
        )
    if not with_state and wanted_keys and step > 0:
        raise ValueError(
            f"state_dict has no state (the optimizer has not stepped) but the scheduler is at "
            f"last_epoch {step}: one optax count drives both the moments and the rate, so a "
            "scheduler that is ahead of a fresh optimizer cannot be represented"
        )
    if with_state:
        missing = sorted(wanted_keys - set(torch_keys))
        extra = sorted(set(torch_keys) - filled_keys - set(_DERIVED_KEYS))
        if missing or extra:
            raise ValueError(
                f"state_dict does not match tx's state: the state_dict holds {torch_keys}, tx's "
                f"state needs {sorted(wanted_keys)} (missing: {missing or 'none'}, without a place "
                f"in tx's state: {extra or 'none'}): is it the state of another optimizer?"
            )
    if shape_errors:
        raise ValueError(
            "state_dict tensors do not match the Flax parameters (is a transform missing?): "
            + _validation.listing(shape_errors)
        )
    return state


def _fused_adam_group_steps(state_dict: Mapping[str, Any], name_of: Mapping[Any, str]) -> dict[str, int]:
    """Each stepped parameter's count in a ``FusedAdam`` state_dict: its group's.

    ``FusedAdam.step`` sets ``group['step'] = 0`` (and never advances it), starts each new state
    at ``group['step']``, and advances only the state of the group's last parameter with a
    gradient, once per dtype bucket (float16, bfloat16, float32), whose step drives the
    group's bias correction. So the group's count is its last stepped parameter's step, and
    every other parameter must still be at ``group['step']``. Anything else (a parameter that
    lacked a gradient at some step, so that another one held the count; parameters of several
    dtypes in a group, whose count advanced once per dtype) is refused: no one count is its state.
    """
    out: dict[str, int] = {}
    for g, group in enumerate(state_dict["param_groups"]):
        stepped = [pid for pid in group["params"] if len(state_dict["state"].get(pid, {}))]
        if not stepped:
            continue
        where = f"state_dict['param_groups'][{g}]"
        base = _to_step(group.get("step", 0), f"{where}['step']")
        steps = {}
        for pid in stepped:
            entry = state_dict["state"][pid]
            if "step" not in entry:
                raise ValueError(f"state of {name_of[pid]!r} has no 'step': a FusedAdam state_dict "
                                 "keeps one for every parameter")
            steps[pid] = _to_step(entry["step"], f"state of {name_of[pid]!r}")
        count = steps[stepped[-1]]
        astray = [f"{name_of[pid]} at step {steps[pid]}" for pid in stepped[:-1] if steps[pid] != base]
        if astray or count < base:
            raise ValueError(
                f"{where} is ambiguous: FusedAdam keeps its group's count in the state of the "
                f"group's last parameter ({name_of[stepped[-1]]}, step {count}) and leaves the "
                f"others at the group's 'step' ({base}), but "
                + (f"{_validation.listing(astray, 5)} moved (a parameter without a gradient at "
                   "some step?)" if astray else "the last one is behind it")
                + ": no one count reproduces it"
            )
        dtypes = sorted({str(state_dict["state"][pid]["exp_avg"].dtype) for pid in stepped
                         if "exp_avg" in state_dict["state"][pid]})
        if len(dtypes) > 1:
            raise ValueError(
                f"{where} holds parameters of several dtypes ({', '.join(dtypes)}): FusedAdam "
                "advances the group's count once per dtype at each step, which one optax count "
                "cannot represent"
            )
        out.update({name_of[pid]: count for pid in stepped})
    return out


def _keeps(key: str, factored: bool, shape: tuple[int, ...]) -> bool:
    """Whether torch keeps ``key`` for a parameter of ``shape`` (Adafactor factors rank >= 2)."""
    if key in _FACTORED_KEYS:
        return len(shape) >= 2
    if key == "exp_avg_sq" and factored:
        return len(shape) < 2
    return True


def axes_moved_by(transform: Transform, flax_path: str, shape: tuple[int, ...]) -> str | None:
    """How ``transform`` moves a tensor of ``shape`` (torch's): ``"identity"``, ``"swap"`` (its last
    two axes swapped: a transposed kernel) or ``None`` (anything else)."""
    probe = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
    moved = np.asarray(transform(flax_path, probe))
    if np.array_equal(moved, probe):
        return "identity"
    if moved.ndim >= 2 and np.array_equal(moved, np.swapaxes(probe, -1, -2)):
        return "swap"
    return None


def _factored_key(
    key: str, row_shape: tuple[int, ...], col_shape: tuple[int, ...], flax_path: str,
    transform: Transform | None, errors: list[str],
) -> str:
    """The key a factored moment has on the other side of ``transform``.

    ``row_shape``/``col_shape`` are this side's row and column shapes; the parameter's shape
    follows from them. A transform that swaps the parameter's last two axes (a transposed kernel)
    turns rows into columns; any other transform but the identity is refused (in ``errors``).
    """
    if transform is None:
        return key
    moved = axes_moved_by(transform, flax_path, tuple(row_shape) + tuple(col_shape[-1:]))
    if moved == "identity":
        return key
    if moved == "swap":
        return _FACTORED_KEYS[1 - _FACTORED_KEYS.index(key)]
    errors.append(
        f"{flax_path}: transform is neither the identity nor a swap of the last two axes, so "
        "Adafactor's factored second moment (row and column means) cannot follow it"
    )
    return key


def _factored_shape(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of Adafactor's row (mean over the last axis) or column statistic of ``shape``."""
    return shape[:-1] if key == _FACTORED_KEYS[0] else shape[:-2] + shape[-1:]


def _load_scheduler_state(state: PyTree, scheduler_state: Mapping[str, Any]) -> PyTree:
    """``state`` with its loss-driven scheduler node moved to ``scheduler_state``.

    Count-driven schedulers need nothing beyond the count; a scheduler whose state_dict has a
    ``best`` value (ReduceLROnPlateau, GreedyLR) needs the one node that reproduces it.
    """
    loaded = []

    def load(node):
        if callable(getattr(node, "with_scheduler_state", None)):
            loaded.append(type(node).__name__)
            return node.with_scheduler_state(scheduler_state)
        return node

    state = _replace_nodes(state, load)
    if "best" in scheduler_state and not loaded:
        raise ValueError(
            "scheduler_state is a loss-driven scheduler's (it has 'best'), but tx's state has no "
            "node for it: build tx with optax_bertadam.from_torch(optimizer, scheduler, ...) or "
            "chain reduce_lr_on_plateau/greedy_lr"
        )
    if len(loaded) > 1:
        raise ValueError(
            f"scheduler_state is ambiguous: tx's state holds {len(loaded)} scheduler states "
            f"({', '.join(loaded)}); pass the scheduler's state to one transformation at a time"
        )
    return state


def _is_count(value: Any) -> bool:
    value = getattr(value, "value", value)
    return np.ndim(value) == 0 and jnp.issubdtype(jnp.asarray(value).dtype, jnp.integer)


def _is_count_leaf(path, leaf) -> bool:
    last = path[-1] if path else None
    return getattr(last, "name", None) == "count" and _is_count(leaf)


def _counts(state: PyTree) -> list[Any]:
    """Every integer ``count`` leaf of ``state``, whatever node (NamedTuple, dataclass) holds it."""
    paths_and_leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    return [leaf for path, leaf in paths_and_leaves if _is_count_leaf(path, leaf)]


def _set_counts(state: PyTree, step: int) -> PyTree:
    """``state`` with every integer ``count`` leaf set to ``step`` (whatever node holds it).

    The rates that :func:`optax_bertadam.get_lr` reports are computed from these counts.
    """

    def set_count(path, leaf):
        if _is_count_leaf(path, leaf):
            return jnp.asarray(step, dtype=jnp.asarray(leaf).dtype)
        return leaf

    return jax.tree_util.tree_map_with_path(set_count, state)


def to_torch_state_dict(
    opt_state: PyTree,
    optimizer: Any,
    param_names: Sequence[str],
    *,
    name_map: NameMap = None,
    transform: Transform | None = None,
    inverse_transform: Transform | None = None,
) -> dict[str, Any]:
    """A ``state_dict`` for ``optimizer.load_state_dict`` holding the moments of ``opt_state``.

    The inverse of :func:`load_torch_state_dict`: continuing ``optimizer`` after
    ``optimizer.load_state_dict(to_torch_state_dict(...))`` applies the updates optax would have.

    Args:
      opt_state: the optax state (of :func:`optax_bertadam.bertadam`, ``optax.adamw``, ...).
      optimizer: the PyTorch optimizer that continues the run; its ``param_groups`` (and their
        hyperparameters) are kept, and its parameters' shapes are checked.
      param_names: torch names of ``optimizer``'s parameters, in its order (see
        :func:`torch_parameter_names`).
      name_map: Flax path -> torch name, as in :func:`load_torch_state_dict`.
      transform: the torch -> Flax layout function the state was read with (the same one as
        :func:`load_torch_state_dict` takes), e.g. :func:`optax_bertadam.transpose_kernels`,
        which is its own inverse.
      inverse_transform: ``inverse_transform(flax_path, array) -> torch array``; needed for a
        ``transform`` of your own (as :func:`optax_bertadam.params_to_torch`).

    Returns:
      ``{"state": {id: {"step": ..., key: tensor}}, "param_groups": [...]}`` (no ``step`` for
      ``torch.optim.SGD``, which keeps none; transformers' Adafactor's derived ``RMS`` is left
      to its next step, which recomputes it first).

    Example:
      >>> import torch, jax.numpy as jnp, optax_bertadam as ob
      >>> model = torch.nn.Linear(3, 2)
      >>> optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
      >>> params = {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}
      >>> tx = ob.adamw(1e-3, weight_decay=0.01)
      >>> grads = {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}
      >>> _, opt_state = tx.update(grads, tx.init(params), params)
      >>> state_dict = ob.to_torch_state_dict(
      ...     opt_state, optimizer, ["weight", "bias"],
      ...     name_map={"kernel": "weight", "bias": "bias"}, transform=ob.transpose_kernels)
      >>> optimizer.load_state_dict(state_dict)
      >>> tuple(optimizer.state[model.weight]["exp_avg"].shape), float(optimizer.state[model.bias]["step"])
      ((2, 3), 1.0)
    """
    torch = _validation.import_torch("to_torch_state_dict")  # only here: the module works without torch
    # One direction for `transform` everywhere (torch -> Flax); the export runs its inverse.
    inverse = inverse_of(transform, inverse_transform)

    reference = optimizer.state_dict()
    ids = _group_ids(reference["param_groups"])
    torch_params = [p for group in optimizer.param_groups for p in group["params"]]
    if len(ids) != len(param_names):
        raise ValueError(
            f"param_names has {len(param_names)} names but the optimizer holds {len(ids)} parameters"
        )
    # Each parameter group (optax.partition) keeps its own moment trees over its own parameters:
    # they are merged by path; a parameter whose key appears twice is ambiguous.
    values: dict[str, dict[str, Any]] = {}
    for node in _state_nodes(opt_state):
        for field, key in _field_map(node).items():
            tree = getattr(node, field)
            by_path = dict(zip(_flax_paths(tree), jax.tree.leaves(tree), strict=True))
            twice = sorted(set(by_path) & set(values.get(key, {})))
            if twice:
                raise ValueError(
                    f"opt_state is ambiguous: it holds torch key {key!r} twice for "
                    f"{_validation.listing(twice, 5)} (two optimizers chained?)"
                )
            if by_path:
                values.setdefault(key, {}).update(by_path)
    if not values:
        raise ValueError(
            "opt_state has no moments this module can export (known: "
            f"{', '.join(TORCH_STATE_KEYS)})"
        )
    counts = sorted({int(np.asarray(getattr(c, "value", c))) for c in _counts(opt_state)})
    if len(counts) != 1:
        raise ValueError(f"opt_state holds {len(counts)} different update counts {counts}: expected one")
    step = counts[0]

    # Groups may keep different keys (Adam's amsgrad is per group): each parameter exports its own.
    flax_paths = sorted(set().union(*values.values()))
    # name_map may name parameters the state keeps nothing for (frozen ones); torch parameters
    # without requires_grad keep no state in torch either.
    to_torch = match_names(
        flax_paths, param_names, name_map, torch_names_arg="param_names", name_map_beyond_paths=True,
        required_names=[n for n, p in zip(param_names, torch_params, strict=True)
                        if getattr(p, "requires_grad", True)],
    )
    shape_of = {name: tuple(p.shape) for name, p in zip(param_names, torch_params, strict=True)}
    factored = any(key in _FACTORED_KEYS for key in values)
    # DeepSpeed's FusedAdam and DeepSpeedCPUAdam keep an int step (their kernels take one).
    deepspeed_adam = catalogue.deepspeed_adam_class(reference["param_groups"])
    # Adam/AdamW keep a tensor step; BertAdam, Adafactor and SGD (which ignores it) an int.
    tensor_step = (not factored and deepspeed_adam is None
                   and any(key in _TENSOR_STEP_KEYS for key in values))
    # torch.optim.SGD keeps its momentum buffer and no step.
    keeps_step = not set(values) <= set(_STEPLESS_KEYS)

    per_name: dict[str, dict[str, Any]] = {}
    shape_errors = []
    for path in flax_paths:
        name = to_torch[path]
        entry: dict[str, Any] = {}
        if keeps_step:
            entry["step"] = torch.tensor(float(step), dtype=torch.float32) if tensor_step else step
        for key, by_path in values.items():
            if path not in by_path or not _keeps(key, factored, shape_of[name]):
                continue  # a placeholder: torch keeps nothing for this parameter
            value = np.asarray(jax.device_get(by_path[path]))
            torch_key, expected = key, shape_of[name]
            if key in _FACTORED_KEYS:
                row, col = (np.shape(values[k][path]) for k in _FACTORED_KEYS)
                torch_key = _factored_key(key, row, col, path, inverse, shape_errors)
                expected = _factored_shape(torch_key, shape_of[name])
            elif inverse is not None:
                value = np.asarray(inverse(path, value))
            if tuple(value.shape) != expected:
                shape_errors.append(f"{name} ({key}): optax {tuple(value.shape)} vs torch {expected}")
                continue
            if value.dtype == jnp.bfloat16:
                entry[torch_key] = torch.from_numpy(value.astype(np.float32)).to(torch.bfloat16)
            else:
                entry[torch_key] = torch.from_numpy(np.array(value, order="C"))  # a writable copy
        per_name[name] = entry
    if shape_errors:
        raise ValueError(
            "opt_state tensors do not match the torch parameter shapes (is a transform missing?): "
            + _validation.listing(shape_errors)
        )
    out = {
        "state": {pid: per_name[name] for pid, name in zip(ids, param_names, strict=True)
                  if name in per_name},
        "param_groups": copy.deepcopy(reference["param_groups"]),
    }
    if deepspeed_adam == "FusedAdam" and keeps_step:
        # FusedAdam's layout after `step` updates from a fresh start: group['step'] 0, each
        # group's count in its last parameter's state, the others still at 0.
        for group in out["param_groups"]:
            stepped = [pid for pid in group["params"] if pid in out["state"]]
            if "step" in group or stepped:
                group["step"] = 0
            for pid in stepped[:-1]:
                out["state"][pid]["step"] = 0
    return out
