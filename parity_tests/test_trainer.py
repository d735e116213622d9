"""``from_training_arguments`` / ``from_trainer`` against the real ``transformers.Trainer.train()``.

A tiny ``BertForSequenceClassification`` (from a config: hidden 32, 2 layers, 2 heads, vocab 100)
is trained on CPU by the real Trainer over a generated classification set. A subclass records
every micro-batch's gradient (the accumulated ``.grad`` is set aside, the micro-batch
back-propagates into fresh ``.grad``, which is recorded, and the two are added back: ``a + b`` is
what autograd's accumulation computes, so the run is unchanged) and a callback every parameter
after each optimizer step. The JAX side gets the same micro-batch gradients, one ``tx.update``
each, and after every optimizer step every parameter must be within the harness's float32 bound
(2e-5 of the tensor's largest magnitude; float64: 1e-12), the rate of the step within 1e-6 of the
peak of what the Trainer logs as ``learning_rate``, and :func:`optax_bertadam.get_grad_norm`
within 1e-5 (relative) of its logged ``grad_norm`` (the norm is a float32 sum over ~40 tensors).

The matrix covers every supported ``optim``, seven ``lr_scheduler_type``s with kwargs, warmup as
a ratio and as steps, ``max_grad_norm`` on and off, accumulation 1 and 4 (summed, as for a stock
BERT whose forward takes ``**kwargs``; averaged, for a model without them), weight decay over the
Trainer's groups, bf16 autocast and a float64 model; odd rows go through ``from_trainer``, even
rows through ``from_training_arguments``.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import optax_bertadam as ob
from optax_bertadam.trainer import trainer_decay_mask
from parity_tests import harness

transformers = pytest.importorskip("transformers")

SEQ, EXAMPLES, BATCH, STEPS = 8, 32, 4, 6
GRAD_NORM_TOL = {"float32": 1e-5, "float64": 1e-12}


def tiny_bert(cls=None, dtype=torch.float32):
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=16, num_labels=2,
    )
    torch.manual_seed(0)
    return (cls or transformers.BertForSequenceClassification)(config).to(dtype)


class NoKwargsBert(transformers.BertForSequenceClassification):
    """A model whose forward takes no ``**kwargs``: the Trainer divides each micro-batch loss."""

    def forward(self, input_ids=None, attention_mask=None, labels=None):
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


class Examples(torch.utils.data.Dataset):
    """Label 1 where token 7 occurs: a task the model can learn."""

    def __init__(self, n=EXAMPLES, seed=0):
        rng = np.random.default_rng(seed)
        self.ids = rng.integers(1, 100, size=(n, SEQ))
        self.labels = (self.ids == 7).any(axis=1).astype(np.int64) | (self.ids[:, 0] < 50)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": torch.tensor(self.ids[i]), "attention_mask": torch.ones(SEQ, dtype=torch.long),
                "labels": torch.tensor(int(self.labels[i]))}


class RecordingTrainer(transformers.Trainer):
    """Records each micro-batch gradient without changing what the Trainer computes."""

    micro_grads: list

    def training_step(self, model, inputs, num_items_in_batch=None):
        named = list(model.named_parameters())
        saved = [p.grad for _, p in named]
        for _, p in named:
            p.grad = None
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.micro_grads.append({n: p.grad.detach().numpy().copy() for n, p in named})
        for (_, p), before in zip(named, saved, strict=True):
            if before is not None:
                p.grad = before + p.grad
        return loss


class Snapshots(transformers.TrainerCallback):
    def __init__(self, model):
        self.model, self.params = model, []

    def on_step_end(self, args, state, control, **kwargs):
        self.params.append({n: p.detach().numpy().copy() for n, p in self.model.named_parameters()})


def train(args_kwargs, *, model_cls=None, dtype=torch.float32):
    model = tiny_bert(model_cls, dtype)
    initial = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    args = transformers.TrainingArguments(
        output_dir="/tmp/ob_trainer_parity", max_steps=STEPS, per_device_train_batch_size=BATCH,
        logging_steps=1, save_strategy="no", eval_strategy="no", report_to=[], use_cpu=True,
        dataloader_num_workers=0, disable_tqdm=True, seed=0, **args_kwargs,
    )
    snapshots = Snapshots(model)
    trainer = RecordingTrainer(model=model, args=args, train_dataset=Examples(),
                               callbacks=[snapshots])
    trainer.micro_grads = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    logs = [entry for entry in trainer.state.log_history if "learning_rate" in entry]
    return trainer, initial, snapshots.params, logs


# (TrainingArguments overrides, model class, torch dtype, through from_trainer)
MATRIX = {
    "adamw_torch x linear x warmup ratio x clip x accumulation 1 x decay": (
        dict(optim="adamw_torch", lr_scheduler_type="linear", warmup_steps=0.3, learning_rate=2e-3,
             max_grad_norm=1.0, weight_decay=0.1, adam_beta1=0.8, adam_beta2=0.95,
             adam_epsilon=1e-6), None, torch.float32, False),
    "adamw_torch_fused x cosine x warmup steps x no clip x accumulation 4 (sum)": (
        dict(optim="adamw_torch_fused", lr_scheduler_type="cosine", warmup_steps=2,
             learning_rate=2e-3, max_grad_norm=0.0, weight_decay=0.05,
             gradient_accumulation_steps=4), None, torch.float32, True),
    "adafactor x cosine_with_restarts(num_cycles=2) x warmup ratio x clip x accumulation 4": (
        dict(optim="adafactor", lr_scheduler_type="cosine_with_restarts",
             lr_scheduler_kwargs={"num_cycles": 2}, warmup_steps=0.2, learning_rate=1e-2,
             max_grad_norm=0.5, weight_decay=0.01, gradient_accumulation_steps=4),
        None, torch.float32, False),
    "sgd(momentum, nesterov) x polynomial(lr_end, power) x warmup steps x clip x accumulation 1": (
        dict(optim="sgd", optim_args="momentum=0.9,nesterov=true", lr_scheduler_type="polynomial",
             lr_scheduler_kwargs={"lr_end": 1e-3, "power": 2.0}, warmup_steps=1,
             learning_rate=0.05, max_grad_norm=1.0, weight_decay=0.01),
        None, torch.float32, True),
    "adagrad(lr_decay, eps) x constant_with_warmup x no clip x accumulation 4 (mean)": (
        dict(optim="adagrad", optim_args="lr_decay=0.05,eps=1e-8",
             lr_scheduler_type="constant_with_warmup", warmup_steps=2, learning_rate=1e-2,
             max_grad_norm=0.0, weight_decay=0.02, gradient_accumulation_steps=4),
        NoKwargsBert, torch.float32, False),
    "rmsprop(momentum, centered, alpha) x cosine_with_min_lr x warmup ratio x clip x bf16": (
        dict(optim="rmsprop", optim_args="momentum=0.5,centered=true,alpha=0.9",
             lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1},
             warmup_steps=0.3, learning_rate=1e-3, max_grad_norm=1.0, weight_decay=0.01,
             bf16=True), None, torch.float32, True),
    "adamw_torch x inverse_sqrt(timescale) x accumulation 4 (mean) x clip": (
        dict(optim="adamw_torch", lr_scheduler_type="inverse_sqrt",
             lr_scheduler_kwargs={"timescale": 3}, warmup_steps=2, learning_rate=2e-3,
             max_grad_norm=0.3, weight_decay=0.01, gradient_accumulation_steps=4),
        NoKwargsBert, torch.float32, True),
    "sgd x warmup_stable_decay(num_decay_steps) x no clip x accumulation 1": (
        dict(optim="sgd", lr_scheduler_type="warmup_stable_decay",
             lr_scheduler_kwargs={"num_decay_steps": 2}, warmup_steps=2, learning_rate=0.05,
             max_grad_norm=0.0, weight_decay=0.0), None, torch.float32, False),
    "adamw_torch x linear x float64 model x clip": (
        dict(optim="adamw_torch", lr_scheduler_type="linear", warmup_steps=2, learning_rate=2e-3,
             max_grad_norm=1.0, weight_decay=0.1), None, torch.float64, False),
}


@pytest.mark.parametrize("name", list(MATRIX))
def test_trainer_parity(name):
    overrides, model_cls, torch_dtype, through_trainer = MATRIX[name]
    dtype = "float64" if torch_dtype == torch.float64 else "float32"
    trainer, initial, snapshots, logs = train(overrides, model_cls=model_cls, dtype=torch_dtype)
    accumulation = trainer.args.gradient_accumulation_steps
    # The Trainer divided each micro-batch loss by N where it does not pass num_items_in_batch:
    # the JAX side takes the gradient of each micro-batch's own mean loss (N = 4: exact).
    mean = model_cls is NoKwargsBert
    micro = [{n: g * accumulation for n, g in m.items()} if mean else m
             for m in trainer.micro_grads]
    assert len(micro) == STEPS * accumulation and len(snapshots) == len(logs) == STEPS

    with jax.enable_x64(dtype == "float64"):
        jdtype = jnp.float64 if dtype == "float64" else jnp.float32
        params = harness.nest({n: jnp.asarray(v, jdtype) for n, v in initial.items()})
        if through_trainer:
            tx = ob.from_trainer(trainer, params=params)
        else:
            tx = ob.from_training_arguments(trainer.args, params=params,
                                            loss_reduction="mean" if mean else "sum")

        @jax.jit
        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        state = tx.init(params)
        param_errors, lr_errors, norm_errors = [], [], []
        peak = max(abs(entry["learning_rate"]) for entry in logs)
        for k in range(STEPS):
            rate = float(ob.get_last_lr(state)[0])  # the Trainer logs group 0's
            for j in range(accumulation):
                grads = harness.nest({n: np.asarray(g, jdtype)
                                      for n, g in micro[k * accumulation + j].items()})
                params, state = step(params, state, grads)
            flat = dict(zip(harness.flatten_names(params), jax.tree.leaves(params), strict=True))
            param_errors.append(max(
                float(np.max(np.abs(np.asarray(flat[n]) - want)))
                / max(max(float(np.max(np.abs(s[n]))) for s in snapshots), 1e-30)
                for n, want in snapshots[k].items()
            ))
            lr_errors.append(abs(rate - logs[k]["learning_rate"]) / peak)
            norm = float(ob.get_grad_norm(state))
            norm_errors.append(abs(norm - logs[k]["grad_norm"]) / logs[k]["grad_norm"])
    print(f"{name}: param {max(param_errors):.2e}, lr {max(lr_errors):.2e}, "
          f"grad_norm {max(norm_errors):.2e}")
    harness.assert_within("param error", max(param_errors), harness.PARAM_TOL[dtype])
    harness.assert_within("lr error", max(lr_errors), harness.LR_TOL[dtype])
    harness.assert_within("grad_norm error", max(norm_errors), GRAD_NORM_TOL[dtype])


def test_decay_groups_are_the_trainers_name_by_name():
    """The Trainer's two groups on a BERT, and trainer_decay_mask on the same names and on the
    project's Flax BERT (LayerNorm ``scale``/``bias`` paths, mapped to torch names)."""
    from bert_demo.models import bert as flax_bert
    from bert_demo.models import convert

    model = tiny_bert()
    trainer = transformers.Trainer(model=model, args=transformers.TrainingArguments(
        output_dir="/tmp/ob_trainer_groups", report_to=[], use_cpu=True, weight_decay=0.1))
    decayed = set(trainer.get_decay_parameter_names(model))
    names = [n for n, _ in model.named_parameters()]
    tree = harness.nest({n: jnp.zeros(()) for n in names})
    mask = dict(zip(harness.flatten_names(tree), jax.tree.leaves(trainer_decay_mask(tree)),
                    strict=True))
    assert {n for n in names if mask[n]} == decayed
    assert {n for n in names if not mask[n]} == set(names) - decayed

    # Flax paths: bert_demo's BERT (no pooler, MLM head) as Flax NNX holds it.
    config = flax_bert.BertConfig.from_transformers(
        transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64,
                                max_position_embeddings=16, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0))
    flax_model = flax_bert.BertForMaskedLM(config, rngs=flax_bert.nnx.Rngs(0))
    flax_params = flax_bert.nnx.state(flax_model, flax_bert.nnx.Param)
    name_map = convert.parameter_name_map(flax_params)
    flax_mask = dict(zip(ob.parameter_names(flax_params),
                         jax.tree.leaves(trainer_decay_mask(flax_params)), strict=True))
    torch_mlm = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=16))
    mlm_decayed = set(trainer.get_decay_parameter_names(torch_mlm))
    for path, torch_name in name_map.items():
        assert flax_mask[path] == (torch_name in mlm_decayed), (path, torch_name)


