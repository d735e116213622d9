"""The PyTorch twin of ``optax_bertadam.models.bert``: a small BERT with a masked-LM head.

Same architecture, same arithmetic, same attribute names (``LayerNorm`` modules, ``bias``
parameters), so that ``state_dict()`` names map one for one onto the Flax parameter paths
and the DeepSpeed ``no_decay = ['bias', 'LayerNorm.bias', 'LayerNorm.weight']`` grouping
selects the same tensors as ``optax_bertadam.decay_mask``. No dropout, no token-type
embedding, no attention key bias. Imports nothing from ``optax_bertadam``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Sizes of the model; the same fields and defaults as the Flax ``BertConfig``."""

    vocab_size: int = 512
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_len: int = 64
    layer_norm_eps: float = 1e-12

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is invalid: expected a multiple of "
                f"num_heads={self.num_heads}"
            )

    @property
    def head_size(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads


class BertEmbeddings(nn.Module):
    """Word plus learned absolute position embeddings, then LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_len, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention, output projection, residual connection and LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_size = config.head_size
        hidden = config.hidden_size
        self.query = nn.Linear(hidden, hidden)
        # No key bias: the softmax cancels it, so its gradient is pure round-off (see the
        # Flax model for why that matters for parity).
        self.key = nn.Linear(hidden, hidden, bias=False)
        self.value = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_size)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        query = self._split_heads(self.query(hidden))
        key = self._split_heads(self.key(hidden))
        value = self._split_heads(self.value(hidden))
        # scores[b, h, i, j]: how much position i attends to position j.
        scores = torch.einsum("bihd,bjhd->bhij", query, key) / math.sqrt(self.head_size)
        if attention_mask is not None:
            # The lowest finite score (not -inf), as on the Flax side.
            keep = attention_mask[:, None, None, :].bool()
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        context = torch.einsum("bhij,bjhd->bihd", weights, value).reshape(hidden.shape)
        return self.LayerNorm(hidden + self.output(context))


class BertFeedForward(nn.Module):
    """Position-wise GELU (exact erf form) feed-forward block, residual and LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(hidden + self.output(F.gelu(self.intermediate(hidden))))


class BertLayer(nn.Module):
    """One post-LayerNorm encoder layer: self-attention block, then feed-forward block."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertSelfAttention(config)
        self.feed_forward = BertFeedForward(config)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.feed_forward(self.attention(hidden, attention_mask))


class BertMaskedLMHead(nn.Module):
    """Dense, GELU, LayerNorm, then an untied decoder with a bias."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.LayerNorm(F.gelu(self.transform(hidden))))


class BertForMaskedLM(nn.Module):
    """Embeddings, ``config.num_layers`` encoder layers and the masked-LM head.

    ``seed`` makes the BERT initialisation (weights ~ N(0, 0.02), biases 0, LayerNorm 1/0)
    reproducible without touching torch's global random state.
    """

    def __init__(self, config: BertConfig, seed: int = 0):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList([BertLayer(config) for _ in range(config.num_layers)])
        self.mlm_head = BertMaskedLMHead(config)
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """Re-draw every parameter with BERT's initializer from a generator seeded by ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif isinstance(module, (nn.Linear, nn.Embedding)):
                # Drawn on the CPU generator, then copied, so that the weights do not
                # depend on the device the model lives on.
                weight = torch.empty(module.weight.shape, dtype=module.weight.dtype)
                weight.normal_(0.0, 0.02, generator=generator)
                module.weight.copy_(weight)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits of shape ``(batch, length, vocab_size)``; mask is 1 for real tokens."""
        if input_ids.shape[-1] > self.config.max_len:
            raise ValueError(
                f"input length {input_ids.shape[-1]} is invalid: expected at most "
                f"max_len={self.config.max_len}"
            )
        hidden = self.embeddings(input_ids)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask)
        return self.mlm_head(hidden)


def masked_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not ``ignore_index``."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=ignore_index
    )
