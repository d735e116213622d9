"""decay_mask's rule: a pattern names a whole path component, or one followed by ``_`` or a digit;
normalisation layers are never decayed, whatever their name (transformers.Trainer's rule).

A looser rule (substring or prefix match, as ``any(nd in n for nd in no_decay)`` is on dotted
names) would exclude ``biases`` or ``LayerNormalization`` from weight decay without a word.
"""

from __future__ import annotations

import jax
import pytest

import optax_bertadam as ob


@pytest.mark.parametrize(
    "component",
    ["bias", "bias_0", "bias1", "LayerNorm", "LayerNorm_0", "LayerNorm12", "layer_norm",
     "layer_norm_2", "ln", "ln_f", "ln_1", "ln2",
     # Normalisation layers not named LayerNorm (transformers.Trainer's rule), BatchNorm too:
     "norm", "norm1", "final_layernorm", "input_layernorm", "layernorm", "LayerNormalization",
     "RMSNorm", "RMSNorm_0", "rms_norm", "attention_norm", "BatchNorm_0", "batch_norm", "bn1",
     "GroupNorm_0"],
)
def test_a_pattern_alone_or_followed_by_underscore_or_digit_is_excluded(component):
    params = {"block": {component: {"w": 0.0}}, "dense": {"kernel": 0.0}}
    assert ob.decay_mask(params) == {"block": {component: {"w": False}}, "dense": {"kernel": True}}


@pytest.mark.parametrize(
    "component",
    ["biases", "biased", "layer_normal", "lnorm", "normal", "normalizer", "enormous",
     "lnx", "kernel", "vulnerable", "in", "Bias", "xbias", "my_bias", "ln-1", "bnx"],
)
def test_a_pattern_followed_by_a_letter_or_inside_a_name_is_not_excluded(component):
    params = {"block": {component: {"w": 0.0}}}
    assert ob.decay_mask(params) == {"block": {component: {"w": True}}}


def test_the_rule_applies_to_every_component_of_the_path():
    params = {"Normalizer_0": {"scale": 0.0, "bias": 0.0}, "biases": [0.0, 0.0],
              "ln_3": [{"lnorm": 0.0}]}
    assert ob.decay_mask(params) == {
        "Normalizer_0": {"scale": True, "bias": False}, "biases": [True, True],
        "ln_3": [{"lnorm": False}]}


def test_custom_exclude_follows_the_same_rule():
    params = {"emb": 0.0, "embedding": 0.0, "emb_1": 0.0, "emb2": 0.0}
    assert ob.decay_mask(params, exclude=("emb",)) == {
        "emb": False, "embedding": True, "emb_1": False, "emb2": False}


def test_custom_exclude_keeps_normalization_layers_out_unless_told():
    params = {"norm": {"scale": 0.0}, "emb": 0.0}
    assert ob.decay_mask(params, exclude=("emb",)) == {"norm": {"scale": False}, "emb": False}
    assert ob.decay_mask(params, exclude=(), normalization=False) == {"norm": {"scale": True}, "emb": True}


def test_agrees_with_transformers_trainer_on_a_llama_style_model():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    trainer = transformers.Trainer.__new__(transformers.Trainer)  # only its naming rule is used
    decayed = set(trainer.get_decay_parameter_names(model))
    names = [n for n, _ in model.named_parameters()]
    tree = {n: 0.0 for n in names}
    # Dotted torch names as one path component each would hide the layers: split them.
    nested = {}
    for n in names:
        node = nested
        *parents, leaf = n.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = 0.0
    mask = ob.decay_mask(nested)
    ours = {n for n in tree if _lookup(mask, n.split("."))}
    assert ours == decayed
    assert any("norm" in n for n in names if n not in decayed)


def _lookup(tree, parts):
    for part in parts:
        tree = tree[part]
    return tree


def test_an_nnx_module_gives_a_param_state_shaped_mask():
    nnx = pytest.importorskip("flax.nnx")

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(2, 2, rngs=rngs)
            self.norm = nnx.LayerNorm(2, rngs=rngs)
            self.bn = nnx.BatchNorm(2, rngs=rngs)
            self.drop = nnx.Dropout(0.1, rngs=rngs)

    model = Model(nnx.Rngs(0))
    mask = ob.decay_mask(model)
    params = nnx.state(model, nnx.Param)
    assert ob.parameter_names(mask) == ob.parameter_names(params)
    assert dict(zip(ob.parameter_names(mask), jax.tree.leaves(mask), strict=True)) == {
        "bn/bias": False, "bn/scale": False, "dense/bias": False, "dense/kernel": True,
        "norm/bias": False, "norm/scale": False}
    optimizer = nnx.Optimizer(model, ob.adamw(1e-3, weight_decay=0.1, mask=mask), wrt=nnx.Param)
    assert optimizer.opt_state is not None
