"""decay_mask's rule: a pattern names a whole path component, or one followed by ``_`` or a digit.

A looser rule (substring or prefix match, as ``any(nd in n for nd in no_decay)`` is on dotted
names) would exclude ``biases`` or ``LayerNormalization`` from weight decay without a word.
"""

from __future__ import annotations

import pytest

import optax_bertadam as ob


@pytest.mark.parametrize(
    "component",
    ["bias", "bias_0", "bias1", "LayerNorm", "LayerNorm_0", "LayerNorm12", "layer_norm",
     "layer_norm_2", "ln", "ln_f", "ln_1", "ln2"],
)
def test_a_pattern_alone_or_followed_by_underscore_or_digit_is_excluded(component):
    params = {"block": {component: {"w": 0.0}}, "dense": {"kernel": 0.0}}
    assert ob.decay_mask(params) == {"block": {component: {"w": False}}, "dense": {"kernel": True}}


@pytest.mark.parametrize(
    "component",
    ["biases", "biased", "LayerNormalization", "LayerNorms", "layer_normal", "lnorm",
     "lnx", "kernel", "vulnerable", "in", "Bias", "layernorm", "xbias", "my_bias", "ln-1"],
)
def test_a_pattern_followed_by_a_letter_or_inside_a_name_is_not_excluded(component):
    params = {"block": {component: {"w": 0.0}}}
    assert ob.decay_mask(params) == {"block": {component: {"w": True}}}


def test_the_rule_applies_to_every_component_of_the_path():
    params = {"LayerNormalization_0": {"scale": 0.0, "bias": 0.0}, "biases": [0.0, 0.0],
              "ln_3": [{"lnorm": 0.0}]}
    assert ob.decay_mask(params) == {
        "LayerNormalization_0": {"scale": True, "bias": False}, "biases": [True, True],
        "ln_3": [{"lnorm": False}]}


def test_custom_exclude_follows_the_same_rule():
    params = {"emb": 0.0, "embedding": 0.0, "emb_1": 0.0, "emb2": 0.0}
    assert ob.decay_mask(params, exclude=("emb",)) == {
        "emb": False, "embedding": True, "emb_1": False, "emb2": False}
