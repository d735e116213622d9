"""PyTorch twins of the transformers optimizers that no installed package ships any more.

Used only as references of the parity tests; nothing here imports ``optax_bertadam``.

* :class:`AdamW`: ``transformers.AdamW`` (removed in transformers 5) with ``correct_bias``, written
  with ``torch.optim.AdamW``'s single-tensor arithmetic, so that ``correct_bias=True`` is
  ``torch.optim.AdamW`` bit for bit (a test checks it) and ``correct_bias=False`` is the BERT
  TensorFlow flavour without bias correction.
* :class:`AdamWeightDecay`, :class:`WarmUp`, :class:`PolynomialDecay`, :func:`create_optimizer`,
  :class:`GradientAccumulator`: transformers' TensorFlow ``optimization_tf`` objects, written from
  the documented Keras formulas (no TensorFlow is installed): Keras ``Adam`` is TensorFlow's
  ``ApplyAdam`` kernel, a schedule is evaluated at ``optimizer.iterations`` (updates already
  applied), and the weight decay uses the scheduled, not bias-corrected, rate.

``transformers.Adafactor`` and ``AdafactorSchedule`` are still installed: tests use them directly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer


class AdamW(Optimizer):
    """transformers' ``AdamW(params, lr, betas, eps, weight_decay, correct_bias)``.

    Per parameter, at step ``t`` (1 for the first)::

        p *= 1 - lr * weight_decay
        m = lerp(m, g, 1 - b1);  v = b2 * v + (1 - b2) * g * g
        if correct_bias: p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)
        else:            p -= lr * m / (sqrt(v) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
                 correct_bias=True):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr} - should be >= 0.0")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter: {betas[0]} - should be in [0.0, 1.0)")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter: {betas[1]} - should be in [0.0, 1.0)")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps} - should be >= 0.0")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        correct_bias=correct_bias)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                step = state["step"]

                # Decoupled decay first, on the parameters before the Adam step.
                if group["weight_decay"] != 0:
                    p.mul_(1 - lr * group["weight_decay"])
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                if group["correct_bias"]:
                    bias_correction1 = 1 - beta1**step
                    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                    step_size = lr / bias_correction1
                    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
                else:
                    step_size = lr
                    denom = exp_avg_sq.sqrt().add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)
        return loss


class PolynomialDecay:
    """``tf.keras.optimizers.schedules.PolynomialDecay(initial_learning_rate, decay_steps,
    end_learning_rate=1e-4, power=1.0)`` with ``cycle=False``: ``step`` is clipped at
    ``decay_steps``."""

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0):
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.end_learning_rate = end_learning_rate
        self.power = power

    def __call__(self, step):
        step = min(float(step), float(self.decay_steps))
        p = step / self.decay_steps
        return ((self.initial_learning_rate - self.end_learning_rate) * (1 - p) ** self.power
                + self.end_learning_rate)


class WarmUp:
    """transformers' TF ``WarmUp(initial_learning_rate, decay_schedule_fn, warmup_steps, power)``."""

    def __init__(self, initial_learning_rate, decay_schedule_fn, warmup_steps, power=1.0):
        self.initial_learning_rate = initial_learning_rate
        self.decay_schedule_fn = decay_schedule_fn
        self.warmup_steps = warmup_steps
        self.power = power

    def __call__(self, step):
        if float(step) < float(self.warmup_steps):
            return self.initial_learning_rate * (float(step) / self.warmup_steps) ** self.power
        return self.decay_schedule_fn(step - self.warmup_steps)


