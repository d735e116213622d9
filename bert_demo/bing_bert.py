"""The main job's ``--recipe bing_bert_lamb`` mode: DeepSpeedExamples' bing_bert LAMB recipe run by
a real DeepSpeed engine in PyTorch and by :func:`optax_bertadam.bing_bert_lamb` in JAX, compared
step by step by ``optax_bertadam.compare.compare_training``.

PyTorch side: ``transformers.BertForMaskedLM`` (the demo's small config) under
``deepspeed.initialize`` in this process (one rank: ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/
``WORLD_SIZE``/``LOCAL_RANK`` set here unless already set), with the recipe's DeepSpeed config
(:func:`optax_bertadam.bing_bert_deepspeed_config` at sequence length 128, batch sizes set to the
demo's batch: one micro-batch per optimizer step) less its ``optimizer`` block, and as client
optimizer ``torch_ref.lamb.FusedLamb`` (the twin of DeepSpeed's ``FusedLamb``, whose CUDA kernel
cannot be built on CPU) built with that block's params over ``deepspeed_train.py``'s
``prepare_optimizer_parameters`` groups (no weight decay on biases and LayerNorm, the pooler
left out). Each step is ``engine(**batch).loss``, ``engine.backward(loss)``, ``engine.step()``
(which clips at ``gradient_clipping`` 1.0 and steps the optimizer); before every step every
group's ``lr`` is the script's ``update_learning_rate``: ``11e-3 * warmup_exp_decay_exp(
global_step, 0.9, 250, steps, 0.06) + lr_offset 1e-3`` (:class:`ScriptLearningRate`, with
``torch_ref.bertadam.warmup_exp_decay_exp``, the twin of the function the script imports).

JAX side: :class:`bert_demo.models.BertForMaskedLM` loaded from the same weights, trained by
``optax_bertadam.bing_bert_lamb(params, seq_len=128, total_steps=steps, config=...)`` with the
same config and ``name_map`` (the torch names, on which the recipe's ``no_decay`` and ``frozen``
substrings match).

What DeepSpeed's CPU engine cannot run is said, not approximated: the recipe's fp16 with dynamic
loss scaling is refused by the CPU engine (``fp16`` needs CUDA), so both sides run the config
with ``fp16`` disabled (fp32: no loss scaling, no skipped steps; the JAX side's fp16 loss
scaling is checked against DeepSpeed's ``DynamicLossScaler`` in
``parity_tests/test_deepspeed_engine.py``). ``BertForMaskedLM`` has no pooler (transformers builds
it without one), so the recipe's ``frozen=("pooler",)`` selects nothing here;
``parity_tests/test_bing_bert_recipe.py`` covers the frozen pooler with ``BertForPreTraining``.
float64 is refused: DeepSpeed's ``clip_grad_norm_`` computes the norm in float32.

Example::

    from bert_demo.main_job import DemoSettings, run_demo

    result = run_demo(DemoSettings(steps=30, recipe="bing_bert_lamb"))
    result.passed  # True
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

RECIPES = ("bing_bert_lamb",)
# Scale-relative bounds of the recipe run (as bert_demo.main_job.DIVERGENCE_BOUNDS), float32
# only. Worst errors measured on CPU over 100 steps, batch 16 x 32, seeds 0-9, attention key
# biases aside: loss 3.6e-7, gradients 3.4e-5, parameters 4.9e-4, rate 7.4e-8. Loss, gradients
# and rate keep the default demo's bounds. The parameters' worst is always the first update, in
# the zero-initialised biases: the recipe's first step applies lr_offset 1e-3 (BertAdam's
# warmup_linear starts at 0) through LAMB without bias correction, u = m / (sqrt(v) + eps) with
# m = 0.1 g, sqrt(v) = 0.032 |g| and eps 1e-8, so where |g| is near 1e-6 the models' gradient
# round-off (the two frameworks sum in different orders) shows in u, and a zero bias's scale is
# that one step. Fed torch's gradients on both sides (mode="torch_gradients"), the same first
# step agrees to 2.2e-7: the optimizers agree. The error then shrinks as the tensors grow (final
# step: at most 8.1e-5). The parameter bound leaves 4x above the worst seed.
RECIPE_DIVERGENCE_BOUNDS = {
    "bing_bert_lamb": {
        "float32": {"loss": 1e-5, "gradients": 5e-4, "parameters": 2e-3, "learning_rate": 1e-6},
    },
}
# bing_bert's phase 1 (deepspeed_bsz64k_lamb_config_seq128.json): the phase with lr_offset.
RECIPE_SEQ_LEN = 128
PRECISION_NOTE = (
    "precision: fp32 on both sides. The recipe's fp16 with dynamic loss scaling is refused by "
    "DeepSpeed's CPU engine (fp16 needs CUDA); bf16 would run, but a bf16 forward pass cannot be "
    "compared end to end at these bounds."
)
POOLER_NOTE = ("BertForMaskedLM has no pooler, so the recipe's frozen=('pooler',) selects nothing "
               "here (parity_tests/test_bing_bert_recipe.py covers it with BertForPreTraining)")


class ScriptLearningRate:
    """bing_bert's ``update_learning_rate``: before optimizer step ``k`` (the script's
    ``global_step``) every group's ``lr`` is
    ``learning_rate * warmup_exp_decay_exp(k, decay_rate, decay_step, total_steps,
    warmup_proportion) + lr_offset``.

    Used as ``compare_training``'s ``scheduler``: it sets step 0's rate when built and the next
    step's after every ``step()``, so the rate is in ``param_groups`` when compare reads it,
    before the step it applies to (the script sets it just before ``engine.step()``, with
    nothing in between that reads it: the same numbers).

    Example::

        rate = ScriptLearningRate(engine.optimizer, BING_BERT_TRAINING[128], total_steps=100)
        rate.global_step  # 0; param_groups[i]["lr"] == 1e-3 (warmup starts at lr_offset)
    """

    def __init__(self, optimizer: Any, training: dict[str, float], total_steps: int):
        self.optimizer = optimizer
        self.training = dict(training)
        self.total_steps = total_steps
        self.global_step = 0
        self._set()

    def rate(self, step: int) -> float:
        """The rate of optimizer step ``step``, in Python double precision as the script."""
        from torch_ref.bertadam import warmup_exp_decay_exp

        t = self.training
        return t["learning_rate"] * warmup_exp_decay_exp(
            step, t["decay_rate"], t["decay_step"], self.total_steps,
            t["warmup_proportion"]) + t["lr_offset"]

    def _set(self) -> None:
        lr = self.rate(self.global_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        """After ``engine.step()``: the script's ``global_step += 1``, then the next rate."""
        self.global_step += 1
        self._set()


