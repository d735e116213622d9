"""Migration of optimizer state between PyTorch and optax (optax_bertadam.torch_state).

A run started in PyTorch and continued in JAX must match the run continued in PyTorch (and the
other way round), in float64 within 1e-12 of each tensor's largest magnitude, on the parity
harness's gradient stream. The Flax side uses Flax names and layouts (``kernel`` transposed,
``scale``), so the name map and the transform are exercised.
"""

from __future__ import annotations

import ast
import io
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import optax_bertadam as ob
import torch_ref
from optax_bertadam import torch_state
from parity_tests import harness

TOL = 1e-12  # float64, relative to each tensor's largest magnitude
BEFORE, AFTER = 25, 25  # updates in PyTorch before the hand-over, then in both
BERTADAM = dict(lr=0.02, warmup=0.1, t_total=40, schedule="warmup_linear", weight_decay=0.01)


def flax_path(torch_name: str, shape: tuple[int, ...]) -> str:
    """Flax's name for a harness parameter: Linear weights are transposed ``kernel``s."""
    *parents, leaf = torch_name.split(".")
    if leaf == "weight" and len(shape) == 2 and "embeddings" not in torch_name:
        leaf = "kernel"
    elif leaf == "weight" and "LayerNorm" in torch_name:
        leaf = "scale"
    return "/".join(parents + [leaf])


NAME_MAP = {flax_path(n, s): n for n, s in harness.PARAM_SHAPES.items()}


