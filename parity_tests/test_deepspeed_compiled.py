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
"""

from __future__ import annotations

import pytest
import torch

from parity_tests import harness
from parity_tests.test_deepspeed_engine import (
    COSINE,
    ONE_CYCLE,
    WARMUP,
    _config,
    _model,
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


def test_fused_adam(deepspeed):
    """Every FusedAdam case: the engine's ``"type": "Adam"`` (AdamW; L2 without bias correction,
    engine and config; L2 under bf16), and from_torch over a live FusedAdam."""
    for case, (*_, built) in ENGINE_CASES.items():
        if built == "FusedAdam":
            _engine_case(deepspeed, case)
    _live_case("FusedAdam")


def test_deepspeed_cpu_adam(deepspeed):
    """Every DeepSpeedCPUAdam case: ZeRO-2 offload on the engine, and from_torch over a live one."""
    for case, (*_, built) in ENGINE_CASES.items():
        if built == "DeepSpeedCPUAdam":
            _engine_case(deepspeed, case)
    _live_case("DeepSpeedCPUAdam")
