"""DeepSpeed's compiled Adam kernels, ``FusedAdam`` and ``DeepSpeedCPUAdam``, against this package.

The engine builds ``FusedAdam`` for ``"type": "Adam"`` (CPU accelerator: ``csrc/cpu/adam/
fused_adam.cpp``) and ``DeepSpeedCPUAdam`` under ZeRO stage 1-2 with ``offload_optimizer.device
= "cpu"`` (``csrc/adam/cpu_adam.cpp``). They are two extensions (``fused_adam`` and ``cpu_adam``,
both compiling ``cpu_adam_impl.cpp``), built with g++ on first use and cached in
``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``): from an empty cache on a
2-core machine about 60 s each; then about 3 s each to load. Each kernel's cases are one test
item, so that exactly one process builds it (pytest-xdist places items, not modules, on its
workers; a second worker needing the same kernel would wait on the first one's build lock),
and the two kernels may build in parallel on two workers.

Cases: the real engine (``run_engine_case`` of ``test_deepspeed_engine.py``: every parameter and
every group's rate compared after every micro-step) with FusedAdam in AdamW mode, FusedAdam in L2
mode without bias correction (through the config dict too), FusedAdam in L2 mode under bf16
(``FP16_Optimizer``'s flat float32 masters), and DeepSpeedCPUAdam under ZeRO-2 offload; and
``ob.from_torch`` over a live FusedAdam / DeepSpeedCPUAdam whose two groups hold values that
differ from the defaults and from each other. Both kernels compute in float32 only
(they refuse float64 parameters): the harness's float32 bounds (2e-5 parameters, 1e-6 rates).

``torch_ref.FusedAdam`` (the registry's twin of :func:`optax_bertadam.fused_adam`, which carries
its float64 parity) is anchored here to the real ``FusedAdam``: both modes, with and without
bias correction, over two groups, parameters and step layout compared after every step. A real
``FusedAdam``'s and ``DeepSpeedCPUAdam``'s ``state_dict`` migrate both ways
(``load_torch_state_dict`` mid-run, then ``to_torch_state_dict`` into a fresh one that continues
as JAX does).
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import optax_bertadam as ob
import torch_ref
from parity_tests import harness
from parity_tests.test_deepspeed_engine import (
    COSINE,
    ONE_CYCLE,
    WARMUP,
    _config,
    _model,
    _nest,
    one_rank_deepspeed,
    run_engine_case,
    run_live_case,
)

MICRO_STEPS = 24


@pytest.fixture(scope="module")
def deepspeed():  # one process group for the module's two items
    with one_rank_deepspeed() as ds:
        yield ds


OFFLOAD = {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}

# (optimizer params, scheduler, clipping, accumulation, extra config, front door, class built)
BF16 = {"bf16": {"enabled": True}}
ENGINE_CASES = {
    "FusedAdam-AdamW": (dict(weight_decay=0.1), WARMUP, 1.0, 4, {}, "engine", "FusedAdam"),
    "FusedAdam-L2-no-bias-correction": (
        dict(adam_w_mode=False, weight_decay=0.05, bias_correction=False, betas=(0.8, 0.99)),
        ONE_CYCLE, 0.5, 1, {}, "engine", "FusedAdam"),
    "FusedAdam-L2-no-bias-correction-config": (
        dict(adam_w_mode=False, weight_decay=0.05, bias_correction=False, betas=(0.8, 0.99)),
        ONE_CYCLE, 0.5, 1, {}, "config", "FusedAdam"),
    # bf16 at stage 0 wraps FusedAdam in FP16_Optimizer (flat float32 masters), whose
    # construction-time zero-gradient step moves the masters by the L2 decay.
    "FusedAdam-L2-bf16": (dict(adam_w_mode=False, weight_decay=0.1), COSINE, 1.0, 1, BF16,
                          "engine", "FusedAdam"),
    "DeepSpeedCPUAdam-ZeRO2-offload": (dict(weight_decay=0.1, eps=1e-6), WARMUP, 1.0, 2, OFFLOAD,
                                       "engine", "DeepSpeedCPUAdam"),
}


def _engine_case(deepspeed, case: str) -> None:
    params, scheduler, clipping, accumulation, extra, door, built = ENGINE_CASES[case]
    config = {**_config("Adam", params, scheduler, clipping, accumulation, "fp32"), **extra}
    if door == "engine":
        # The engine builds the class the config type's record names.
        model = _model()
        probe, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                         config=config)
        assert type(probe.basic_optimizer).__name__ == built, case
        del probe
    worst_param, worst_rate = run_engine_case(deepspeed, config, front_door=door,
                                              micro_steps=MICRO_STEPS)
    harness.assert_within(f"{case}: param error", worst_param, harness.PARAM_TOL["float32"])
    harness.assert_within(f"{case}: lr error", worst_rate, harness.LR_TOL["float32"])


def _two_groups(model: torch.nn.Module) -> list[dict]:
    named = dict(model.named_parameters())
    weights = [named["0.weight"], named["2.weight"]]
    rest = [p for n, p in named.items() if n not in ("0.weight", "2.weight")]
    return [dict(params=weights, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05,
                 bias_correction=False),
            dict(params=rest, lr=0.02, betas=(0.7, 0.9), eps=1e-5, weight_decay=0.01)]


def _fused_adam(groups):
    from deepspeed.ops.adam import FusedAdam

    return FusedAdam(groups, adam_w_mode=False)  # L2 mode


def _cpu_adam(groups):
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    return DeepSpeedCPUAdam(groups, adamw_mode=True)


LIVE = {
    # A StepLR over it.
    "FusedAdam": (_fused_adam, lambda optimizer: torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=5, gamma=0.5)),
    # No scheduler: from_torch's live check copies the scheduler with its optimizer, and this
    # one holds its C++ optimizer by id.
    "DeepSpeedCPUAdam": (_cpu_adam, lambda optimizer: None),
}


def _live_case(name: str) -> None:
    """``ob.from_torch`` over a live ``name`` against its own steps."""
    make_optimizer, make_scheduler = LIVE[name]
    model = _model()
    optimizer = make_optimizer(_two_groups(model))
    worst_param, worst_rate = run_live_case(model, optimizer, make_scheduler(optimizer),
                                            MICRO_STEPS)
    harness.assert_within(f"from_torch({name}): param error", worst_param,
                          harness.PARAM_TOL["float32"])
    harness.assert_within(f"from_torch({name}): lr error", worst_rate, harness.LR_TOL["float32"])


def _twin_against_the_real() -> None:
    """``torch_ref.FusedAdam`` against the real ``FusedAdam`` in float32, in both modes with and
    without bias correction: parameters after every step, and the same per-parameter steps."""
    from deepspeed.ops.adam import FusedAdam

    grads = harness.gradient_stream(6, seed=3, shapes={n: tuple(p.shape) for n, p in
                                                        _model().named_parameters()})
    worst = {}
    for adam_w_mode in (True, False):
        for bias_correction in (True, False):
            models = _model(), _model()
            # The optimizer's bias_correction for both groups (_two_groups sets group 0's).
            optimizers = [cls([{k: v for k, v in g.items() if k != "bias_correction"}
                               for g in _two_groups(model)], bias_correction=bias_correction,
                              adam_w_mode=adam_w_mode)
                          for cls, model in zip((FusedAdam, torch_ref.FusedAdam), models, strict=True)]
            error = 0.0
            for grad in grads:
                for model, optimizer in zip(models, optimizers, strict=True):
                    for n, p in model.named_parameters():
                        p.grad = torch.tensor(grad[n], dtype=torch.float32)
                    optimizer.step()
                real, twin = (dict(model.named_parameters()) for model in models)
                error = max(error, max(float((real[n] - twin[n]).detach().abs().max()) for n in real))
                real_state, twin_state = (o.state_dict() for o in optimizers)
                assert [g.get("step") for g in real_state["param_groups"]] == \
                    [g.get("step") for g in twin_state["param_groups"]]
                assert {i: s["step"] for i, s in real_state["state"].items()} == \
                    {i: s["step"] for i, s in twin_state["state"].items()}
            worst[f"adam_w_mode={adam_w_mode}, bias_correction={bias_correction}"] = error
    print("torch_ref.FusedAdam vs FusedAdam, float32 worst param error:", worst)
    for case, error in worst.items():
        harness.assert_within(f"twin vs FusedAdam ({case})", error, harness.PARAM_TOL["float32"])


def _steps_layout(name: str, count: int) -> list[int]:
    """The per-parameter steps of ``name``'s state_dict after ``count`` steps over
    ``_two_groups``: FusedAdam keeps each group's count in its last parameter (the others at
    ``group['step']``, 0), DeepSpeedCPUAdam one per parameter."""
    if name == "FusedAdam":
        return [0, count, 0, 0, 0, count]
    return [count] * 6


def _state_dict_migrates_both_ways(name: str) -> None:
    """A real ``name``'s state_dict loaded mid-run into ``from_torch(optimizer)``'s state,
    continued in JAX, and written back into a fresh ``name`` that continues as JAX does."""
    make_optimizer, _ = LIVE[name]
    before, middle, after = 4, 3, 4
    model = _model()
    named = dict(model.named_parameters())
    optimizer = make_optimizer(_two_groups(model))
    names = ob.torch_parameter_names(model.named_parameters(), optimizer)
    grads = harness.gradient_stream(before + middle + after, seed=5,
                                    shapes={n: tuple(p.shape) for n, p in named.items()})

    def torch_steps(optimizer, named, stream):
        for grad in stream:
            for n, p in named.items():
                p.grad = torch.tensor(grad[n], dtype=torch.float32)
            optimizer.step()

    torch_steps(optimizer, named, grads[:before])
    saved = copy.deepcopy(optimizer.state_dict())
    assert [saved["state"][i]["step"] for i in range(6)] == _steps_layout(name, before)

    params = _nest({n: jnp.asarray(p.detach().numpy()) for n, p in named.items()})
    tx = ob.from_torch(optimizer, named_parameters=model.named_parameters(), params=params)
    state = ob.load_torch_state_dict(saved, tx, params, names)
    torch_steps(optimizer, named, grads[before:before + middle])
    update = jax.jit(tx.update)
    for grad in grads[before:before + middle]:
        updates, state = update(_nest({n: jnp.asarray(g) for n, g in grad.items()}), state, params)
        params = optax.apply_updates(params, updates)

    def worst_error(named):
        return max(float(np.max(np.abs(np.asarray(params[n.split(".")[0]][n.split(".")[1]])
                                       - p.detach().numpy()))) for n, p in named.items())

    to_jax = worst_error(named)
    # JAX -> a fresh FusedAdam over JAX's parameters, which both sides continue from.
    fresh_model = _model()
    fresh_named = dict(fresh_model.named_parameters())
    with torch.no_grad():
        for n, p in fresh_named.items():
            p.copy_(torch.tensor(np.asarray(params[n.split(".")[0]][n.split(".")[1]])))
    fresh = make_optimizer(_two_groups(fresh_model))
    written = ob.to_torch_state_dict(state, fresh, names)
    # The layout the class itself writes, with int steps (the kernels take an integer).
    assert [written["state"][i]["step"] for i in range(6)] == _steps_layout(name, before + middle)
    assert all(type(entry["step"]) is int for entry in written["state"].values())
    fresh.load_state_dict(written)
    torch_steps(fresh, fresh_named, grads[before + middle:])
    for grad in grads[before + middle:]:
        updates, state = update(_nest({n: jnp.asarray(g) for n, g in grad.items()}), state, params)
        params = optax.apply_updates(params, updates)
    to_torch = worst_error(fresh_named)
    print(f"{name} state_dict migration, float32 worst param error: to JAX {to_jax:.2e}, "
          f"back to {name} {to_torch:.2e}")
    harness.assert_within(f"{name} state_dict -> JAX: param error", to_jax,
                          harness.PARAM_TOL["float32"])
    harness.assert_within(f"JAX -> {name} state_dict: param error", to_torch,
                          harness.PARAM_TOL["float32"])


def test_fused_adam(deepspeed):
    """Every FusedAdam case: the engine's ``"type": "Adam"`` (AdamW; L2 without bias correction,
    engine and config; L2 under bf16), from_torch over a live FusedAdam, the registry's twin
    against the real class, and its state_dict migrating both ways."""
    for case, (*_, built) in ENGINE_CASES.items():
        if built == "FusedAdam":
            _engine_case(deepspeed, case)
    _live_case("FusedAdam")
    _twin_against_the_real()
    _state_dict_migrates_both_ways("FusedAdam")


def test_deepspeed_cpu_adam(deepspeed):
    """Every DeepSpeedCPUAdam case: ZeRO-2 offload on the engine, from_torch over a live one,
    and its state_dict migrating both ways."""
    for case, (*_, built) in ENGINE_CASES.items():
        if built == "DeepSpeedCPUAdam":
            _engine_case(deepspeed, case)
    _live_case("DeepSpeedCPUAdam")
    _state_dict_migrates_both_ways("DeepSpeedCPUAdam")
