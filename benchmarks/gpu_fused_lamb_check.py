"""On a CUDA machine: ``torch_ref.FusedLamb`` (the twin) against DeepSpeed's real ``FusedLamb``.

The twin is written from ``fused_lamb_cuda_kernel.cu`` and is what ``deepspeed_lamb``'s parity
tests run against on CPU; this script checks the twin itself against the CUDA kernel: both
optimizers, built with the same arguments, step identical float32 gradients over BERT-like
tensors (two groups: decayed and not), with and without bias correction, ``eps_inside_sqrt``,
binding ``max_coeff``/``min_coeff`` and a binding ``max_grad_norm`` (passed as DeepSpeed's fp16
optimizer passes it: ``grad_norms``, one per group). It prints, per configuration, the worst
parameter difference relative to each tensor's largest magnitude and the worst trust-ratio
coefficient difference, and exits 1 when a parameter difference exceeds 2e-5 (the project's
float32 bound; the kernel computes its scalars and its square roots in C ``float``, reduces in
a different order, and so differs by float32 rounding).

Usage (needs CUDA, deepspeed with a working nvcc to build its ``fused_lamb`` extension)::

  python benchmarks/gpu_fused_lamb_check.py [--steps 20]

Without CUDA it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SHAPES = {
    "embeddings.word_embeddings.weight": (1000, 64),
    "embeddings.LayerNorm.weight": (64,),
    "embeddings.LayerNorm.bias": (64,),
    "encoder.layer.0.attention.self.query.weight": (64, 64),
    "encoder.layer.0.attention.self.query.bias": (64,),
    "encoder.layer.0.intermediate.dense.weight": (256, 64),
    "encoder.layer.0.intermediate.dense.bias": (256,),
}
NO_DECAY = ("bias", "LayerNorm.weight")
CONFIGS = {
    "bing_bert (no bias correction, clamps 0.01..0.3)": dict(
        lr=11e-3, bias_correction=False, weight_decay=0.01, max_coeff=0.3, min_coeff=0.01),
    "defaults + weight decay": dict(lr=1e-3, weight_decay=0.01),
    "eps_inside_sqrt, clamps 0.5..2": dict(
        lr=2e-3, eps_inside_sqrt=True, eps=1e-6, weight_decay=0.1, max_coeff=2.0, min_coeff=0.5),
    "max_grad_norm=1 (binding)": dict(lr=1e-3, weight_decay=0.01, max_grad_norm=1.0),
}
TOL = 2e-5


def run(torch, cls, config, init, grads):
    params = {n: torch.nn.Parameter(v.clone()) for n, v in init.items()}
    groups = [
        {"params": [p for n, p in params.items() if not any(k in n for k in NO_DECAY)]},
        {"params": [p for n, p in params.items() if any(k in n for k in NO_DECAY)],
         "weight_decay": 0.0},
    ]
    optimizer = cls(groups, **config)
    trajectory, coeffs = [], []
    for step_grads in grads:
        for n, p in params.items():
            p.grad = step_grads[n].clone()
        kwargs = {}
        if config.get("max_grad_norm", 0.0) > 0:
            kwargs["grad_norms"] = [
                float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in g["params"]])))
                for g in optimizer.param_groups
            ]
        optimizer.step(**kwargs)
        torch.cuda.synchronize()
        trajectory.append({n: p.detach().double().cpu() for n, p in params.items()})
        coeffs.append(optimizer.get_lamb_coeffs())
    return trajectory, coeffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_fused_lamb_check: CUDA is not available here; DeepSpeed's FusedLamb is a CUDA "
              "kernel. Run this on a machine with a GPU (and nvcc for DeepSpeed's extension).")
        return 2
    from deepspeed.ops.lamb import FusedLamb as DeepSpeedFusedLamb

    from torch_ref import FusedLamb as Twin

    generator = torch.Generator().manual_seed(0)
    init = {n: (0.5 * torch.randn(s, generator=generator, dtype=torch.float64)).float().cuda()
            for n, s in SHAPES.items()}
    grads = [{n: (10.0 ** (3 * torch.rand((), generator=generator).item() - 2)
                  * torch.randn(s, generator=generator, dtype=torch.float64)).float().cuda()
              for n, s in SHAPES.items()} for _ in range(args.steps)]
    worst_overall = 0.0
    for name, config in CONFIGS.items():
        real, real_coeffs = run(torch, DeepSpeedFusedLamb, config, init, grads)
        twin, twin_coeffs = run(torch, Twin, config, init, grads)
        worst = 0.0
        for n in SHAPES:
            reference = torch.stack([step[n] for step in real])
            scale = max(float(reference.abs().max()), 1e-30)
            diff = max(float((a[n] - b[n]).abs().max()) for a, b in zip(real, twin, strict=True))
            worst = max(worst, diff / scale)
        coeff_diff = max(abs(a - b) for x, y in zip(real_coeffs, twin_coeffs, strict=True)
                         for a, b in zip(x, y, strict=True))
        worst_overall = max(worst_overall, worst)
        print(f"{name:55s} param error {worst:.3e}   coefficient error {coeff_diff:.3e}")
    print(f"worst parameter error {worst_overall:.3e} (bound {TOL:.0e})")
    return 0 if worst_overall <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
