"""ob.params_from_torch / grads_from_torch / params_to_torch / match_parameters on real torch models.

The conversions are copies and transposes: they must be exact (bitwise), in float32 and float64,
and every mismatch (names, shapes, tied weights, missing gradients) must be refused in one
ValueError listing every problem before anything is written.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_bertadam as ob
from parity_tests import harness

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

LINEAR_MAP = {"kernel": "weight", "bias": "bias"}
DTYPES = [("float32", torch.float32), ("float64", torch.float64)]


def _bert(dtype):
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=16)
    torch.manual_seed(0)
    return transformers.BertModel(config).to(dtype)


def _flax_style_name_map(named):
    """What a Flax port of BERT calls each tensor: kernels for Linear weights, scale for
    LayerNorm weights, embedding for Embedding weights; the module path otherwise the same."""
    mapping = {}
    for name, _ in named:
        *modules, leaf = name.split(".")
        if leaf == "weight":
            leaf = ("scale" if "LayerNorm" in modules[-1] else
                    "embedding" if modules[-1].endswith("embeddings") else "kernel")
        mapping["/".join([*modules, leaf])] = name
    return mapping


@pytest.mark.parametrize("dtype_name,torch_dtype", DTYPES)
def test_bert_model_to_a_flax_tree_and_back_is_exact(dtype_name, torch_dtype):
    with jax.enable_x64(dtype_name == "float64"):
        model = _bert(torch_dtype)
        name_map = _flax_style_name_map(model.named_parameters())
        params = ob.params_from_torch(model.named_parameters(), name_map, ob.transpose_kernels)
        # Nested dicts keyed by the Flax path parts.
        kernel = params["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
        assert kernel.dtype == jnp.dtype(dtype_name)
        worst = 0.0
        torch_params = dict(model.named_parameters())
        for path, leaf in zip(ob.parameter_names(params), jax.tree.leaves(params), strict=True):
            expected = ob.transpose_kernels(path, torch_params[name_map[path]].detach().numpy())
            worst = max(worst, float(np.max(np.abs(np.asarray(leaf) - expected))))
            assert np.asarray(leaf).shape == expected.shape
        print(f"{dtype_name}: worst |flax - torch| after params_from_torch: {worst:.1e}")
        assert worst == 0.0
        assert len(jax.tree.leaves(params)) == len(torch_params)

        # Back: a changed tree written into the torch model, through the same name_map.
        changed = jax.tree.map(lambda x: x * 2 + 1, params)
        ob.params_to_torch(changed, model, name_map, ob.transpose_kernels)
        for path, leaf in zip(ob.parameter_names(changed), jax.tree.leaves(changed), strict=True):
            back = ob.transpose_kernels(path, np.asarray(leaf))
            np.testing.assert_array_equal(torch_params[name_map[path]].detach().numpy(), back)


def test_a_template_tree_gives_its_structure_and_dtypes():
    nnx = pytest.importorskip("flax.nnx")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    flax_model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)),
                                nnx.LayerNorm(4, epsilon=1e-5, rngs=nnx.Rngs(0)))  # torch's eps
    template = nnx.state(flax_model, nnx.Param)

    def name_map(path):  # a function of the Flax path, as compare_training takes
        index, _, leaf = path.removeprefix("layers/").partition("/")
        return f"{index}.{ {'kernel': 'weight', 'scale': 'weight'}.get(leaf, leaf) }"

    params = ob.params_from_torch(model, name_map, ob.transpose_kernels, params=template)
    assert jax.tree.structure(params) == jax.tree.structure(template)
    nnx.update(flax_model, params)
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    expected = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(np.asarray(flax_model(jnp.asarray(x))), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype_name,torch_dtype", DTYPES)
def test_torch_gradients_drive_an_optax_step_like_torch(dtype_name, torch_dtype):
    """grads_from_torch feeds optax the gradients torch's optimizer sees: 3 AdamW steps agree."""
    with jax.enable_x64(dtype_name == "float64"):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2).to(torch_dtype)
        params = ob.params_from_torch(model, LINEAR_MAP, ob.transpose_kernels)
        torch_optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.01)
        tx = ob.adamw(0.1, eps=1e-8, weight_decay=0.01)
        state = tx.init(params)
        worst = 0.0
        for step in range(3):
            x = torch.full((4, 3), float(step + 1), dtype=torch_dtype)
            torch_optimizer.zero_grad()
            model(x).pow(2).sum().backward()
            grads = ob.grads_from_torch(model, LINEAR_MAP, ob.transpose_kernels)
            torch_optimizer.step()
            updates, state = tx.update(grads, state, params)
            params = jax.tree.map(lambda p, u: p + u, params, updates)
            mirrored = ob.params_from_torch(model, LINEAR_MAP, ob.transpose_kernels)
            worst = max(worst, *(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                                 for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(mirrored),
                                                 strict=True)))
        harness.assert_within("param error", worst, harness.PARAM_TOL[dtype_name])


