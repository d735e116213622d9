"""``ob.from_deepspeed`` against a real ``deepspeed.initialize`` engine on CPU, micro-step by micro-step.

One process, one rank (``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set by a
module fixture; DeepSpeed initialises its process group once per process, and each pytest-xdist
worker is its own process). DeepSpeed's shared-memory collective kernel, which it compiles with
g++ for a CPU process group, is replaced by ``None``: one rank runs no collective that it would
serve, and the compilation takes minutes.

The model is two ``Linear`` layers and a ``LayerNorm``, in two parameter groups (weights; biases
and the LayerNorm, at another lr). Each micro-step draws one gradient per parameter
(``harness.gradient_stream``: magnitudes over three decades, so clipping sometimes engages) and
feeds it to both sides: the engine through ``engine.backward(sum(p * G))`` (whose gradient is
``G``, divided by the accumulation steps as DeepSpeed does) and ``engine.step()``; optax through
``tx.update(G, state, params)``. After every micro-step every parameter (bf16: DeepSpeed's float32
master weights) and every group's rate (``engine.get_lr()`` vs ``ob.get_last_lr``) are compared.

The matrix is a pairwise covering of optimizer type (torch Adam/AdamW through ``torch_adam``;
``FusedAdam`` and ``DeepSpeedCPUAdam``, whose kernels the engine compiles on first use, are in
``test_deepspeed_compiled.py``; ``Lamb`` is not built on CPU: ``test_lamb.py`` checks
``deepspeed_lamb`` against the ``FusedLamb`` twin), scheduler (all five and none), clipping on/off,
accumulation 1/4, fp32/bf16, and the front door (the live engine or its config dict with
``groups``). fp16 is refused by the CPU engine: its loss scale is checked against
``deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler`` directly.

Error measures: parameters ``max |p_jax - p_ds| / max |p_ds|`` per tensor over the run; rates
``max |lr_jax - lr_ds| / max |lr_ds|``. Tolerances: the harness's float32 bounds (2e-5, 1e-6).
"""

from __future__ import annotations

import contextlib
import socket
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import optax_bertadam as ob
from parity_tests import harness

MICRO_STEPS = 24


@contextlib.contextmanager
def one_rank_deepspeed():
    """``deepspeed`` with a one-rank process group on this host; its shm collective stubbed."""
    with pytest.MonkeyPatch.context() as patch:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        for key, value in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0",
                               WORLD_SIZE="1", LOCAL_RANK="0").items():
            patch.setenv(key, value)
        import deepspeed as ds
        import deepspeed.comm.torch  # noqa: F401

        patch.setattr(sys.modules["deepspeed.comm.torch"], "build_shm_op", lambda: None)
        ds.init_distributed()  # once per process; deepspeed.initialize and the loss scaler use it
        yield ds


@pytest.fixture(scope="module")
def deepspeed():
    with one_rank_deepspeed() as ds:
        yield ds


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        layer, leaf = name.split(".")
        tree.setdefault(layer, {})[leaf] = value
    return tree


