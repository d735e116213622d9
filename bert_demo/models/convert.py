"""Moving weights between the Flax NNX BERT and its PyTorch twin (``torch_ref.bert``).

The two models use the same attribute names, so a Flax parameter path such as
``('layers', 0, 'attention', 'query', 'kernel')`` corresponds to the torch name
``'layers.0.attention.query.weight'``. Only the leaf names differ, and Linear weights are
stored transposed (torch keeps ``(out, in)``, a Flax kernel is ``(in, out)``):

==================  ==================  =====================
Flax leaf           torch leaf          array
==================  ==================  =====================
``kernel``          ``weight``          transposed
``embedding``       ``weight``          as is
``scale``           ``weight``          as is (LayerNorm)
``bias``            ``bias``            as is
==================  ==================  =====================

Nothing here imports torch: a ``state_dict`` may hold torch tensors or numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from bert_demo.models.bert import BertConfig, BertForMaskedLM

FlaxPath = tuple[Any, ...]

# Flax leaf name -> (torch leaf name, whether the array is stored transposed).
_LEAF_TO_TORCH = {
    "kernel": ("weight", True),
    "embedding": ("weight", False),
    "scale": ("weight", False),
    "bias": ("bias", False),
}


def torch_name_for_path(path: FlaxPath) -> str:
    """The torch ``state_dict`` name of the Flax parameter at ``path``.

    Raises ``ValueError`` for a leaf name with no torch counterpart.
    """
    *modules, leaf = (str(part) for part in path)
    if leaf not in _LEAF_TO_TORCH:
        raise ValueError(
            f"parameter path {path!r} is invalid: its last element {leaf!r} is not one of "
            f"{sorted(_LEAF_TO_TORCH)}"
        )
    return ".".join([*modules, _LEAF_TO_TORCH[leaf][0]])


def _is_transposed(path: FlaxPath) -> bool:
    return _LEAF_TO_TORCH[str(path[-1])][1]


def _flat_params(model: nnx.Module) -> dict[FlaxPath, Any]:
    """Flax path -> parameter array (or ``ShapeDtypeStruct`` in an abstract model)."""
    flat_state = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {path: variable.get_value() for path, variable in flat_state}


def parameter_name_map(model: nnx.Module) -> dict[FlaxPath, str]:
    """Flax parameter path -> torch ``state_dict`` name, for every parameter of ``model``.

    The demo uses it to compare the two models tensor by tensor; invert it with
    ``{name: path for path, name in parameter_name_map(model).items()}``.
    """
    return {path: torch_name_for_path(path) for path in _flat_params(model)}


def _to_numpy(value: Any) -> np.ndarray:
    """A numpy copy of a torch tensor (any device) or of an array-like."""
    if hasattr(value, "detach"):  # a torch tensor: duck-typed so torch is not imported here
        return value.detach().cpu().numpy()
    return np.asarray(value)


def torch_state_dict_to_nnx(model: nnx.Module, state_dict: Mapping[str, Any]) -> nnx.Module:
    """Load a torch ``state_dict`` into the Flax ``model`` in place, and return ``model``.

    Linear weights are transposed into kernels; each array is cast to the dtype of the Flax
    parameter it replaces (so build the Flax model in the precision you want). ``model``
    may be abstract, e.g. ``nnx.eval_shape(lambda: BertForMaskedLM(config, rngs=...))``,
    which skips drawing random weights that would be overwritten anyway. The
    ``state_dict`` must name exactly the model's parameters with the expected shapes:
    otherwise ``ValueError`` lists every missing name, unexpected name and shape mismatch,
    and the model is left untouched.
    """
    current = _flat_params(model)
    names = parameter_name_map(model)
    expected_names = set(names.values())

    missing = sorted(name for name in expected_names if name not in state_dict)
    unexpected = sorted(name for name in state_dict if name not in expected_names)
    new_values: dict[FlaxPath, Any] = {}
    wrong_shapes: list[str] = []
    for path, name in names.items():
        if name not in state_dict:
            continue
        array = _to_numpy(state_dict[name])
        if _is_transposed(path):
            array = array.T
        target = current[path]
        if array.shape != target.shape:
            torch_shape = tuple(_to_numpy(state_dict[name]).shape)
            expected = tuple(reversed(target.shape)) if _is_transposed(path) else target.shape
            wrong_shapes.append(f"{name}: got shape {torch_shape}, expected {tuple(expected)}")
            continue
        new_values[path] = jnp.asarray(array, dtype=target.dtype)

    problems = []
    if missing:
        problems.append(f"missing from state_dict: {', '.join(missing)}")
    if unexpected:
        problems.append(f"not parameters of the model: {', '.join(unexpected)}")
    if wrong_shapes:
        problems.append(f"shape mismatches: {'; '.join(wrong_shapes)}")
    if problems:
        raise ValueError("state_dict does not match the Flax model. " + ". ".join(problems))

    nnx.update(model, nnx.from_flat_state(new_values))
    return model


def bert_from_torch_state_dict(
    config: BertConfig, state_dict: Mapping[str, Any], param_dtype=jnp.float32
) -> BertForMaskedLM:
    """A Flax ``BertForMaskedLM`` holding the weights of a ``torch_ref.bert`` state_dict.

    The model is built abstractly (no random initialisation, which costs seconds of
    compilation on first use) and then filled by ``torch_state_dict_to_nnx``. For a float64
    model, call it inside ``with jax.enable_x64(True):`` with ``param_dtype=jnp.float64``.
    """
    model = nnx.eval_shape(
        lambda: BertForMaskedLM(config, param_dtype=param_dtype, rngs=nnx.Rngs(0))
    )
    return torch_state_dict_to_nnx(model, state_dict)


def nnx_to_torch_state_dict(model_or_params: nnx.Module | Any) -> dict[str, np.ndarray]:
    """Torch name -> numpy array in torch layout, for every parameter of a Flax model.

    Accepts an ``nnx.Module`` or a parameter state (as given by ``nnx.state(model,
    nnx.Param)`` or ``nnx.split``). The arrays can be compared directly with
    ``torch_model.state_dict()`` or loaded into it with ``torch.from_numpy``.
    """
    if isinstance(model_or_params, nnx.Module):
        model_or_params = nnx.state(model_or_params, nnx.Param)
    result = {}
    for path, variable in nnx.to_flat_state(model_or_params):
        array = np.asarray(
            variable.get_value() if isinstance(variable, nnx.Variable) else variable
        )
        result[torch_name_for_path(path)] = array.T if _is_transposed(path) else array
    return result