def deepspeed_config(settings) -> dict[str, Any]:
    """The recipe's DeepSpeed config for the demo: seq-128 phase, one micro-batch of
    ``settings.batch_size`` per step on one rank, fp16 disabled (see the module docstring).

    Returns:
      A new dict (with its ``optimizer`` block: the JAX side reads it, the engine gets it
      without, and the client optimizer its ``params``).

    Example::

        deepspeed_config(DemoSettings(batch_size=16))["gradient_clipping"]  # 1.0
    """
    import optax_bertadam as ob

    return ob.bing_bert_deepspeed_config(
        RECIPE_SEQ_LEN, train_batch_size=settings.batch_size,
        train_micro_batch_size_per_gpu=settings.batch_size, fp16={"enabled": False})


def script_param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """``prepare_optimizer_parameters`` of ``deepspeed_train.py``: the pooler left out, no weight
    decay for names containing one of ``BING_BERT_NO_DECAY``.

    Returns:
      ``[{"params": decayed, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0}]``.

    Example::

        script_param_groups(model, 0.01)[1]["weight_decay"]  # 0.0
    """
    from optax_bertadam.recipes import BING_BERT_NO_DECAY

    named = [(n, p) for n, p in model.named_parameters() if "pooler" not in n]
    return [
        {"params": [p for n, p in named if not any(nd in n for nd in BING_BERT_NO_DECAY)],
         "weight_decay": weight_decay},
        {"params": [p for n, p in named if any(nd in n for nd in BING_BERT_NO_DECAY)],
         "weight_decay": 0.0},
    ]


_DEEPSPEED = None


def import_deepspeed():
    """``deepspeed``, its process group initialised for one rank in this process.

    Sets ``MASTER_ADDR``/``MASTER_PORT`` (a free port)/``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
    where not set, and replaces the shared-memory collective kernel DeepSpeed compiles with g++
    for a CPU process group by ``None``: one rank runs no collective it would serve, and the
    compilation takes minutes. Its log is cut to warnings.

    Returns:
      The ``deepspeed`` module.

    Raises:
      ValueError: ``WORLD_SIZE`` is set to more than one rank (the demo runs one process).
    """
    global _DEEPSPEED
    if _DEEPSPEED is not None:
        return _DEEPSPEED
    import logging

    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is invalid: the demo runs "
                         "one rank in one process (expected unset or 1)")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    for key, value in dict(MASTER_ADDR="127.0.0.1", RANK="0", WORLD_SIZE="1",
                           LOCAL_RANK="0").items():
        os.environ.setdefault(key, value)
    import deepspeed
    import deepspeed.comm.torch

    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    deepspeed.utils.logger.setLevel(logging.WARNING)
    deepspeed.init_distributed()
    _DEEPSPEED = deepspeed
    return deepspeed


