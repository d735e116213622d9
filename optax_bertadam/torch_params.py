"""PyTorch parameters <-> Flax parameter trees: the one place torch names meet Flax paths.

A PyTorch model names its tensors ``encoder.layer.0.attention.self.query.weight``; a Flax model
keeps the same tensors in a tree whose ``/``-joined path is e.g.
``encoder/layer/0/attention/self/query/kernel``, with ``Linear`` weights transposed. Two
arguments describe the correspondence, with the conventions of :func:`optax_bertadam.from_torch`,
:func:`optax_bertadam.load_torch_state_dict` and :func:`optax_bertadam.compare_training`:

* ``name_map``: Flax path (``/``-joined, as :func:`optax_bertadam.parameter_names` writes it)
  -> torch name, a dict or a function; default: the path with ``.`` for ``/``;
* ``transform``: ``transform(flax_path, torch_array) -> array`` in the Flax layout, e.g.
  :func:`optax_bertadam.transpose_kernels`; default: none.

:func:`match_names` pairs the names and refuses, in one ``ValueError`` listing every problem,
what does not pair: Flax paths with no torch name, torch names that are not parameters, torch
parameters no Flax path reaches, one torch tensor behind two Flax leaves (tied weights); with
the options the optimizer state needs (which Flax paths must have a torch name, which torch
names may stay unmatched). :func:`match_parameters` builds on it with the tensors in hand (tied
aliases, shapes that differ after ``transform``). Every entry point goes through them:
:func:`params_from_torch`, :func:`grads_from_torch`, :func:`params_to_torch`,
:func:`optax_bertadam.from_torch`, :func:`optax_bertadam.load_torch_state_dict`,
:func:`optax_bertadam.to_torch_state_dict` and :func:`optax_bertadam.compare_training`, so the
same ``name_map`` works, and the same mistake reads the same, in all of them.

Nothing here imports torch at import time; :func:`params_to_torch` imports it when called.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_bertadam import _validation, masks

PyTree = Any
NameMap = Mapping[str, str] | Callable[[str], str] | None
Transform = Callable[[str, np.ndarray], np.ndarray] | None


def transpose_kernels(path: str, array: np.ndarray) -> np.ndarray:
    """A ``transform`` for Linear layers: transpose 2-D tensors whose Flax path ends in ``kernel``.

    ``torch.nn.Linear.weight`` is ``(out, in)``, ``flax.nnx.Linear``/``linen.Dense`` kernels are
    ``(in, out)``. It is its own inverse, so it serves both directions.

    Args:
      path: the ``/``-joined Flax path of the tensor.
      array: the tensor, as a numpy array.

    Returns:
      ``array`` transposed if it is a 2-D ``kernel``, else ``array`` itself.

    Example:
      >>> import numpy as np, optax_bertadam as ob
      >>> ob.transpose_kernels("dense/kernel", np.zeros((3, 2))).shape
      (2, 3)
      >>> ob.transpose_kernels("dense/bias", np.zeros(2)).shape
      (2,)
    """
    if path.rsplit("/", 1)[-1] == "kernel" and np.ndim(array) == 2:
        return np.swapaxes(array, 0, 1)
    return array


# Transforms that undo themselves: params_to_torch may use them in both directions.
SELF_INVERSE_TRANSFORMS = (transpose_kernels,)


class ParameterMatch(NamedTuple):
    """One Flax parameter and the torch tensor it corresponds to.

    Attributes:
      flax_path: the ``/``-joined Flax path.
      torch_name: the torch parameter's name in ``named_parameters``.
      tensor: the torch tensor (a ``torch.nn.Parameter``, or any array-like).
    """

    flax_path: str
    torch_name: str
    tensor: Any


def _named(named_parameters: Any, argname: str = "named_parameters") -> dict[str, Any]:
    """``named_parameters`` as a dict; a ``torch.nn.Module`` gives its ``named_parameters()``."""
    if hasattr(named_parameters, "named_parameters") and callable(named_parameters.named_parameters):
        named_parameters = named_parameters.named_parameters()
    if isinstance(named_parameters, Mapping):
        items = list(named_parameters.items())
    else:
        try:
            items = [(name, tensor) for name, tensor in named_parameters]
        except (TypeError, ValueError):
            raise TypeError(
                f"{argname}={named_parameters!r} is invalid: expected model.named_parameters() "
                "(pairs of name and tensor), a dict of them, or a torch.nn.Module"
            ) from None
    named: dict[str, Any] = {}
    for name, tensor in items:
        if not isinstance(name, str):
            raise TypeError(f"{argname} is invalid: the name {name!r} is not a str")
        named[name] = tensor
    return named


def _mapping(name_map: NameMap, paths: list[str]) -> dict[str, str]:
    if name_map is None:
        return {p: p.replace("/", ".") for p in paths}
    if callable(name_map) and not isinstance(name_map, Mapping):
        return {p: str(name_map(p)) for p in paths}
    if not isinstance(name_map, Mapping):
        raise TypeError(
            f"name_map={name_map!r} is invalid: expected a dict or a function from the Flax path "
            "('/'-joined) to the torch name, or None"
        )
    return {str(k): str(v) for k, v in name_map.items()}


def _shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in getattr(tensor, "shape", np.shape(tensor)))


def _moved_shape(transform: Transform, path: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if transform is None:
        return shape
    # A zero-strided placeholder: the transform's shape logic without the tensor's memory.
    return tuple(np.shape(transform(path, np.broadcast_to(np.zeros((), np.float32), shape))))


def match_names(
    flax_paths: Sequence[str],
    torch_names: Iterable[str],
    name_map: NameMap = None,
    *,
    torch_names_arg: str = "named_parameters",
    required_paths: Iterable[str] | None = None,
    required_names: Iterable[str] | None = None,
    name_map_beyond_paths: bool = False,
) -> dict[str, str]:
    """Flax path -> torch name for the paths that need one; refuse, in one error, what does not pair.

    The name-level core of the one matcher: :func:`match_parameters` (tensors, shapes, tied
    weights) builds on it; :func:`optax_bertadam.load_torch_state_dict`,
    :func:`optax_bertadam.to_torch_state_dict` and :func:`optax_bertadam.compare.compare_training`
    pair names through it (or through :func:`match_parameters`), so every entry point takes the same
    ``name_map`` forms and words the same problem the same way.

    Args:
      flax_paths: the ``/``-joined Flax paths (as :func:`optax_bertadam.parameter_names` writes
        them).
      torch_names: the torch names a Flax path may map to (unique).
      name_map: Flax path -> torch name, a dict or a function of the path; default: the path
        with ``.`` for ``/``.
      torch_names_arg: the argument ``torch_names`` came from, as the messages name it.
      required_paths: the Flax paths that must have a torch name in ``torch_names`` (default:
        all); the others (e.g. frozen, keeping no optimizer state) may map to a name outside it,
        or have none, but may not map to a name of ``required_names``: that torch parameter is
        trained, its Flax parameter is not.
      required_names: the torch names that must be reached by a Flax path (default: all); the
        others (e.g. parameters without ``requires_grad``, which torch never steps) may stay
        unmatched.
      name_map_beyond_paths: ``flax_paths`` is not every Flax parameter, so a dict ``name_map``
        may have keys beyond it.

    Returns:
      ``{flax_path: torch_name}`` for every path of ``required_paths``, in the order of
      ``flax_paths``.

    Raises:
      TypeError: ``name_map`` is neither a dict, a function nor ``None``.
      ValueError: one error listing every problem: duplicate torch names, Flax paths with no
        torch name, ``name_map`` keys that are not Flax paths, torch names not in
        ``torch_names``, one torch name behind two Flax paths (tied weights), torch names no Flax
        path maps to, and torch parameters trained whose Flax parameter is not.

    Example:
      >>> from optax_bertadam.torch_params import match_names
      >>> match_names(["dense/kernel", "dense/bias"], ["dense.weight", "dense.bias"],
      ...             lambda path: path.replace("/", ".").replace("kernel", "weight"))
      {'dense/kernel': 'dense.weight', 'dense/bias': 'dense.bias'}
      >>> try:  # a typo in a torch name: one error, each problem after a '; '
      ...     match_names(["dense/kernel"], ["dense.weight"], {"dense/kernel": "dense.wieght"})
      ... except ValueError as error:
      ...     print(*str(error).split(": ", 1)[1].split("; "), sep="\\n")
      torch names that are not in named_parameters: dense/kernel -> 'dense.wieght'
      torch parameters no Flax path maps to: dense.weight
    """
    mapping, problems = _match_names(
        list(flax_paths), list(torch_names), name_map, torch_names_arg=torch_names_arg,
        required_paths=required_paths, required_names=required_names,
        name_map_beyond_paths=name_map_beyond_paths,
    )
    _raise_problems(problems)
    return mapping


_MISMATCH = "the torch and Flax parameters do not match: "


def _raise_problems(problems: list[str]) -> None:
    if problems:
        raise ValueError(_MISMATCH + "; ".join(problems))


def _match_names(
    flax_paths: list[str],
    torch_names: list[str],
    name_map: NameMap,
    *,
    torch_names_arg: str = "named_parameters",
    required_paths: Iterable[str] | None = None,
    required_names: Iterable[str] | None = None,
    name_map_beyond_paths: bool = False,
    tensor_key: Mapping[str, Any] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """:func:`match_names` returning its problems instead of raising them.

    ``tensor_key``: torch name -> the identity of its tensor (default: the name itself). Names
    with one key are aliases of one tensor (tied weights listed under both names): two Flax paths
    reaching one tensor are refused, and an alias of a reached tensor counts as reached.
    """
    torch_names = [str(n) for n in torch_names]
    known = set(torch_names)
    key = (lambda name: name) if tensor_key is None else (lambda name: tensor_key[name])
    required_path_set = set(flax_paths if required_paths is None else required_paths)
    required_keys = {key(n) for n in (torch_names if required_names is None else required_names)
                     if n in known}
    mapping = _mapping(name_map, flax_paths)
    problems: list[str] = []
    duplicates = sorted(n for n, count in collections.Counter(torch_names).items() if count > 1)
    if duplicates:
        problems.append(f"{torch_names_arg} has duplicate names: {_validation.listing(duplicates)}")
    unmapped = [p for p in flax_paths if p not in mapping and p in required_path_set]
    if unmapped:
        problems.append(f"Flax paths with no torch name in name_map: {_validation.listing(unmapped)}")
    unknown_keys = [] if name_map_beyond_paths else sorted(set(mapping) - set(flax_paths))
    if unknown_keys:
        problems.append(f"name_map keys that are not Flax paths: {_validation.listing(unknown_keys)}")
    not_known = [f"{p} -> {mapping[p]!r}" for p in flax_paths
                 if p in required_path_set and p in mapping and mapping[p] not in known]
    if not_known:
        problems.append(f"torch names that are not in {torch_names_arg}: "
                        + _validation.listing(not_known))
    # Every Flax path that reaches a torch parameter, required or not: two reaching one tensor
    # train it twice; one reaching a required tensor trains it.
    path_of_key: dict[Any, str] = {}
    tied, trained_elsewhere = [], []
    for path in flax_paths:
        name = mapping.get(path)
        if name not in known:
            continue
        if key(name) in path_of_key:
            tied.append(f"{path_of_key[key(name)]} and {path} ({name})")
        path_of_key[key(name)] = path
        if path not in required_path_set and key(name) in required_keys:
            trained_elsewhere.append(f"{name} (Flax {path})")
    if tied:
        problems.append("torch tensors behind two Flax leaves (tied weights: torch trains one "
                        f"tensor, keep one Flax parameter for it): {_validation.listing(tied)}")
    if trained_elsewhere:
        problems.append("torch parameters of the optimizer whose Flax parameter the optax state "
                        f"keeps no moments for (frozen in tx?): {_validation.listing(trained_elsewhere)}")
    unreached = [n for n in dict.fromkeys(torch_names)
                 if key(n) in required_keys and key(n) not in path_of_key]
    if unreached:
        problems.append(f"torch parameters no Flax path maps to: {_validation.listing(unreached)}")
    resolved = {p: mapping[p] for p in flax_paths
                if p in required_path_set and mapping.get(p) in known}
    return resolved, problems


def match_parameters(
    named_parameters: Any,
    params: PyTree,
    name_map: NameMap = None,
    transform: Transform = None,
    *,
    required: Iterable[Any] | None = None,
) -> list[ParameterMatch]:
    """Pair every leaf of the Flax tree ``params`` with its torch tensor; refuse what does not pair.

    The one matcher of torch names and Flax paths (its names through :func:`match_names`):
    :func:`params_from_torch`, :func:`params_to_torch`, :func:`optax_bertadam.from_torch` and
    :func:`optax_bertadam.compare.compare_training` go through it.

    Args:
      named_parameters: ``model.named_parameters()``, a dict name -> tensor, or the
        ``torch.nn.Module`` itself.
      params: the Flax parameter tree (its leaves may be arrays or ``jax.ShapeDtypeStruct``),
        e.g. ``nnx.state(model, nnx.Param)``.
      name_map: Flax path (``/``-joined) -> torch name, a dict or a function; default: the path
        with ``.`` for ``/``.
      transform: ``transform(flax_path, torch_array) -> array`` in the Flax layout (used here for
        shapes only), e.g. :func:`optax_bertadam.transpose_kernels`.
      required: the torch tensors that must have a Flax leaf (default: every parameter of
        ``named_parameters``); :func:`~optax_bertadam.from_torch` requires the optimizer's.

    Returns:
      A list of :class:`ParameterMatch` ``(flax_path, torch_name, tensor)``, in the order of
      ``jax.tree.leaves(params)``.

    Raises:
      ValueError: one error listing every problem: Flax paths with no torch name or whose torch
        name is not a parameter, ``name_map`` keys that are not Flax paths, torch parameters no
        Flax path reaches (a tied alias of a reached tensor excepted), shapes that differ after
        ``transform``, and one torch tensor behind two Flax leaves (tied weights: keep one).

    Example:
      >>> import torch, jax.numpy as jnp, optax_bertadam as ob
      >>> model = torch.nn.Linear(3, 2)
      >>> params = {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}
      >>> [(m.flax_path, m.torch_name) for m in ob.match_parameters(
      ...     model.named_parameters(), params, {"kernel": "weight", "bias": "bias"},
      ...     ob.transpose_kernels)]
      [('bias', 'bias'), ('kernel', 'weight')]
    """
    named = _named(named_parameters)
    paths_and_leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    paths = [masks.parameter_name(path) for path, _ in paths_and_leaves]
    required_ids = None if required is None else {id(t) for t in required}
    mapping, problems = _match_names(
        paths, list(named), name_map,
        required_names=None if required_ids is None else [
            n for n, t in named.items() if id(t) in required_ids],
        tensor_key={n: id(t) for n, t in named.items()},
    )
    matches: list[ParameterMatch] = []
    wrong_shapes = []
    for path, (_, leaf) in zip(paths, paths_and_leaves, strict=True):
        if path not in mapping:
            continue
        torch_name = mapping[path]
        tensor = named[torch_name]
        moved = _moved_shape(transform, path, _shape(tensor))
        if moved != tuple(np.shape(leaf)):
            wrong_shapes.append(f"{path} <- {torch_name}: torch {moved} after transform, Flax "
                                f"{tuple(np.shape(leaf))}")
        matches.append(ParameterMatch(path, torch_name, tensor))
    if wrong_shapes:
        problems.append(f"shapes that differ (is a transform missing?): {_validation.listing(wrong_shapes)}")
    if required_ids is not None:
        unnamed = len(required_ids - {id(t) for t in named.values()})
        if unnamed:
            problems.append(f"{unnamed} required torch parameter(s) not in named_parameters")
    _raise_problems(problems)
    return matches


def _to_numpy(tensor: Any, grads: bool, name: str) -> np.ndarray:
    if grads:
        tensor = getattr(tensor, "grad", None)
        if tensor is None:
            raise ValueError(f"{name} has no .grad")
    if hasattr(tensor, "detach"):  # a torch tensor: duck-typed, torch is not imported here
        tensor = tensor.detach().cpu()
        try:
            return tensor.numpy()
        except TypeError:  # bfloat16 and other dtypes numpy lacks: exact in float32
            return tensor.float().numpy()
    return np.asarray(tensor)


def _tree_from_names(names: list[str], name_map: NameMap) -> dict[str, str]:
    """Flax path -> torch name when no Flax tree is given: the tree is ``name_map``'s keys."""
    if name_map is None:
        return {n.replace(".", "/"): n for n in names}
    if callable(name_map) and not isinstance(name_map, Mapping):
        raise TypeError(
            "name_map is a function of the Flax path, which cannot be inverted without the Flax "
            "paths: pass params=<the Flax tree or nnx.state(model, nnx.Param)>, or a dict"
        )
    # Its keys are the tree's paths; two of them naming one torch tensor are refused by the
    # matcher as tied weights, as with params=.
    return _mapping(name_map, [])