def to_flax_tree(torch_values: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for path, name in NAME_MAP.items():
        node = tree
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = jnp.asarray(torch_state.transpose_kernels(path, np.asarray(torch_values[name])))
    return tree


def from_flax_tree(tree) -> dict[str, np.ndarray]:
    flat = dict(zip(ob.parameter_names(tree), jax.tree.leaves(tree), strict=True))
    return {NAME_MAP[p]: torch_state.transpose_kernels(p, np.asarray(v)) for p, v in flat.items()}


def relative_error(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(
        float(np.max(np.abs(a[n] - b[n]), initial=0.0) / max(np.max(np.abs(b[n])), 1e-30)) for n in b
    )


def torch_run(make_optimizer, init, grads):
    named = {n: torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for n, v in init.items()}
    opt = make_optimizer(named)
    for step_grads in grads:
        for n, p in named.items():
            p.grad = torch.tensor(step_grads[n], dtype=torch.float64)
        opt.step()
    return named, opt


def _apply(tx, params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def save_and_load(state_dict):
    """Through torch.save/torch.load, as a real migration does."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer)


def bertadam_torch(named):
    return torch_ref.BertAdam(harness.torch_param_groups(named, BERTADAM["weight_decay"]), **BERTADAM)


def bertadam_optax(params):
    kwargs = {("learning_rate" if k == "lr" else k): v for k, v in BERTADAM.items()}
    return ob.bertadam(mask=ob.decay_mask(params), **kwargs)


ADAMW = dict(lr=3e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1)


def adamw_torch(named):
    return torch.optim.AdamW(list(named.values()), **ADAMW)


def adamw_optax(params):
    del params
    return optax.adamw(ADAMW["lr"], *ADAMW["betas"], eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"])


def ob_adamw_optax(params):
    del params
    return ob.optimizers.adamw(ADAMW["lr"], *ADAMW["betas"], eps=ADAMW["eps"],
                               weight_decay=ADAMW["weight_decay"])


ADAFACTOR = dict(lr=0.01, relative_step=False, scale_parameter=True, beta1=0.9, weight_decay=0.01)


def adafactor_torch(named):
    import transformers

    return transformers.Adafactor(list(named.values()), **ADAFACTOR)


def adafactor_optax(params):
    del params
    kwargs = {("learning_rate" if k == "lr" else k): v for k, v in ADAFACTOR.items()}
    return ob.adafactor(**kwargs)


FUSED_ADAM = dict(lr=3e-3, betas=(0.9, 0.98), eps=1e-8, adam_w_mode=False)


def fused_adam_torch(named):
    return torch_ref.FusedAdam(harness.torch_param_groups(named, 0.05), **FUSED_ADAM)


def fused_adam_optax(params):
    return ob.fused_adam(FUSED_ADAM["lr"], *FUSED_ADAM["betas"], eps=FUSED_ADAM["eps"],
                         weight_decay=0.05, adam_w_mode=False, mask=ob.decay_mask(params))


# The package's optimizers migrate in parity_tests/test_registry.py (one test per registry
# entry); here optax's own AdamW, and BertAdam/AdamW/Adafactor with the name map and transposed
# kernels (Adafactor's row and column statistics trade places with the axes).
OPTIMIZERS = {
    "bertadam": (bertadam_torch, bertadam_optax),
    "adafactor": (adafactor_torch, adafactor_optax),
    "optax.adamw": (adamw_torch, adamw_optax),
    "optax_bertadam.adamw": (adamw_torch, ob_adamw_optax),
    # DeepSpeed's FusedAdam (its twin, in float64): one count per group, in its last parameter.
    "optax_bertadam.fused_adam": (fused_adam_torch, fused_adam_optax),
}


def torch_continue(named, opt, grads):
    for step_grads in grads:
        for n, p in named.items():
            p.grad = torch.tensor(step_grads[n], dtype=torch.float64)
        opt.step()
    return {n: p.detach().numpy() for n, p in named.items()}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_migration_both_ways_continues_the_same_run(name):
    """torch -> jax: a PyTorch run continued in JAX matches it continued in PyTorch; and
    jax -> torch the other way round. float64, within TOL after AFTER more updates."""
    make_torch, make_optax = OPTIMIZERS[name]
    kw = dict(name_map=NAME_MAP, transform=torch_state.transpose_kernels)
    with jax.enable_x64(True):
        init = harness.initial_params(0)
        grads = harness.gradient_stream(BEFORE + AFTER, 1)
        tx = make_optax(to_flax_tree(init))
        step = jax.jit(lambda p, s, g: _apply(tx, p, s, g))

        def jax_continue(params, state, stream):
            for step_grads in stream:
                params, state = step(params, state, to_flax_tree(step_grads))
            assert jax.tree.leaves(params)[0].dtype == jnp.float64
            return from_flax_tree(params), state

        # torch -> jax
        named, opt = torch_run(make_torch, init, grads[:BEFORE])
        names = torch_state.torch_parameter_names(named.items(), opt)
        params = to_flax_tree({n: p.detach().numpy() for n, p in named.items()})
        state = torch_state.load_torch_state_dict(save_and_load(opt.state_dict()), tx, params, names, **kw)
        if name not in ("optax.adamw", "adafactor"):  # no rate in the state / a per-tensor one
            expected_lr = opt.get_lr()[0] if name == "bertadam" else opt.param_groups[0]["lr"]
            np.testing.assert_allclose(float(ob.get_lr(state)), expected_lr, rtol=1e-15)
        to_jax_error = relative_error(jax_continue(params, state, grads[BEFORE:])[0],
                                      torch_continue(named, opt, grads[BEFORE:]))

        # jax -> torch
        params = to_flax_tree(init)
        jax_params, state = jax_continue(params, tx.init(params), grads[:BEFORE])
        named = {n: torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for n, v in jax_params.items()}
        opt = make_torch(named)
        names = torch_state.torch_parameter_names(named.items(), opt)
        opt.load_state_dict(save_and_load(torch_state.to_torch_state_dict(state, opt, names, **kw)))
        if name == "bertadam":
            np.testing.assert_allclose(opt.get_lr()[0], float(ob.get_lr(state)), rtol=1e-15)
        to_torch_error = relative_error(jax_continue(to_flax_tree(jax_params), state, grads[BEFORE:])[0],
                                        torch_continue(named, opt, grads[BEFORE:]))
    print(f"{name}: float64 error after {AFTER} more updates: torch -> jax {to_jax_error:.2e}, "
          f"jax -> torch {to_torch_error:.2e}")
    assert to_jax_error <= TOL and to_torch_error <= TOL


def test_round_trip_is_exact_and_step_types_are_torchs():
    with jax.enable_x64(True):
        init = harness.initial_params(0)
        grads = harness.gradient_stream(3, 1)
        for make_torch, make_optax, step_type in [
            (bertadam_torch, bertadam_optax, int), (adamw_torch, adamw_optax, torch.Tensor)
        ]:
            named, opt = torch_run(make_torch, init, grads)
            names = torch_state.torch_parameter_names(named.items(), opt)
            params = to_flax_tree({n: p.detach().numpy() for n, p in named.items()})
            tx = make_optax(params)
            kw = dict(name_map=NAME_MAP, transform=torch_state.transpose_kernels)
            state = torch_state.load_torch_state_dict(opt.state_dict(), tx, params, names, **kw)
            back = torch_state.to_torch_state_dict(state, opt, names, **kw)
            original = opt.state_dict()
            assert back["param_groups"] == original["param_groups"]
            assert back["state"].keys() == original["state"].keys()
            for pid, entry in original["state"].items():
                assert back["state"][pid].keys() == entry.keys()
                for key, value in entry.items():
                    assert type(back["state"][pid][key]) is type(value), key
                    assert isinstance(back["state"][pid][key], step_type) or key != "step"
                    assert torch.equal(torch.as_tensor(back["state"][pid][key]), torch.as_tensor(value))


def test_numpy_state_dict_and_default_names():
    """Numpy arrays instead of tensors; the default map (Flax path with dots = torch name)."""
    init = harness.initial_params(0)
    named, opt = torch_run(bertadam_torch, init, harness.gradient_stream(2, 1))
    sd = opt.state_dict()
    as_numpy = {
        "state": {i: {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in s.items()}
                  for i, s in sd["state"].items()},
        "param_groups": sd["param_groups"],
    }
    params = harness.nest({n: jnp.asarray(p.detach().numpy(), jnp.float32) for n, p in named.items()})
    tx = bertadam_optax(params)
    names = torch_state.torch_parameter_names(named.items(), opt)
    state = torch_state.load_torch_state_dict(as_numpy, tx, params, names)
    moments = state[1].next_m
    flat = dict(zip(harness.flatten_names(moments), jax.tree.leaves(moments), strict=True))
    for pid, name in enumerate(names):
        np.testing.assert_array_equal(flat[name], sd["state"][pid]["next_m"].numpy().astype(np.float32))
    assert int(state[-1].count) == 2 and flat[names[0]].dtype == jnp.float32


def test_state_before_any_update_is_init():
    init = harness.initial_params(0)
    named = {n: torch.nn.Parameter(torch.tensor(v, dtype=torch.float32)) for n, v in init.items()}
    opt = bertadam_torch(named)
    params = harness.nest({n: jnp.asarray(v, jnp.float32) for n, v in init.items()})
    tx = bertadam_optax(params)
    names = torch_state.torch_parameter_names(named.items(), opt)
    state = torch_state.load_torch_state_dict(opt.state_dict(), tx, params, names)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(tx.init(params)), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def trained():
    init = harness.initial_params(0)
    named, opt = torch_run(bertadam_torch, init, harness.gradient_stream(2, 1))
    params = to_flax_tree({n: p.detach().numpy() for n, p in named.items()})
    return named, opt, params, torch_state.torch_parameter_names(named.items(), opt)


def test_mismatched_names_are_listed(trained):
    named, opt, params, names = trained
    tx = bertadam_optax(params)
    bad_map = dict(NAME_MAP)
    bad_map["pooler/dense/kernel"] = "pooler.dense.wieght"
    del bad_map["cls/temperature"]
    with pytest.raises(ValueError) as err:
        torch_state.load_torch_state_dict(opt.state_dict(), tx, params, names, name_map=bad_map,
                                          transform=torch_state.transpose_kernels)
    message = str(err.value)
    for expected in ["cls/temperature", "pooler.dense.wieght", "pooler.dense.weight", "cls.temperature"]:
        assert expected in message, (expected, message)
    with pytest.raises(ValueError, match="param_names has 10 names"):
        torch_state.load_torch_state_dict(opt.state_dict(), tx, params, names[:-1], name_map=NAME_MAP)


def test_mismatched_shapes_are_listed(trained):
    named, opt, params, names = trained
    tx = bertadam_optax(params)
    with pytest.raises(ValueError) as err:  # no transform: the kernels are transposed
        torch_state.load_torch_state_dict(opt.state_dict(), tx, params, names, name_map=NAME_MAP)
    message = str(err.value)
    assert "encoder/layer/0/intermediate/dense/kernel" in message and "(16, 8)" in message
    assert "embeddings/word_embeddings/weight" not in message
    state = torch_state.load_torch_state_dict(opt.state_dict(), tx, params, names, name_map=NAME_MAP,
                                              transform=torch_state.transpose_kernels)
    with pytest.raises(ValueError, match="intermediate.dense.weight"):
        torch_state.to_torch_state_dict(state, opt, names, name_map=NAME_MAP)


def test_state_of_another_optimizer_is_refused(trained):
    named, opt, params, names = trained
    with pytest.raises(ValueError, match=r"exp_avg.*next_m|next_m.*exp_avg"):
        torch_state.load_torch_state_dict(opt.state_dict(), adamw_optax(params), params, names,
                                          name_map=NAME_MAP, transform=torch_state.transpose_kernels)
    with pytest.raises(ValueError, match="no moments"):
        torch_state.load_torch_state_dict(opt.state_dict(), optax.sgd(0.1), params, names,
                                          name_map=NAME_MAP, transform=torch_state.transpose_kernels)


def test_unequal_steps_are_refused(trained):
    named, opt, params, names = trained
    sd = opt.state_dict()
    sd["state"][3]["step"] = 7
    with pytest.raises(ValueError, match=f"step 7: {names[3]}"):
        torch_state.load_torch_state_dict(sd, bertadam_optax(params), params, names,
                                          name_map=NAME_MAP, transform=torch_state.transpose_kernels)


def test_module_does_not_import_torch_at_top_level():
    source = pathlib.Path(torch_state.__file__).read_text()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            assert not any(m.split(".")[0] == "torch" for m in modules), modules


def test_adafactor_moments_refuse_a_transform_they_cannot_follow():
    """Row and column means survive a transpose, not a reordering within an axis."""
    with jax.enable_x64(True):
        init = harness.initial_params(0)
        named, opt = torch_run(adafactor_torch, init, harness.gradient_stream(2, 1))
        names = torch_state.torch_parameter_names(named.items(), opt)
        params = to_flax_tree({n: p.detach().numpy() for n, p in named.items()})

        def flipped(path, array):
            array = torch_state.transpose_kernels(path, array)
            return array[..., ::-1] if path.endswith("kernel") else array

        with pytest.raises(ValueError, match=r"kernel: transform is neither the identity nor a swap "
                                             r"of the last two axes, so Adafactor's factored"):
            torch_state.load_torch_state_dict(opt.state_dict(), adafactor_optax(params), params,
                                              names, name_map=NAME_MAP, transform=flipped)


def test_sgd_state_round_trips_without_a_step():
    """torch.optim.SGD keeps only its momentum buffer: the export adds no step of its own."""
    with jax.enable_x64(True):
        init = harness.initial_params(0)

        def sgd_torch(named):
            return torch.optim.SGD(list(named.values()), lr=0.05, momentum=0.9)

        named, opt = torch_run(sgd_torch, init, harness.gradient_stream(3, 1))
        names = torch_state.torch_parameter_names(named.items(), opt)
        params = to_flax_tree({n: p.detach().numpy() for n, p in named.items()})
        kw = dict(name_map=NAME_MAP, transform=torch_state.transpose_kernels)
        tx = ob.sgd(0.05, momentum=0.9)
        state = torch_state.load_torch_state_dict(opt.state_dict(), tx, params, names, step=3, **kw)
        back = torch_state.to_torch_state_dict(state, opt, names, **kw)
        for pid, entry in opt.state_dict()["state"].items():
            assert back["state"][pid].keys() == entry.keys() == {"momentum_buffer"}
            assert torch.equal(back["state"][pid]["momentum_buffer"], entry["momentum_buffer"])


def _fused_adam_run(steps=3, missing_at=None, dtype=torch.float64):
    """torch_ref.FusedAdam over the harness parameters in two groups; ``missing_at``: (step,
    name) whose gradient is None at that step."""
    init = harness.initial_params(0)
    grads = harness.gradient_stream(steps, 1)
    named = {n: torch.nn.Parameter(torch.tensor(v, dtype=dtype)) for n, v in init.items()}
    opt = fused_adam_torch(named)
    for k, step_grads in enumerate(grads):
        for n, p in named.items():
            p.grad = None if missing_at == (k, n) else torch.tensor(step_grads[n], dtype=dtype)
        opt.step()
    names = torch_state.torch_parameter_names(named.items(), opt)
    return named, opt, names


def test_fused_adam_layout_is_read_and_written():
    """FusedAdam's state_dict: group['step'] 0, each group's count in its last parameter; the
    count is read from there, and written back the same way with int steps (the kernel takes an
    integer)."""
    named, opt, names = _fused_adam_run(steps=3)
    original = opt.state_dict()
    for group in original["param_groups"]:
        assert group["step"] == 0
        assert [original["state"][i]["step"] for i in group["params"]] == \
            [0] * (len(group["params"]) - 1) + [3]
    kw = dict(name_map=NAME_MAP, transform=torch_state.transpose_kernels)
    with jax.enable_x64(True):
        params = to_flax_tree({n: p.detach().numpy() for n, p in named.items()})
        state = torch_state.load_torch_state_dict(original, fused_adam_optax(params), params, names,
                                                  **kw)
        assert {int(c) for _, c in optax.tree_utils.tree_get_all_with_path(state, "count")} == {3}
        back = torch_state.to_torch_state_dict(state, opt, names, **kw)
    assert back["param_groups"] == original["param_groups"]
    for pid, entry in original["state"].items():
        assert type(back["state"][pid]["step"]) is int and back["state"][pid]["step"] == entry["step"]
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(back["state"][pid][key], entry[key])


def test_ambiguous_fused_adam_counts_are_refused():
    """A parameter that lacked a gradient at a step (the group's count then moved to another
    parameter), and a group whose parameters have several dtypes (its count advances once per
    dtype), hold no one count: refused, naming the group."""
    kw = dict(name_map=NAME_MAP, transform=torch_state.transpose_kernels)
    last_decayed = [n for n in harness.PARAM_SHAPES
                    if not any(nd in n for nd in harness.TORCH_NO_DECAY)][-1]
    named, opt, names = _fused_adam_run(steps=3, missing_at=(1, last_decayed))
    with jax.enable_x64(True):
        params = to_flax_tree({n: p.detach().numpy() for n, p in named.items()})
        with pytest.raises(ValueError, match=r"param_groups'\]\[0\] is ambiguous.*moved"):
            torch_state.load_torch_state_dict(opt.state_dict(), fused_adam_optax(params), params,
                                              names, **kw)
        named, opt, names = _fused_adam_run(steps=2)
        sd = opt.state_dict()
        first = sd["param_groups"][1]["params"][0]
        sd["state"][first] = {k: (v.float() if torch.is_tensor(v) else v)
                              for k, v in sd["state"][first].items()}
        with pytest.raises(ValueError, match=r"param_groups'\]\[1\] holds parameters of several dtypes"):
            torch_state.load_torch_state_dict(sd, fused_adam_optax(params), params, names, **kw)


def test_deepspeed_adam_state_dicts_are_told_by_their_group_keys():
    """FusedAdam's groups (with 'step' once stepped, and a scheduler's 'initial_lr'),
    DeepSpeedCPUAdam's (with 'amsgrad'), and others' (torch's AdamW, FusedLamb, timm's Lamb)."""
    from optax_bertadam import catalogue

    named, opt, _ = _fused_adam_run(steps=1)
    assert catalogue.deepspeed_adam_class(opt.state_dict()["param_groups"]) == "FusedAdam"
    fresh = torch_ref.FusedAdam(list(named.values()))
    torch.optim.lr_scheduler.LambdaLR(fresh, lambda k: 1.0)  # adds 'initial_lr'
    assert catalogue.deepspeed_adam_class(fresh.state_dict()["param_groups"]) == "FusedAdam"
    cpu_adam = dict(params=[0], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                    bias_correction=True, amsgrad=False)
    assert catalogue.deepspeed_adam_class([cpu_adam]) == "DeepSpeedCPUAdam"
    params = list(named.values())
    assert catalogue.deepspeed_adam_class(torch.optim.AdamW(params).state_dict()["param_groups"]) is None
    assert catalogue.deepspeed_adam_class(torch_ref.FusedLamb(params).state_dict()["param_groups"]) is None
    timm_lamb = dict(params=[0], lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-6,
                     weight_decay=0.0, grad_averaging=True, max_grad_norm=1.0, trust_clip=False,
                     always_adapt=False, step=1)
    assert catalogue.deepspeed_adam_class([timm_lamb]) is None
    assert catalogue.deepspeed_adam_class([cpu_adam, opt.state_dict()["param_groups"][0]]) is None
