"""The Flax BERT computes what ``transformers.BertForMaskedLM`` computes, once weights are converted.

Tolerances (measured on CPU, logits of magnitude ~1, sentence pairs with padding):
- float64: logits and loss 1e-12 (measured 3e-16); every gradient within 1e-12 of its tensor's
  largest gradient (measured 1.3e-15), the attention key biases aside (see below).
- float32: logits 1e-5 (measured 2.4e-7), loss 1e-6 (measured 0).
- The key biases: the softmax cancels them, so their exact gradient is 0; both frameworks return
  round-off, which must stay below 1e-13 (float64, measured 5e-16) of the key weight's gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

import optax_bertadam as ob
from bert_demo.main_job import TORCH_NO_DECAY, torch_model_from_seed, transformers_config
from bert_demo.models import (
    BertConfig,
    BertForMaskedLM,
    bert_from_transformers,
    load_torch_state_dict,
    masked_lm_loss,
    parameter_name_map,
    to_torch_state_dict,
    torch_name_for_path,
)
from bert_demo.text_data import (
    IGNORE_INDEX,
    SPECIAL_TOKENS,
    MaskedLMBatches,
    WordTokenizer,
    corpus_batches,
    generate_corpus,
    load_corpus,
)

FLOAT64_TOLERANCE = 1e-12
FLOAT32_LOGITS_TOLERANCE = 1e-5
FLOAT32_LOSS_TOLERANCE = 1e-6
KEY_BIAS_ROUNDOFF_FLOAT64 = 1e-13

VOCAB, LENGTH = 97, 24


def _batch(seed=0, batch_size=4):
    """Random ids as sentence pairs (token types 0 then 1), with padding that the mask hides."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(5, VOCAB, size=(batch_size, LENGTH))
    attention_mask = np.ones_like(input_ids)
    attention_mask[1, 15:] = 0
    attention_mask[3, 5:] = 0
    input_ids[attention_mask == 0] = 0
    token_type_ids = np.zeros_like(input_ids)
    token_type_ids[:, 10:] = 1
    token_type_ids[attention_mask == 0] = 0
    labels = np.where(rng.random(input_ids.shape) < 0.3, input_ids, IGNORE_INDEX)
    labels[attention_mask == 0] = IGNORE_INDEX
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "token_type_ids": token_type_ids, "labels": labels}


def _twin_models(float64: bool):
    torch_model = torch_model_from_seed(transformers_config(VOCAB, 0, LENGTH), seed=3)
    torch_model = torch_model.to(torch.float64 if float64 else torch.float32)
    flax_model = bert_from_transformers(torch_model, jnp.float64 if float64 else jnp.float32)
    return flax_model, torch_model


# Jitted: compiling the whole forward once is several times faster than running it eagerly.
@nnx.jit
def _flax_logits(model, batch):
    return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])


@nnx.jit
def _flax_loss_and_grads(model, batch):
    def loss_of(model):
        return masked_lm_loss(_flax_logits(model, batch), batch["labels"])

    return nnx.value_and_grad(loss_of)(model)


def _torch_output(torch_model, batch):
    return torch_model(**{k: torch.from_numpy(v) for k, v in batch.items()})


@pytest.mark.parametrize("float64", [True, False], ids=["float64", "float32"])
def test_forward_matches_transformers(float64):
    with jax.enable_x64(float64):
        flax_model, torch_model = _twin_models(float64)
        batch = _batch()
        logits = _flax_logits(flax_model, {k: jnp.asarray(v) for k, v in batch.items()})
        loss = masked_lm_loss(logits, jnp.asarray(batch["labels"]))
    with torch.no_grad():
        output = _torch_output(torch_model, batch)
    logits_error = np.max(np.abs(np.asarray(logits) - output.logits.numpy()))
    loss_error = abs(float(loss) - output.loss.item())
    assert np.asarray(logits).dtype == (np.float64 if float64 else np.float32)
    assert logits_error <= (FLOAT64_TOLERANCE if float64 else FLOAT32_LOGITS_TOLERANCE)
    assert loss_error <= (FLOAT64_TOLERANCE if float64 else FLOAT32_LOSS_TOLERANCE)


