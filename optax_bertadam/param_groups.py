"""PyTorch's parameter groups for every optimizer of the package, and layer-wise LR decay.

A PyTorch script builds ``optimizer = AdamW([{"params": decay, "weight_decay": 0.01},
{"params": no_decay, "weight_decay": 0.0}], lr=2e-5)``: a list of groups, each overriding the
constructor's defaults. :func:`param_groups` is the same list over a JAX parameter tree, built on
``optax.partition`` with one copy of the optimizer per group; :func:`layerwise_lr_decay_groups`
builds the groups of ELECTRA's layer-wise learning-rate decay for a BERT-shaped tree.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax

from optax_bertadam import _validation, algorithms, masks, optimizers, transforms

PyTree = Any
Selector = Any  # a regex string, a predicate (path, leaf) -> bool, or a tree of bools

# Keys of a group that are not hyperparameters of the factory.
_GROUP_KEYS = ("params", "frozen", "schedule", "lr_lambda")


def _factory_entry(factory: Callable[..., Any]) -> algorithms.Algorithm | None:
    for entry in algorithms.ALGORITHMS:
        if entry.factory is factory:
            return entry
    return None


def torch_to_factory_names(factory: Callable[..., Any]) -> dict[str, str | tuple[str, ...]]:
    """PyTorch's argument names -> ``factory``'s: ``{"lr": "learning_rate", "betas": ("b1", "b2")}``.

    From the registry entry of ``factory`` (:data:`optax_bertadam.algorithms.ALGORITHMS`); for
    another factory (e.g. ``optax.adamw``), ``lr`` -> ``learning_rate`` and ``betas`` -> its
    ``b1``/``b2`` when it has them.
    """
    entry = _factory_entry(factory)
    if entry is not None:
        names: dict[str, Any] = {}
        tuples: dict[str, dict[int, str]] = {}
        for argument, torch_name in entry.torch_arguments.items():
            indexed = algorithms._INDEXED.match(torch_name)
            if indexed:
                tuples.setdefault(indexed.group(1), {})[int(indexed.group(2))] = argument
            else:
                names[torch_name] = argument
        for torch_name, entries in tuples.items():
            names[torch_name] = tuple(entries[i] for i in sorted(entries))
        return names
    parameters = inspect.signature(factory).parameters
    names = {"lr": "learning_rate"} if "learning_rate" in parameters else {}
    if "b1" in parameters and "b2" in parameters:
        names["betas"] = ("b1", "b2")
    return names


def translate_arguments(
    factory: Callable[..., Any], arguments: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """``arguments`` with PyTorch names (``lr``, ``betas``) turned into ``factory``'s names.

    Raises:
      ValueError: an argument ``factory`` does not take, or one given under both names.
    """
    parameters = inspect.signature(factory).parameters
    torch_names = torch_to_factory_names(factory)
    out: dict[str, Any] = {}
    for name, value in arguments.items():
        target = torch_names.get(name, name)
        if isinstance(target, tuple):
            if not isinstance(value, Sequence) or len(value) != len(target):
                raise ValueError(
                    f"{where}: {name}={value!r} is invalid: expected {len(target)} values "
                    f"({', '.join(target)})"
                )
            pairs = list(zip(target, value, strict=True))
        else:
            pairs = [(target, value)]
        for argument, argument_value in pairs:
            if argument not in parameters:
                allowed = sorted(set(parameters) | set(torch_names))
                raise ValueError(
                    f"{where}: {name}={value!r} is invalid: {getattr(factory, '__name__', factory)} "
                    f"takes no argument {argument!r}; expected one of {', '.join(allowed)}"
                )
            if argument in out:
                raise ValueError(
                    f"{where}: {argument} is given twice (as {name!r} and under another name)"
                )
            out[argument] = argument_value
    return out


def _select(
    selector: Selector, names: list[str], leaves: list[Any], treedef: Any, where: str
) -> list[bool]:
    """Which leaves ``selector`` selects, one bool per leaf."""
    if isinstance(selector, (str, re.Pattern)):
        try:
            pattern = re.compile(selector)
        except re.error as error:
            raise ValueError(f"{where}={selector!r} is not a valid regex: {error}") from None
        return [pattern.search(name) is not None for name in names]
    if callable(selector):
        chosen = []
        for name, leaf in zip(names, leaves, strict=True):
            try:
                chosen.append(selector(name, leaf))
            except TypeError as error:
                raise TypeError(
                    f"{where}={selector!r} is invalid: a predicate is called as "
                    f"predicate(path, leaf); calling it on {name!r} failed: {error}"
                ) from error
        for name, value in zip(names, chosen, strict=True):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(
                    f"{where}={selector!r} is invalid: a predicate must return a bool, got "
                    f"{value!r} for {name!r}"
                )
        return [bool(value) for value in chosen]
    flags, structure = jax.tree.flatten(selector)
    if structure != treedef or not all(isinstance(f, (bool, np.bool_)) for f in flags):
        raise ValueError(
            f"{where} is invalid: expected a regex on the '/'-joined parameter path, a predicate "
            f"(path, leaf) -> bool, or a tree of bools with the structure of the parameters "
            f"({len(leaves)} leaves); got {type(selector).__name__} with {len(flags)} leaves"
            + ("" if structure == treedef else " and another tree structure")
        )
    return [bool(f) for f in flags]


def global_clip_across_groups(
    factory: Callable[..., Any], kwargs: dict[int, dict[str, Any]]
) -> tuple[float | None, list[int]]:
    """BertAdam's ``clip_mode='global'`` spans the groups: ``(max_norm, groups clipped together)``.

    DeepSpeedExamples' ``BertAdam`` clips the gradients of every group with ``clip_mode='global'`` and
    ``max_grad_norm > 0`` together, with the first such group's ``max_grad_norm``, before any
    group's update. Those groups' own clipping is switched off here (``kwargs`` is changed), and
    the caller clips them together first. ``(None, [])`` when no group clips globally.
    """
    if factory is not optimizers.bertadam:
        return None, []
    defaults = inspect.signature(factory).parameters
    together = []
    for index, group in kwargs.items():
        mode = group.get("clip_mode", defaults["clip_mode"].default)
        norm = group.get("max_grad_norm", defaults["max_grad_norm"].default)
        if mode == "global" and not _validation.is_concrete_scalar(norm) and len(kwargs) > 1:
            raise ValueError(
                f"groups[{index}]: max_grad_norm={norm!r} is invalid with clip_mode='global' over "
                "several groups: the groups are clipped together, which needs a number"
            )
        if mode == "global" and norm > 0:
            together.append(index)
    if not together:
        return None, []
    max_norm = kwargs[together[0]].get("max_grad_norm", defaults["max_grad_norm"].default)
    for index in together:
        kwargs[index]["max_grad_norm"] = -1
    return max_norm, together


def clip_groups_together(
    max_norm: float | None, together: Sequence[int], labels: Any, groups: optax.GradientTransformation
) -> optax.GradientTransformation:
    """``groups`` after clipping the gradients of the groups ``together`` by their global norm.

    ``labels`` is the tree of group indices (or a function of the updates returning it);
    ``max_norm`` ``None``: ``groups`` itself. See :func:`global_clip_across_groups`.
    """
    if max_norm is None:
        return groups

    def clipped(tree: PyTree) -> PyTree:
        label_tree = labels(tree) if callable(labels) else labels
        return jax.tree.map(lambda label: label in together, label_tree)

    clip = transforms.clip_grad_norm(max_norm, per_tensor=False)
    return optax.chain(optax.masked(clip, clipped if callable(labels) else clipped(None)), groups)


def param_groups(
    factory: Callable[..., optax.GradientTransformation],
    groups: Sequence[Mapping[str, Any]],
    *,
    schedule: Callable[[Any], Any] | None = None,
    lr_lambda: Callable[[Any], Any] | None = None,
    **defaults: Any,
) -> optax.GradientTransformation:
    r"""``factory`` with PyTorch's parameter groups: ``Optimizer([{"params": ..., **overrides}])``.

    Group :math:`i` runs ``factory(**{**defaults, **overrides_i})`` on its own parameters; with a
    ``schedule`` (PyTorch: a scheduler over the optimizer) update :math:`k` of group :math:`i`
    applies

    .. math:: \mathrm{lr}_{i,k} = \mathrm{lr}_i \cdot \mathrm{schedule}(k)

    as a ``LambdaLR`` does (each group's own ``initial_lr`` times the multiplier). Reproduces::

      torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                         {"params": no_decay, "weight_decay": 0.0, "lr": 1e-4}], lr=2e-5)
      scheduler = LambdaLR(optimizer, multiplier)

    Each group is a dict:

    * ``"params"``: which parameters: a regex ``re.search``-ed on the ``/``-joined path
      (:func:`optax_bertadam.parameter_names`, e.g. ``"encoder/layer/0/attention/query/bias"``), a
      predicate ``(path, leaf) -> bool``, or a tree of bools with the parameters' leaves;
    * any hyperparameter of ``factory``, under its name or PyTorch's (``lr``, ``betas``, ``eps``,
      ``momentum``, ...; :func:`torch_to_factory_names`);
    * ``"lr_lambda"`` (or ``"schedule"``): this group's own multiplier (``LambdaLR`` with a
      list of lambdas), a function of the count written with ``jax.numpy`` (traced once when
      built); for a factory with a ``schedule`` hyperparameter of its own (``ob.bertadam``), a
      string under ``"schedule"`` is that hyperparameter (``"warmup_cosine"``), as in PyTorch's
      ``BertAdam`` groups;
    * ``"frozen": True`` (alone with ``"params"``): not trained: zero updates, no state, no rate.

    Groups are chosen on the parameters (``init``'s ``params``, and ``update``'s when given; a
    predicate sees the parameter leaf), so ``update`` gets the same groups ``init`` did.
    ``ob.bertadam`` groups with ``clip_mode="global"`` are clipped together before any update,
    with the first such group's ``max_grad_norm``, as ``BertAdam.step`` clips them.

    Every parameter must be in exactly one group: one in two groups or in none is refused at
    ``init``, naming the parameters (PyTorch: "some parameters appear in more than one parameter
    group"; a parameter left out of a PyTorch optimizer is silently not trained, here freezing is
    explicit). A group that selects nothing is refused too (a misspelt regex, most likely).

    It is ``optax.partition`` with the group index as label: :func:`optax_bertadam.get_last_lr`
    lists the rate of every (not frozen) group in group order, like ``scheduler.get_last_lr()``,
    and the per-group states sit in ``state.inner_states[i]`` (``state[1].inner_states[i]``
    after BertAdam's global clipping across groups).

    Args:
      factory: an optimizer of the package (``ob.adamw``, ``ob.bertadam``, ``ob.sgd``, ...) or any
        optax factory taking ``learning_rate``.
      groups: the list of groups, as above, in PyTorch's order.
      schedule: the multiplier ``count -> factor`` of every group's base rate, or ``None``
        (a string: the factory's own ``schedule`` hyperparameter, see above).
      lr_lambda: the same multiplier under ``LambdaLR``'s name; with ``ob.bertadam`` it leaves
        ``schedule=`` to BertAdam's own schedule name.
      **defaults: hyperparameters of every group (PyTorch names accepted).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError/TypeError: when built, for an unknown or invalid hyperparameter (named with its
        group) or a bad selector; at ``init``, for parameters in two groups or in none.

    >>> import jax.numpy as jnp, optax_bertadam as ob
    >>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    >>> tx = ob.param_groups(ob.adamw, [{"params": "kernel", "weight_decay": 0.01},
    ...                                 {"params": "bias", "lr": 1e-2}], lr=1e-3)
    >>> state = tx.init(params)
    >>> [float(lr) for lr in ob.get_last_lr(state)]
    [0.0010000000474974513, 0.009999999776482582]
    """
    if not callable(factory):
        raise TypeError(f"factory={factory!r} is invalid: expected an optimizer factory, e.g. ob.adamw")
    if isinstance(groups, (str, bytes, Mapping)) or not isinstance(groups, Sequence) or not groups:
        raise TypeError(
            f"groups={groups!r} is invalid: expected a non-empty list of dicts "
            '{"params": selector, **hyperparameters}'
        )
    takes_schedule = "schedule" in inspect.signature(factory).parameters
    if isinstance(schedule, str) and takes_schedule:
        # bertadam's own `schedule` (a name), not the multiplier of this function.
        defaults, schedule = {**defaults, "schedule": schedule}, None
    if lr_lambda is not None:
        if schedule is not None:
            raise ValueError(
                f"schedule={schedule!r} and lr_lambda={lr_lambda!r} are both given: they are the "
                "same multiplier; pass one"
            )
        schedule = lr_lambda
    if schedule is not None:
        schedule = _validation.check_jnp_function("schedule", schedule)
    base = translate_arguments(factory, defaults, "param_groups")
    selectors, kwargs_of, frozen = [], {}, []
    for index, group in enumerate(groups):
        where = f"groups[{index}]"
        if not isinstance(group, Mapping) or "params" not in group:
            raise TypeError(f"{where}={group!r} is invalid: expected a dict with a 'params' key")
        selectors.append(group["params"])
        is_frozen = group.get("frozen", False)
        if not isinstance(is_frozen, (bool, np.bool_)):
            raise TypeError(f"{where}: frozen={is_frozen!r} is invalid: expected True or False")
        if is_frozen:
            extra = sorted(set(group) - {"params", "frozen"})
            if extra:
                raise ValueError(f"{where} is frozen: it takes no hyperparameters, got {extra}")
            frozen.append(index)
            continue
        if "lr_lambda" in group and "schedule" in group and not isinstance(group["schedule"], str):
            raise ValueError(f"{where} gives both 'schedule' and 'lr_lambda': pass one")
        group_schedule = group.get("lr_lambda", group.get("schedule", schedule))
        overrides = {k: v for k, v in group.items() if k not in _GROUP_KEYS}
        if isinstance(group.get("schedule"), str) and takes_schedule:
            overrides["schedule"] = group["schedule"]
            group_schedule = group.get("lr_lambda", schedule)
        kwargs = {**base, **translate_arguments(factory, overrides, where)}
        if group_schedule is not None:
            if group_schedule is not schedule:
                group_schedule = _validation.check_jnp_function(f"{where}: schedule", group_schedule)
            rate = kwargs.get("learning_rate")
            if rate is None or callable(rate):
                raise ValueError(
                    f"{where}: learning_rate={rate!r} is invalid with a schedule: the schedule "
                    "multiplies the group's base rate; give lr (or learning_rate) as a number"
                )
            if not _validation.is_traced(rate):
                _validation.check_finite(f"{where}: learning_rate", rate)
                _validation.check_range(f"{where}: learning_rate", rate, low=0.0)
            kwargs["learning_rate"] = transforms.ScaledSchedule(rate, group_schedule)
        kwargs_of[index] = kwargs
    max_norm, clipped_together = global_clip_across_groups(factory, kwargs_of)
    transformations: dict[int, optax.GradientTransformation] = {}
    for index, kwargs in kwargs_of.items():
        try:
            transformations[index] = factory(**kwargs)
        except (TypeError, ValueError) as error:
            raise type(error)(f"groups[{index}]: {error}") from error
    for index in frozen:
        transformations[index] = optax.set_to_zero()

    def labels(tree: PyTree) -> PyTree:
        paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
        names = [masks.parameter_name(path) for path, _ in paths_and_leaves]
        leaves = [leaf for _, leaf in paths_and_leaves]
        chosen = [_select(s, names, leaves, treedef, f"groups[{i}]['params']")
                  for i, s in enumerate(selectors)]
        empty = [i for i, flags in enumerate(chosen) if not any(flags)]
        if empty:
            raise ValueError(
                f"groups{empty} select no parameter; the parameters are: {_validation.listing(names, 10)}"
            )
        owners = [[i for i, flags in enumerate(chosen) if flags[j]] for j in range(len(names))]
        doubled = [f"{n} (groups {o})" for n, o in zip(names, owners, strict=True) if len(o) > 1]
        if doubled:
            raise ValueError(
                "some parameters appear in more than one parameter group: " + _validation.listing(doubled, 10)
            )
        orphans = [n for n, o in zip(names, owners, strict=True) if not o]
        if orphans:
            raise ValueError(
                "some parameters are in no parameter group: " + _validation.listing(orphans, 10)
                + ' (add them to a group, or to one with "frozen": True to leave them untouched)'
            )
        return jax.tree.unflatten(treedef, [o[0] for o in owners])

    def build(label_tree: PyTree) -> optax.GradientTransformation:
        return clip_groups_together(
            max_norm, clipped_together, label_tree, optax.partition(transformations, label_tree)
        )

    def init_fn(params: PyTree) -> Any:
        return build(labels(params)).init(params)

    def update_fn(updates: PyTree, state: Any, params: PyTree | None = None, **extra_args: Any):
        # The groups are chosen on the parameters, as at init (a predicate may read the leaf);
        # without params, on the updates, which have the parameters' paths and shapes.
        label_tree = labels(params if params is not None else updates)
        return optax.with_extra_args_support(build(label_tree)).update(
            updates, state, params, **extra_args
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# A path component naming encoder layer i: "layer/3", "layer_3", "layers/3", "layers_3", "h/3".
_LAYER = r"(?:^|/)(?:layers?|h|blocks?)(?:/|_)(\d+)(?:/|$)"


def layerwise_lr_decay_groups(
    params: PyTree,
    learning_rate: float,
    layer_decay: float,
    *,
    weight_decay: float | None = None,
    embeddings: str = r"(?:^|/)embeddings(?:_project)?(?:/|$)",
    layers: str = _LAYER,
    no_decay: Sequence[str] = masks.DEFAULT_NO_DECAY,
) -> list[dict[str, Any]]:
    r"""The parameter groups of layer-wise learning-rate decay (ELECTRA, Clark et al. 2020).

    For a BERT-shaped tree with :math:`L` encoder layers, each parameter gets a depth :math:`d`
    and the rate

    .. math::
      \mathrm{lr}_d = \mathrm{lr} \cdot \text{layer\_decay}^{\,L + 1 - d}, \qquad
      d = \begin{cases} 0 & \text{embeddings} \\ i + 1 & \text{encoder layer } i \\
        L + 1 & \text{everything else (pooler, task head)} \end{cases}

    so the head trains at ``lr``, the top encoder layer at ``lr * decay``, layer 0 at
    ``lr * decay**L`` and the embeddings at ``lr * decay**(L + 1)``. The PyTorch groups this
    reproduces are, with ``n`` the number of layers::

      [{"params": embeddings, "lr": lr * decay ** (n + 1)}]
      + [{"params": layer[i], "lr": lr * decay ** (n - i)} for i in range(n)]
      + [{"params": head, "lr": lr}]

    **The off-by-one.** Public implementations disagree on the exponent by one: ELECTRA's
    ``_get_layer_lrs`` gives the head depth ``L + 2`` and uses ``decay ** (L + 2 - d)``, so its top
    layer is at ``decay**2``, layer 0 at ``decay**(L + 1)`` and the embeddings at
    ``decay**(L + 2)`` (depth ``L + 1`` is unused); the common PyTorch loop "``lr *= decay`` after
    each layer from the top" puts the top layer at ``decay**0``, the same rate as the head. Here
    the top layer is one step below the head (``decay**1``). To get ELECTRA's numbers pass
    ``learning_rate * layer_decay`` and set the head's rate back to ``learning_rate`` (one extra
    group before this one's last); for the loop's numbers, pass ``learning_rate / layer_decay``
    and set the head's rate back to ``learning_rate`` likewise.

    Args:
      params: the parameter tree; encoder layers are found by ``layers``.
      learning_rate: the head's rate (``> 0``).
      layer_decay: the factor per layer, in ``(0, 1]``.
      weight_decay: ``None``: one group per depth. A number: two groups per depth, the decayed
        parameters with this ``weight_decay`` and the ``no_decay`` ones with ``0.0`` (BERT's
        ``no_decay = ['bias', 'LayerNorm.weight']`` split).
      embeddings: regex on the ``/``-joined path selecting the embeddings (default: a path
        component ``embeddings``, or ELECTRA's ``embeddings_project``).
      layers: regex on the ``/``-joined path whose first group is the encoder layer's index
        (default: a component ``layer``, ``layers``, ``h`` or ``block(s)`` followed by the index:
        ``encoder/layer/3/...``, ``encoder/layer_3/...``). Numbered layers under two different
        prefixes (``encoder/layer/0`` and ``classifier/layers_0``) are refused as ambiguous:
        pass e.g. ``layers=r"encoder/layer/(\d+)/"``.
      no_decay: path components not decayed, as in :func:`optax_bertadam.decay_mask`.

    Returns:
      Groups for :func:`param_groups`, ordered embeddings, layer 0 .. L-1, head (each decayed
      then not decayed), skipping empty ones; each ``params`` a tree of bools.

    >>> import jax.numpy as jnp, optax_bertadam as ob
    >>> params = {"embeddings": {"w": jnp.ones(2)},
    ...           "encoder": {"layer": [{"w": jnp.ones(2)}, {"w": jnp.ones(2)}]},
    ...           "classifier": {"w": jnp.ones(2)}}
    >>> groups = ob.layerwise_lr_decay_groups(params, 1.0, 0.5)
    >>> [g["lr"] for g in groups]
    [0.125, 0.25, 0.5, 1.0]
    """
    learning_rate = _validation.check_range("learning_rate", learning_rate, low=0.0, low_inclusive=False)
    layer_decay = _validation.check_range(
        "layer_decay", layer_decay, low=0.0, high=1.0, low_inclusive=False
    )
    if weight_decay is not None:
        weight_decay = _validation.check_range("weight_decay", weight_decay, low=0.0)
    try:
        embeddings_pattern = re.compile(embeddings)
    except (re.error, TypeError) as error:
        raise ValueError(f"embeddings={embeddings!r} is not a valid regex: {error}") from None
    try:
        layers_pattern = re.compile(layers)
    except (re.error, TypeError) as error:
        raise ValueError(f"layers={layers!r} is not a valid regex: {error}") from None
    if layers_pattern.groups < 1:
        raise ValueError(f"layers={layers!r} is invalid: its first group must capture the layer index")
    names = masks.parameter_names(params)
    found = [layers_pattern.search(name) for name in names]
    layer_matches = [m for m in found if m and m.group(1) is not None and m.group(1).isdigit()]
    if not layer_matches:
        raise ValueError(
            f"params has no encoder layers matching layers={layers!r}; the paths are: "
            f"{_validation.listing(names, 10)}"
        )
    by_prefix: dict[str, set[int]] = {}
    for m in layer_matches:
        by_prefix.setdefault(m.string[:m.start(1)].lstrip("/"), set()).add(int(m.group(1)))
    # The likeliest encoder (most layers) first, for the example in the message.
    prefixes = sorted(by_prefix, key=lambda prefix: (-len(by_prefix[prefix]), "encoder" not in prefix,
                                                     prefix))
    if len(prefixes) > 1:
        raise ValueError(
            f"params has numbered layers under several prefixes ({', '.join(prefixes)}), so which "
            "are the encoder's is ambiguous: pass layers= a regex matching only the encoder's, "
            f"e.g. layers=r\"{re.escape(prefixes[0])}(\\d+)/\""
        )
    layers = [m if m and m.group(1) is not None and m.group(1).isdigit() else None for m in found]
    indices = sorted({int(m.group(1)) for m in layer_matches})
    num_layers = indices[-1] + 1

    def depth(name: str, layer: re.Match | None) -> int:
        if embeddings_pattern.search(name):
            return 0
        if layer:
            return int(layer.group(1)) + 1
        return num_layers + 1

    depths = [depth(n, m) for n, m in zip(names, layers, strict=True)]
    decayed = jax.tree.leaves(masks.decay_mask(params, exclude=no_decay))
    splits = [(None, [True] * len(names))] if weight_decay is None else [
        (weight_decay, decayed), (0.0, [not d for d in decayed])
    ]
    treedef = jax.tree.structure(params)
    groups = []
    for d in range(num_layers + 2):
        for wd, flags in splits:
            chosen = [depth_ == d and flag for depth_, flag in zip(depths, flags, strict=True)]
            if not any(chosen):
                continue
            group = {"params": jax.tree.unflatten(treedef, chosen),
                     "lr": learning_rate * layer_decay ** (num_layers + 1 - d)}
            if wd is not None:
                group["weight_decay"] = wd
            groups.append(group)
    return groups
