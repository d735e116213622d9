"""A transformers Trainer run, moved to Flax NNX with ``ob.from_trainer``, checked by ``compare_training``.

1. ``transformers.Trainer`` fine-tunes a tiny ``BertForSequenceClassification`` (built from a
   config, no download) for a few steps on a small text-classification set generated here; a
   ``training_step`` override records the batches it trains on.
2. The same model in Flax NNX (the project's Flax BERT of ``bert_demo`` plus a pooler and a
   classifier head) gets ``tx = ob.from_trainer(trainer, params=..., name_map=...,
   transform=ob.transpose_kernels)``: AdamW over the Trainer's two weight-decay groups, its
   linear schedule with warmup, its gradient-norm measurement.
3. ``ob.compare_training`` runs the PyTorch step the Trainer runs (the optimizer and scheduler a
   second, identical Trainer builds, on a copy of the initial weights) and the Flax step on those
   batches, end to end: losses, gradients, rates and parameters after every step.

``max_grad_norm=0`` here: ``compare_training``'s PyTorch loop steps the optimizer directly, and
the Trainer clips outside the optimizer (``parity_tests/test_trainer.py`` checks clipping, like
accumulation, against ``Trainer.train()`` itself). Run: ``python examples/trainer_to_flax.py``.
"""

from __future__ import annotations

import copy
import pathlib
import sys
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import transformers
from flax import nnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import optax_bertadam as ob  # noqa: E402
from bert_demo.models import bert as flax_bert  # noqa: E402
from bert_demo.models import convert  # noqa: E402

POSITIVE = ["good", "great", "fine", "happy", "nice", "love", "bright", "calm"]
NEGATIVE = ["bad", "awful", "poor", "sad", "nasty", "hate", "dark", "angry"]
NEUTRAL = ["the", "a", "film", "day", "food", "was", "is", "very", "quite", "so", "it", "this"]
VOCAB = ["[PAD]", "[CLS]", "[SEP]", *POSITIVE, *NEGATIVE, *NEUTRAL]
LENGTH = 12


def make_dataset(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Sentences of neutral words with positive or negative ones; the label is the majority."""
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(n):
        label = int(rng.integers(2))
        strong = POSITIVE if label else NEGATIVE
        weak = NEGATIVE if label else POSITIVE
        words = list(rng.choice(NEUTRAL, 5)) + list(rng.choice(strong, 3)) + list(rng.choice(weak, 1))
        rng.shuffle(words)
        ids = [1, *(VOCAB.index(w) for w in words), 2]
        ids += [0] * (LENGTH - len(ids))
        examples.append({"input_ids": torch.tensor(ids),
                         "attention_mask": torch.tensor([int(i != 0) for i in ids]),
                         "labels": torch.tensor(label)})
    return examples


def config() -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=LENGTH, num_labels=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,  # both sides deterministic
    )


class RecordingTrainer(transformers.Trainer):
    """The Trainer, recording each batch it trains on (for the side-by-side replay)."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.batches.append({k: v.detach().numpy().copy() for k, v in inputs.items()})
        return super().training_step(model, inputs, num_items_in_batch)


class Pooler(nnx.Module):
    def __init__(self, hidden: int, rngs: nnx.Rngs):
        self.dense = nnx.Linear(hidden, hidden, rngs=rngs, precision="highest")

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return jnp.tanh(self.dense(hidden[:, 0]))


class FlaxBert(flax_bert.BertModel):
    """bert_demo's BertModel (embeddings, encoder) with transformers' pooler."""

    def __init__(self, cfg: flax_bert.BertConfig, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        self.pooler = Pooler(cfg.hidden_size, rngs)


class FlaxBertForSequenceClassification(nnx.Module):
    """transformers' BertForSequenceClassification, parameter for parameter, in Flax NNX."""

    def __init__(self, cfg: flax_bert.BertConfig, num_labels: int, rngs: nnx.Rngs):
        self.bert = FlaxBert(cfg, rngs)
        self.classifier = nnx.Linear(cfg.hidden_size, num_labels, rngs=rngs, precision="highest")

    def __call__(self, input_ids, attention_mask):
        hidden = self.bert(input_ids, attention_mask, jnp.zeros_like(input_ids))
        return self.classifier(self.bert.pooler(hidden))


def training_arguments(output_dir: str, steps: int) -> transformers.TrainingArguments:
    return transformers.TrainingArguments(
        output_dir=output_dir, max_steps=steps, per_device_train_batch_size=8,
        learning_rate=3e-3, lr_scheduler_type="linear", warmup_steps=0.2, weight_decay=0.01,
        max_grad_norm=0.0, optim="adamw_torch", logging_steps=1, save_strategy="no",
        report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0,
    )


def main(steps: int = 12, verbose: bool = True) -> ob.compare.ComparisonReport:
    torch.manual_seed(0)
    initial = transformers.BertForSequenceClassification(config())
    dataset = make_dataset(96)

    # 1. The Trainer's own run.
    with tempfile.TemporaryDirectory() as tmp:
        trainer = RecordingTrainer(model=copy.deepcopy(initial), args=training_arguments(tmp, steps),
                                   train_dataset=dataset)
        trainer.batches = []
        trainer.remove_callback(transformers.PrinterCallback)  # its logs are summarised below
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train()
        logs = [e for e in trainer.state.log_history if "learning_rate" in e]

        # 2. The same model in Flax NNX, and the Trainer's optimizer for it. A second Trainer over
        # a copy of the initial weights builds the optimizer and scheduler train() builds.
        torch_model = copy.deepcopy(initial)
        replay = transformers.Trainer(model=torch_model, args=training_arguments(tmp, steps),
                                      train_dataset=dataset)
        replay.create_optimizer_and_scheduler(num_training_steps=steps)
        model = FlaxBertForSequenceClassification(
            flax_bert.BertConfig.from_transformers(config()), 2, nnx.Rngs(0))
        convert.load_torch_state_dict(model, initial.state_dict())
        graphdef, params = nnx.split(model, nnx.Param)
        name_map = convert.parameter_name_map(params)
        tx = ob.from_trainer(replay, params=params, name_map=name_map,
                             transform=ob.transpose_kernels)

    def jax_loss(p, batch):
        logits = nnx.merge(graphdef, p)(batch["input_ids"], batch["attention_mask"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

    # 3. Side by side on the Trainer's batches.
    report = ob.compare_training(
        torch_model, replay.optimizer, lambda m, b: m(**b).loss, params, tx, jax_loss,
        trainer.batches, scheduler=replay.lr_scheduler, name_map=name_map,
        transform=ob.transpose_kernels,
        # An attention key bias gets a gradient of zero up to round-off on both sides (softmax
        # ignores a shift along the keys), which Adam scales up: compared, not counted.
        ignore=lambda name: name.endswith("attention.self.key.bias"),
    )
    # The replayed PyTorch run is the Trainer's: same parameters at the end.
    trained = dict(trainer.model.named_parameters())
    same = max(float((p - trained[n]).detach().abs().max()) for n, p in torch_model.named_parameters())
    if verbose:
        print(f"Trainer: {steps} steps, loss {logs[0]['loss']:.4f} -> {logs[-1]['loss']:.4f}; "
              f"logged learning_rate {[round(e['learning_rate'], 6) for e in logs[:4]]} ...")
        print(f"replayed PyTorch run vs Trainer.train(): max |param difference| {same:.1e}")
        print(report)
    report.trainer_difference = same
    return report


if __name__ == "__main__":
    main()
