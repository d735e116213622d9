"""The Flax BERT and its PyTorch twin compute the same function once weights are converted.

Tolerances (max abs difference of logits of magnitude ~1, measured 2-4e-16 in float64 and
2-3e-7 in float32 on CPU):
- float64: 1e-10.
- float32: 1e-4 on logits, 1e-5 on the loss.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from bert_demo.models import (
    BertConfig,
    BertForMaskedLM,
    bert_from_torch_state_dict,
    masked_lm_loss,
    nnx_to_torch_state_dict,
    parameter_name_map,
    torch_name_for_path,
    torch_state_dict_to_nnx,
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
from torch_ref import bert as torch_bert

FLOAT64_LOGITS_TOLERANCE = 1e-10
FLOAT32_LOGITS_TOLERANCE = 1e-4
FLOAT32_LOSS_TOLERANCE = 1e-5

SIZES = dict(vocab_size=97, max_len=24)


def _batch(seed=0, batch_size=4, seq_len=24):
    """A masked-LM batch over random ids, with some padding so the attention mask matters."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(5, SIZES["vocab_size"], size=(batch_size, seq_len))
    attention_mask = np.ones_like(input_ids)
    attention_mask[1, 15:] = 0
    attention_mask[3, 5:] = 0
    input_ids[attention_mask == 0] = 0
    labels = np.where(rng.random(input_ids.shape) < 0.3, input_ids, IGNORE_INDEX)
    labels[attention_mask == 0] = IGNORE_INDEX
    return input_ids, attention_mask, labels


def _twin_models(param_dtype, torch_dtype):
    torch_model = torch_bert.BertForMaskedLM(torch_bert.BertConfig(**SIZES), seed=3)
    torch_model = torch_model.to(torch_dtype)
    flax_model = bert_from_torch_state_dict(
        BertConfig(**SIZES), torch_model.state_dict(), param_dtype=param_dtype
    )
    return flax_model, torch_model


# Jitted: compiling the whole forward once is several times faster than running it eagerly
# the first time, and keeps this file at a few seconds.
@nnx.jit
def _flax_logits(model, input_ids, attention_mask):
    return model(input_ids, attention_mask)


@nnx.jit
def _flax_loss_and_grads(model, input_ids, attention_mask, labels):
    def loss_of(model):
        return masked_lm_loss(model(input_ids, attention_mask), labels)

    return nnx.value_and_grad(loss_of)(model)


