"""BertAdam in PyTorch, as DeepSpeedExamples ships it, with the two defects SPEC names fixed.

Source of the semantics: DeepSpeedExamples ``training/bing_bert/pytorch_pretrained_bert/
optimization.py``. Used only as the reference of the parity tests; it imports nothing from
``optax_bertadam``.

Fixed on purpose (both crash upstream):
* ``warmup_cosine`` uses ``math.cos`` (upstream calls ``torch.cos`` on a float after warmup).
* ``warmup_exp_decay_poly`` with a non-integer ``degree`` stays at 0 past ``total_steps``
  (upstream raises a negative number to a fractional power: a complex rate).
* The three global-step schedules are called as DeepSpeed's training script calls them,
  ``SCHEDULE(step, ..., total_steps=t_total, warmup)``, instead of ``SCHEDULE(step / t_total,
  warmup)`` (a ``TypeError`` upstream). Their extra arguments come from ``schedule_kwargs``.

Added: ``clip_mode='global'`` clips all gradients together with the real
``torch.nn.utils.clip_grad_norm_`` before the per-tensor loop.
"""

from __future__ import annotations

import math

import torch
from torch.nn.utils import clip_grad_norm_
from torch.optim import Optimizer


def warmup_cosine(x, warmup=0.002):
    if x < warmup:
        return x / warmup
    return 0.5 * (1.0 + math.cos(math.pi * x))


def warmup_constant(x, warmup=0.002):
    if x < warmup:
        return x / warmup
    return 1.0


def warmup_linear(x, warmup=0.002):
    if warmup == 0.0:
        return 1.0
    elif x < warmup:
        return x / warmup
    return 1.0 - x


def warmup_linear_decay_exp(global_step, decay_rate, decay_steps, total_steps, warmup=0.002):
    x = global_step / total_steps
    warmup_end = warmup * total_steps
    if warmup == 0.0:
        return 1.0
    elif x < warmup:
        return x / warmup
    return decay_rate ** ((global_step - warmup_end) / decay_steps)


def warmup_exp_decay_exp(global_step, decay_rate, decay_steps, total_steps, warmup=0.002,
                         degree=2.0):
    x = global_step / total_steps
    warmup_end = warmup * total_steps
    if warmup == 0.0:
        return 1.0
    elif x < warmup:
        return (x / warmup) ** degree
    return decay_rate ** ((global_step - warmup_end) / decay_steps)


def warmup_exp_decay_poly(global_step, total_steps, warmup=0.002, warm_degree=1.5, degree=2.0):
    x = global_step / total_steps
    if x < warmup:
        return (x / warmup) ** warm_degree
    if not float(degree).is_integer():
        return max(1.0 - x, 0.0) ** degree  # upstream: a complex number past total_steps
    return (1.0 - x) ** degree


SCHEDULES = {
    "warmup_cosine": warmup_cosine,
    "warmup_constant": warmup_constant,
    "warmup_linear": warmup_linear,
    "warmup_linear_decay_exp": warmup_linear_decay_exp,
    "warmup_exp_decay_poly": warmup_exp_decay_poly,
    "warmup_exp_decay_exp": warmup_exp_decay_exp,
}
GLOBAL_STEP_SCHEDULES = ("warmup_linear_decay_exp", "warmup_exp_decay_exp", "warmup_exp_decay_poly")


def schedule_multiplier(schedule, step, t_total, warmup, schedule_kwargs=None):
    """The multiplier of ``lr`` for the update applied at ``step`` (0-based)."""
    if t_total == -1:
        return 1.0
    fn = SCHEDULES[schedule]
    if schedule in GLOBAL_STEP_SCHEDULES:
        return fn(step, total_steps=t_total, warmup=warmup, **(schedule_kwargs or {}))
    return fn(step / t_total, warmup)


class BertAdam(Optimizer):
    """BERT's Adam: per-tensor clipping, no bias correction, decoupled weight decay, schedules.

    Params:
        lr: learning rate
        warmup: portion of t_total for the warmup, -1 means no warmup. Default: -1
        t_total: total number of training steps for the learning rate schedule, -1 means constant
            learning rate. Default: -1
        schedule: schedule to use for the warmup (see above). Default: 'warmup_linear'
        b1, b2, e: Adam's betas and epsilon. Defaults: 0.9, 0.999, 1e-6
        weight_decay: decoupled weight decay. Default: 0.01
        max_grad_norm: maximum norm for the gradients (-1 means no clipping). Default: 1.0
        schedule_kwargs: extra arguments of the global-step schedules (decay_rate, ...).
        clip_mode: 'per_tensor' (upstream) or 'global'.
        moment_dtype: dtype of next_m/next_v (upstream: the parameter's), e.g. torch.float32 for
            bfloat16 parameters; the gradient is upcast after clipping and the Adam direction cast
            back to the parameter's dtype.
    """

    def __init__(self, params, lr, warmup=-1, t_total=-1, schedule="warmup_linear", b1=0.9,
                 b2=0.999, e=1e-6, weight_decay=0.01, max_grad_norm=1.0, schedule_kwargs=None,
                 clip_mode="per_tensor", moment_dtype=None):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr} - should be >= 0.0")
        if schedule not in SCHEDULES:
            raise ValueError(f"Invalid schedule parameter: {schedule}")
        if not 0.0 <= warmup < 1.0 and not warmup == -1:
            raise ValueError(f"Invalid warmup: {warmup} - should be in [0.0, 1.0[ or -1")
        if not 0.0 <= b1 < 1.0:
            raise ValueError(f"Invalid b1 parameter: {b1} - should be in [0.0, 1.0[")
        if not 0.0 <= b2 < 1.0:
            raise ValueError(f"Invalid b2 parameter: {b2} - should be in [0.0, 1.0[")
        if not e >= 0.0:
            raise ValueError(f"Invalid epsilon value: {e} - should be >= 0.0")
        if clip_mode not in ("per_tensor", "global"):
            raise ValueError(f"Invalid clip_mode: {clip_mode}")
        defaults = dict(lr=lr, schedule=schedule, warmup=warmup, t_total=t_total, b1=b1, b2=b2,
                        e=e, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                        schedule_kwargs=schedule_kwargs or {}, clip_mode=clip_mode)
        self.moment_dtype = moment_dtype
        super().__init__(params, defaults)

    def _scheduled_lr(self, group, step):
        return group["lr"] * schedule_multiplier(group["schedule"], step, group["t_total"],
                                                 group["warmup"], group["schedule_kwargs"])

    def get_lr(self):
        lr = []
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if len(state) == 0:
                    return [0]
                lr.append(self._scheduled_lr(group, state["step"]))
        return lr

    @torch.no_grad()
    def step(self, closure=None):
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
                grad = p.grad.to(next_m.dtype)  # no copy unless moment_dtype differs

                next_m.mul_(beta1).add_(grad, alpha=1 - beta1)
                next_v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = (next_m / (next_v.sqrt() + group["e"])).to(p.dtype)

                if group["weight_decay"] > 0.0:
                    update += group["weight_decay"] * p

                lr_scheduled = self._scheduled_lr(group, state["step"])
                update_with_lr = lr_scheduled * update
                p.add_(-update_with_lr)

                state["step"] += 1

        return loss