def run_engine_case(deepspeed, config: dict[str, Any], *, front_door: str = "engine",
                    micro_steps: int = MICRO_STEPS) -> tuple[float, float]:
    """Run ``config`` on the real engine and through ``ob.from_deepspeed``; the worst errors."""
    model = _model()
    weights = [p for n, p in model.named_parameters() if n.endswith("weight") and n != "1.weight"]
    others = [p for n, p in model.named_parameters() if not (n.endswith("weight") and n != "1.weight")]
    decay = config["optimizer"]["params"].get("weight_decay", 0.0)
    torch_groups = [{"params": weights}, {"params": others, "lr": 0.02, "weight_decay": 0.0}]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=torch_groups, config=config)
    bf16 = config.get("bf16", {}).get("enabled", False)

    def torch_params() -> dict[str, torch.Tensor]:
        if not bf16:
            return {n: p.detach().float() for n, p in engine.module.named_parameters()}
        name_of = {id(p): n for n, p in engine.module.named_parameters()}
        wrapper = engine.optimizer
        if hasattr(wrapper, "fp32_groups_flat"):  # FP16_Optimizer (FusedAdam): flat masters
            masters = [torch._utils._unflatten_dense_tensors(flat, group) for flat, group in
                       zip(wrapper.fp32_groups_flat, wrapper.fp16_groups, strict=True)]
        else:
            masters = wrapper.fp32_groups
        return {name_of[id(h)]: m.detach().clone()
                for hg, mg in zip(wrapper.fp16_groups, masters, strict=True)
                for h, m in zip(hg, mg, strict=True)}

    # The model's weights (bf16: as float32), not the masters: the bf16 wrapper's construction
    # step may already have moved those, and from_deepspeed reproduces that move.
    params = _nest({n: jnp.asarray(p.detach().float().numpy())
                    for n, p in engine.module.named_parameters()})
    if front_door == "engine":
        tx = ob.from_deepspeed(engine, named_parameters=model.named_parameters(), params=params)
    else:
        groups = [{"params": r"^(0|2)/weight$"},
                  {"params": r"bias$|^1/", "lr": 0.02, "weight_decay": 0.0}]
        assert decay == 0.0 or "weight_decay" in config["optimizer"]["params"]
        tx = ob.from_deepspeed(config, params=params, groups=groups)
    state = tx.init(params)
    update = jax.jit(tx.update)
    shapes = {n: tuple(p.shape) for n, p in engine.module.named_parameters()}
    grads = harness.gradient_stream(micro_steps, seed=3, shapes=shapes)
    dtype = torch.bfloat16 if bf16 else torch.float32
    param_errors: dict[str, float] = {}
    scale: dict[str, float] = {}
    rate_diffs, rates = [], []
    for grad in grads:
        cast = {n: torch.tensor(g).to(dtype) for n, g in grad.items()}
        loss = sum((p * cast[n]).sum() for n, p in engine.module.named_parameters())
        engine.backward(loss)
        engine.step()
        jax_grads = _nest({n: jnp.asarray(g.float().numpy()).astype(jnp.bfloat16 if bf16 else
                                                                      jnp.float32)
                           for n, g in cast.items()})
        updates, state = update(jax_grads, state, params)
        params = optax.apply_updates(params, updates)
        for name, tensor in torch_params().items():
            layer, leaf = name.split(".")
            diff = float(np.max(np.abs(np.asarray(params[layer][leaf]) - tensor.numpy())))
            param_errors[name] = max(param_errors.get(name, 0.0), diff)
            scale[name] = max(scale.get(name, 0.0), float(tensor.abs().max()))
        ours = [float(r) for r in ob.get_last_lr(state)]
        theirs = [float(r) for r in engine.get_lr()]
        rate_diffs.append(max(abs(a - b) for a, b in zip(ours, theirs, strict=True)))
        rates.extend(theirs)
    worst_param = max(param_errors[n] / scale[n] for n in param_errors)
    worst_rate = max(rate_diffs) / max(max(rates), 1e-30)
    return worst_param, worst_rate


def run_live_case(model: torch.nn.Module, optimizer, scheduler, micro_steps: int,
                  seed: int = 7) -> tuple[float, float]:
    """``ob.from_torch(optimizer, scheduler)`` against ``optimizer.step(); scheduler.step()`` on
    the same float32 gradients; the worst errors (parameters relative to their largest
    magnitude per tensor, rates relative to the rate)."""
    named = dict(model.named_parameters())
    params = _nest({n: jnp.asarray(p.detach().numpy()) for n, p in named.items()})
    tx = ob.from_torch(optimizer, scheduler, named_parameters=model.named_parameters(),
                       params=params)
    state = tx.init(params)
    update = jax.jit(tx.update)
    grads = harness.gradient_stream(micro_steps, seed=seed,
                                    shapes={n: tuple(p.shape) for n, p in named.items()})
    diffs: dict[str, float] = {}
    scales: dict[str, float] = {}
    worst_rate = 0.0
    for grad in grads:
        for n, p in named.items():
            p.grad = torch.tensor(grad[n], dtype=torch.float32)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        updates, state = update(_nest({n: jnp.asarray(g, jnp.float32) for n, g in grad.items()}),
                                state, params)
        params = optax.apply_updates(params, updates)
        for n, p in named.items():
            layer, leaf = n.split(".")
            diff = np.max(np.abs(np.asarray(params[layer][leaf]) - p.detach().numpy()))
            diffs[n] = max(diffs.get(n, 0.0), float(diff))
            scales[n] = max(scales.get(n, 0.0), float(p.detach().abs().max()))
        ours = [float(r) for r in ob.get_last_lr(state)]
        theirs = [float(g["lr"]) for g in optimizer.param_groups]
        worst_rate = max(worst_rate, max(abs(a - b) / b for a, b in zip(ours, theirs, strict=True)))
    return max(diffs[n] / scales[n] for n in diffs), worst_rate


