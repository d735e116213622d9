"""transformers' ``BertForMaskedLM`` in Flax NNX, and moving weights from PyTorch into it."""

from bert_demo.models.bert import BertConfig, BertForMaskedLM, masked_lm_loss
from bert_demo.models.convert import (
    bert_from_transformers,
    load_torch_state_dict,
    parameter_name_map,
    to_torch_state_dict,
    torch_name_for_path,
)

__all__ = [
    "BertConfig",
    "BertForMaskedLM",
    "bert_from_transformers",
    "load_torch_state_dict",
    "masked_lm_loss",
    "parameter_name_map",
    "to_torch_state_dict",
    "torch_name_for_path",
]