def _forward_both(param_dtype, torch_dtype):
    flax_model, torch_model = _twin_models(param_dtype, torch_dtype)
    input_ids, attention_mask, labels = _batch()
    flax_logits = _flax_logits(flax_model, jnp.asarray(input_ids), jnp.asarray(attention_mask))
    flax_loss = masked_lm_loss(flax_logits, jnp.asarray(labels))
    with torch.no_grad():
        torch_logits = torch_model(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
        torch_loss = torch_bert.masked_lm_loss(torch_logits, torch.from_numpy(labels))
    return (np.asarray(flax_logits), float(flax_loss), torch_logits.numpy(), float(torch_loss))


def test_forward_parity_float64():
    with jax.enable_x64(True):
        flax_logits, flax_loss, torch_logits, torch_loss = _forward_both(jnp.float64,
                                                                         torch.float64)
    assert flax_logits.dtype == np.float64
    assert np.max(np.abs(flax_logits - torch_logits)) <= FLOAT64_LOGITS_TOLERANCE
    assert abs(flax_loss - torch_loss) <= FLOAT64_LOGITS_TOLERANCE


def test_forward_parity_float32():
    flax_logits, flax_loss, torch_logits, torch_loss = _forward_both(jnp.float32, torch.float32)
    assert flax_logits.dtype == np.float32
    assert np.max(np.abs(flax_logits - torch_logits)) <= FLOAT32_LOGITS_TOLERANCE
    assert abs(flax_loss - torch_loss) <= FLOAT32_LOSS_TOLERANCE


def test_gradients_agree_float64():
    """Same loss gradients tensor by tensor: what the optimizers will be fed."""
    with jax.enable_x64(True):
        flax_model, torch_model = _twin_models(jnp.float64, torch.float64)
        input_ids, attention_mask, labels = _batch(seed=1)
        flax_loss, flax_grads = _flax_loss_and_grads(
            flax_model, *(jnp.asarray(a) for a in (input_ids, attention_mask, labels))
        )
        flax_grads = nnx_to_torch_state_dict(flax_grads)
    logits = torch_model(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
    torch_loss = torch_bert.masked_lm_loss(logits, torch.from_numpy(labels))
    torch_loss.backward()
    assert abs(float(flax_loss) - torch_loss.item()) <= FLOAT64_LOGITS_TOLERANCE
    for name, parameter in torch_model.named_parameters():
        np.testing.assert_allclose(flax_grads[name], parameter.grad.numpy(), rtol=0, atol=1e-12,
                                   err_msg=name)


def test_padding_is_not_attended_to():
    """Changing the ids under padding leaves the logits of real tokens unchanged."""
    flax_model, _ = _twin_models(jnp.float32, torch.float32)
    input_ids, attention_mask, _ = _batch()
    changed = input_ids.copy()
    changed[attention_mask == 0] = 7
    before = _flax_logits(flax_model, jnp.asarray(input_ids), jnp.asarray(attention_mask))
    after = _flax_logits(flax_model, jnp.asarray(changed), jnp.asarray(attention_mask))
    real = attention_mask.astype(bool)
    np.testing.assert_allclose(np.asarray(before)[real], np.asarray(after)[real], atol=1e-6)


def test_name_map_and_round_trip():
    flax_model, torch_model = _twin_models(jnp.float32, torch.float32)
    names = parameter_name_map(flax_model)
    assert set(names.values()) == set(torch_model.state_dict())
    assert names[("layers", 0, "attention", "query", "kernel")] == "layers.0.attention.query.weight"
    assert names[("embeddings", "LayerNorm", "scale")] == "embeddings.LayerNorm.weight"
    exported = nnx_to_torch_state_dict(flax_model)
    for name, tensor in torch_model.state_dict().items():
        np.testing.assert_array_equal(exported[name], tensor.numpy(), err_msg=name)


def test_decay_mask_matches_deepspeed_no_decay_groups():
    """``optax_bertadam.decay_mask`` on the Flax parameters and DeepSpeed's ``no_decay`` rule
    on the torch names exclude the same tensors from weight decay."""
    import optax_bertadam as ob

    flax_model, torch_model = _twin_models(jnp.float32, torch.float32)
    params = nnx.state(flax_model, nnx.Param)
    flags = jax.tree.leaves(ob.decay_mask(params))
    names = [torch_name_for_path(tuple(name.split("/")))
             for name in ob.parameter_names(params, separator="/")]
    flax_no_decay = {name for name, decayed in zip(names, flags, strict=True) if not decayed}

    no_decay = ["bias", "LayerNorm.bias", "LayerNorm.weight"]
    torch_no_decay = {n for n, _ in torch_model.named_parameters() if any(k in n for k in no_decay)}
    assert flax_no_decay == torch_no_decay
    assert "embeddings.LayerNorm.weight" in torch_no_decay
    assert "layers.0.attention.query.weight" not in torch_no_decay


def test_converter_lists_missing_unexpected_and_misshapen():
    flax_model, torch_model = _twin_models(jnp.float32, torch.float32)
    state_dict = dict(torch_model.state_dict())
    del state_dict["layers.1.attention.value.bias"]
    state_dict["pooler.dense.weight"] = torch.zeros(3)
    state_dict["mlm_head.decoder.weight"] = torch.zeros(5, 64)
    before = nnx_to_torch_state_dict(flax_model)
    with pytest.raises(ValueError) as error:
        torch_state_dict_to_nnx(flax_model, state_dict)
    message = str(error.value)
    assert "missing from state_dict: layers.1.attention.value.bias" in message
    assert "not parameters of the model: pooler.dense.weight" in message
    assert "mlm_head.decoder.weight: got shape (5, 64), expected (97, 64)" in message
    after = nnx_to_torch_state_dict(flax_model)
    assert all(np.array_equal(before[name], after[name]) for name in before)  # untouched


def test_converter_accepts_numpy_arrays():
    flax_model, torch_model = _twin_models(jnp.float32, torch.float32)
    other = torch_bert.BertForMaskedLM(torch_bert.BertConfig(**SIZES), seed=4)
    torch_state_dict_to_nnx(flax_model, {k: v.numpy() for k, v in other.state_dict().items()})
    kernel = flax_model.layers[1].feed_forward.output.kernel[...]
    np.testing.assert_array_equal(
        np.asarray(kernel), other.layers[1].feed_forward.output.weight.detach().numpy().T
    )


def test_config_is_validated():
    with pytest.raises(ValueError, match="hidden_size=10 is invalid"):
        BertConfig(hidden_size=10, num_heads=4)
    with pytest.raises(ValueError, match="num_layers=0 is invalid"):
        BertConfig(num_layers=0)


def test_randomly_initialised_model_runs():
    model = BertForMaskedLM(BertConfig(**SIZES), rngs=nnx.Rngs(0))
    kernel = np.asarray(model.layers[0].attention.query.kernel[...])
    assert 0.015 < kernel.std() < 0.025  # BERT's N(0, 0.02)
    logits = _flax_logits(model, jnp.zeros((2, 24), dtype=jnp.int32), None)
    assert logits.shape == (2, 24, SIZES["vocab_size"])
    with pytest.raises(ValueError, match="max_len=24"):
        _flax_logits(model, jnp.zeros((1, 25), dtype=jnp.int32), None)


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


def test_batches_are_deterministic_and_follow_the_masking_rule():
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
    selected = labels != IGNORE_INDEX
    assert np.all(selected.any(axis=1))  # every example contributes to the loss
    assert np.all(input_ids[:, 0] == tokenizer.cls_id)
    assert np.all((input_ids == tokenizer.pad_id) == (attention_mask == 0))
    assert np.all(labels[selected] >= len(SPECIAL_TOKENS))  # specials are never selected
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
