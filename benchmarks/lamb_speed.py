"""Time one LAMB update on BERT-shaped parameters: both LAMBs of optax_bertadam, optax.lamb, the twin.

Candidates (float32, the no-decay group of BERT masked out of the weight decay):

* ``optax.lamb``: the reference of the ratios;
* ``ob.deepspeed_lamb``: bing_bert's FusedLamb (``max_coeff=0.3``, no bias correction) and
  FusedLamb's defaults with ``max_grad_norm=1`` (the per-group norms);
* ``ob.nvidia_lamb``: apex/timm defaults (global pre-normalisation, trust ratio on the decay
  group);
* ``torch_ref.FusedLamb``: the PyTorch twin (what DeepSpeed's kernel computes, in eager PyTorch).

Each JAX candidate is one jitted, donated ``tx.update`` + ``optax.apply_updates``. Candidates
run in turn, round after round (the order rotates), and the table shows medians; the ratios
are of medians from this one run. Goals: each LAMB within 1.1x of ``optax.lamb``, and no
temporary buffer of its compiled update over 64 MiB (XLA's ``temp_size_in_bytes``: a LAMB that
materialised a whole-model intermediate would show it here).

Usage::

  python benchmarks/lamb_speed.py                 # BERT-base, 7 rounds
  python benchmarks/lamb_speed.py --size mini --rounds 5
  python benchmarks/lamb_speed.py --quick         # BERT-tiny, 3 rounds (smoke test)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("JAX_PLATFORMS", "cpu")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
from update_speed import SIZES, bert_shapes, nest  # noqa: E402

import optax_bertadam as ob  # noqa: E402
import torch_ref  # noqa: E402

REFERENCE = "optax.lamb"
GOAL = 1.1
TEMP_LIMIT_MIB = 64.0
NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias")


def jax_transformations(params) -> dict[str, optax.GradientTransformation]:
    mask = ob.decay_mask(params)
    return {
        REFERENCE: optax.lamb(1e-3, eps=1e-6, weight_decay=0.01, mask=mask),
        "ob.deepspeed_lamb bing_bert": ob.deepspeed_lamb(
            1e-3, weight_decay=0.01, max_coeff=0.3, bias_correction=False, mask=mask),
        "ob.deepspeed_lamb max_grad_norm=1": ob.deepspeed_lamb(
            1e-3, weight_decay=0.01, max_grad_norm=1.0, mask=mask),
        "ob.nvidia_lamb defaults": ob.nvidia_lamb(1e-3, weight_decay=0.01, mask=mask),
    }


def jax_candidate(tx, params, grads) -> Callable[[], None]:
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    box = {"params": jax.tree.map(lambda x: x.copy(), params)}
    box["state"] = tx.init(box["params"])
    compiled = step.lower(box["params"], box["state"], grads).compile()

    def run():
        box["params"], box["state"] = step(box["params"], box["state"], grads)
        jax.block_until_ready(box["params"])

    run.temp_mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
    return run


def torch_candidate(shapes, init, grads) -> Callable[[], None]:
    named = {n: torch.nn.Parameter(torch.from_numpy(init[n].copy())) for n in shapes}
    for n, p in named.items():
        p.grad = torch.from_numpy(grads[n].copy())
    groups = [{"params": [p for n, p in named.items() if not any(k in n for k in NO_DECAY)]},
              {"params": [p for n, p in named.items() if any(k in n for k in NO_DECAY)],
               "weight_decay": 0.0}]
    optimizer = torch_ref.FusedLamb(groups, lr=1e-3, weight_decay=0.01, max_coeff=0.3,
                                    bias_correction=False)
    return optimizer.step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="BERT-tiny, 3 rounds")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch twin")
    args = parser.parse_args(argv)
    size, rounds = ("tiny", 3) if args.quick else (args.size, args.rounds)
    shapes = bert_shapes(**SIZES[size])
    rng = np.random.default_rng(0)
    init = {n: rng.normal(0.0, 0.05, s).astype(np.float32) for n, s in shapes.items()}
    grads = {n: rng.normal(0.0, 1e-3, s).astype(np.float32) for n, s in shapes.items()}
    params = nest({n: jax.numpy.asarray(v) for n, v in init.items()})
    jax_grads = nest({n: jax.numpy.asarray(v) for n, v in grads.items()})
    candidates = {name: jax_candidate(tx, params, jax_grads)
                  for name, tx in jax_transformations(params).items()}
    if not args.no_torch:
        candidates["torch_ref.FusedLamb (eager)"] = torch_candidate(shapes, init, grads)
    for run in candidates.values():  # compile and warm up
        run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - start)
    n_params = sum(int(np.prod(s)) for s in shapes.values())
    print(f"BERT-{size} ({n_params / 1e6:.1f}M params, {len(shapes)} tensors), float32, "
          f"{rounds} rounds, torch threads {torch.get_num_threads()}")
    medians = {name: statistics.median(t) for name, t in times.items()}
    temps = {name: getattr(run, "temp_mib", None) for name, run in candidates.items()}
    print(f"{'candidate':38s} {'median':>10s}      {'ratio':>5s}  {'temp MiB':>8s}")
    for name, median in medians.items():
        temp = f"{temps[name]:8.2f}" if temps[name] is not None else f"{'-':>8s}"
        print(f"{name:38s} {median * 1e3:10.2f} ms   x{median / medians[REFERENCE]:.2f}  {temp}")
    print(f"targets (this run): each LAMB / {REFERENCE} <= {GOAL} (ratio of medians); "
          f"temporaries <= {TEMP_LIMIT_MIB:g} MiB")
    for name, median in medians.items():
        if name.startswith("ob."):
            ratio = median / medians[REFERENCE]
            met = ratio <= GOAL and temps[name] <= TEMP_LIMIT_MIB
            print(f"  {name}: x{ratio:.2f}, temp {temps[name]:.2f} MiB  {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
