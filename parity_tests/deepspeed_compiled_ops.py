"""``ob.from_deepspeed`` against the engine's compiled optimizers: ``FusedAdam`` and ``DeepSpeedCPUAdam``.

Run by hand (not collected by pytest: DeepSpeed compiles both kernels with g++ on first use,
7-10 minutes each on a 2-core machine, cached under ``TORCH_EXTENSIONS_DIR`` afterwards)::

  PYTHONPATH=. python -m parity_tests.deepspeed_compiled_ops

``"type": "Adam"`` without ``torch_adam`` builds ``FusedAdam`` on the CPU accelerator; with ZeRO
stage 1-2 and ``offload_optimizer.device = "cpu"`` it builds ``DeepSpeedCPUAdam``. Each case is
compared micro-step by micro-step exactly as ``test_deepspeed_engine.py`` does, against the
harness's float32 bounds.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from parity_tests import harness
from parity_tests.test_deepspeed_engine import ONE_CYCLE, WARMUP, _config, run_engine_case

CASES = {
    "FusedAdam AdamW": (("Adam", {"weight_decay": 0.1}), WARMUP, 1.0, 4, {}),
    "FusedAdam L2, no bias correction": (
        ("Adam", {"adam_w_mode": False, "weight_decay": 0.05, "bias_correction": False}),
        ONE_CYCLE, 0.5, 1, {}),
    "DeepSpeedCPUAdam (ZeRO-2 offload)": (
        ("Adam", {"weight_decay": 0.1}), WARMUP, 1.0, 2,
        {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}),
}


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0")
    import deepspeed
    import deepspeed.comm.torch  # noqa: F401

    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    for name, (optimizer, scheduler, clipping, accumulation, extra) in CASES.items():
        config = {**_config(*optimizer, scheduler, clipping, accumulation, "fp32"), **extra}
        start = time.perf_counter()
        param, rate = run_engine_case(deepspeed, config, front_door="engine")
        print(f"{name}: param error {param:.3e}, lr error {rate:.3e} "
              f"({time.perf_counter() - start:.1f} s, compilation included)")
        assert param <= harness.PARAM_TOL["float32"] and rate <= harness.LR_TOL["float32"], name


if __name__ == "__main__":
    main()