def _config(optimizer: str, optimizer_params: dict[str, Any], scheduler, clipping: float,
            accumulation: int, precision: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": 2 * accumulation,
        "gradient_clipping": clipping,
        "optimizer": {"type": optimizer, "params": {"lr": 0.01, **optimizer_params}},
        "steps_per_print": 10**9,
    }
    if scheduler is not None:
        config["scheduler"] = {"type": scheduler[0], "params": scheduler[1]}
    if precision == "bf16":
        config["bf16"] = {"enabled": True}
    return config


ADAMW = ("AdamW", {"torch_adam": True, "weight_decay": 0.1, "betas": (0.8, 0.99)})
ADAM_L2 = ("Adam", {"torch_adam": True, "adam_w_mode": False, "weight_decay": 0.05})
SGD = ("SGD", {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01})


def _no_decay(optimizer):
    name, params = optimizer
    return name, {**params, "weight_decay": 0.0}


WARMUP = ("WarmupLR", {"warmup_min_lr": 0.001, "warmup_max_lr": 0.01, "warmup_num_steps": 3,
                       "warmup_type": "linear"})
DECAY = ("WarmupDecayLR", {"total_num_steps": 5, "warmup_max_lr": 0.02, "warmup_num_steps": 2})
COSINE = ("WarmupCosineLR", {"total_num_steps": 5, "warmup_num_steps": 2,
                             "warmup_min_ratio": 0.1, "warmup_type": "linear"})
ONE_CYCLE = ("OneCycle", {"cycle_min_lr": 0.001, "cycle_max_lr": 0.01, "cycle_first_step_size": 2,
                          "decay_step_size": 1, "decay_lr_rate": 0.5})
RANGE = ("LRRangeTest", {"lr_range_test_min_lr": 0.002, "lr_range_test_step_size": 2,
                         "lr_range_test_staircase": True})

# (optimizer, scheduler, clipping, accumulation, precision, front door): every pair of values of
# optimizer, scheduler, clipping, accumulation and precision meets in some case.
CASES = [
    (ADAMW, WARMUP, 1.0, 1, "fp32", "engine"),
    (ADAM_L2, DECAY, 0.0, 4, "fp32", "config"),
    (SGD, COSINE, 0.5, 4, "fp32", "engine"),
    (_no_decay(ADAMW), ONE_CYCLE, 0.0, 4, "bf16", "engine"),
    (_no_decay(ADAM_L2), RANGE, 1.0, 1, "bf16", "config"),
    (_no_decay(SGD), WARMUP, 0.0, 1, "bf16", "config"),
    (SGD, ONE_CYCLE, 1.0, 1, "fp32", "config"),
    (ADAMW, None, 0.5, 4, "fp32", "config"),
    (_no_decay(ADAMW), COSINE, 1.0, 4, "bf16", "config"),
    (ADAM_L2, ONE_CYCLE, 1.0, 1, "fp32", "engine"),
    (_no_decay(SGD), DECAY, 1.0, 4, "bf16", "engine"),
    (ADAMW, RANGE, 0.0, 4, "fp32", "engine"),
]