class AdamWeightDecay(Optimizer):
    """transformers' TF ``AdamWeightDecay`` (Keras ``Adam`` + decoupled decay chosen by name).

    ``named_params`` is an iterable of ``(name, parameter)``, as ``model.named_parameters()``; the
    names are what the include/exclude regexes search (TensorFlow: the variable names). Keras keeps
    one ``iterations`` counter for the optimizer; ``learning_rate`` is a float or a callable of it.
    Per parameter, with ``lr_t = learning_rate(iterations)`` and ``t = iterations + 1``::

        if decayed(name): p -= lr_t * p * weight_decay_rate
        m += (g - m) * (1 - beta_1);  v += (g * g - v) * (1 - beta_2)
        vhat = max(vhat, v) if amsgrad else v
        p -= m * (lr_t * sqrt(1 - beta_2**t) / (1 - beta_1**t)) / (sqrt(vhat) + epsilon)
    """

    def __init__(self, named_params: Iterable[tuple[str, torch.Tensor]],
                 learning_rate: float | Callable[[int], float] = 0.001, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False, weight_decay_rate=0.0, include_in_weight_decay=None,
                 exclude_from_weight_decay=None):
        named = list(named_params)
        self.names = {id(p): name for name, p in named}
        self.learning_rate = learning_rate
        self.weight_decay_rate = weight_decay_rate
        self._include_in_weight_decay = include_in_weight_decay
        self._exclude_from_weight_decay = exclude_from_weight_decay
        self.iterations = 0
        defaults = dict(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=amsgrad)
        super().__init__([p for _, p in named], defaults)

    def decayed_lr(self) -> float:
        """``optimizer._decayed_lr``: the rate of the next update."""
        if callable(self.learning_rate):
            return float(self.learning_rate(self.iterations))
        return float(self.learning_rate)

    def _do_use_weight_decay(self, param_name):
        if self.weight_decay_rate == 0:
            return False
        if self._include_in_weight_decay:
            for r in self._include_in_weight_decay:
                if re.search(r, param_name) is not None:
                    return True
        if self._exclude_from_weight_decay:
            for r in self._exclude_from_weight_decay:
                if re.search(r, param_name) is not None:
                    return False
        return True

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        lr_t = self.decayed_lr()
        local_step = self.iterations + 1
        for group in self.param_groups:
            beta_1, beta_2 = group["beta_1"], group["beta_2"]
            alpha = lr_t * math.sqrt(1 - beta_2**local_step) / (1 - beta_1**local_step)
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                    if group["amsgrad"]:
                        state["vhat"] = torch.zeros_like(p)
                if self._do_use_weight_decay(self.names[id(p)]):
                    p.sub_(lr_t * p * self.weight_decay_rate)
                m, v = state["m"], state["v"]
                m.add_((grad - m) * (1 - beta_1))
                v.add_((grad * grad - v) * (1 - beta_2))
                if group["amsgrad"]:
                    torch.maximum(state["vhat"], v, out=state["vhat"])
                    v = state["vhat"]
                p.sub_(m * alpha / (v.sqrt() + group["epsilon"]))
        self.iterations += 1
        return loss


def create_optimizer(named_params, init_lr, num_train_steps, num_warmup_steps, min_lr_ratio=0.0,
                     adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay_rate=0.0,
                     power=1.0, include_in_weight_decay=None):
    """transformers' TF ``create_optimizer``; returns ``(optimizer, lr_schedule)``."""
    lr_schedule = PolynomialDecay(
        initial_learning_rate=init_lr,
        decay_steps=num_train_steps - num_warmup_steps,
        end_learning_rate=init_lr * min_lr_ratio,
        power=power,
    )
    if num_warmup_steps:
        lr_schedule = WarmUp(initial_learning_rate=init_lr, decay_schedule_fn=lr_schedule,
                             warmup_steps=num_warmup_steps)
    if weight_decay_rate > 0.0:
        optimizer = AdamWeightDecay(
            named_params, learning_rate=lr_schedule, weight_decay_rate=weight_decay_rate,
            beta_1=adam_beta1, beta_2=adam_beta2, epsilon=adam_epsilon,
            exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"],
            include_in_weight_decay=include_in_weight_decay,
        )
    else:
        # tf.keras.optimizers.Adam is AdamWeightDecay without the decay.
        optimizer = AdamWeightDecay(named_params, learning_rate=lr_schedule, beta_1=adam_beta1,
                                    beta_2=adam_beta2, epsilon=adam_epsilon)
    return optimizer, lr_schedule


class GradientAccumulator:
    """transformers' TF ``GradientAccumulator``: sums gradients until :meth:`reset`.

    ``accumulator(gradients)`` adds a list of tensors (``None`` entries are skipped);
    ``accumulator.gradients`` is the running sum, ``accumulator.step`` the number of calls.
    """

    def __init__(self):
        self._gradients: list[torch.Tensor | None] = []
        self._accum_steps = 0

    @property
    def step(self) -> int:
        return self._accum_steps

    @property
    def gradients(self) -> list[torch.Tensor | None]:
        return [g.clone() if g is not None else None for g in self._gradients]

    def __call__(self, gradients):
        if not self._gradients:
            self._gradients = [torch.zeros_like(g) if g is not None else None for g in gradients]
        if len(gradients) != len(self._gradients):
            raise ValueError(f"Expected {len(self._gradients)} gradients, but got {len(gradients)}")
        for accum, grad in zip(self._gradients, gradients, strict=True):
            if accum is not None and grad is not None:
                accum.add_(grad)
        self._accum_steps += 1

    def reset(self):
        if not self._gradients:
            return
        self._accum_steps = 0
        for g in self._gradients:
            if g is not None:
                g.zero_()
