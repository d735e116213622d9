"""One parameter matcher behind every entry point that pairs torch names with Flax paths.

``from_torch``, ``load_torch_state_dict``/``to_torch_state_dict`` and ``compare_training`` all
pair names through ``torch_params.match_names`` (``match_parameters`` adds tensors, shapes and
tied weights on top): the same ``name_map`` (a dict or a function) is accepted by all of them,
and the same wrong one is refused by all of them with the same listing of problems.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_bertadam as ob
from optax_bertadam.compare import compare_training
from optax_bertadam.torch_params import match_names

torch = pytest.importorskip("torch")

SIZES = (3, 4, 4, 2)  # three Linear layers; the middle one square, so a tie keeps the shapes


def torch_weight_name(path: str) -> str:
    """The function form of a Flax port's name_map: kernel -> weight, '/' -> '.'."""
    return path.replace("/", ".").replace("kernel", "weight")


def setup(stepped=True):
    """A torch MLP, stepped once by AdamW (so its state_dict has state), and its Flax tree."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(a, b) for a, b in zip(SIZES, SIZES[1:], strict=False)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-6, weight_decay=0.01)
    if stepped:
        model(torch.ones(2, SIZES[0])).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    params = ob.params_from_torch(model, torch_weight_name, ob.transpose_kernels,
                                  params=_template())
    return model, optimizer, params


def _template():
    return {str(i): {"kernel": jax.ShapeDtypeStruct((a, b), jnp.float32),
                     "bias": jax.ShapeDtypeStruct((b,), jnp.float32)}
            for i, (a, b) in enumerate(zip(SIZES, SIZES[1:], strict=False))}


def torch_loss(model, batch):
    return (model(batch["x"]) - batch["y"]).pow(2).mean()


def jax_loss(params, batch):
    h = batch["x"]
    for i in range(len(SIZES) - 1):
        h = h @ params[str(i)]["kernel"] + params[str(i)]["bias"]
    return jnp.mean((h - batch["y"]) ** 2)


def batches(steps):
    rng = np.random.default_rng(0)
    return [{"x": rng.normal(size=(4, SIZES[0])).astype(np.float32),
             "y": rng.normal(size=(4, SIZES[-1])).astype(np.float32)} for _ in range(steps)]


def problems_from(entry_point, name_map):
    """The problems the entry point lists for ``name_map`` (after the common prefix), one a line."""
    model, optimizer, params = setup()
    names = ob.torch_parameter_names(model.named_parameters(), optimizer)
    tx = ob.adamw(1e-2, eps=1e-6, weight_decay=0.01)
    calls = {
        "from_torch": lambda: ob.from_torch(optimizer, named_parameters=model.named_parameters(),
                                            params=params, name_map=name_map,
                                            transform=ob.transpose_kernels),
        "load_torch_state_dict": lambda: ob.load_torch_state_dict(
            optimizer.state_dict(), tx, params, names, name_map=name_map,
            transform=ob.transpose_kernels),
        "compare_training": lambda: compare_training(
            model, optimizer, torch_loss, params, tx, jax_loss, batches(1), name_map=name_map,
            transform=ob.transpose_kernels),
    }
    with pytest.raises(ValueError) as error:
        calls[entry_point]()
    message = str(error.value)
    prefix = "the torch and Flax parameters do not match: "
    assert message.startswith(prefix), message
    # Each entry point names the argument its torch names came from: from_torch's and
    # compare_training's are named_parameters (the model's), load_torch_state_dict's param_names.
    return message.removeprefix(prefix).replace("param_names", "named_parameters").split("; ")


WRONG_DICT = {
    "0/kernel": "0.wieght",  # a typo
    "0/bias": "0.bias",
    "1/kernel": "1.weight",
    "1/bias": "0.bias",  # one torch tensor behind two Flax leaves
    "2/kernel": "2.weight",  # 2/bias left out
    "ghost/bias": "2.bias",  # not a Flax path
}
WRONG_DICT_PROBLEMS = [
    "Flax paths with no torch name in name_map: 2/bias",
    "name_map keys that are not Flax paths: ghost/bias",
    "torch names that are not in named_parameters: 0/kernel -> '0.wieght'",
    "torch tensors behind two Flax leaves (tied weights: torch trains one tensor, keep one Flax "
    "parameter for it): 0/bias and 1/bias (0.bias)",
    "torch parameters no Flax path maps to: 0.weight, 1.bias, 2.bias",
]
WRONG_FUNCTION_PROBLEMS = [  # '/' -> '.' only: the kernels keep their Flax name
    "torch names that are not in named_parameters: 0/kernel -> '0.kernel', 1/kernel -> "
    "'1.kernel', 2/kernel -> '2.kernel'",
    "torch parameters no Flax path maps to: 0.weight, 1.weight, 2.weight",
]


@pytest.mark.parametrize("name_map,expected", [
    (WRONG_DICT, WRONG_DICT_PROBLEMS),
    (lambda path: path.replace("/", "."), WRONG_FUNCTION_PROBLEMS),
], ids=["dict", "function"])
def test_the_same_wrong_name_map_gets_the_same_listing_from_every_entry_point(name_map, expected):
    listings = {entry: problems_from(entry, name_map)
                for entry in ("from_torch", "load_torch_state_dict", "compare_training")}
    for entry, listing in listings.items():
        assert listing == expected, (entry, listing)


def test_a_function_name_map_works_in_every_entry_point():
    """The function form (what a Flax port's naming rule is) in from_torch, both state-dict
    directions and compare_training, with the same dict spelled out as the reference."""
    model, optimizer, params = setup()
    as_dict = {path: torch_weight_name(path) for path in ob.parameter_names(params)}
    names = ob.torch_parameter_names(model.named_parameters(), optimizer)
    tx = ob.adamw(1e-2, eps=1e-6, weight_decay=0.01)
    states, updates = [], []
    grads = jax.tree.map(jnp.ones_like, params)
    for name_map in (torch_weight_name, as_dict):
        ported = ob.from_torch(optimizer, named_parameters=model.named_parameters(), params=params,
                               name_map=name_map, transform=ob.transpose_kernels)
        updates.append(ported.update(grads, ported.init(params), params)[0])
        state = ob.load_torch_state_dict(optimizer.state_dict(), tx, params, names,
                                         name_map=name_map, transform=ob.transpose_kernels)
        exported = ob.to_torch_state_dict(state, optimizer, names, name_map=name_map,
                                          transform=ob.transpose_kernels)
        for pid, reference in optimizer.state_dict()["state"].items():  # the moments go back exact
            for key in ("exp_avg", "exp_avg_sq"):
                np.testing.assert_array_equal(exported["state"][pid][key].numpy(),
                                              reference[key].numpy())
        states.append(state)
    for a, b in zip(jax.tree.leaves([states[0], updates[0]]), jax.tree.leaves([states[1], updates[1]]),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    model, optimizer, params = setup(stepped=False)  # compare_training starts both sides fresh
    report = compare_training(model, optimizer, torch_loss, params, tx, jax_loss, batches(2),
                              name_map=torch_weight_name, transform=ob.transpose_kernels)
    assert report.first_divergence is None, report.explanation


def test_the_options_the_state_dicts_need():
    """required_paths (the paths a state keeps moments for), required_names (torch parameters
    that are stepped) and name_map_beyond_paths, each on its own, then all problems in one error."""
    paths, torch_names = ["a/w", "frozen/w"], ["a.w", "b.w"]
    # frozen/w keeps no moments and may map outside the optimizer; b.w is never stepped.
    assert match_names(paths, torch_names, {"a/w": "a.w", "frozen/w": "elsewhere.w"},
                       required_paths=["a/w"], required_names=["a.w"]) == {"a/w": "a.w"}
    assert match_names(["a/w"], ["a.w"], {"a/w": "a.w", "other/w": "x"},
                       name_map_beyond_paths=True) == {"a/w": "a.w"}
    with pytest.raises(ValueError) as error:
        match_names(paths, ["a.w", "b.w", "b.w"], {"a/w": "a.w", "frozen/w": "b.w", "x": "y"},
                    torch_names_arg="param_names", required_paths=["a/w"])
    assert str(error.value).split(": ", 1)[1].split("; ") == [
        "param_names has duplicate names: b.w",
        "name_map keys that are not Flax paths: x",
        "torch parameters of the optimizer whose Flax parameter the optax state keeps no moments "
        "for (frozen in tx?): b.w (Flax frozen/w)",
    ]


@pytest.mark.parametrize("name_map", [3, ["a.w"]])
def test_a_name_map_of_another_type_is_refused_by_name(name_map):
    for call in (lambda: match_names(["a/w"], ["a.w"], name_map),
                 lambda: ob.match_parameters({"a.w": np.zeros(2)}, {"a": {"w": np.zeros(2)}},
                                             name_map)):
        with pytest.raises(TypeError, match=r"name_map=.* is invalid: expected a dict or a function"):
            call()


def test_params_from_torch_without_a_tree_reports_a_tied_name_as_the_matcher_does():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"tied weights: .*\): a/kernel and b/kernel \(weight\)"):
        ob.params_from_torch(model, {"a/kernel": "weight", "b/kernel": "weight", "bias": "bias"})


def test_compare_training_refuses_a_parameter_its_optimizer_does_not_train():
    """from_torch freezes such a parameter; compare_training compares trained ones only, and says
    so rather than calling a parameter of the model 'not in named_parameters'."""
    model, _, params = setup(stepped=False)
    optimizer = torch.optim.AdamW([*model[0].parameters(), *model[1].parameters()], lr=1e-2)
    with pytest.raises(ValueError, match=r"torch_optimizer does not train .*: 2/bias -> 2.bias, "
                                         r"2/kernel -> 2.weight; leave them out of params"):
        compare_training(model, optimizer, torch_loss, params, ob.adamw(1e-2), jax_loss, batches(1),
                         name_map=torch_weight_name, transform=ob.transpose_kernels)


def test_transform_has_one_direction_in_both_state_dict_functions():
    """``transform`` is torch -> Flax in load_torch_state_dict AND to_torch_state_dict (the way
    back is its inverse), as in params_from_torch/params_to_torch: a transform of the user's own
    needs ``inverse_transform`` to export, and the pair brings torch's moments back exact."""
    model, optimizer, params = setup()
    names = ob.torch_parameter_names(model.named_parameters(), optimizer)
    tx = ob.adamw(1e-2, eps=1e-6, weight_decay=0.01)

    def to_flax(path, array):  # not its own inverse: transposes, then reverses the rows
        return np.asarray(array).T[::-1] if np.ndim(array) == 2 else np.asarray(array)

    def to_torch(path, array):
        return np.asarray(array)[::-1].T if np.ndim(array) == 2 else np.asarray(array)

    state = ob.load_torch_state_dict(optimizer.state_dict(), tx, params, names,
                                     name_map=torch_weight_name, transform=to_flax)
    with pytest.raises(TypeError, match="has no known inverse: pass inverse_transform"):
        ob.to_torch_state_dict(state, optimizer, names, name_map=torch_weight_name,
                               transform=to_flax)
    exported = ob.to_torch_state_dict(state, optimizer, names, name_map=torch_weight_name,
                                      transform=to_flax, inverse_transform=to_torch)
    for pid, reference in optimizer.state_dict()["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(exported["state"][pid][key].numpy(), reference[key].numpy())