def _case_id(case) -> str:
    (name, params), scheduler, clipping, accumulation, precision, door = case
    mode = "L2" if params.get("adam_w_mode") is False else ""
    return (f"{name}{mode}-{scheduler[0] if scheduler else 'none'}-clip{clipping}-acc{accumulation}"
            f"-{precision}-{door}")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_from_deepspeed_matches_the_engine(deepspeed, case):
    (name, params), scheduler, clipping, accumulation, precision, door = case
    config = _config(name, params, scheduler, clipping, accumulation, precision)
    worst_param, worst_rate = run_engine_case(deepspeed, config, front_door=door)
    harness.assert_within("param error", worst_param, harness.PARAM_TOL["float32"])
    harness.assert_within("lr error", worst_rate, harness.LR_TOL["float32"])


@pytest.mark.parametrize("door", ["engine", "config"])
def test_torch_adam_amsgrad_matches_the_engine(deepspeed, door):
    # torch.optim.AdamW(amsgrad=True), read by its catalogue record (FusedAdam refuses amsgrad).
    params = {**ADAMW[1], "amsgrad": True}
    config = _config("AdamW", params, ONE_CYCLE, 1.0, 2, "fp32")
    worst_param, worst_rate = run_engine_case(deepspeed, config, front_door=door)
    harness.assert_within("param error", worst_param, harness.PARAM_TOL["float32"])
    harness.assert_within("lr error", worst_rate, harness.LR_TOL["float32"])


def test_bf16_weight_decay_at_stage_0_construction_step(deepspeed):
    # The bf16 wrapper's construction-time zero-gradient step decays the float32 masters (not
    # the bf16 weights of the first forward pass): shown on the engine, reproduced by
    # from_deepspeed as part of the first applied update.
    config = _config(*ADAMW, None, 0.0, 1, "bf16")
    model = _model()
    before = model[0].weight.detach().to(torch.bfloat16).float().clone()
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                      config=config)
    master = engine.optimizer.fp32_groups[0][0].detach()
    np.testing.assert_allclose(master.numpy(), before.numpy() * (1 - 0.01 * 0.1), rtol=1e-6)
    np.testing.assert_array_equal(model[0].weight.detach().float().numpy(), before.numpy())
    for door in ("engine", "config"):
        worst_param, _ = run_engine_case(deepspeed, config, front_door=door, micro_steps=6)
        harness.assert_within("param error", worst_param, harness.PARAM_TOL["float32"])


def test_construction_step_under_a_scheduler_that_overwrote_the_lr(deepspeed):
    # bf16 at stage 0 steps the masters at the built lr, then WarmupLR overwrites every group's
    # lr: the config knows the built lr, the engine no longer does (refused, not guessed).
    config = _config(*ADAMW, WARMUP, 1.0, 1, "bf16")
    worst_param, worst_rate = run_engine_case(deepspeed, config, front_door="config", micro_steps=8)
    harness.assert_within("param error", worst_param, harness.PARAM_TOL["float32"])
    harness.assert_within("lr error", worst_rate, harness.LR_TOL["float32"])
    with pytest.raises(ValueError, match=r"engine.lr_scheduler='WarmupLR' .*param_groups\[0\]"):
        run_engine_case(deepspeed, config, front_door="engine", micro_steps=1)


