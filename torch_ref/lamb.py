"""DeepSpeed's ``FusedLamb`` in pure PyTorch, written from its CUDA kernel.

``deepspeed.ops.lamb.FusedLamb`` builds a CUDA extension (``csrc/lamb/fused_lamb_cuda_kernel.cu``)
and cannot run on a CPU. This twin repeats ``fused_lamb.py``'s ``step`` (the per-group clip from
``grad_norms``, the loss ``scale``) and the kernel's three parts per tensor, in the parameters'
dtype: the kernel's C ``float`` scalars are the CUDA implementation, not the algorithm.
``benchmarks/gpu_fused_lamb_check.py`` compares the two on a CUDA machine.

Nothing here imports ``optax_bertadam``.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


class FusedLamb(Optimizer):
    """``deepspeed.ops.lamb.FusedLamb(params, lr, bias_correction, betas, eps, eps_inside_sqrt,
    weight_decay, max_grad_norm, max_coeff, min_coeff, amsgrad)``.

    Per tensor, at its step ``t``, with ``g`` the gradient divided by the combined scale::

        m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g * g
        u = m / (sqrt(v) + eps) + weight_decay * p        # eps_inside_sqrt: m / sqrt(v + eps)
        coeff = clamp(||p|| / ||u||, max then min) if both norms != 0 else 1
        step_size = lr * sqrt(1 - b2**t) / (1 - b1**t) if bias_correction else lr
        p -= step_size * coeff * u

    ``lamb_coeffs`` holds the last step's coefficients (``get_lamb_coeffs()``), as DeepSpeed's.
    """

    def __init__(self, params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-8,
                 eps_inside_sqrt=False, weight_decay=0.0, max_grad_norm=0.0, max_coeff=10.0,
                 min_coeff=0.01, amsgrad=False):
        if amsgrad:
            raise RuntimeError("FusedLamb does not support the AMSGrad variant.")
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps,
                        weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                        max_coeff=max_coeff, min_coeff=min_coeff)
        super().__init__(params, defaults)
        self.eps_mode = 0 if eps_inside_sqrt else 1
        self.lamb_coeffs = []

    @torch.no_grad()
    def step(self, closure=None, grads=None, output_params=None, scale=1.0, grad_norms=None):
        """One update. ``grads``: per group, a list of gradients to use instead of ``p.grad``;
        ``scale``: the loss scale the gradients carry; ``grad_norms``: per group, the norm of its
        (scaled) gradients, needed when ``max_grad_norm > 0``. ``output_params`` (a reduced
        precision copy) is not reproduced."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if output_params is not None:
            raise NotImplementedError("output_params (a reduced precision copy) is not reproduced")
        if grads is None:
            grads = [None] * len(self.param_groups)
        if grad_norms is None:
            grad_norms = [None] * len(self.param_groups)
        del self.lamb_coeffs[:]
        for group, group_grads, grad_norm in zip(self.param_groups, grads, grad_norms):
            if group_grads is None:
                group_grads = [None] * len(group["params"])
            combined_scale = scale
            if group["max_grad_norm"] > 0:
                if grad_norm is None:
                    # DeepSpeed fails here too (grad_norm / scale with grad_norm None).
                    raise TypeError(
                        "FusedLamb with max_grad_norm > 0 needs grad_norms: the norm of each "
                        "group's gradients, which DeepSpeed's fp16 optimizer passes"
                    )
                clip = ((float(grad_norm) / scale) + 1e-6) / group["max_grad_norm"]
                if clip > 1:
                    combined_scale = clip * scale
            beta1, beta2 = group["betas"]
            for p, grad in zip(group["params"], group_grads):
                if p.grad is None and grad is None:
                    continue
                if grad is None:
                    grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                self.lamb_coeffs.append(self._lamb(p, grad, state, group, beta1, beta2,
                                                   combined_scale))
        return loss

    def _lamb(self, p, grad, state, group, beta1, beta2, grad_scale):
        m, v, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
        if group["bias_correction"]:
            step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        else:
            step_size = group["lr"]
        # lamb_cuda_kernel_part1: the moments, the update and the two sums of squares.
        g = grad.to(p.dtype) / grad_scale
        m.mul_(beta1).add_((1 - beta1) * g)
        v.mul_(beta2).add_((1 - beta2) * g * g)
        if self.eps_mode == 0:
            denom = torch.sqrt(v + group["eps"])
        else:
            denom = torch.sqrt(v) + group["eps"]
        update = m / denom + group["weight_decay"] * p
        # part2 reduces the blocks' partial sums; part3 takes the coefficient and steps.
        w_norm = torch.sqrt(torch.sum(p * p))
        u_norm = torch.sqrt(torch.sum(update * update))
        coeff = torch.ones((), dtype=p.dtype)
        if w_norm != 0 and u_norm != 0:
            coeff = w_norm / u_norm
            if coeff > group["max_coeff"]:
                coeff = torch.full((), group["max_coeff"], dtype=p.dtype)
            if coeff < group["min_coeff"]:
                coeff = torch.full((), group["min_coeff"], dtype=p.dtype)
        p.sub_(step_size * coeff * update)
        return coeff

    def get_lamb_coeffs(self):
        """The last step's trust-ratio coefficients, one per tensor, as floats."""
        return [coeff.item() for coeff in self.lamb_coeffs]
