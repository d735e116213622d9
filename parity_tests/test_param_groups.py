"""Parameter groups and layer-wise LR decay against the same groups built in PyTorch.

The PyTorch side is written as a PyTorch user writes it: ``model.named_parameters()`` filtered
by name into groups with their own ``lr``/``weight_decay``/``momentum``, a real ``torch.optim``
optimizer and a ``LambdaLR``; the optax side is :func:`optax_bertadam.param_groups`. Parameters
are compared after every update (float32: within 2e-5 of each tensor's largest magnitude;
float64: 1e-12) and so are the per-group rates, ``scheduler.get_last_lr()`` against
:func:`optax_bertadam.get_last_lr` (float32: 1e-6 of the peak rate; float64: 1e-12), through
the warmup and past the end of the schedule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import optax_bertadam as ob
from parity_tests.group_harness import run_group_parity
from parity_tests.harness import LR_TOL, PARAM_TOL, TORCH_NO_DECAY, TorchSide, assert_within

LAYERS = 3
# A BERT with three encoder layers, a pooler and a classifier: what LLRD is for.
LAYERED_SHAPES = {
    "embeddings.word_embeddings.weight": (12, 4),
    "embeddings.LayerNorm.weight": (4,),
    "embeddings.LayerNorm.bias": (4,),
    **{
        name: shape
        for i in range(LAYERS)
        for name, shape in (
            (f"encoder.layer.{i}.attention.self.query.weight", (4, 4)),
            (f"encoder.layer.{i}.attention.self.query.bias", (4,)),
            (f"encoder.layer.{i}.output.LayerNorm.weight", (4,)),
        )
    },
    "pooler.dense.weight": (4, 4),
    "pooler.dense.bias": (4,),
    "classifier.weight": (2, 4),
    "classifier.bias": (2,),
}
STEPS, WARMUP, TOTAL = 24, 5, 18  # past the end of the decay: the rate sits at 0 for 6 updates
LR, DECAY, WD = 0.05, 0.7, 0.1


def multiplier_torch(k: int) -> float:
    if k < WARMUP:
        return k / WARMUP
    return max(0.0, (TOTAL - k) / (TOTAL - WARMUP))


def multiplier_jax(count):
    return ob.get_linear_schedule_with_warmup(1.0, WARMUP, TOTAL)(count)


def torch_llrd_groups(named, no_decay_split: bool):
    """The usual PyTorch LLRD loop (head at lr, top layer at lr*decay, embeddings lowest)."""

    def depth(name):
        if name.startswith("embeddings."):
            return 0
        if name.startswith("encoder.layer."):
            return int(name.split(".")[2]) + 1
        return LAYERS + 1

    groups = []
    for d in range(LAYERS + 2):
        members = [(n, p) for n, p in named.items() if depth(n) == d]
        lr = LR * DECAY ** (LAYERS + 1 - d)
        if not no_decay_split:
            groups.append({"params": [p for _, p in members], "lr": lr})
            continue
        decayed = [p for n, p in members if not any(nd in n for nd in TORCH_NO_DECAY)]
        kept = [p for n, p in members if any(nd in n for nd in TORCH_NO_DECAY)]
        for params, wd in ((decayed, WD), (kept, 0.0)):
            if params:
                groups.append({"params": params, "lr": lr, "weight_decay": wd})
    return groups


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("no_decay_split", [False, True], ids=["one-group-per-depth", "no-decay-split"])
def test_layerwise_lr_decay_matches_torch_adamw_groups(dtype, no_decay_split):
    def make_torch(named):
        optimizer = torch.optim.AdamW(torch_llrd_groups(named, no_decay_split), lr=LR,
                                      weight_decay=WD, eps=1e-6)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier_torch)
        return TorchSide(optimizer, scheduler, scheduler.get_last_lr)

    def make_optax(params, side):
        groups = ob.layerwise_lr_decay_groups(
            params, LR, DECAY, weight_decay=WD if no_decay_split else None
        )
        assert len(groups) == len(side.optimizer.param_groups)
        return ob.param_groups(ob.adamw, groups, schedule=multiplier_jax, weight_decay=WD, eps=1e-6)

    param_error, lr_error = run_group_parity(
        make_torch, make_optax, dtype=dtype, steps=STEPS, shapes=LAYERED_SHAPES
    )
    assert_within("param error", param_error, PARAM_TOL[dtype])
    assert_within("lr error", lr_error, LR_TOL[dtype])


# (factory, per-group overrides in PyTorch names, torch optimizer, torch defaults)
SETUPS = {
    "adam-betas-eps": (
        ob.adam, {"betas": (0.8, 0.99), "eps": 1e-5, "weight_decay": 0.0},
        lambda groups: torch.optim.Adam(groups, lr=0.02, weight_decay=0.05, amsgrad=True),
        {"lr": 0.02, "weight_decay": 0.05, "amsgrad": True},
    ),
    "sgd-momentum-nesterov": (
        ob.sgd, {"momentum": 0.5, "lr": 0.1},
        lambda groups: torch.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True),
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    ),
    "bertadam-lr-wd": (
        ob.bertadam, {"lr": 0.05, "weight_decay": 0.0, "b1": 0.8},
        None,  # torch_ref.BertAdam, imported in the test
        {"lr": 0.02, "weight_decay": 0.01, "max_grad_norm": 0.5},
    ),
    # Global clipping spans the groups; each group's own schedule (a name) under the LambdaLR.
    "bertadam-global-clip-schedules": (
        ob.bertadam, {"lr": 0.05, "schedule": "warmup_cosine", "max_grad_norm": 2.0},
        None,
        {"lr": 0.02, "clip_mode": "global", "max_grad_norm": 0.3, "warmup": 0.2, "t_total": 20,
         "schedule": "warmup_linear"},
    ),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("setup", SETUPS)
def test_per_group_overrides_with_torch_names(dtype, setup):
    """Regex and predicate selectors, PyTorch names for the overrides, one LambdaLR over both."""
    factory, overrides, make_optimizer, defaults = SETUPS[setup]
    if make_optimizer is None:
        from torch_ref import BertAdam

        def make_optimizer(groups):
            return BertAdam(groups, **defaults)

    def make_torch(named):
        special = [p for n, p in named.items() if n.endswith("bias") or "LayerNorm" in n]
        rest = [p for n, p in named.items() if not (n.endswith("bias") or "LayerNorm" in n)]
        optimizer = make_optimizer([{"params": rest}, {"params": special, **overrides}])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier_torch)
        if "t_total" in defaults:  # BertAdam's own schedule multiplies the scheduler's lr
            return TorchSide(optimizer, scheduler, lambda: [
                optimizer._scheduled_lr(g, optimizer.state[g["params"][0]].get("step", 0))
                for g in optimizer.param_groups])
        return TorchSide(optimizer, scheduler, scheduler.get_last_lr)

    def make_optax(params, side):
        special = "(bias$|LayerNorm)"
        return ob.param_groups(
            factory,
            [{"params": lambda path, leaf: not (path.endswith("bias") or "LayerNorm" in path)},
             {"params": special, **overrides}],
            lr_lambda=multiplier_jax,
            **defaults,
        )

    param_error, lr_error = run_group_parity(make_torch, make_optax, dtype=dtype, steps=STEPS)
    assert_within("param error", param_error, PARAM_TOL[dtype])
    assert_within("lr error", lr_error, LR_TOL[dtype])


# ------------------------------------------------------------------ behaviour and refusals


def tiny_params():
    return {"encoder": {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}},
            "head": {"kernel": jnp.ones((3, 1)), "bias": jnp.zeros(1)}}


def test_parameter_in_two_groups_is_refused_at_init_naming_it():
    tx = ob.param_groups(ob.adamw, [{"params": "encoder"}, {"params": "bias"}, {"params": "head"}],
                         lr=0.1)
    with pytest.raises(ValueError, match=r"more than one parameter group: encoder/dense/bias "
                                         r"\(groups \[0, 1\]\), head/bias \(groups \[1, 2\]\)"):
        tx.init(tiny_params())


def test_parameter_in_no_group_is_refused_at_init_naming_it():
    tx = ob.param_groups(ob.adamw, [{"params": "encoder"}], lr=0.1)
    with pytest.raises(ValueError, match=r"in no parameter group: head/bias, head/kernel .*frozen"):
        tx.init(tiny_params())


def test_group_selecting_nothing_is_refused():
    tx = ob.param_groups(ob.adamw, [{"params": "."}, {"params": "encodr"}], lr=0.1)
    with pytest.raises(ValueError, match=r"groups\[1\] select no parameter"):
        tx.init(tiny_params())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(groups=[{"params": "x", "momentum": 0.9}], lr=0.1), ValueError,
         r"groups\[0\]: momentum=0.9 is invalid: adamw takes no argument 'momentum'"),
        (dict(groups=[{"params": "x", "lr": -1.0}]), ValueError, r"groups\[0\]: learning_rate=-1.0"),
        (dict(groups=[{"params": "x", "betas": (0.9,)}], lr=0.1), ValueError,
         r"betas=\(0.9,\) is invalid: expected 2 values"),
        (dict(groups=[{"params": "("}], lr=0.1), None, r"not a valid regex"),
        (dict(groups=[{"params": "x", "lr": 0.1, "learning_rate": 0.2}]), ValueError, "given twice"),
        (dict(groups=[{"params": "x", "frozen": True, "lr": 0.1}]), ValueError,
         r"groups\[0\] is frozen: it takes no hyperparameters"),
        (dict(groups={"params": "x"}, lr=0.1), TypeError, "non-empty list of dicts"),
        (dict(groups=[{"params": "x"}], schedule=lambda k: k), ValueError,
         r"learning_rate=None is invalid with a schedule"),
    ],
)
def test_bad_groups_are_refused(kwargs, error, match):
    if error is None:  # a bad regex is found when the labels are computed, at init
        tx = ob.param_groups(ob.adamw, **kwargs)
        with pytest.raises(ValueError, match=match):
            tx.init(tiny_params())
        return
    with pytest.raises(error, match=match):
        ob.param_groups(ob.adamw, **kwargs)


def test_frozen_group_is_not_trained_and_has_no_rate():
    params = tiny_params()
    tx = ob.param_groups(ob.sgd, [{"params": "encoder", "frozen": True},
                                  {"params": "head", "lr": 0.5}], lr=0.1, schedule=lambda k: 0.5 ** k)
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
    assert all(not np.any(u) for u in jax.tree.leaves(updates["encoder"]))
    np.testing.assert_allclose(updates["head"]["kernel"], -0.5)
    assert [float(lr) for lr in ob.get_last_lr(state)] == [0.25]


def test_bool_tree_selectors_and_optax_factories():
    params = tiny_params()
    mask = ob.decay_mask(params)
    tx = ob.param_groups(optax.adamw, [{"params": mask}, {"params": jax.tree.map(lambda m: not m, mask),
                                                          "weight_decay": 0.0}], lr=0.1)
    state = tx.init(params)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    reference, _ = optax.adamw(0.1, mask=mask).update(
        jax.tree.map(jnp.ones_like, params), optax.adamw(0.1, mask=mask).init(params), params
    )
    for got, want in zip(jax.tree.leaves(updates), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_get_last_lr_single_group_and_get_lr_ambiguity():
    params = tiny_params()
    single = ob.adamw(0.1)
    assert [float(lr) for lr in ob.get_last_lr(single.init(params))] == pytest.approx([0.1])
    grouped = ob.param_groups(ob.adamw, [{"params": "encoder"}, {"params": "head", "lr": 0.3}], lr=0.1)
    state = grouped.init(params)
    assert [float(lr) for lr in ob.get_last_lr(state)] == pytest.approx([0.1, 0.3])
    with pytest.raises(ValueError, match="ambiguous.*get_last_lr"):
        ob.get_lr(state)
    with pytest.raises(ValueError, match="no learning-rate state"):
        ob.get_last_lr(optax.sgd(0.1).init(params))


def test_eleven_groups_keep_their_order():
    """Labels are integers: group 10 sorts after group 9 (a string label '10' would not)."""
    params = {f"w{i}": jnp.zeros(1) for i in range(11)}
    tx = ob.param_groups(ob.sgd, [{"params": f"^w{i}$", "lr": float(i)} for i in range(11)])
    assert [float(lr) for lr in ob.get_last_lr(tx.init(params))] == [float(i) for i in range(11)]


def test_layerwise_groups_refuse_a_tree_without_layers():
    with pytest.raises(ValueError, match="no encoder layers"):
        ob.layerwise_lr_decay_groups(tiny_params(), 0.1, 0.9)
    with pytest.raises(ValueError, match="layer_decay=1.5"):
        ob.layerwise_lr_decay_groups(tiny_params(), 0.1, 1.5)


def test_groups_are_chosen_on_the_parameters_not_the_gradients():
    """A predicate reading the leaf sees the parameter at init and at update (bfloat16 parameters,
    float32 gradients), so the groups do not change between the two."""
    params = {"low": jnp.ones(3, jnp.bfloat16), "full": jnp.ones(3, jnp.float32)}
    tx = ob.param_groups(ob.sgd, [{"params": lambda path, leaf: leaf.dtype == jnp.bfloat16, "lr": 1.0},
                                  {"params": lambda path, leaf: leaf.dtype == jnp.float32}], lr=0.01)
    state = tx.init(params)
    grads = {"low": jnp.ones(3, jnp.float32), "full": jnp.ones(3, jnp.float32)}
    updates, _ = jax.jit(tx.update)(grads, state, params)
    np.testing.assert_allclose(updates["low"], -1.0)
    np.testing.assert_allclose(updates["full"], -0.01)


def test_a_multiplier_that_does_not_trace_is_refused_when_built():
    def python_branch(k):
        return 1.0 if k < 3 else 0.5

    with pytest.raises(TypeError, match=r"schedule=.* is invalid: expected a function written with "
                                        r"jax.numpy .*TracerBoolConversionError"):
        ob.param_groups(ob.sgd, [{"params": "."}], lr=0.1, schedule=python_branch)
    with pytest.raises(TypeError, match=r"groups\[1\]: schedule=.* is invalid"):
        ob.param_groups(ob.sgd, [{"params": "a"}, {"params": "b", "schedule": python_branch}], lr=0.1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(groups=[{"params": "x", "lr": -0.5}], schedule=lambda k: 1.0), ValueError,
         r"groups\[0\]: learning_rate=-0.5 is invalid: expected a value in \[0, inf\]"),
        (dict(groups=[{"params": "x", "frozen": "no"}], lr=0.1), TypeError,
         r"groups\[0\]: frozen='no' is invalid: expected True or False"),
        (dict(groups="encoder", lr=0.1), TypeError, r"groups='encoder' is invalid: expected a non-empty"),
    ],
)
def test_more_bad_groups_are_refused_when_built(kwargs, error, match):
    with pytest.raises(error, match=match):
        ob.param_groups(ob.sgd, **kwargs)


def test_selectors_of_another_tree_and_predicates_of_another_arity_are_refused_at_init():
    params = tiny_params()
    other = {"a": True, "b": False, "c": True, "d": False}  # as many leaves, another structure
    with pytest.raises(ValueError, match=r"groups\[0\]\['params'\] is invalid: .*another tree structure"):
        ob.param_groups(ob.sgd, [{"params": other}], lr=0.1).init(params)
    with pytest.raises(TypeError, match=r"groups\[0\]\['params'\]=.* is called as predicate\(path, leaf\)"):
        ob.param_groups(ob.sgd, [{"params": lambda path: True}], lr=0.1).init(params)


def test_bertadam_schedule_names_go_to_bertadam_per_group_and_as_default():
    params = tiny_params()
    tx = ob.param_groups(ob.bertadam, [{"params": "encoder", "schedule": "warmup_cosine"},
                                       {"params": "head"}],
                         lr=0.1, warmup=0.5, t_total=4, schedule="warmup_constant")
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(3):
        _, state = tx.update(grads, state, params)
    cosine = ob.bert_schedule("warmup_cosine", 0.1, 4, 0.5)(3)
    constant = ob.bert_schedule("warmup_constant", 0.1, 4, 0.5)(3)
    np.testing.assert_allclose([float(lr) for lr in ob.get_last_lr(state)], [cosine, constant], rtol=1e-6)


def test_get_lr_refuses_a_rate_schedule_evaluated_by_inject_hyperparams():
    """optax.inject_hyperparams evaluates the schedule before each update: the state knows the
    last rate only, so reporting it as the next one would lag by an update."""
    params = tiny_params()
    injected = optax.inject_hyperparams(ob.adamw)(learning_rate=optax.linear_schedule(0.0, 1.0, 10))
    state = injected.init(params)
    for read in (ob.get_lr, ob.get_last_lr):
        with pytest.raises(ValueError, match="inject_hyperparams evaluates the learning_rate schedule"):
            read(state)
    # A constant injected rate is the next rate, and the schedule passed directly is followed.
    assert float(ob.get_lr(optax.inject_hyperparams(ob.adamw)(learning_rate=0.3).init(params))) == \
        pytest.approx(0.3)
    direct = ob.adamw(optax.linear_schedule(0.0, 1.0, 10))
    state = direct.init(params)
    _, state = direct.update(jax.tree.map(jnp.ones_like, params), state, params)
    assert float(ob.get_lr(state)) == pytest.approx(0.1)


def test_layerwise_groups_electra_embeddings_project_and_numbered_head_layers():
    leaf = jnp.ones(2)
    electra = {"electra": {"embeddings": {"w": leaf}, "embeddings_project": {"kernel": leaf},
                           "encoder": {"layer_0": {"w": leaf}, "layer_1": {"w": leaf}}},
               "head": {"w": leaf}}
    groups = ob.layerwise_lr_decay_groups(electra, 1.0, 0.5)
    flat = [dict(zip(ob.parameter_names(electra), jax.tree.leaves(g["params"]), strict=True))
            for g in groups]
    assert flat[0]["electra/embeddings_project/kernel"] and groups[0]["lr"] == 0.125
    with_head_layers = {"embeddings": {"w": leaf}, "encoder": {"layer": [{"w": leaf}, {"w": leaf}]},
                        "classifier": {"layers_0": {"w": leaf}, "layers_1": {"w": leaf}}}
    with pytest.raises(ValueError, match=r"numbered layers under several prefixes \(encoder/layer/, "
                                         r"classifier/layers_\).*layers=r\"encoder/layer/\(\\d\+\)/\""):
        ob.layerwise_lr_decay_groups(with_head_layers, 1.0, 0.5)
    groups = ob.layerwise_lr_decay_groups(with_head_layers, 1.0, 0.5, layers=r"encoder/layer/(\d+)/")
    assert [g["lr"] for g in groups] == [0.125, 0.25, 0.5, 1.0]
    head = dict(zip(ob.parameter_names(with_head_layers), jax.tree.leaves(groups[-1]["params"]),
                    strict=True))
    assert head["classifier/layers_0/w"] and head["classifier/layers_1/w"]
