"""Both LAMBs: deepspeed_lamb against torch_ref.FusedLamb, nvidia_lamb against timm's Lamb.

Parameters after every update within 2e-5 of each tensor's largest magnitude in float32 and
1e-12 in float64; the rate of the next update (``get_lr`` vs the group's ``lr`` under a
``LambdaLR``) within 1e-6 / 1e-12 of the peak rate. Every option is varied, and each case checks
that what it claims to exercise happens: the trust ratio clamped at ``max_coeff`` and at
``min_coeff``, the gradient clip binding (or not) on the torch side.

``from_torch`` reads a live timm Lamb over two groups whose lr, weight_decay and betas differ,
with its global pre-normalisation spanning the groups.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers

import optax_bertadam as ob
import torch_ref
from parity_tests import harness
from parity_tests.group_harness import run_group_parity
from parity_tests.timm_lamb import Lamb

STEPS = 20
DTYPES = ["float32", "float64"]
LR, WARMUP, TOTAL = 0.02, 5, 16  # a warmup, a decay to 0 at update 16, then 0
jax_schedule, torch_lambda = harness.linear_warmup_then_decay(LR, WARMUP, TOTAL)


def group_norms(optimizer):
    """Each group's gradient norm (what DeepSpeed's fp16 optimizer passes as grad_norms)."""
    return [float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in g["params"]])))
            for g in optimizer.param_groups]


class Recorder(harness.TorchSide):
    """A TorchSide that passes FusedLamb its grad_norms and records what each step did."""

    def __init__(self, optimizer, scheduler=None, next_lr=None, *, max_grad_norm=0.0,
                 global_norm=False):
        super().__init__(optimizer, scheduler, next_lr)
        self.max_grad_norm = max_grad_norm
        self.global_norm = global_norm
        self.coeffs: list[float] = []
        self.norms: list[float] = []

    def step(self, value=None):
        norms = group_norms(self.optimizer)
        if self.global_norm:  # timm: one norm over every group
            norms = [float(np.sqrt(np.sum(np.square(norms))))]
        self.norms.extend(norms)
        if isinstance(self.optimizer, torch_ref.FusedLamb) and self.max_grad_norm > 0:
            self.optimizer.step(grad_norms=norms)
        else:
            self.optimizer.step()
        if isinstance(self.optimizer, torch_ref.FusedLamb):
            self.coeffs.extend(self.optimizer.get_lamb_coeffs())
        if self.scheduler is not None:
            self.scheduler.step()


def run(dtype, torch_class, jax_factory, *, masked, scheduled, weight_decay, jax_kwargs,
        torch_kwargs, max_grad_norm=0.0, global_norm=False):
    sides = []

    def make_torch(named):
        groups = harness.torch_param_groups(named, weight_decay if masked else None)
        kwargs = dict(torch_kwargs) if masked else dict(torch_kwargs, weight_decay=weight_decay)
        optimizer = torch_class(groups, lr=LR, **kwargs)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, torch_lambda) if scheduled else None
        side = Recorder(optimizer, scheduler, lambda: optimizer.param_groups[0]["lr"],
                        max_grad_norm=max_grad_norm, global_norm=global_norm)
        sides.append(side)
        return side

    def make_optax(params):
        mask = ob.decay_mask(params) if masked else None
        return jax_factory(jax_schedule if scheduled else LR, weight_decay=weight_decay, mask=mask,
                           **jax_kwargs)

    result = harness.run_parity(make_optax, make_torch, dtype=dtype, steps=STEPS)
    harness.check_result(result, dtype)
    return sides[0]


# ------------------------------------------------------------------------------------ DeepSpeed

DEEPSPEED_CASES = {
    # bing_bert's recipe: both clamps bind (the trust ratio of the tiny tensors spans 0.01..100).
    "bing_bert-clamps-bind": dict(
        masked=True, scheduled=True, weight_decay=0.01,
        options=dict(bias_correction=True, max_coeff=0.3, min_coeff=0.1), max_grad_norm=0.0),
    "no-bias-correction-eps-inside-sqrt-clip-binds": dict(
        masked=False, scheduled=False, weight_decay=0.05,
        options=dict(bias_correction=False, eps_inside_sqrt=True, eps=1e-6), max_grad_norm=1.0),
    "two-groups-clip-never-binds": dict(
        masked=True, scheduled=True, weight_decay=0.1,
        options=dict(b1=0.8, b2=0.95, max_coeff=2.0, min_coeff=0.5), max_grad_norm=1e4),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DEEPSPEED_CASES)
def test_deepspeed_lamb_against_the_fused_lamb_twin(case, dtype):
    spec = DEEPSPEED_CASES[case]
    options = dict(spec["options"])
    jax_kwargs = {**options, "max_grad_norm": spec["max_grad_norm"]}
    torch_kwargs = {k: v for k, v in options.items() if k not in ("b1", "b2")}
    if "b1" in options:
        torch_kwargs["betas"] = (options["b1"], options["b2"])
    torch_kwargs["max_grad_norm"] = spec["max_grad_norm"]
    side = run(dtype, torch_ref.FusedLamb, ob.deepspeed_lamb, masked=spec["masked"],
               scheduled=spec["scheduled"], weight_decay=spec["weight_decay"],
               jax_kwargs=jax_kwargs, torch_kwargs=torch_kwargs,
               max_grad_norm=spec["max_grad_norm"])
    coeffs = np.asarray(side.coeffs)
    max_coeff, min_coeff = options.get("max_coeff", 10.0), options.get("min_coeff", 0.01)
    if case == "bing_bert-clamps-bind":
        assert np.any(np.isclose(coeffs, max_coeff)) and np.any(np.isclose(coeffs, min_coeff))
    if spec["max_grad_norm"] > 0:
        binds = np.asarray(side.norms) + 1e-6 > spec["max_grad_norm"]
        assert binds.any() == (case.endswith("clip-binds")), side.norms


def test_the_twin_is_deepspeeds_step_contract():
    """max_grad_norm > 0 needs grad_norms (DeepSpeed fails on a plain step() too); amsgrad is
    refused; get_lamb_coeffs lists one coefficient per tensor."""
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    with pytest.raises(TypeError, match="needs grad_norms"):
        torch_ref.FusedLamb([p], max_grad_norm=1.0).step()
    with pytest.raises(RuntimeError, match="AMSGrad"):
        torch_ref.FusedLamb([p], amsgrad=True)
    opt = torch_ref.FusedLamb([p], max_coeff=0.2)  # ||p|| / ||u|| = sqrt(3) / sqrt(30) > 0.2
    opt.step()
    assert opt.get_lamb_coeffs() == [pytest.approx(0.2)]


# ---------------------------------------------------------------------------------- apex / timm

NVIDIA_CASES = {
    "defaults-clip-binds-single-tensor": dict(
        masked=True, scheduled=True, weight_decay=0.01, options=dict(), foreach=False,
        max_grad_norm=1.0),
    "no-averaging-no-correction-always-adapt-trust-clip-foreach": dict(
        masked=True, scheduled=False, weight_decay=0.05,
        options=dict(grad_averaging=False, bias_correction=False, always_adapt=True,
                     trust_clip=True, b1=0.8, b2=0.95), foreach=True, max_grad_norm=None),
    "caution-clip-never-binds": dict(
        masked=True, scheduled=True, weight_decay=0.1, options=dict(caution=True, eps=1e-8),
        foreach=False, max_grad_norm=1e4),
    "one-group-zero-decay-no-trust-ratio": dict(
        masked=False, scheduled=False, weight_decay=0.0, options=dict(), foreach=True,
        max_grad_norm=5.0),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NVIDIA_CASES)
def test_nvidia_lamb_against_timm(case, dtype):
    spec = NVIDIA_CASES[case]
    options = dict(spec["options"])
    torch_kwargs = {k: v for k, v in options.items() if k not in ("b1", "b2")}
    if "b1" in options:
        torch_kwargs["betas"] = (options["b1"], options["b2"])
    torch_kwargs.update(max_grad_norm=spec["max_grad_norm"], foreach=spec["foreach"])
    side = run(dtype, Lamb, ob.nvidia_lamb, masked=spec["masked"], scheduled=spec["scheduled"],
               weight_decay=spec["weight_decay"],
               jax_kwargs={**options, "max_grad_norm": spec["max_grad_norm"]},
               torch_kwargs=torch_kwargs, global_norm=True)
    if spec["max_grad_norm"] is not None:
        binds = np.asarray(side.norms) > spec["max_grad_norm"]
        assert binds.any() == ("clip-binds" in case) or case.startswith("one-group"), side.norms


def test_refused_options():
    with pytest.raises(ValueError, match=r"decoupled_decay=True is invalid"):
        ob.nvidia_lamb(0.01, decoupled_decay=True)
    with pytest.raises(ValueError, match=r"max_grad_norm=0\.0 is invalid"):
        ob.nvidia_lamb(0.01, max_grad_norm=0.0)
    with pytest.raises(ValueError, match=r"max_coeff=-1\.0 is invalid"):
        ob.deepspeed_lamb(0.01, max_coeff=-1.0)
    with pytest.raises(TypeError, match=r"eps_inside_sqrt=1 is invalid"):
        ob.deepspeed_lamb(0.01, eps_inside_sqrt=1)
    with pytest.raises(ValueError, match="weight_decay_mask does not match"):
        ob.deepspeed_lamb(0.01, weight_decay=0.1, mask={"a": True}).init({"b": jnp.ones(2)})
    with pytest.raises(ValueError, match="groups does not match"):
        ob.deepspeed_lamb(0.01, max_grad_norm=1.0, mask={"a": True}).init({"b": jnp.ones(2)})


# ---------------------------------------------------------------------------------- optax.lamb


def _one_update(tx, params, grads):
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


def test_how_each_differs_from_optax_lamb():
    """nvidia_lamb without pre-normalisation and with the trust ratio everywhere is optax.lamb;
    its defaults (pre-normalisation, no trust ratio on the no-decay group) and deepspeed_lamb
    (clamped ratio on the uncorrected update, bias correction on the step) are not."""
    params = {"w": jnp.array([[0.3, -0.2], [0.1, 0.4]]), "bias": jnp.array([0.05, -0.01])}
    grads = {"w": jnp.array([[3.0, -1.0], [0.5, 2.0]]), "bias": jnp.array([0.2, -4.0])}
    mask = {"w": True, "bias": False}
    reference = _one_update(optax.lamb(0.01, eps=1e-6, weight_decay=0.01, mask=mask), params, grads)

    def gap(tx):
        return max(float(jnp.max(jnp.abs(a - b))) for a, b in
                   zip(jax.tree.leaves(_one_update(tx, params, grads)), jax.tree.leaves(reference),
                       strict=True))

    same = gap(ob.nvidia_lamb(0.01, max_grad_norm=None, always_adapt=True, mask=mask))
    defaults = gap(ob.nvidia_lamb(0.01, mask=mask))
    deepspeed = gap(ob.deepspeed_lamb(0.01, eps=1e-6, weight_decay=0.01, max_coeff=0.3, mask=mask))
    print(f"max |update - optax.lamb's|: nvidia_lamb as optax {same:.1e}, nvidia_lamb defaults "
          f"{defaults:.1e}, deepspeed_lamb {deepspeed:.1e} (updates ~1e-2)")
    assert same <= 1e-9
    assert defaults > 1e-3 and deepspeed > 1e-3


# ---------------------------------------------------------------------------------- from_torch


@pytest.mark.parametrize("dtype", DTYPES)
def test_from_torch_reads_a_live_timm_lamb_per_group(dtype):
    """Two groups with their own lr, weight_decay and betas under get_scheduler("linear"); the global
    pre-normalisation (binding) spans both groups."""

    def make_torch(named):
        decay = [p for n, p in named.items() if not any(k in n for k in harness.TORCH_NO_DECAY)]
        no_decay = [p for n, p in named.items() if any(k in n for k in harness.TORCH_NO_DECAY)]
        optimizer = Lamb([{"params": decay},
                          {"params": no_decay, "lr": 0.05, "weight_decay": 0.02,
                           "betas": (0.8, 0.99)}],
                         lr=LR, weight_decay=0.1, max_grad_norm=2.0, trust_clip=True)
        scheduler = transformers.get_scheduler("linear", optimizer, num_warmup_steps=WARMUP,
                                               num_training_steps=TOTAL)
        side = harness.TorchSide(optimizer, scheduler, scheduler.get_last_lr)
        side.named = list(named.items())
        return side

    def make_optax(params, side):
        return ob.from_torch(side.optimizer, side.scheduler, named_parameters=side.named,
                             params=params)

    param_error, lr_error = run_group_parity(make_torch, make_optax, dtype=dtype, steps=STEPS,
                                             shapes=harness.SMALL_SHAPES)
    harness.assert_within("from_torch timm Lamb param error", param_error, harness.PARAM_TOL[dtype])
    harness.assert_within("from_torch timm Lamb lr error", lr_error, harness.LR_TOL[dtype])


def test_from_torch_refuses_decoupled_decay():
    p = torch.nn.Parameter(torch.ones(2))
    optimizer = Lamb([p], decoupled_decay=True)
    with pytest.raises(ValueError, match="decoupled_decay"):
        ob.from_torch(optimizer, named_parameters=[("w", p)], params={"w": jnp.ones(2)})