def compare_bing_bert(settings, jax_device, torch_device):
    """Both sides of the recipe through ``compare_training`` (see the module docstring).

    Returns:
      ``(report, classes)`` as :func:`bert_demo.main_job._compare`, ``classes`` with
      ``deepspeed_engine`` and ``deepspeed_version``.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from tqdm.auto import tqdm

    import optax_bertadam as ob
    from bert_demo.main_job import (
        KEY_BIAS_SUFFIX,
        _class_name,
        torch_model_from_seed,
        transformers_config,
    )
    from bert_demo.models import bert_from_transformers, masked_lm_loss, parameter_name_map
    from bert_demo.text_data import corpus_batches
    from optax_bertadam.compare import compare_training
    from optax_bertadam.recipes import BING_BERT_TRAINING
    from torch_ref.lamb import FusedLamb

    deepspeed = import_deepspeed()
    training = BING_BERT_TRAINING[RECIPE_SEQ_LEN]
    config = deepspeed_config(settings)
    tokenizer, stream = corpus_batches(settings.batch_size, settings.seq_len, settings.seed)
    batches = [stream.next_batch()._asdict() for _ in range(settings.steps)]
    model_config = transformers_config(tokenizer.vocab_size, tokenizer.pad_id, settings.seq_len)

    with jax.default_device(jax_device):
        model = torch_model_from_seed(model_config, settings.seed).to(torch_device)
        # Before deepspeed.initialize, which steps nothing in fp32 but owns the module after.
        flax_model = bert_from_transformers(model, jnp.float32)
        client = FusedLamb(script_param_groups(model, training["weight_decay"]),
                           **config["optimizer"]["params"])
        engine_config = {k: v for k, v in config.items() if k != "optimizer"}
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=client,
                                               config=engine_config)
        rate = ScriptLearningRate(engine.optimizer, training, settings.steps)

        graphdef, params = nnx.split(flax_model, nnx.Param)
        name_map = parameter_name_map(params)
        tx = ob.bing_bert_lamb(params, seq_len=RECIPE_SEQ_LEN, total_steps=settings.steps,
                               config=config, name_map=name_map)

        def torch_loss(module, batch):
            del module  # the engine's forward runs it
            batch = {key: value.to(engine.device) for key, value in batch.items()}
            return engine(**batch).loss

        def jax_loss(params, batch):
            model = nnx.merge(graphdef, params)
            logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            return masked_lm_loss(logits, batch["labels"])

        progress = tqdm(batches, desc="demo bing_bert_lamb", unit="step", file=sys.stderr,
                        disable=not settings.progress_bar)
        report = compare_training(
            engine.module, engine.optimizer, torch_loss, params, tx, jax_loss, progress,
            scheduler=rate, name_map=name_map, transform=ob.transpose_kernels,
            bounds=RECIPE_DIVERGENCE_BOUNDS[settings.recipe][settings.dtype],
            ignore=[n for n in name_map.values() if n.endswith(KEY_BIAS_SUFFIX)],
            torch_backward=engine.backward, torch_step=engine.step,
            jax_lr=jax.jit(ob.get_lr),
        )
        progress.close()
    classes = {
        "torch_model": _class_name(engine.module),
        "torch_optimizer": _class_name(engine.optimizer),
        "deepspeed_engine": _class_name(engine),
        "deepspeed_version": deepspeed.__version__,
        "flax_model": _class_name(flax_model),
        "optax_optimizer": "optax_bertadam.bing_bert_lamb",
    }
    return report, classes


def recipe_lines(result) -> list[str]:
    """What the report says about the recipe run: the recipe, the PyTorch side, the precision
    and the pooler (printed before the table and kept in ``demo.json``).

    Returns:
      A list of lines.

    Example::

        print("\\n".join(recipe_lines(result)))
    """
    from optax_bertadam.recipes import BING_BERT_TRAINING

    settings, classes = result.settings, result.classes
    t = BING_BERT_TRAINING[RECIPE_SEQ_LEN]
    lamb = deepspeed_config(settings)["optimizer"]["params"]
    return [
        f"recipe: {settings.recipe} (DeepSpeedExamples bing_bert, "
        f"deepspeed_bsz64k_lamb_config_seq{RECIPE_SEQ_LEN}.json, --lr_schedule EE): LAMB lr "
        f"{lamb['lr']:g}, weight decay {lamb['weight_decay']:g} (none on biases and LayerNorm), "
        f"trust ratio in [{lamb['min_coeff']:g}, {lamb['max_coeff']:g}], no bias correction, "
        "gradient_clipping 1.0; before step k every group's lr = "
        f"{t['learning_rate']:g} * warmup_exp_decay_exp(k, {t['decay_rate']:g}, "
        f"{t['decay_step']:g}, {settings.steps}, {t['warmup_proportion']:g}) + lr_offset "
        f"{t['lr_offset']:g}; batch {settings.batch_size} per step (one rank, no accumulation)",
        f"PyTorch side: DeepSpeed engine {classes['deepspeed_version']} with torch_ref FusedLamb "
        f"(the CUDA FusedLamb cannot build on CPU): {classes['torch_model']} under "
        "deepspeed.initialize, engine.backward(loss) + engine.step()",
        PRECISION_NOTE,
        POOLER_NOTE,
    ]
