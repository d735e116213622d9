"""DeepSpeed's ``FusedAdam`` in pure PyTorch, written from its source.

``deepspeed.ops.adam.FusedAdam`` runs a compiled kernel (``csrc/adam/multi_tensor_adam.cu`` on
CUDA, ``csrc/cpu/adam/fused_adam.cpp`` over ``csrc/includes/cpu_adam.h`` on a CPU) that takes
float16, bfloat16 and float32 parameters only, and computes in C ``float``. This twin repeats
``fused_adam.py``'s ``step`` (its state layout and its one step count per group) and the
kernel's arithmetic per tensor, in the parameters' dtype, so that float64 parity is possible:
the C ``float`` scalars are the implementation, not the algorithm.
``parity_tests/test_deepspeed_compiled.py`` anchors it to the real class in float32.

Nothing here imports ``optax_bertadam``.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class FusedAdam(Optimizer):
    """``deepspeed.ops.adam.FusedAdam(params, lr, bias_correction, betas, eps, adam_w_mode,
    weight_decay, amsgrad, set_grad_none)``.

    Per tensor, at the group's step ``t``, ``c1 = 1 - b1**t`` and ``c2 = 1 - b2**t`` (1 without
    ``bias_correction``), as the CPU kernel's ``Step_1`` writes it::

        g = g + weight_decay * p                        # L2 (adam_w_mode False), if weight_decay > 0
        m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g * g
        u = m / (sqrt(v) / sqrt(c2) + eps)
        p = p - lr * weight_decay * p                   # AdamW (adam_w_mode True), if weight_decay > 0
        p = p - lr / c1 * u

    The step count, as ``FusedAdam.step`` keeps it: ``group['step']`` is set to 0 (and never
    advanced); a parameter's new state starts at ``step = group.get('step', 0)``; per group and
    per dtype bucket, the state of the group's *last* parameter with a gradient is advanced once
    and its step drives the whole bucket's bias correction. The other parameters' steps stay
    where they started.
    """

    def __init__(self, params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-8,
                 adam_w_mode=True, weight_decay=0.0, amsgrad=False, set_grad_none=True):
        if amsgrad:
            raise RuntimeError("FusedAdam does not support the AMSGrad variant.")
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.adam_w_mode = 1 if adam_w_mode else 0
        self.set_grad_none = set_grad_none

    def zero_grad(self, set_to_none=True):
        if self.set_grad_none:
            for group in self.param_groups:
                for p in group["params"]:
                    p.grad = None
        else:
            super().zero_grad(set_to_none=False)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if len(group["params"]) == 0:
                continue
            beta1, beta2 = group["betas"]
            if "step" not in group:
                group["step"] = 0
            # The buckets of the multi-tensor launches, in FusedAdam's order (float64 is refused
            # by the real class; here it is one more bucket).
            buckets = {torch.float16: [], torch.bfloat16: [], torch.float32: [], torch.float64: []}
            state = None
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("FusedAdam does not support sparse gradients, please consider "
                                       "SparseAdam instead")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = group.get("step", 0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                if p.dtype not in buckets:
                    raise RuntimeError("FusedAdam only support fp16, bf16 and fp32.")
                buckets[p.dtype].append((p, state["exp_avg"], state["exp_avg_sq"]))
            for bucket in buckets.values():
                if not bucket:
                    continue
                # `state` is the loop's last one: the group's last parameter with a gradient.
                state["step"] += 1
                for p, m, v in bucket:
                    self._adam(p, m, v, group, beta1, beta2, state["step"])
        return loss

    def _adam(self, p, m, v, group, beta1, beta2, step):
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        if group["bias_correction"]:
            c1, c2 = 1 - beta1**step, 1 - beta2**step
        else:
            c1, c2 = 1.0, 1.0
        g = p.grad.to(p.dtype)
        if weight_decay > 0 and not self.adam_w_mode:
            g = g + weight_decay * p
        m.mul_(beta1).add_((1 - beta1) * g)
        v.mul_(beta2).add_((1 - beta2) * g * g)
        update = m / (torch.sqrt(v) * (1 / c2**0.5) + eps)
        if weight_decay > 0 and self.adam_w_mode:
            p.add_(-lr * weight_decay * p)
        p.add_((-lr / c1) * update)