def test_every_problem_is_listed_in_one_error():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    params = {"0": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(2)},  # not transposed
              "extra": {"bias": jnp.zeros(2)}}
    name_map = {"0/kernel": "0.weight", "0/bias": "0.bias", "extra/bias": "2.bias", "ghost": "1.bias"}
    with pytest.raises(ValueError) as err:
        ob.match_parameters(model.named_parameters(), params, name_map, ob.transpose_kernels)
    message = str(err.value)
    assert "name_map keys that are not Flax paths: ghost" in message
    assert "torch names that are not in named_parameters: extra/bias -> '2.bias'" in message
    assert "0/kernel <- 0.weight: torch (3, 2) after transform, Flax (2, 3)" in message
    assert "torch parameters no Flax path maps to: 1.weight, 1.bias" in message


def test_tied_weights_behind_two_flax_leaves_are_refused():
    model = torch.nn.Module()
    model.a = torch.nn.Linear(2, 2, bias=False)
    model.b = torch.nn.Linear(2, 2, bias=False)
    model.b.weight = model.a.weight  # tied: named_parameters() lists it once, as a.weight
    assert [n for n, _ in model.named_parameters()] == ["a.weight"]
    both = list(model.named_parameters(remove_duplicate=False))
    params = {"a": {"weight": jnp.zeros((2, 2))}, "b": {"weight": jnp.zeros((2, 2))}}
    with pytest.raises(ValueError, match=r"tied weights.*a/weight and b/weight \(b.weight\)"):
        ob.match_parameters(both, params)
    # One Flax leaf for the tied tensor: its alias is not "unmapped".
    assert [m.torch_name for m in ob.match_parameters(both, {"a": {"weight": jnp.zeros((2, 2))}})] == [
        "a.weight"]


def test_missing_gradients_are_refused():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0](torch.ones(1, 2)).sum().backward()  # the second layer gets no .grad
    with pytest.raises(ValueError, match=r"no \.grad.*1\.bias, 1\.weight"):
        ob.grads_from_torch(model)


def test_params_to_torch_needs_the_inverse_of_a_transform_and_checks_it():
    model = torch.nn.Linear(2, 2)
    before = model.weight.detach().clone()

    def negate(path, array):
        return -array

    params = ob.params_from_torch(model, transform=negate)
    with pytest.raises(TypeError, match="pass inverse_transform="):
        ob.params_to_torch(params, model, transform=negate)
    with pytest.raises(ValueError, match=r"transform\(inverse_transform\(x\)\) != x"):
        ob.params_to_torch(jax.tree.map(lambda x: x + 1, params), model, transform=negate,
                           inverse_transform=lambda path, array: array)
    assert torch.equal(model.weight, before)  # nothing written
    ob.params_to_torch(params, model, transform=negate, inverse_transform=negate)
    assert torch.equal(model.weight, before)


def test_a_callable_name_map_needs_the_flax_tree():
    with pytest.raises(TypeError, match="pass params="):
        ob.params_from_torch(torch.nn.Linear(2, 2), lambda path: path)


def test_bfloat16_tensors_convert_exactly():
    model = torch.nn.Linear(2, 2).to(torch.bfloat16)
    params = ob.params_from_torch(model)
    assert params["weight"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(params["weight"], np.float32),
                                  model.weight.float().detach().numpy())