def test_from_trainer_before_train_reads_the_optimizer_create_optimizer_builds():
    """Before train(): the groups of the optimizer the Trainer would build, frozen params left out,
    the schedule over the Trainer's own step count (epochs x its dataloader)."""
    model = tiny_bert()
    model.bert.embeddings.position_embeddings.weight.requires_grad_(False)
    args = transformers.TrainingArguments(
        output_dir="/tmp/ob_trainer_before", num_train_epochs=2, per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=2, lr_scheduler_type="linear", warmup_steps=0.25,
        learning_rate=1e-3, weight_decay=0.1, report_to=[], use_cpu=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Examples())
    params = harness.nest({n: jnp.asarray(p.detach().numpy()) for n, p in model.named_parameters()})
    tx = ob.from_trainer(trainer, params=params)
    state = tx.init(params)
    total = ob.trainer.training_steps_for(args, math.ceil(EXAMPLES / BATCH))
    assert total == 8
    # lr of update k: linear warmup over ceil(0.25 * 8) = 2 updates, then linear decay to 8.
    ones = jax.tree.map(jnp.ones_like, params)
    rates = []
    for _ in range(total * 2):
        rates.append(float(ob.get_last_lr(state)[0]))
        updates, state = tx.update(ones, state, params)
    frozen = updates["bert"]["embeddings"]["position_embeddings"]["weight"]
    assert float(jnp.max(jnp.abs(frozen))) == 0.0
    want = [1e-3 * (k / 2 if k < 2 else (8 - k) / 6) for k in range(8)]
    np.testing.assert_allclose(rates[::2], want, rtol=1e-6, atol=1e-12)


