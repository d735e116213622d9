"""Weight-decay masks built from parameter names, the way PyTorch users build ``no_decay`` groups.

PyTorch BERT scripts split parameters into two groups by name::

  no_decay = ['bias', 'LayerNorm.bias', 'LayerNorm.weight']
  groups = [{'params': [p for n, p in model.named_parameters()
                        if not any(nd in n for nd in no_decay)], 'weight_decay': 0.01},
            {'params': [p for n, p in model.named_parameters()
                        if any(nd in n for nd in no_decay)], 'weight_decay': 0.0}]

In optax the same choice is a mask: a tree of bools with the parameters' structure, True where
weight decay applies. :func:`decay_mask` builds it from the parameter paths of a Flax (NNX or
Linen) or any other pytree.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import jax

from optax_bertadam import _validation

PyTree = Any

DEFAULT_NO_DECAY = ("bias", "LayerNorm", "layer_norm", "ln", "bn")

# transformers.Trainer.get_decay_parameter_names' rule for normalisation layers, on the lower-cased
# path: r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"; here applied to one
# path component at a time (a Linen/NNX name may carry a "_0" or digit suffix: "RMSNorm_0",
# "norm1"), with BatchNorm/GroupNorm added (Trainer leaves them to their class, nn.BatchNorm is not
# in its list, but their scales are no more weights than a LayerNorm's).
_NORM_SUBSTRINGS = ("layernorm", "rmsnorm", "batchnorm", "groupnorm")
_NORM_COMPONENT = re.compile(r"(?:.*_)?norm(?:_?\d+)?")


def _key_name(key: Any) -> str | None:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        # flax.nnx wraps each array in a Variable whose child is its `.value`: not part of the name.
        return None if key.name == "value" else key.name
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def parameter_name(path: Sequence[Any], separator: str = "/") -> str:
    """The name of a parameter from its pytree path, e.g. ``encoder/layer_0/attention/bias``.

    Args:
      path: a key path, as ``jax.tree_util.tree_flatten_with_path`` gives it.
      separator: put between the path's components.

    Returns:
      The components joined by ``separator`` (``flax.nnx``'s ``value`` attribute is left out).

    Example:
      >>> import jax, jax.numpy as jnp, optax_bertadam as ob
      >>> params = {"LayerNorm_0": {"scale": jnp.ones(2)}}
      >>> [(path, _)] = jax.tree_util.tree_flatten_with_path(params)[0]
      >>> ob.parameter_name(path, separator=".")
      'LayerNorm_0.scale'
    """
    return separator.join(name for name in map(_key_name, path) if name is not None)


def parameter_names(params: PyTree, separator: str = "/") -> list[str]:
    """Names of every leaf of ``params``, in ``jax.tree.leaves`` order.

    Args:
      params: the parameter tree.
      separator: put between the components of each path.

    Returns:
      A list of ``str``, one per leaf (see :func:`parameter_name`).

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> ob.parameter_names({"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}})
      ['dense/bias', 'dense/kernel']
    """
    paths_and_leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    return [parameter_name(path, separator) for path, _ in paths_and_leaves]


def _component_matches(component: str, pattern: str) -> bool:
    # "LayerNorm" matches "LayerNorm", Linen's auto-named "LayerNorm_0" and "ln_1"-style names,
    # but "ln" does not match "kernel" or "vulnerable": a pattern names a whole path component.
    if component == pattern:
        return True
    return component.startswith(pattern) and (
        component[len(pattern)] == "_" or component[len(pattern)].isdigit()
    )


def is_normalization_layer(component: str) -> bool:
    """True for a path component naming a normalisation layer (Trainer's rule, per component).

    ``LayerNorm``, ``final_layernorm``, ``input_layernorm``, ``RMSNorm_0``, ``norm``, ``norm1``,
    ``attention_norm``, ``layer_norm_2``, ``BatchNorm_0``, ``GroupNorm``: yes;
    ``normal``, ``lnorm``, ``normalizer``, ``kernel``: no.

    Returns:
      Whether parameters under this component are a normalisation layer's.

    Example:
      >>> from optax_bertadam.masks import is_normalization_layer
      >>> [is_normalization_layer(c) for c in ("final_layernorm", "norm", "RMSNorm_0", "normal")]
      [True, True, True, False]
    """
    lower = component.lower()
    return any(s in lower for s in _NORM_SUBSTRINGS) or _NORM_COMPONENT.fullmatch(lower) is not None


def _nnx_param_state(params: PyTree) -> PyTree:
    # A flax.nnx.Module (flax imported only if the user did): its Param state, the tree
    # nnx.Optimizer(model, tx, wrt=nnx.Param) hands to tx.init.
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(params, nnx.Module):
        return nnx.state(params, nnx.Param)
    return params


def decay_mask(
    params: PyTree, exclude: Iterable[str] = DEFAULT_NO_DECAY, *, normalization: bool = True
) -> PyTree:
    """A weight-decay mask: False for biases and normalisation layers, True for the rest.

    A parameter is not decayed when a component of its path is named in ``exclude`` or (with
    ``normalization=True``) names a normalisation layer. With the defaults this is
    ``transformers.Trainer``'s rule (``get_decay_parameter_names``: ``bias``, ``layernorm``,
    ``rmsnorm``, ``norm``, ``*_norm``) plus ``BatchNorm``/``GroupNorm``, ``ln_f``-style and
    ``bn1``-style names; on BERT it selects what
    ``no_decay = ['bias', 'LayerNorm.bias', 'LayerNorm.weight']`` selects.

    A path component matches an ``exclude`` entry when it equals it or starts with it followed
    by ``_`` or a digit (``LayerNorm_0``, ``ln_1``); ``"ln"`` does not match ``"kernel"``, nor
    ``"bias"`` ``"biases"``. Normalisation layers: see :func:`is_normalization_layer`.

    Args:
      params: the parameter tree (a dict, ``flax.nnx.State``, Linen ``params``, ...), or a
        ``flax.nnx.Module``: then the mask has the shape of ``nnx.state(module, nnx.Param)``, the
        tree ``nnx.Optimizer(module, tx, wrt=nnx.Param)`` initialises.
      exclude: names of path components that turn decay off.
      normalization: also turn it off for every normalisation layer's parameters.

    Returns:
      A tree with the structure of ``params`` whose leaves are Python bools (True = decay).

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)},
      ...           "LayerNorm_0": {"scale": jnp.ones(2)}}
      >>> ob.decay_mask(params)
      {'LayerNorm_0': {'scale': False}, 'dense': {'bias': False, 'kernel': True}}
      >>> ob.decay_mask({"final_layernorm": {"weight": 1.0}, "mlp": {"norm": {"scale": 1.0}}})
      {'final_layernorm': {'weight': False}, 'mlp': {'norm': {'scale': False}}}
    """
    params = _nnx_param_state(params)
    _validation.check_params_are_arrays(params)
    if isinstance(exclude, str):
        raise TypeError(
            f"exclude={exclude!r} is invalid: expected a sequence of names, e.g. ('bias', 'LayerNorm')"
        )
    patterns = tuple(exclude)
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"exclude={patterns!r} is invalid: every entry must be a non-empty str")

    def is_decayed(path, _):
        components = [name for name in map(_key_name, path) if name is not None]
        if normalization and any(map(is_normalization_layer, components)):
            return False
        return not any(_component_matches(c, p) for c in components for p in patterns)

    return jax.tree_util.tree_map_with_path(is_decayed, params)


def regex_decay_mask(
    params: PyTree,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
) -> PyTree:
    """A mask chosen by regular expressions on ``/``-joined parameter names (Keras rules).

    Reproduces ``transformers.AdamWeightDecay._do_use_weight_decay``: a parameter is decayed if any
    ``include`` pattern ``re.search``-es its name; otherwise not if any ``exclude`` pattern does;
    otherwise it is.

    Args:
      params: the parameter tree.
      include: patterns of names always decayed (``include_in_weight_decay``).
      exclude: patterns of names not decayed unless ``include`` matches
        (``exclude_from_weight_decay``).

    Returns:
      A tree with the structure of ``params`` whose leaves are Python bools (True = decay).

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)},
      ...           "LayerNorm_0": {"scale": jnp.ones(2)}}
      >>> ob.regex_decay_mask(params, exclude=["LayerNorm", "bias"])
      {'LayerNorm_0': {'scale': False}, 'dense': {'bias': False, 'kernel': True}}
    """
    include = _compile_patterns("include_in_weight_decay", include)
    exclude = _compile_patterns("exclude_from_weight_decay", exclude)

    def is_decayed(path, _):
        name = parameter_name(path)
        if any(p.search(name) for p in include):
            return True
        return not any(p.search(name) for p in exclude)

    return jax.tree_util.tree_map_with_path(is_decayed, params)


def _compile_patterns(argname: str, patterns: Iterable[str] | None) -> list[re.Pattern]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        raise TypeError(f"{argname}={patterns!r} is invalid: expected a list of regex strings")
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError) as err:
            raise ValueError(f"{argname} entry {pattern!r} is not a valid regex: {err}") from None
    return compiled
