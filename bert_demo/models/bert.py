"""A small BERT encoder with a masked-LM head, written in Flax NNX.

The model exists so that the demo and the tests can train the same network with the optax
port and with the PyTorch reference (``torch_ref.bert``) and compare them tensor by tensor.
It therefore follows original BERT closely where it matters for the arithmetic (post-LayerNorm
residual blocks, exact erf GELU, LayerNorm epsilon 1e-12) and leaves out whatever would make the
two sides differ without teaching anything: there is no dropout, no token-type embedding and no
attention key bias (see ``BertSelfAttention``).

Attribute names mirror ``torch_ref.bert`` one for one (see ``bert_demo.models.convert``):
LayerNorm modules are called ``LayerNorm`` and biases ``bias``, so the name-based decay masks
of both frameworks (``optax_bertadam.decay_mask`` and the DeepSpeed ``no_decay`` list) pick
the same tensors. No attribute name contains ``ln`` by accident, for the same reason.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

# Every matrix product runs at full float32 precision: on GPUs jax would otherwise use
# TF32 for float32 matmuls while torch does not, and the two sides would no longer match.
_FULL_PRECISION = jax.lax.Precision.HIGHEST

# BERT's initializer: weights ~ N(0, 0.02), biases 0, LayerNorm scale 1 and bias 0.
_BERT_WEIGHT_INIT = nnx.initializers.normal(stddev=0.02)


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Sizes of the small BERT used by the demo and the tests.

    The defaults give a model of about 130k parameters (for a 512-word vocabulary), small
    enough to train a few hundred steps on two CPU cores in well under a minute.
    """

    vocab_size: int = 512
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_len: int = 64
    layer_norm_eps: float = 1e-12

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                     "intermediate_size", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: expected a positive integer")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is invalid: expected a multiple of "
                f"num_heads={self.num_heads}"
            )
        if not self.layer_norm_eps > 0:
            raise ValueError(
                f"layer_norm_eps={self.layer_norm_eps!r} is invalid: expected a positive float"
            )

    @property
    def head_size(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads


def _dense(
    in_features: int, out_features: int, param_dtype, rngs: nnx.Rngs, use_bias: bool = True
) -> nnx.Linear:
    return nnx.Linear(
        in_features, out_features, use_bias=use_bias, param_dtype=param_dtype,
        dtype=param_dtype, precision=_FULL_PRECISION, kernel_init=_BERT_WEIGHT_INIT, rngs=rngs,
    )


def _layer_norm(config: BertConfig, param_dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # use_fast_variance=False computes mean((x - mean)^2) like torch, instead of
    # mean(x^2) - mean^2, which loses float32 digits (and matters with epsilon 1e-12).
    return nnx.LayerNorm(
        config.hidden_size, epsilon=config.layer_norm_eps, use_fast_variance=False,
        param_dtype=param_dtype, dtype=param_dtype, rngs=rngs,
    )


def _gelu(x: jax.Array) -> jax.Array:
    """BERT's exact GELU, x * Phi(x) with the erf form (not the tanh approximation)."""
    return jax.nn.gelu(x, approximate=False)


class BertEmbeddings(nnx.Module):
    """Word plus learned absolute position embeddings, then LayerNorm."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.word_embeddings = nnx.Embed(
            config.vocab_size, config.hidden_size, param_dtype=param_dtype, dtype=param_dtype,
            embedding_init=_BERT_WEIGHT_INIT, rngs=rngs,
        )
        self.position_embeddings = nnx.Embed(
            config.max_len, config.hidden_size, param_dtype=param_dtype, dtype=param_dtype,
            embedding_init=_BERT_WEIGHT_INIT, rngs=rngs,
        )
        self.LayerNorm = _layer_norm(config, param_dtype, rngs)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        positions = jnp.arange(input_ids.shape[-1])
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class BertSelfAttention(nnx.Module):
    """Multi-head self-attention, output projection, residual connection and LayerNorm."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.num_heads = config.num_heads
        self.head_size = config.head_size
        hidden = config.hidden_size
        self.query = _dense(hidden, hidden, param_dtype, rngs)
        # No key bias (original BERT has one): it adds query . bias to every score of a row,
        # which the softmax cancels, so its gradient is zero up to round-off. Adam normalises
        # that noise into real steps, and the tensor would drift apart between two
        # frameworks without ever changing the output, which is meaningless for parity.
        self.key = _dense(hidden, hidden, param_dtype, rngs, use_bias=False)
        self.value = _dense(hidden, hidden, param_dtype, rngs)
        self.output = _dense(hidden, hidden, param_dtype, rngs)
        self.LayerNorm = _layer_norm(config, param_dtype, rngs)

    def _split_heads(self, x: jax.Array) -> jax.Array:
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.num_heads, self.head_size)

    def __call__(self, hidden: jax.Array, attention_mask: jax.Array | None) -> jax.Array:
        query = self._split_heads(self.query(hidden))
        key = self._split_heads(self.key(hidden))
        value = self._split_heads(self.value(hidden))
        # scores[b, h, i, j]: how much position i attends to position j.
        scores = jnp.einsum("bihd,bjhd->bhij", query, key, precision=_FULL_PRECISION)
        scores = scores / jnp.asarray(math.sqrt(self.head_size), dtype=scores.dtype)
        if attention_mask is not None:
            # Padding keys get the lowest finite score (not -inf) so that a fully padded
            # row still has a defined softmax; torch_ref.bert uses the same value.
            keep = attention_mask[:, None, None, :].astype(bool)
            scores = jnp.where(keep, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1)
        context = jnp.einsum("bhij,bjhd->bihd", weights, value, precision=_FULL_PRECISION)
        context = context.reshape(hidden.shape)
        return self.LayerNorm(hidden + self.output(context))


class BertFeedForward(nnx.Module):
    """Position-wise GELU feed-forward block, residual connection and LayerNorm."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.intermediate = _dense(config.hidden_size, config.intermediate_size, param_dtype, rngs)
        self.output = _dense(config.intermediate_size, config.hidden_size, param_dtype, rngs)
        self.LayerNorm = _layer_norm(config, param_dtype, rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.LayerNorm(hidden + self.output(_gelu(self.intermediate(hidden))))


class BertLayer(nnx.Module):
    """One post-LayerNorm encoder layer: self-attention block, then feed-forward block."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.attention = BertSelfAttention(config, param_dtype=param_dtype, rngs=rngs)
        self.feed_forward = BertFeedForward(config, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, hidden: jax.Array, attention_mask: jax.Array | None) -> jax.Array:
        return self.feed_forward(self.attention(hidden, attention_mask))


class BertMaskedLMHead(nnx.Module):
    """BERT's prediction head: dense, GELU, LayerNorm, then an untied decoder with a bias."""

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.transform = _dense(config.hidden_size, config.hidden_size, param_dtype, rngs)
        self.LayerNorm = _layer_norm(config, param_dtype, rngs)
        self.decoder = _dense(config.hidden_size, config.vocab_size, param_dtype, rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.decoder(self.LayerNorm(_gelu(self.transform(hidden))))


class BertForMaskedLM(nnx.Module):
    """Embeddings, ``config.num_layers`` encoder layers and the masked-LM head.

    ``param_dtype`` sets the dtype of every parameter and of the computation; pass
    ``jnp.float64`` inside ``with jax.enable_x64(True):`` for a double-precision model.
    """

    def __init__(self, config: BertConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = BertEmbeddings(config, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List(
            [BertLayer(config, param_dtype=param_dtype, rngs=rngs)
             for _ in range(config.num_layers)]
        )
        self.mlm_head = BertMaskedLMHead(config, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """Logits of shape ``(batch, length, vocab_size)``.

        ``attention_mask`` (optional, shape ``(batch, length)``) is 1 for real tokens and 0
        for padding; padded positions are never attended to.
        """
        if input_ids.shape[-1] > self.config.max_len:
            raise ValueError(
                f"input length {input_ids.shape[-1]} is invalid: expected at most "
                f"max_len={self.config.max_len}"
            )
        hidden = self.embeddings(input_ids)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask)
        return self.mlm_head(hidden)


def masked_lm_loss(logits: jax.Array, labels: jax.Array, ignore_index: int = -100) -> jax.Array:
    """Mean cross-entropy over the positions whose label is not ``ignore_index``.

    Matches ``torch.nn.functional.cross_entropy(..., ignore_index=-100)`` with the default
    mean reduction. (Like torch, a batch with no labelled position gives NaN.)
    """
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    labelled = labels != ignore_index
    # Ignored positions carry label -100, which is not an index: read class 0 there instead
    # and drop it with the mask below.
    safe_labels = jnp.where(labelled, labels, 0)
    picked = jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
    total = -jnp.sum(jnp.where(labelled, picked, 0))
    return total / jnp.sum(labelled).astype(total.dtype)