@pytest.mark.parametrize(
    "hysteresis, consecutive, window, min_scale",
    [(2, False, 3, 1.0), (1, False, 2, 4.0), (3, True, 4, 1.0), (2, True, 1, 0.25)],
)
def test_loss_scale_matches_dynamic_loss_scaler(deepspeed, hysteresis, consecutive, window,
                                                min_scale):
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler

    overflows = [True, False, True, True, False, False, False, False, True, False] + [False] * 9
    overflows += [True] * 12 + [False] * 6 + [True, False, True, False, True, True]
    scaler = DynamicLossScaler(init_scale=2.0**10, scale_window=window, min_scale=min_scale,
                               delayed_shift=hysteresis, consecutive_hysteresis=consecutive,
                               raise_error_at_min_scale=False)
    tx = ob.deepspeed_loss_scale(optax.sgd(0.1), 2.0**10, scale_window=window,
                                 min_scale=min_scale, hysteresis=hysteresis,
                                 consecutive_hysteresis=consecutive)
    state = tx.init({"w": jnp.zeros(2)})
    update = jax.jit(tx.update)
    ours, theirs = [], []
    for overflow in overflows:
        grads = {"w": jnp.array([jnp.inf if overflow else 1.0, 2.0])}
        updates, state = update(grads, state)
        scaler.update_scale(overflow)
        ours.append(float(ob.get_loss_scale(state)))
        theirs.append(scaler.cur_scale)
        assert bool(jnp.all(updates["w"] == 0)) == overflow
    assert ours == theirs
    assert len(set(theirs)) >= 3, theirs  # the sequence moves the scale both ways
    assert int(state.skip_count) == sum(overflows)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"optimizer": {"type": "OneBitAdam", "params": {}}}, "optimizer.type='OneBitAdam'"),
        ({"optimizer": {"type": "ZeroOneAdam", "params": {}}}, "optimizer.type='ZeroOneAdam'"),
        ({"scheduler": {"type": "WarmupLR", "params": {"total_num_steps": 10}}},
         r"scheduler.params.total_num_steps=10 .*WarmupDecayLR"),
        ({"scheduler": {"type": "CosineAnnealing", "params": {}}}, "scheduler.type='CosineAnnealing'"),
        ({"train_batch_size": 6}, "train_batch_size=6 is inconsistent"),
        ({"optimizer": {"type": "Adam", "params": {"max_grad_norm": 1.0}}},
         "optimizer.params.max_grad_norm=1.0"),
        ({"optimizer": {"type": "Adam", "params": {"amsgrad": True}}}, "optimizer.params.amsgrad"),
        ({"optimizer": {"type": "Adam", "params": {"momentum": 0.9}}}, "optimizer.params.momentum"),
        ({"compression_training": {"weight_quantization": {"enabled": True}}},
         "compression_training="),
        ({"amp": {"enabled": True}}, "amp="),
        ({"no_such_key": 1}, "no_such_key=1 is invalid: unknown DeepSpeed key"),
        ({"fp16": {"enabled": True, "min_loss_scale": 0.3}, "zero_optimization": {"stage": 1}},
         "fp16: min_scale=0.3"),
        ({"fp16": {"enabled": True}, "bf16": {"enabled": True}}, "fp16.enabled=True and bf16"),
    ],
)
def test_bad_configs_are_refused_naming_the_key(change, match):
    config = {**_config(*ADAMW, WARMUP, 1.0, 2, "fp32"), **change}
    with pytest.raises(ValueError, match=match):
        ob.from_deepspeed(config, params={"w": jnp.zeros(2)})


def test_keys_that_change_no_number_are_accepted(tmp_path):
    config = {**_config(*ADAMW, WARMUP, 1.0, 2, "fp32"), "wall_clock_breakdown": True,
              "zero_optimization": {"stage": 2}, "tensorboard": {"enabled": False}}
    path = tmp_path / "ds_config.json"
    path.write_text(__import__("json").dumps(config))
    params = {"w": jnp.ones(3)}
    for source in (config, str(path)):
        tx = ob.from_deepspeed(source, params=params)
        state = tx.init(params)
        assert [float(r) for r in ob.get_last_lr(state)] == [pytest.approx(0.001)]


