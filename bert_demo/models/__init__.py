"""Small models used by the demo, the examples and the tests (requires ``flax``)."""

from bert_demo.models.bert import BertConfig, BertForMaskedLM, masked_lm_loss
from bert_demo.models.convert import (
    bert_from_torch_state_dict,
    nnx_to_torch_state_dict,
    parameter_name_map,
    torch_name_for_path,
    torch_state_dict_to_nnx,
)

__all__ = [
    "BertConfig",
    "BertForMaskedLM",
    "bert_from_torch_state_dict",
    "masked_lm_loss",
    "nnx_to_torch_state_dict",
    "parameter_name_map",
    "torch_name_for_path",
    "torch_state_dict_to_nnx",
]