def test_gradients_match_transformers_float64_and_the_key_bias_gradient_is_roundoff():
    """Same gradients tensor by tensor: what the optimizers will be fed. The key biases' are
    zero up to round-off on both sides, which is why the demo does not count them."""
    with jax.enable_x64(True):
        flax_model, torch_model = _twin_models(True)
        batch = _batch(seed=1)
        loss, grads = _flax_loss_and_grads(flax_model, {k: jnp.asarray(v) for k, v in batch.items()})
        flax_grads = to_torch_state_dict(grads)
    output = _torch_output(torch_model, batch)
    output.loss.backward()
    assert abs(float(loss) - output.loss.item()) <= FLOAT64_TOLERANCE
    torch_grads = {n: p.grad.numpy() for n, p in torch_model.named_parameters()}
    assert set(flax_grads) == set(torch_grads)
    for name, torch_grad in torch_grads.items():
        if name.endswith("attention.self.key.bias"):
            weight_scale = np.max(np.abs(torch_grads[name[:-4] + "weight"]))
            for grad in (flax_grads[name], torch_grad):
                assert np.max(np.abs(grad)) <= KEY_BIAS_ROUNDOFF_FLOAT64 * weight_scale, name
            continue
        error = np.max(np.abs(flax_grads[name] - torch_grad)) / np.max(np.abs(torch_grad))
        assert error <= FLOAT64_TOLERANCE, (name, error)


def test_padding_row_gradient_follows_torch_padding_idx():
    """``nn.Embedding(padding_idx=0)`` drops the lookups of [PAD] from the row's gradient; the row
    still gets the tied decoder's share. The Flax model matches that. With the attention mask,
    padded positions do not reach the loss and the lookups' share is 0 anyway, so here [PAD] is
    attended to: without ``padding_idx`` the torch gradient would then differ."""
    with jax.enable_x64(True):
        flax_model, torch_model = _twin_models(True)
        batch = _batch()
        batch["attention_mask"] = np.ones_like(batch["attention_mask"])
        _, grads = _flax_loss_and_grads(flax_model, {k: jnp.asarray(v) for k, v in batch.items()})
    flax_row = np.asarray(grads["bert"]["embeddings"]["word_embeddings"]["embedding"][...])[0]
    _torch_output(torch_model, batch).loss.backward()
    torch_row = torch_model.bert.embeddings.word_embeddings.weight.grad.numpy()[0].copy()
    torch_model.zero_grad()
    torch_model.bert.embeddings.word_embeddings.padding_idx = None
    _torch_output(torch_model, batch).loss.backward()
    without_padding_idx = torch_model.bert.embeddings.word_embeddings.weight.grad.numpy()[0]
    scale = np.max(np.abs(torch_row))
    assert np.max(np.abs(flax_row - torch_row)) <= FLOAT64_TOLERANCE * scale
    assert np.max(np.abs(without_padding_idx - torch_row)) > 1e-3 * scale


def test_padding_is_not_attended_to():
    """Changing the ids under padding leaves the logits of real tokens unchanged."""
    flax_model, _ = _twin_models(False)
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    changed = dict(batch, input_ids=jnp.where(batch["attention_mask"] == 0, 7, batch["input_ids"]))
    real = np.asarray(batch["attention_mask"]).astype(bool)
    before = np.asarray(_flax_logits(flax_model, batch))[real]
    after = np.asarray(_flax_logits(flax_model, changed))[real]
    np.testing.assert_allclose(before, after, atol=1e-6)


def test_name_map_and_round_trip():
    flax_model, torch_model = _twin_models(False)
    names = parameter_name_map(flax_model)
    # The tied decoder is not a parameter of its own on either side.
    torch_names = [n for n, _ in torch_model.named_parameters()]
    assert sorted(names.values()) == sorted(torch_names) and len(torch_names) == 42
    assert names["bert/encoder/layer/0/attention/self/query/kernel"] == (
        "bert.encoder.layer.0.attention.self.query.weight")
    assert names["bert/embeddings/LayerNorm/scale"] == "bert.embeddings.LayerNorm.weight"
    assert names["cls/predictions/bias"] == "cls.predictions.bias"
    exported = to_torch_state_dict(flax_model)
    for name, tensor in torch_model.named_parameters():
        np.testing.assert_array_equal(exported[name], tensor.detach().numpy(), err_msg=name)


