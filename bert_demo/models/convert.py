"""Moving weights between a Flax NNX model and the PyTorch model it ports, by name.

Generic for models whose Flax attribute names are the torch module names (as
``bert_demo.models.bert`` is for ``transformers.BertForMaskedLM``): a Flax parameter path such as
``bert/encoder/layer/0/attention/self/query/kernel`` is the torch name
``bert.encoder.layer.0.attention.self.query.weight``. Only the last part differs, and ``Linear``
weights are stored transposed (torch keeps ``(out, in)``, a Flax kernel is ``(in, out)``;
:func:`optax_bertadam.transpose_kernels` does that transpose, here and in
``optax_bertadam.compare``):

==================  ==================  =====================
Flax leaf           torch leaf          array
==================  ==================  =====================
``kernel``          ``weight``          transposed
``embedding``       ``weight``          as is
``scale``           ``weight``          as is (LayerNorm)
``bias``            ``bias``            as is
==================  ==================  =====================

Tied weights (one parameter under two torch names, like BERT's decoder and word embeddings)
are declared by the caller as ``{alias: source}``; an alias in a ``state_dict`` must equal its
source. Nothing here imports torch: a ``state_dict`` may hold torch tensors or numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import optax_bertadam as ob
from bert_demo.models.bert import BertConfig, BertForMaskedLM

# Flax leaf name -> torch leaf name.
_LEAF_TO_TORCH = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}


def torch_name_for_path(path: str | Sequence[Any]) -> str:
    """The torch ``state_dict`` name of the Flax parameter at ``path``.

    Args:
      path: a ``/``-joined Flax path (as :func:`optax_bertadam.parameter_names` writes it) or a
        tuple of its parts.

    Returns:
      The dotted torch name, e.g. ``bert.embeddings.LayerNorm.weight`` for
      ``bert/embeddings/LayerNorm/scale``.

    Raises:
      ValueError: the last part has no torch counterpart.

    Example::

        torch_name_for_path("cls/predictions/transform/dense/kernel")
        # 'cls.predictions.transform.dense.weight'
    """
    parts = path.split("/") if isinstance(path, str) else [str(part) for part in path]
    *modules, leaf = parts
    if leaf not in _LEAF_TO_TORCH:
        raise ValueError(f"parameter path {path!r} is invalid: its last part {leaf!r} is not one "
                         f"of {sorted(_LEAF_TO_TORCH)}")
    return ".".join([*modules, _LEAF_TO_TORCH[leaf]])


def _params(model_or_params: nnx.Module | Any) -> Any:
    if isinstance(model_or_params, nnx.Module):
        return nnx.state(model_or_params, nnx.Param)
    return model_or_params


def _flat(params: Any) -> dict[str, Any]:
    """``/``-joined Flax path -> array (or ``ShapeDtypeStruct`` of an abstract model)."""
    paths_and_leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    return {ob.parameter_name(path): leaf for path, leaf in paths_and_leaves}


def parameter_name_map(model_or_params: nnx.Module | Any) -> dict[str, str]:
    """``/``-joined Flax path -> torch name, for every parameter: ``name_map`` of
    ``optax_bertadam.compare.compare_training`` and ``optax_bertadam.load_torch_state_dict``.

    Returns:
      A dict in the order of ``jax.tree.leaves`` of the parameters.

    Example::

        parameter_name_map(model)["bert/embeddings/LayerNorm/scale"]
        # 'bert.embeddings.LayerNorm.weight'
    """
    return {path: torch_name_for_path(path) for path in _flat(_params(model_or_params))}


def _to_numpy(value: Any) -> np.ndarray:
    """A numpy copy of a torch tensor (any device) or of an array-like."""
    if hasattr(value, "detach"):  # a torch tensor: duck-typed so torch is not imported here
        return value.detach().cpu().numpy()
    return np.asarray(value)


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping[str, Any],
                          tied: Mapping[str, str] | None = None) -> nnx.Module:
    """Load a torch ``state_dict`` into the Flax ``model`` in place, and return ``model``.

    Linear weights are transposed into kernels; each array is cast to the dtype of the Flax
    parameter it replaces (so build the Flax model in the precision you want). ``model`` may be
    abstract (``nnx.eval_shape``). Nothing is changed unless everything matches.

    Args:
      model: the Flax model.
      state_dict: torch name -> tensor or array.
      tied: ``{alias: source}`` torch names of one parameter stored twice; the alias must equal
        the source and is otherwise skipped.

    Returns:
      ``model``, updated.

    Raises:
      ValueError: listing the names missing from ``state_dict``, the names that are not
        parameters of the model, the tensors of the wrong shape and the tied aliases that
        differ from their source.

    Example::

        load_torch_state_dict(flax_model, torch_model.state_dict(), BertForMaskedLM.TIED_WEIGHTS)
    """
    tied = dict(tied or {})
    problems = []
    untied = sorted(
        alias for alias, source in tied.items()
        if alias in state_dict and source in state_dict
        and not np.array_equal(_to_numpy(state_dict[alias]), _to_numpy(state_dict[source]))
    )
    if untied:
        problems.append(f"tied names that differ from their source: {', '.join(untied)}")
    # The one parameter matcher (names, shapes after the transpose, every tensor used once).
    params = nnx.state(model, nnx.Param)
    tensors = {name: value for name, value in state_dict.items() if name not in tied}
    try:
        loaded = ob.params_from_torch(tensors, parameter_name_map(params), ob.transpose_kernels,
                                      params=params)
    except ValueError as error:
        problems.insert(0, str(error))
    if problems:
        raise ValueError("state_dict does not match the Flax model. " + ". ".join(problems))
    nnx.update(model, loaded)
    return model


def to_torch_state_dict(model_or_params: nnx.Module | Any) -> dict[str, np.ndarray]:
    """Torch name -> numpy array in torch layout, for every parameter of a Flax model.

    Accepts an ``nnx.Module``, a parameter state (``nnx.state(model, nnx.Param)``) or its
    gradients. Tied aliases are not repeated: compare with ``torch_model.named_parameters()``.

    Returns:
      A dict of numpy arrays, kernels transposed back to ``(out, in)``.

    Example::

        to_torch_state_dict(model)["bert.encoder.layer.0.attention.self.query.weight"].shape
    """
    return {torch_name_for_path(path): ob.transpose_kernels(path, np.asarray(leaf))
            for path, leaf in _flat(_params(model_or_params)).items()}


def bert_from_transformers(torch_model: Any, param_dtype=jnp.float32) -> BertForMaskedLM:
    """A Flax :class:`BertForMaskedLM` holding the weights of a ``transformers.BertForMaskedLM``.

    The model is built abstractly (no random initialisation, which costs seconds of compilation)
    and filled by :func:`load_torch_state_dict`. For a float64 model, call it inside ``with
    jax.enable_x64(True):`` with ``param_dtype=jnp.float64``.

    Returns:
      The Flax model.

    Raises:
      ValueError: a config this port does not reproduce (see
        :meth:`BertConfig.from_transformers`), or weights that do not match.

    Example::

        flax_model = bert_from_transformers(transformers.BertForMaskedLM(config))
    """
    config = BertConfig.from_transformers(torch_model.config)
    model = nnx.eval_shape(
        lambda: BertForMaskedLM(config, param_dtype=param_dtype, rngs=nnx.Rngs(0))
    )
    return load_torch_state_dict(model, torch_model.state_dict(), BertForMaskedLM.TIED_WEIGHTS)
