"""transformers' ``BertForMaskedLM``, written again in Flax NNX, tensor for tensor.

The demo trains ``transformers.BertForMaskedLM`` in PyTorch and this model in JAX from the same
weights (``bert_demo.models.convert``), so every piece follows transformers' arithmetic:

- embeddings: word + token-type + absolute position embeddings, then LayerNorm (epsilon from the
  config, 1e-12 for BERT). The word embedding row ``pad_token_id`` gets no gradient, as with
  ``torch.nn.Embedding(padding_idx=...)``, which transformers uses;
- self-attention with biases on query, key and value (the key bias included, see
  :class:`BertSelfAttention`), scores ``q k^T * head_size**-0.5``, padding keys masked by adding
  the dtype's lowest value, as transformers' eager and SDPA attention do;
- post-LayerNorm residual blocks, GELU in its exact erf form (``hidden_act="gelu"``);
- the masked-LM head: dense, GELU, LayerNorm, then a decoder *tied* to the word embeddings with
  its own bias ``cls.predictions.bias``. ``BertForMaskedLM`` has no pooler (transformers builds
  ``BertModel(config, add_pooling_layer=False)`` for it), so neither has this model.

No dropout: the demo sets ``hidden_dropout_prob = attention_probs_dropout_prob = 0`` on the
PyTorch side, and :meth:`BertConfig.from_transformers` refuses anything else.

Attribute names are transformers' module names (``bert.encoder.layer.0.attention.self.query``),
so a Flax parameter path joined with dots is the torch name up to its last part
(``kernel``/``embedding``/``scale`` -> ``weight``), and the name-based decay masks of both
frameworks (``optax_bertadam.decay_mask`` and DeepSpeed's ``no_decay`` list) pick the same tensors.

Example::

    config = BertConfig(vocab_size=250)
    model = BertForMaskedLM(config, rngs=nnx.Rngs(0))
    logits = model(input_ids, attention_mask, token_type_ids)  # (batch, length, 250)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

# Every matrix product runs at full float32 precision: on GPUs jax would otherwise use
# TF32 for float32 matmuls while torch does not, and the two sides would no longer match.
_FULL_PRECISION = jax.lax.Precision.HIGHEST

# BERT's initializer (only used for a model not loaded from PyTorch): N(0, initializer_range).
_INITIALIZER_RANGE = 0.02
_WEIGHT_INIT = nnx.initializers.normal(stddev=_INITIALIZER_RANGE)


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The sizes of the model; field names and defaults are those of ``transformers.BertConfig``
    where they matter, with the demo's small sizes.

    Example::

        BertConfig(vocab_size=250, hidden_size=64, num_attention_heads=4)
    """

    vocab_size: int = 512
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 128
    max_position_embeddings: int = 64
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: expected a positive integer")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is invalid: expected a multiple of "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if not self.layer_norm_eps > 0:
            raise ValueError(
                f"layer_norm_eps={self.layer_norm_eps!r} is invalid: expected a positive float"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id={self.pad_token_id!r} is invalid: expected a value in "
                             f"[0, vocab_size={self.vocab_size})")

    @property
    def head_size(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_transformers(cls, config: Any) -> BertConfig:
        """The same sizes as a ``transformers.BertConfig``; refuses what this model does not do.

        Returns:
          A :class:`BertConfig`.

        Raises:
          ValueError: ``hidden_act`` other than ``"gelu"`` (erf), dropout probabilities other
            than 0, ``position_embedding_type`` other than ``"absolute"``, or a decoder config.

        Example::

            BertConfig.from_transformers(torch_model.config)
        """
        expected = {"hidden_act": "gelu", "hidden_dropout_prob": 0.0,
                    "attention_probs_dropout_prob": 0.0, "is_decoder": False}
        if hasattr(config, "position_embedding_type"):
            expected["position_embedding_type"] = "absolute"
        for name, allowed in expected.items():
            value = getattr(config, name, allowed)
            if value != allowed:
                raise ValueError(f"config.{name}={value!r} is invalid: expected {allowed!r} "
                                 "(the Flax BERT has exactly this and nothing else)")
        return cls(**{field.name: getattr(config, field.name)
                      for field in dataclasses.fields(cls)})


def _dense(in_features: int, out_features: int, param_dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        in_features, out_features, param_dtype=param_dtype, dtype=param_dtype,
        precision=_FULL_PRECISION, kernel_init=_WEIGHT_INIT, rngs=rngs,
    )


def _layer_norm(config: BertConfig, param_dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # use_fast_variance=False computes mean((x - mean)^2) like torch, instead of
    # mean(x^2) - mean^2, which loses float32 digits (and matters with epsilon 1e-12).
    return nnx.LayerNorm(
        config.hidden_size, epsilon=config.layer_norm_eps, use_fast_variance=False,
        param_dtype=param_dtype, dtype=param_dtype, rngs=rngs,
    )


def _embed(config: BertConfig, rows: int, param_dtype, rngs: nnx.Rngs) -> nnx.Embed:
    return nnx.Embed(rows, config.hidden_size, param_dtype=param_dtype, dtype=param_dtype,
                     embedding_init=_WEIGHT_INIT, rngs=rngs)


def _gelu(x: jax.Array) -> jax.Array:
    """transformers' ``"gelu"``: x * Phi(x) in the erf form (not the tanh approximation)."""
    return jax.nn.gelu(x, approximate=False)


class BertEmbeddings(nnx.Module):
    """Word + token-type + position embeddings, then LayerNorm."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.pad_token_id = config.pad_token_id
        self.word_embeddings = _embed(config, config.vocab_size, param_dtype, rngs)
        self.position_embeddings = _embed(config, config.max_position_embeddings, param_dtype,
                                          rngs)
        self.token_type_embeddings = _embed(config, config.type_vocab_size, param_dtype, rngs)
        self.LayerNorm = _layer_norm(config, param_dtype, rngs)

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        words = self.word_embeddings(input_ids)
        # torch.nn.Embedding(padding_idx=pad) never updates the padding row: its gradient is
        # zero. Without this the row would train on every padded position in JAX only.
        is_pad = (input_ids == self.pad_token_id)[..., None]
        words = jnp.where(is_pad, jax.lax.stop_gradient(words), words)
        # transformers' order of additions: (words + token types) + positions.
        embeddings = words + self.token_type_embeddings(token_type_ids)
        positions = jnp.arange(input_ids.shape[-1])
        embeddings = embeddings + self.position_embeddings(positions)
        return self.LayerNorm(embeddings)


class BertSelfAttention(nnx.Module):
    """Multi-head scaled dot-product attention with query, key and value biases.

    The key bias adds ``q_i . b_k`` to every score of row ``i``, which the softmax cancels: the
    output does not depend on it, and its exact gradient is zero. What each framework computes
    for it is round-off, different on each side; Adam divides it by ``sqrt(v) + e`` and turns it
    into steps of the same order as real ones when it is larger than ``e``. The tensor is kept,
    as in BERT, and the demo shows how far it drifts (see README, "The main job").
    """

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        hidden = config.hidden_size
        self.query = _dense(hidden, hidden, param_dtype, rngs)
        self.key = _dense(hidden, hidden, param_dtype, rngs)
        self.value = _dense(hidden, hidden, param_dtype, rngs)

    def _split_heads(self, x: jax.Array) -> jax.Array:
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.num_heads, self.head_size)

    def __call__(self, hidden: jax.Array, additive_mask: jax.Array | None) -> jax.Array:
        query = self._split_heads(self.query(hidden))
        key = self._split_heads(self.key(hidden))
        value = self._split_heads(self.value(hidden))
        # scores[b, h, i, j]: how much position i attends to position j; transformers multiplies
        # by head_size**-0.5 (a Python float) rather than dividing by its square root.
        scores = jnp.einsum("bihd,bjhd->bhij", query, key, precision=_FULL_PRECISION)
        scores = scores * jnp.asarray(self.head_size ** -0.5, dtype=scores.dtype)
        if additive_mask is not None:
            scores = scores + additive_mask
        weights = jax.nn.softmax(scores, axis=-1)
        context = jnp.einsum("bhij,bjhd->bihd", weights, value, precision=_FULL_PRECISION)
        return context.reshape(hidden.shape)


class BertSelfOutput(nnx.Module):
    """Output projection of the attention, residual connection, LayerNorm."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.dense = _dense(config.hidden_size, config.hidden_size, param_dtype, rngs)
        self.LayerNorm = _layer_norm(config, param_dtype, rngs)

    def __call__(self, context: jax.Array, residual: jax.Array) -> jax.Array:
        return self.LayerNorm(self.dense(context) + residual)


class BertAttention(nnx.Module):
    """``self`` (the attention proper) and ``output``, named as in transformers."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.self = BertSelfAttention(config, param_dtype=param_dtype, rngs=rngs)
        self.output = BertSelfOutput(config, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, hidden: jax.Array, additive_mask: jax.Array | None) -> jax.Array:
        return self.output(self.self(hidden, additive_mask), hidden)


class BertIntermediate(nnx.Module):
    """The first feed-forward projection and GELU."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.dense = _dense(config.hidden_size, config.intermediate_size, param_dtype, rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return _gelu(self.dense(hidden))


class BertOutput(nnx.Module):
    """The second feed-forward projection, residual connection, LayerNorm."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.dense = _dense(config.intermediate_size, config.hidden_size, param_dtype, rngs)
        self.LayerNorm = _layer_norm(config, param_dtype, rngs)

    def __call__(self, intermediate: jax.Array, residual: jax.Array) -> jax.Array:
        return self.LayerNorm(self.dense(intermediate) + residual)


class BertLayer(nnx.Module):
    """One post-LayerNorm encoder layer."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.attention = BertAttention(config, param_dtype=param_dtype, rngs=rngs)
        self.intermediate = BertIntermediate(config, param_dtype=param_dtype, rngs=rngs)
        self.output = BertOutput(config, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, hidden: jax.Array, additive_mask: jax.Array | None) -> jax.Array:
        attended = self.attention(hidden, additive_mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nnx.Module):
    """``config.num_hidden_layers`` layers, in ``layer`` (transformers' name)."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.layer = nnx.List([BertLayer(config, param_dtype=param_dtype, rngs=rngs)
                               for _ in range(config.num_hidden_layers)])

    def __call__(self, hidden: jax.Array, additive_mask: jax.Array | None) -> jax.Array:
        for layer in self.layer:
            hidden = layer(hidden, additive_mask)
        return hidden


class BertModel(nnx.Module):
    """Embeddings and encoder, without the pooler (``add_pooling_layer=False``)."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.embeddings = BertEmbeddings(config, param_dtype=param_dtype, rngs=rngs)
        self.encoder = BertEncoder(config, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, input_ids, attention_mask, token_type_ids) -> jax.Array:
        hidden = self.embeddings(input_ids, token_type_ids)
        additive_mask = None
        if attention_mask is not None:
            # transformers' extended mask: 0 where attended, the dtype's lowest value where not,
            # added to the scores (a fully padded row keeps a defined softmax).
            keep = attention_mask[:, None, None, :].astype(bool)
            additive_mask = jnp.where(keep, 0.0, jnp.finfo(hidden.dtype).min).astype(hidden.dtype)
        return self.encoder(hidden, additive_mask)


class BertPredictionHeadTransform(nnx.Module):
    """Dense, GELU, LayerNorm."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.dense = _dense(config.hidden_size, config.hidden_size, param_dtype, rngs)
        self.LayerNorm = _layer_norm(config, param_dtype, rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.LayerNorm(_gelu(self.dense(hidden)))


class BertLMPredictionHead(nnx.Module):
    """The transform, then the decoder: the word embeddings (tied, passed in) and ``bias``."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.transform = BertPredictionHeadTransform(config, param_dtype=param_dtype, rngs=rngs)
        self.bias = nnx.Param(jnp.zeros((config.vocab_size,), dtype=param_dtype))

    def __call__(self, hidden: jax.Array, word_embeddings: jax.Array) -> jax.Array:
        hidden = self.transform(hidden)
        logits = jnp.einsum("blh,vh->blv", hidden, word_embeddings, precision=_FULL_PRECISION)
        return logits + self.bias[...]


class BertOnlyMLMHead(nnx.Module):
    """``predictions``, named as in transformers."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.predictions = BertLMPredictionHead(config, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, hidden: jax.Array, word_embeddings: jax.Array) -> jax.Array:
        return self.predictions(hidden, word_embeddings)


class BertForMaskedLM(nnx.Module):
    """``bert`` (embeddings, encoder) and ``cls`` (the masked-LM head, tied to the embeddings).

    ``param_dtype`` sets the dtype of every parameter and of the computation; pass
    ``jnp.float64`` inside ``with jax.enable_x64(True):`` for a double-precision model.

    Example::

        model = BertForMaskedLM(BertConfig(vocab_size=250), rngs=nnx.Rngs(0))
        logits = model(input_ids, attention_mask, token_type_ids)
    """

    # torch names of transformers' state_dict that are other parameters under another name:
    # the decoder is the word embedding matrix, its bias is ``cls.predictions.bias``.
    TIED_WEIGHTS = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.bert = BertModel(config, param_dtype=param_dtype, rngs=rngs)
        self.cls = BertOnlyMLMHead(config, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 token_type_ids: jax.Array | None = None) -> jax.Array:
        """Logits of shape ``(batch, length, vocab_size)``.

        ``attention_mask`` (optional, ``(batch, length)``) is 1 for real tokens and 0 for
        padding; ``token_type_ids`` (optional) default to segment 0, as in transformers.
        """
        if input_ids.shape[-1] > self.config.max_position_embeddings:
            raise ValueError(
                f"input length {input_ids.shape[-1]} is invalid: expected at most "
                f"max_position_embeddings={self.config.max_position_embeddings}"
            )
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        return self.cls(hidden, self.bert.embeddings.word_embeddings.embedding[...])


def masked_lm_loss(logits: jax.Array, labels: jax.Array, ignore_index: int = -100) -> jax.Array:
    """Mean cross-entropy over the positions whose label is not ``ignore_index``.

    Matches ``torch.nn.CrossEntropyLoss()`` (what ``BertForMaskedLM`` computes from ``labels``):
    mean over labelled positions; like torch, a batch with no labelled position gives NaN.

    Returns:
      A scalar of ``logits``' dtype.

    Example::

        loss = masked_lm_loss(model(ids, mask, types), labels)
    """
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    labelled = labels != ignore_index
    # Ignored positions carry label -100, which is not an index: read class 0 there instead
    # and drop it with the mask below.
    safe_labels = jnp.where(labelled, labels, 0)
    picked = jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
    total = -jnp.sum(jnp.where(labelled, picked, 0))
    return total / jnp.sum(labelled).astype(total.dtype)