def test_from_torch_reads_fused_lamb_through_its_twin(deepspeed):
    """``FusedLamb`` cannot be built on CPU: the torch_ref twin, under DeepSpeed's module and
    class name (which is what the catalogue recognises), is read by ``FusedLamb``'s record and
    stepped; its two groups differ from the defaults and from each other."""
    from deepspeed.runtime import lr_schedules  # noqa: F401  (deepspeed.runtime.lr_schedules)

    import torch_ref

    twin = type("FusedLamb", (torch_ref.FusedLamb,), {"__module__": "deepspeed.ops.lamb.fused_lamb"})
    model = _model()
    named = dict(model.named_parameters())
    weights = [named["0.weight"], named["2.weight"]]
    rest = [p for n, p in named.items() if n not in ("0.weight", "2.weight")]
    optimizer = twin([dict(params=weights, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05,
                           max_coeff=0.3, bias_correction=False),
                      dict(params=rest, lr=0.02, betas=(0.7, 0.9), eps=1e-5, weight_decay=0.0,
                           min_coeff=0.1)], eps_inside_sqrt=True)
    scheduler = deepspeed.runtime.lr_schedules.WarmupLR(
        optimizer, warmup_min_lr=0.001, warmup_max_lr=0.01, warmup_num_steps=3)
    worst_param, worst_rate = run_live_case(model, optimizer, scheduler, 12)
    harness.assert_within("param error", worst_param, harness.PARAM_TOL["float32"])
    harness.assert_within("lr error", worst_rate, harness.LR_TOL["float32"])


@pytest.mark.parametrize("scheduler", [ONE_CYCLE, COSINE], ids=lambda s: s[0])
def test_lamb_config_matches_the_engine_loop_over_the_fused_lamb_twin(deepspeed, scheduler):
    """``"type": "Lamb"`` builds ``FusedLamb``, which the CPU engine cannot build: the engine's
    fp32 step is replayed over ``torch_ref.FusedLamb`` (accumulate ``g / N``, DeepSpeed's
    ``clip_grad_norm_`` over every parameter, ``step()``, then the real DeepSpeed scheduler)."""
    from deepspeed.runtime import lr_schedules
    from deepspeed.runtime.utils import clip_grad_norm_

    import torch_ref

    lamb = {"weight_decay": 0.01, "bias_correction": False, "max_coeff": 0.3, "min_coeff": 0.01}
    config = _config("Lamb", lamb, scheduler, 1.0, 2, "fp32")
    model = _model()
    named = dict(model.named_parameters())
    decayed = [named["0.weight"], named["2.weight"]]
    rest = [p for n, p in named.items() if n not in ("0.weight", "2.weight")]
    optimizer = torch_ref.FusedLamb([{"params": decayed}, {"params": rest, "lr": 0.02,
                                                          "weight_decay": 0.0}],
                                    lr=0.01, **lamb)
    schedule = getattr(lr_schedules, scheduler[0])(optimizer, **scheduler[1])
    params = _nest({n: jnp.asarray(p.detach().numpy()) for n, p in named.items()})
    groups = [{"params": r"^(0|2)/weight$"}, {"params": r"bias$|^1/", "lr": 0.02,
                                              "weight_decay": 0.0}]
    tx = ob.from_deepspeed(config, params=params, groups=groups)
    state = tx.init(params)
    update = jax.jit(tx.update)
    grads = harness.gradient_stream(MICRO_STEPS, seed=5,
                                    shapes={n: tuple(p.shape) for n, p in named.items()})
    diffs: dict[str, float] = {}
    scales: dict[str, float] = {}
    worst_rate = 0.0
    for micro, grad in enumerate(grads):
        for name, p in named.items():
            g = torch.tensor(grad[name], dtype=torch.float32) / 2
            p.grad = g if p.grad is None else p.grad + g
        if micro % 2 == 1:
            clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
        jax_grads = _nest({n: jnp.asarray(g, jnp.float32) for n, g in grad.items()})
        updates, state = update(jax_grads, state, params)
        params = optax.apply_updates(params, updates)
        for name, p in named.items():
            layer, leaf = name.split(".")
            diff = np.max(np.abs(np.asarray(params[layer][leaf]) - p.detach().numpy()))
            diffs[name] = max(diffs.get(name, 0.0), float(diff))
            scales[name] = max(scales.get(name, 0.0), float(p.detach().abs().max()))
        ours = [float(r) for r in ob.get_last_lr(state)]
        theirs = [float(g["lr"]) for g in optimizer.param_groups]
        worst_rate = max(worst_rate, max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) / 0.02)
    worst_param = max(diffs[n] / scales[n] for n in diffs)
    harness.assert_within("param error", worst_param, harness.PARAM_TOL["float32"])
    harness.assert_within("lr error", worst_rate, harness.LR_TOL["float32"])