def _nest(paths: list[str], leaves: list[Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, leaf in zip(paths, leaves, strict=True):
        node = tree
        *parents, last = path.split("/")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"Flax path {path!r} goes through the parameter {part!r}")
            node = child
        if last in node:
            raise ValueError(f"Flax path {path!r} is both a parameter and a module")
        node[last] = leaf
    return tree


def params_from_torch(
    named_parameters: Any,
    name_map: NameMap = None,
    transform: Transform = None,
    dtype: Any = None,
    *,
    params: PyTree = None,
    grads: bool = False,
) -> PyTree:
    """A torch model's parameters (or their gradients) as a Flax parameter tree of JAX arrays.

    Without ``params``, the tree is nested dicts keyed by the parts of each Flax path, the paths
    being ``name_map`` inverted (default: the torch name with ``/`` for ``.``, so
    ``encoder.dense.weight`` is ``{"encoder": {"dense": {"weight": ...}}}``). With ``params`` (a
    Flax tree or ``nnx.state(model, nnx.Param)``, arrays or ``jax.ShapeDtypeStruct`` leaves),
    the result has exactly its structure, and ``name_map`` may be a function of the Flax path.
    Every tensor goes through ``transform`` into the Flax layout. Pairs are checked by
    :func:`match_parameters` (one error listing every problem).

    Args:
      named_parameters: ``model.named_parameters()``, a dict name -> tensor, or the module.
      name_map: Flax path (``/``-joined) -> torch name, a dict (covering every torch
        parameter) or, with ``params``, a function; default: ``.`` <-> ``/``.
      transform: ``transform(flax_path, torch_array) -> array``, e.g.
        :func:`optax_bertadam.transpose_kernels` for ``Linear`` weights.
      dtype: dtype of the arrays; default: the torch tensor's (``params``' leaves' with
        ``params``).
      params: the Flax tree to fill (structure, paths and shapes); optional.
      grads: read each tensor's ``.grad`` instead (refused where a tensor has none: torch's
        optimizers skip such a parameter, an optax update would not).

    Returns:
      The parameter (or gradient) tree, JAX arrays copied from torch.

    Example:
      >>> import torch, optax_bertadam as ob
      >>> model = torch.nn.Linear(3, 2)
      >>> params = ob.params_from_torch(model.named_parameters(),
      ...                               {"kernel": "weight", "bias": "bias"}, ob.transpose_kernels)
      >>> {k: v.shape for k, v in params.items()}
      {'bias': (2,), 'kernel': (3, 2)}
      >>> ob.params_from_torch(torch.nn.Sequential(torch.nn.Linear(2, 1)))["0"]["weight"].shape
      (1, 2)
    """
    named = _named(named_parameters)
    if params is None:
        mapping = _tree_from_names(list(named), name_map)
        template_paths = list(mapping)
        template = _nest(template_paths, [
            jax.ShapeDtypeStruct(_moved_shape(transform, p, _shape(named[mapping[p]])), np.float32)
            if mapping[p] in named else 0.0
            for p in template_paths
        ])
        name_map = mapping
    else:
        template = params
    matches = match_parameters(named, template, name_map, transform)
    template_leaves, treedef = jax.tree.flatten(template)
    leaves, missing = [], []
    for match, like in zip(matches, template_leaves, strict=True):
        if grads and getattr(match.tensor, "grad", None) is None:
            missing.append(match.torch_name)
            continue
        array = _to_numpy(match.tensor, grads, match.torch_name)
        if transform is not None:
            array = np.asarray(transform(match.flax_path, array))
        target = dtype
        if target is None:
            target = like.dtype if params is not None and hasattr(like, "dtype") else _torch_dtype(match)
        leaves.append(jnp.array(array, dtype=target))
    if missing:
        raise ValueError(
            f"grads=True: torch parameters with no .grad (no backward yet, or not used by the loss): "
            f"{_validation.listing(missing)}; torch's optimizers skip them, an optax update would not"
        )
    return jax.tree.unflatten(treedef, leaves)


def _torch_dtype(match: ParameterMatch) -> Any:
    dtype = getattr(match.tensor, "dtype", None)
    name = str(dtype).removeprefix("torch.") if dtype is not None else None
    return jnp.dtype(name) if name else None


def grads_from_torch(
    named_parameters: Any,
    name_map: NameMap = None,
    transform: Transform = None,
    dtype: Any = None,
    *,
    params: PyTree = None,
) -> PyTree:
    """The ``.grad`` of a torch model's parameters as a Flax tree: ``params_from_torch(...,
    grads=True)``.

    Feeds torch's gradients to an optax optimizer (parity checks, mixed runs).

    Returns:
      The gradient tree, with the structure :func:`params_from_torch` gives the parameters.

    Example:
      >>> import torch, optax_bertadam as ob
      >>> model = torch.nn.Linear(3, 2)
      >>> model(torch.ones(1, 3)).sum().backward()
      >>> grads = ob.grads_from_torch(model, {"kernel": "weight", "bias": "bias"}, ob.transpose_kernels)
      >>> grads["kernel"].tolist()
      [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    """
    return params_from_torch(named_parameters, name_map, transform, dtype, params=params, grads=True)


def inverse_of(transform: Transform, inverse_transform: Transform) -> Transform:
    """The Flax -> torch layout function that undoes ``transform`` (torch -> Flax), or ``None``.

    Every function of this package takes ``transform`` in one direction, torch's layout to Flax's
    (as :func:`params_from_torch` reads); the way back is ``inverse_transform``, which a
    transform known to be its own inverse (:func:`transpose_kernels`) does not need.

    Raises:
      ValueError: ``inverse_transform`` without ``transform``.
      TypeError: a ``transform`` of the user's own without ``inverse_transform``.
    """
    if transform is None:
        if inverse_transform is not None:
            raise ValueError("inverse_transform is invalid without transform: nothing to invert")
        return None
    if inverse_transform is not None:
        return inverse_transform
    if transform in SELF_INVERSE_TRANSFORMS:
        return transform
    raise TypeError(
        f"transform={transform!r} has no known inverse: pass inverse_transform=<Flax layout -> "
        "torch layout> (transpose_kernels is its own inverse)"
    )


def params_to_torch(
    params: PyTree,
    model_or_named_parameters: Any,
    name_map: NameMap = None,
    transform: Transform = None,
    *,
    inverse_transform: Transform = None,
) -> Any:
    """Write a Flax parameter tree into a torch model's parameters, in place.

    The reverse of :func:`params_from_torch` with the same ``name_map`` and ``transform``: each
    array goes through the inverse of ``transform`` back to torch's layout and is copied into
    its tensor (cast to the tensor's dtype and device). :func:`optax_bertadam.transpose_kernels`
    is its own inverse; another ``transform`` needs ``inverse_transform``, and the pair must
    round-trip every array exactly. Nothing is written unless every parameter matches.

    Args:
      params: the Flax tree (e.g. ``nnx.state(model, nnx.Param)`` after training).
      model_or_named_parameters: the ``torch.nn.Module``, or its ``named_parameters()``.
      name_map: Flax path (``/``-joined) -> torch name, a dict or a function; default: ``/``
        -> ``.``.
      transform: the torch -> Flax transform used to read them, e.g.
        :func:`optax_bertadam.transpose_kernels`.
      inverse_transform: ``inverse_transform(flax_path, array) -> torch array``; needed for a
        ``transform`` that is not its own inverse.

    Returns:
      ``model_or_named_parameters`` (the module, its tensors updated).

    Example:
      >>> import torch, jax.numpy as jnp, optax_bertadam as ob
      >>> model = torch.nn.Linear(3, 2)
      >>> params = {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}
      >>> _ = ob.params_to_torch(params, model, {"kernel": "weight", "bias": "bias"},
      ...                        ob.transpose_kernels)
      >>> model.weight.sum().item(), tuple(model.weight.shape)
      (6.0, (2, 3))
    """
    inverse = inverse_of(transform, inverse_transform)
    _validation.check_params_are_arrays(params)
    matches = match_parameters(model_or_named_parameters, params, name_map, transform)
    leaves = jax.tree.leaves(params)
    arrays, problems = [], []
    for match, leaf in zip(matches, leaves, strict=True):
        value = np.asarray(leaf)
        back = np.asarray(inverse(match.flax_path, value)) if inverse is not None else value
        if back.shape != _shape(match.tensor):
            problems.append(f"{match.flax_path} -> {match.torch_name}: {back.shape} after the inverse, "
                            f"torch {_shape(match.tensor)}")
        elif transform is not None and not np.array_equal(np.asarray(transform(match.flax_path, back)),
                                                          value, equal_nan=True):
            problems.append(f"{match.flax_path}: transform(inverse_transform(x)) != x")
        arrays.append(back)
    if problems:
        raise ValueError("params_to_torch: the inverse does not undo transform: "
                         + _validation.listing(problems))
    torch = _validation.import_torch("params_to_torch")
    with torch.no_grad():
        for match, array in zip(matches, arrays, strict=True):
            source = torch.from_numpy(np.array(array, copy=True))  # writable, contiguous
            match.tensor.copy_(source.to(dtype=match.tensor.dtype, device=match.tensor.device))
    return model_or_named_parameters
