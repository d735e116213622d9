"""``ob.bing_bert_lamb`` against bing_bert's recipe run on the real DeepSpeed engine on CPU.

The PyTorch side is DeepSpeedExamples' ``deepspeed_train.py`` loop, reduced to what moves numbers:
a tiny ``transformers.BertForPreTraining`` (from a ``BertConfig``, no download; it has a pooler);
``prepare_optimizer_parameters``' two groups (the pooler left out, ``no_decay`` on biases and
LayerNorm) given to ``deepspeed.initialize`` with the recipe's DeepSpeed config; before every
boundary ``group["lr"] = learning_rate * warmup_exp_decay_exp(global_step, ...) + lr_offset``
(``torch_ref.bertadam.warmup_exp_decay_exp``, the twin of the function the script imports) and
``global_step += 1`` after ``engine.step()``, a skipped step included.

What the CPU engine cannot run is replaced, and only that: ``FusedLamb`` does not build on CPU, so
its ``torch_ref`` twin (from the CUDA kernel) is the client optimizer, built with the config's
``optimizer.params`` (the config then has no optimizer block); the CPU engine refuses fp16, so the
config runs bf16 (the same ``FP16_UnfusedOptimizer`` at ZeRO stage 0, with its construction-time
zero-gradient step, float32 masters, the overflow skip, the clipping over the optimiser's
parameters); fp16's loss scale is checked against ``DynamicLossScaler`` in
``test_deepspeed_engine.py``. Accumulation 2; one micro-batch carries an inf (a skipped step
that the script's ``global_step`` still counts).

Each micro-step feeds one gradient per parameter (``harness.gradient_stream``, cast to bf16) to
both sides: ``engine.backward(sum(p * G)); engine.step()`` and ``tx.update(G, state, params)``.
After every micro-step every parameter (DeepSpeed's float32 masters; the pooler's own weights;
before the first applied step the model's weights, as DeepSpeed's masters then already hold the
construction step that the recipe applies with the first step) is compared; before every
boundary the rate (``group["lr"]`` vs ``ob.get_lr``). Errors: ``max |p_jax - p_ds| / max |p_ds|``
per tensor over the run, rates relative to the largest.
Tolerances: the harness's float32 bounds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_bertadam as ob
from parity_tests import harness
from parity_tests.test_deepspeed_engine import deepspeed  # noqa: F401  (the engine fixture)
from torch_ref.bertadam import warmup_exp_decay_exp
from torch_ref.lamb import FusedLamb

MICRO_STEPS = 20
ACCUMULATION = 2
TOTAL_STEPS = 40  # seq 128: warmup to step 2.4, then 0.9 ** ((k - 2.4) / 250)
INF_AT = 9  # micro-step 9 (boundary 4) carries an inf


def _model():
    import transformers

    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=24,
                                     max_position_embeddings=16, type_vocab_size=2)
    torch.manual_seed(0)
    return transformers.BertForPreTraining(config)


def _script_groups(model, weight_decay):
    """``prepare_optimizer_parameters`` of ``deepspeed_train.py``."""
    named = [(n, p) for n, p in model.named_parameters() if "pooler" not in n]
    no_decay = ob.recipes.BING_BERT_NO_DECAY
    return [{"params": [p for n, p in named if not any(nd in n for nd in no_decay)],
             "weight_decay": weight_decay},
            {"params": [p for n, p in named if any(nd in n for nd in no_decay)],
             "weight_decay": 0.0}]


def test_bing_bert_recipe_matches_the_engine(deepspeed):  # noqa: F811
    seq_len = 128
    config = ob.bing_bert_deepspeed_config(
        seq_len, train_batch_size=2 * ACCUMULATION, train_micro_batch_size_per_gpu=2,
        fp16={"enabled": False}, bf16={"enabled": True})
    training = ob.recipes.BING_BERT_TRAINING[seq_len]
    engine_config = {k: v for k, v in config.items() if k not in ("optimizer", "fp16")}
    model = _model().to(torch.bfloat16)
    weights = {n: p.detach().float().numpy().copy() for n, p in model.named_parameters()}
    optimizer = FusedLamb(_script_groups(model, training["weight_decay"]),
                          **config["optimizer"]["params"])
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=engine_config)
    assert type(engine.optimizer).__name__ == "FP16_UnfusedOptimizer"

    params = {n: jnp.asarray(w) for n, w in weights.items()}
    tx = ob.bing_bert_lamb(params, seq_len=seq_len, total_steps=TOTAL_STEPS, config=config)
    state = tx.init(params)
    update = jax.jit(tx.update)

    name_of = {id(p): n for n, p in engine.module.named_parameters()}

    def torch_params():
        out = {n: p.detach().float().numpy() for n, p in engine.module.named_parameters()}
        if engine.global_steps == engine.skipped_steps:
            # Before the first applied step DeepSpeed's masters hold the construction step,
            # which the recipe applies with that step; both sides' weights are the model's.
            return out
        for low, masters in zip(engine.optimizer.fp16_groups, engine.optimizer.fp32_groups,
                                strict=True):
            for h, m in zip(low, masters, strict=True):
                out[name_of[id(h)]] = m.detach().numpy()
        return out

    shapes = {n: tuple(p.shape) for n, p in engine.module.named_parameters()}
    grads = harness.gradient_stream(MICRO_STEPS, seed=5, shapes=shapes)
    first = next(n for n in shapes if "pooler" not in n)
    grads[INF_AT][first].flat[0] = np.inf
    param_errors: dict[str, float] = {}
    scale: dict[str, float] = {}
    rate_diffs, rates = [], []
    global_step = 0
    for grad in grads:
        cast = {n: torch.tensor(g).to(torch.bfloat16) for n, g in grad.items()}
        loss = sum((p * cast[n]).sum() for n, p in engine.module.named_parameters())
        engine.backward(loss)
        if engine.is_gradient_accumulation_boundary():
            lr = training["learning_rate"] * warmup_exp_decay_exp(
                global_step, training["decay_rate"], training["decay_step"], TOTAL_STEPS,
                training["warmup_proportion"]) + training["lr_offset"]
            for group in engine.optimizer.param_groups:
                group["lr"] = lr
            rate_diffs.append(abs(float(ob.get_lr(state)) - lr))
            rates.append(lr)
            engine.step()
            global_step += 1
        else:
            engine.step()
        jax_grads = {n: jnp.asarray(g.float().numpy()).astype(jnp.bfloat16) for n, g in cast.items()}
        updates, state = update(jax_grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        for name, theirs in torch_params().items():
            ours = np.asarray(params[name])
            param_errors[name] = max(param_errors.get(name, 0.0), float(np.max(np.abs(ours - theirs))))
            scale[name] = max(scale.get(name, 0.0), float(np.max(np.abs(theirs))))

    assert engine.skipped_steps == 1
    # The pooler is not optimised: both sides leave it at its initial weights.
    for name in (n for n in shapes if "pooler" in n):
        np.testing.assert_array_equal(np.asarray(params[name]), weights[name])
    # The masters moved everywhere else (the construction step, then the steps).
    assert all(not np.array_equal(np.asarray(params[n]), weights[n]) for n in shapes
               if "pooler" not in n and "token_type" not in n)
    worst_param = max(param_errors[n] / max(scale[n], 1e-30) for n in param_errors)
    worst_rate = max(rate_diffs) / max(rates)
    print(f"bing_bert recipe vs engine (bf16, twin FusedLamb): parameters {worst_param:.2e}, "
          f"rates {worst_rate:.2e}")
    harness.assert_within("param error", worst_param, harness.PARAM_TOL["float32"])
    harness.assert_within("lr error", worst_rate, harness.LR_TOL["float32"])


def test_bing_bert_rate_is_the_script_rate():
    for seq_len in (128, 512):
        training = ob.recipes.BING_BERT_TRAINING[seq_len]
        rate = jax.jit(ob.bing_bert_rate(seq_len))
        theirs = [training["learning_rate"] * warmup_exp_decay_exp(
            k, training["decay_rate"], training["decay_step"], training["total_training_steps"],
            training["warmup_proportion"]) + training["lr_offset"] for k in range(0, 7600, 7)]
        ours = [float(rate(k)) for k in range(0, 7600, 7)]
        worst = max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) / max(theirs)
        harness.assert_within("lr error", worst, harness.LR_TOL["float32"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(seq_len=256), "seq_len=256 is invalid"),
        (dict(total_steps=0), "total_steps=0"),
        (dict(config={"train_batch_size": 2, "optimizer": {"type": "Lamb"},
                      "scheduler": {"type": "WarmupLR"}}), "scheduler"),
        (dict(config={"train_batch_size": 6, "train_micro_batch_size_per_gpu": 4,
                      "optimizer": {"type": "Lamb"}}), "train_batch_size=6 is inconsistent"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ob.bing_bert_lamb({"w": jnp.ones(2)}, **kwargs)