REFUSALS = {
    "optim": (dict(optim="adamw_8bit"), "args.optim='adamw_8bit'.*supported: adamw_torch"),
    "scheduler": (dict(lr_scheduler_type="reduce_lr_on_plateau", eval_strategy="steps"),
                  "args.lr_scheduler_type='reduce_lr_on_plateau'"),
    "scheduler kwarg": (dict(lr_scheduler_type="cosine", lr_scheduler_kwargs={"cycles": 2}),
                        "args.lr_scheduler_kwargs=.*cycles"),
    "optim_args": (dict(optim="sgd", optim_args="momentum0.9"), "args.optim_args='momentum0.9'"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_arguments_are_refused_when_built(case):
    overrides, message = REFUSALS[case]
    args = transformers.TrainingArguments(output_dir="/tmp/ob_trainer_refusals", max_steps=10,
                                          report_to=[], use_cpu=True, **overrides)
    with pytest.raises(ValueError, match=message):
        ob.from_training_arguments(args, params={"w": jnp.zeros(2)})


def test_missing_training_steps_and_mismatched_params_are_refused():
    args = transformers.TrainingArguments(output_dir="/tmp/ob_trainer_refusals", report_to=[],
                                          use_cpu=True, lr_scheduler_type="linear")
    with pytest.raises(ValueError, match="num_training_steps=None is invalid"):
        ob.from_training_arguments(args, params={"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match="decay_mask"):
        ob.from_training_arguments(args, params={"w": jnp.zeros(2)}, num_training_steps=5,
                                   decay_mask={"v": True})
    with pytest.raises(ValueError, match="loss_reduction='avg'"):
        ob.from_training_arguments(args, params={"w": jnp.zeros(2)}, num_training_steps=5,
                                   loss_reduction="avg")
    model = torch.nn.Linear(2, 1)
    trainer = transformers.Trainer(model=model, args=transformers.TrainingArguments(
        output_dir="/tmp/ob_trainer_refusals", max_steps=3, report_to=[], use_cpu=True))
    with pytest.raises(ValueError, match="params does not match trainer.model"):
        ob.from_trainer(trainer, params={"weight": jnp.zeros((2, 1)), "bias": jnp.zeros(1)})


def test_fp16_wraps_the_step_in_the_grad_scaler():
    args = transformers.TrainingArguments(output_dir="/tmp/ob_trainer_fp16", max_steps=4,
                                          report_to=[], learning_rate=0.1, optim="sgd")
    args.fp16 = True  # what the Trainer would use on a GPU; the arguments alone are read here
    params = {"w": jnp.ones(2)}
    tx = ob.from_training_arguments(args, params=params)
    state = tx.init(params)
    assert float(ob.get_loss_scale(state)) == 2.0**16
    _, state = tx.update({"w": jnp.array([jnp.inf, 1.0])}, state, params)  # skipped: no step
    assert float(ob.get_loss_scale(state)) == 2.0**15
    # The skipped step did not step the scheduler either: update 0's rate (linear, no warmup).
    assert float(ob.get_lr(state)) == pytest.approx(0.1)