def test_decay_mask_matches_deepspeed_no_decay_groups():
    """``optax_bertadam.decay_mask`` on the Flax parameters and DeepSpeed's ``no_decay`` rule on
    the torch names exclude the same tensors from weight decay."""
    flax_model, torch_model = _twin_models(False)
    params = nnx.state(flax_model, nnx.Param)
    flags = jax.tree.leaves(ob.decay_mask(params))
    names = list(parameter_name_map(params).values())
    flax_no_decay = {name for name, decayed in zip(names, flags, strict=True) if not decayed}
    torch_no_decay = {n for n, _ in torch_model.named_parameters()
                      if any(k in n for k in TORCH_NO_DECAY)}
    assert flax_no_decay == torch_no_decay
    assert {"cls.predictions.bias", "bert.embeddings.LayerNorm.weight"} <= torch_no_decay
    assert "bert.embeddings.word_embeddings.weight" not in torch_no_decay


def test_converter_lists_missing_unexpected_misshapen_and_untied():
    flax_model, torch_model = _twin_models(False)
    state_dict = dict(torch_model.state_dict())
    del state_dict["bert.encoder.layer.1.attention.self.value.bias"]
    state_dict["bert.pooler.dense.weight"] = torch.zeros(3)
    state_dict["cls.predictions.transform.dense.weight"] = torch.zeros(5, 64)
    state_dict["cls.predictions.decoder.weight"] = torch.zeros(VOCAB, 64)
    before = to_torch_state_dict(flax_model)
    with pytest.raises(ValueError) as error:
        load_torch_state_dict(flax_model, state_dict, BertForMaskedLM.TIED_WEIGHTS)
    message = str(error.value)
    # The messages of ob.match_parameters, the one matcher the converter is built on.
    assert ("torch names that are not in named_parameters: bert/encoder/layer/1/attention/self/"
            "value/bias -> 'bert.encoder.layer.1.attention.self.value.bias'" in message)
    assert "torch parameters no Flax path maps to: bert.pooler.dense.weight" in message
    assert ("cls/predictions/transform/dense/kernel <- cls.predictions.transform.dense.weight: "
            "torch (64, 5) after transform, Flax (64, 64)" in message)
    assert "tied names that differ from their source: cls.predictions.decoder.weight" in message
    after = to_torch_state_dict(flax_model)
    assert all(np.array_equal(before[name], after[name]) for name in before)  # untouched


def test_converter_accepts_numpy_arrays_and_transposes_kernels():
    flax_model, _ = _twin_models(False)
    other = torch_model_from_seed(transformers_config(VOCAB, 0, LENGTH), seed=4)
    load_torch_state_dict(flax_model, {k: v.numpy() for k, v in other.state_dict().items()},
                          BertForMaskedLM.TIED_WEIGHTS)
    kernel = flax_model.bert.encoder.layer[1].output.dense.kernel[...]
    np.testing.assert_array_equal(
        np.asarray(kernel), other.bert.encoder.layer[1].output.dense.weight.detach().numpy().T)


def test_torch_name_for_path_refuses_unknown_leaves():
    assert torch_name_for_path(("bert", "encoder", "layer", 0, "output", "dense", "kernel")) == (
        "bert.encoder.layer.0.output.dense.weight")
    with pytest.raises(ValueError, match="'weights' is not one of"):
        torch_name_for_path("bert/embeddings/weights")


