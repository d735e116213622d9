"""Find the bugs of a PyTorch -> JAX port with ``compare_training``.

A user has a PyTorch classifier (mean-pooled token embeddings, a dense layer with GELU and
LayerNorm, as in BERT's prediction head) trained with ``torch.optim.AdamW``, BERT's ``no_decay``
parameter groups and transformers' linear warmup schedule, and has ported it to Flax NNX and
optax. The port has two bugs that a user makes easily:

1. ``jax.nn.gelu`` defaults to the tanh approximation; ``torch.nn.GELU`` computes the exact erf.
2. ``optimizer = ob.adamw(..., weight_decay=0.01)`` without a mask decays LayerNorm and biases,
   which the PyTorch run keeps in a ``weight_decay=0.0`` group.

Both runs "train" and the losses look alike; compare_training says where they part and why:

  run 1 (end to end): forward at step 0 -> the model ports differ: the GELU.
  run 2 (mode="torch_gradients", the model bug still in): update at the first step with a nonzero
        rate, naming the LayerNorm and bias tensors -> the optimizer ports differ: the mask.
  run 3 (both fixed): no divergence.

The comparison runs in float64 (``jax.enable_x64`` and a double torch model): bugs stand out by
ten orders of magnitude above round-off. float32 works too, with looser bounds.

Run: python examples/find_porting_bug.py [--out DIR]   (writes DIR/compare.png and .json)
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import transformers
from flax import nnx

import optax_bertadam as ob
from optax_bertadam.compare import compare_training

VOCAB, D, CLASSES, STEPS, LR, WARMUP = 50, 16, 3, 8, 1e-2, 2
NO_DECAY = ["bias", "LayerNorm.weight"]


class TorchClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, D)
        self.dense = torch.nn.Linear(D, D)
        self.LayerNorm = torch.nn.LayerNorm(D)
        self.decoder = torch.nn.Linear(D, CLASSES)

    def forward(self, ids):
        h = self.dense(self.embed(ids).mean(dim=1))
        return self.decoder(self.LayerNorm(torch.nn.functional.gelu(h)))


class FlaxClassifier(nnx.Module):
    def __init__(self, exact_gelu: bool, *, rngs: nnx.Rngs):
        kw = dict(param_dtype=jax.numpy.float64, rngs=rngs)
        self.embed = nnx.Embed(VOCAB, D, **kw)
        self.dense = nnx.Linear(D, D, **kw)
        self.LayerNorm = nnx.LayerNorm(D, epsilon=1e-5, **kw)  # torch's eps (Flax's default: 1e-6)
        self.decoder = nnx.Linear(D, CLASSES, **kw)
        self.exact_gelu = exact_gelu

    def __call__(self, ids):
        h = self.dense(self.embed(ids).mean(axis=1))
        # BUG 1 when exact_gelu is False: jax.nn.gelu's default is the tanh approximation.
        return self.decoder(self.LayerNorm(jax.nn.gelu(h, approximate=not self.exact_gelu)))


def torch_name(flax_path: str) -> str:
    """Flax path -> torch name: ``dense/kernel`` -> ``dense.weight``, ``LayerNorm/scale`` ->
    ``LayerNorm.weight``, ``embed/embedding`` -> ``embed.weight``."""
    *module, leaf = flax_path.split("/")
    return ".".join([*module, {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(leaf, leaf)])


def port(torch_model: torch.nn.Module, exact_gelu: bool):
    """The Flax model holding the torch weights (kernels transposed), split for a pure loss."""
    model = FlaxClassifier(exact_gelu, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    # The Flax tree filled from torch (names by torch_name, kernels transposed), in torch's
    # float64: ob.params_from_torch checks every name and shape on the way.
    params = ob.params_from_torch(torch_model.named_parameters(), torch_name, ob.transpose_kernels,
                                  dtype=jnp.float64, params=params)
    return graphdef, params


def run(exact_gelu: bool, decay_mask: bool, mode: str = "end_to_end"):
    torch.manual_seed(0)
    model = TorchClassifier().double()
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(x in n for x in NO_DECAY)],
         "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(x in n for x in NO_DECAY)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=LR)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, WARMUP, STEPS)

    def torch_loss(model, batch):
        return torch.nn.functional.cross_entropy(model(batch["ids"]), batch["labels"])

    graphdef, params = port(model, exact_gelu)

    def jax_loss(params, batch):
        logits = nnx.merge(graphdef, params)(batch["ids"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

    # BUG 2 when decay_mask is False: every tensor is decayed, unlike the torch no_decay group.
    tx = ob.adamw(ob.get_linear_schedule_with_warmup(LR, WARMUP, STEPS), eps=1e-8, weight_decay=0.01,
                  mask=ob.decay_mask(params) if decay_mask else None)

    rng = np.random.default_rng(0)
    batches = [{"ids": rng.integers(0, VOCAB, size=(8, 6)), "labels": rng.integers(0, CLASSES, size=8)}
               for _ in range(STEPS)]
    return compare_training(model, optimizer, torch_loss, params, tx, jax_loss, batches,
                            scheduler=scheduler, name_map=torch_name, transform=ob.transpose_kernels,
                            mode=mode)


def main(out: str | None = None):
    with jax.enable_x64(True):
        print("=== run 1: the port as written, end to end ===")
        first = run(exact_gelu=False, decay_mask=False)
        print(first)
        print("\n-> Read the last two lines: the first divergence is the forward pass at step 0, so the "
              "model ports differ (the optimizer has not run yet). Fix: jax.nn.gelu(h, approximate=False).")

        print("\n=== run 2: mode='torch_gradients' (the JAX optimizer gets torch's gradients) ===")
        second = run(exact_gelu=False, decay_mask=False, mode="torch_gradients")
        print(second)
        print("\n-> The optimizer is wrong too, independently of the model: at the first update with a "
              "nonzero rate, every tensor named is in torch's no_decay group (LayerNorm.bias, still "
              "0, follows once it is not). Fix: ob.adamw(..., mask=ob.decay_mask(params)).")

        print("\n=== run 3: both fixed ===")
        fixed = run(exact_gelu=True, decay_mask=True)
        print(fixed)
    if out is not None:
        os.makedirs(out, exist_ok=True)
        first.plot(os.path.join(out, "compare.png"))
        first.to_json(os.path.join(out, "compare.json"))
    return first, second, fixed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for compare.png and compare.json")
    main(parser.parse_args().out)
