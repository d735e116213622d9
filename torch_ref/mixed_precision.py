"""BertAdam with moments in another dtype than the parameters (e.g. bfloat16 params, float32 moments).

``torch_ref.BertAdam`` (like upstream) keeps ``next_m``/``next_v`` in the parameter's dtype. This
twin keeps them in ``moment_dtype`` and is otherwise the same update, written the way a PyTorch user
would write it: the gradient is upcast to ``moment_dtype`` after clipping, the Adam direction is
computed there and cast back to the parameter's dtype, and weight decay, the learning rate and
the parameter update are in the parameter's dtype. Imports nothing from ``optax_bertadam``.
"""

from __future__ import annotations

import torch
from torch.nn.utils import clip_grad_norm_

from torch_ref.bertadam import BertAdam


class MixedPrecisionBertAdam(BertAdam):
    """``BertAdam(params, ..., moment_dtype=torch.float32)``; ``moment_dtype=None``: BertAdam."""

    def __init__(self, params, lr, *args, moment_dtype=None, **kwargs):
        self.moment_dtype = moment_dtype
        super().__init__(params, lr, *args, **kwargs)

    @torch.no_grad()
    def step(self, closure=None):
        if self.moment_dtype is None:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        global_groups = [g for g in self.param_groups
                         if g["clip_mode"] == "global" and g["max_grad_norm"] > 0]
        if global_groups:
            grads_params = [p for g in global_groups for p in g["params"] if p.grad is not None]
            clip_grad_norm_(grads_params, global_groups[0]["max_grad_norm"])

        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["next_m"] = torch.zeros_like(p, dtype=self.moment_dtype)
                    state["next_v"] = torch.zeros_like(p, dtype=self.moment_dtype)
                next_m, next_v = state["next_m"], state["next_v"]
                beta1, beta2 = group["b1"], group["b2"]

                if group["clip_mode"] == "per_tensor" and group["max_grad_norm"] > 0:
                    clip_grad_norm_(p, group["max_grad_norm"])
                grad = p.grad.to(self.moment_dtype)

                next_m.mul_(beta1).add_(grad, alpha=1 - beta1)
                next_v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = (next_m / (next_v.sqrt() + group["e"])).to(p.dtype)

                if group["weight_decay"] > 0.0:
                    update += group["weight_decay"] * p

                lr_scheduled = self._scheduled_lr(group, state["step"])
                p.add_(-(lr_scheduled * update))
                state["step"] += 1

        return loss