def test_config_is_validated():
    with pytest.raises(ValueError, match="hidden_size=10 is invalid"):
        BertConfig(hidden_size=10, num_attention_heads=4)
    with pytest.raises(ValueError, match="num_hidden_layers=0 is invalid"):
        BertConfig(num_hidden_layers=0)
    config = transformers_config(VOCAB, 0, LENGTH)
    assert BertConfig.from_transformers(config).intermediate_size == 128
    config.hidden_dropout_prob = 0.1
    with pytest.raises(ValueError, match="config.hidden_dropout_prob=0.1 is invalid: expected 0.0"):
        BertConfig.from_transformers(config)
    config = transformers.BertConfig(hidden_act="gelu_new", hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    with pytest.raises(ValueError, match="config.hidden_act='gelu_new' is invalid"):
        BertConfig.from_transformers(config)


def test_randomly_initialised_model_runs():
    config = BertConfig.from_transformers(transformers_config(VOCAB, 0, LENGTH))
    # Built inside one jit: op-by-op initialisation would compile every initializer apart.
    model = nnx.jit(lambda: BertForMaskedLM(config, rngs=nnx.Rngs(0)))()
    kernel = np.asarray(model.bert.encoder.layer[0].attention.self.query.kernel[...])
    assert 0.015 < kernel.std() < 0.025  # BERT's N(0, 0.02)
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    assert _flax_logits(model, batch).shape == (4, LENGTH, VOCAB)
    too_long = jnp.zeros((1, config.max_position_embeddings + 1), dtype=jnp.int32)
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(too_long)


# ---------------------------------------------------------------------------- data


def test_shipped_corpus_is_what_the_grammar_generates():
    assert load_corpus() == generate_corpus()


def test_tokenizer_vocabulary_is_deterministic_and_capped():
    text = load_corpus()
    tokenizer = WordTokenizer.from_corpus(text, max_vocab_size=512)
    assert tuple(tokenizer.vocabulary[:5]) == SPECIAL_TOKENS
    assert tokenizer.vocab_size <= 512
    assert tokenizer.vocabulary == WordTokenizer.from_corpus(text).vocabulary
    small = WordTokenizer.from_corpus(text, max_vocab_size=20)
    assert small.vocab_size == 20
    assert small.unk_id in small.encode(text.splitlines()[0] + " zebra")
    assert tokenizer.decode(tokenizer.encode("The Sky is blue.")) == "the sky is blue ."


def test_batches_are_deterministic_sentence_pairs_and_follow_the_masking_rule():
    tokenizer, first = corpus_batches(batch_size=64, seq_len=32, seed=7)
    _, second = corpus_batches(batch_size=64, seq_len=32, seed=7)
    _, other_seed = corpus_batches(batch_size=64, seq_len=32, seed=8)
    batches = [first.next_batch() for _ in range(5)]
    for batch, again in zip(batches, (second.next_batch() for _ in range(5)), strict=True):
        for array, same in zip(batch, again, strict=True):
            np.testing.assert_array_equal(array, same)
            assert array.dtype == np.int64 and array.shape == (64, 32)
    assert not np.array_equal(batches[0].input_ids, other_seed.next_batch().input_ids)

    input_ids = np.concatenate([b.input_ids for b in batches])
    labels = np.concatenate([b.labels for b in batches])
    attention_mask = np.concatenate([b.attention_mask for b in batches])
    token_types = np.concatenate([b.token_type_ids for b in batches])
    selected = labels != IGNORE_INDEX
    assert np.all(selected.any(axis=1))  # every example contributes to the loss
    assert np.all(input_ids[:, 0] == tokenizer.cls_id)
    assert np.all((input_ids == tokenizer.pad_id) == (attention_mask == 0))
    assert np.all(labels[selected] >= len(SPECIAL_TOKENS))  # specials are never selected
    # Sentence pairs: segment B (type 1) starts right after the first [SEP] and ends with a
    # [SEP]; padding is type 0.
    assert np.all(token_types[attention_mask == 0] == 0)
    for ids, types in zip(input_ids, token_types, strict=True):
        first_sep = int(np.flatnonzero(ids == tokenizer.sep_id)[0])
        assert np.all(types[: first_sep + 1] == 0)
        if types.any():
            segment_b = np.flatnonzero(types)
            assert segment_b[0] == first_sep + 1 and ids[segment_b[-1]] == tokenizer.sep_id
    assert token_types.any(axis=1).mean() > 0.9  # nearly every example has a segment B
    real_words = (attention_mask == 1) & (input_ids != tokenizer.cls_id) & (
        input_ids != tokenizer.sep_id)
    # Selection rate near 15% of ordinary tokens; of the selected, ~80% [MASK], ~10% kept.
    rate = selected.sum() / (real_words.sum())
    assert 0.13 < rate < 0.17
    masked_share = np.mean(input_ids[selected] == tokenizer.mask_id)
    kept_share = np.mean(input_ids[selected] == labels[selected])
    assert 0.75 < masked_share < 0.85
    assert 0.07 < kept_share < 0.15  # 10% kept, plus random draws that hit the same word


def test_batches_refuse_bad_arguments():
    tokenizer = WordTokenizer.from_corpus("a b c")
    with pytest.raises(ValueError, match="seq_len=2 is invalid"):
        MaskedLMBatches([[5, 6]], tokenizer, batch_size=2, seq_len=2, seed=0)
    with pytest.raises(ValueError, match="batch_size=0 is invalid"):
        MaskedLMBatches([[5, 6]], tokenizer, batch_size=0, seq_len=8, seed=0)
