"""A PyTorch habit gets a one-line answer saying what to write; a silent footgun gets a warning.

One test per message (issue 20): the message must be one line, name the mistake and the fix.
"""

from __future__ import annotations

import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_bertadam as ob


def _one_line(err: BaseException) -> str:
    message = str(err)
    assert "\n" not in message and len(message) < 300, message
    return message


@pytest.mark.parametrize(
    "call, fix",
    [
        (lambda: ob.bertadam(lr=2e-5), "use learning_rate=2e-05"),
        (lambda: ob.adamw(lr=1e-3), "use learning_rate=0.001"),
        (lambda: ob.adam(lr=1e-3), "use learning_rate=0.001"),
        (lambda: ob.sgd(lr=0.1, momentum=0.9), "use learning_rate=0.1"),
        (lambda: ob.step_lr(lr=0.1, step_size=3), "use learning_rate=0.1"),
        (lambda: ob.get_linear_schedule_with_warmup(lr=0.1, num_warmup_steps=1,
                                                    num_training_steps=5), "use learning_rate=0.1"),
        (lambda: ob.cosine_warmup(lr=0.1, warmup_steps=1, max_steps=5), "use base_lr=0.1"),
        (lambda: ob.one_cycle_lr(lr=0.1, total_steps=5), "use max_lr=0.1"),
        (lambda: ob.bert_schedule("warmup_linear", lr=0.1), "use learning_rate=0.1"),
        (lambda: ob.adamw(1e-3, betas=(0.9, 0.98)), "use b1=0.9, b2=0.98"),
        (lambda: ob.adam(1e-3, betas=(0.8, 0.9)), "use b1=0.8, b2=0.9"),
        (lambda: ob.bertadam(1e-3, eps=1e-8), "use e=1e-08"),
        (lambda: ob.adamw(1e-3, e=1e-8), "use eps=1e-08"),
        (lambda: ob.adamw(1e-3, weight_decay_mask={}), "use mask={}"),
        # bertadam's decay mask is mask= too now (it was weight_decay_mask=).
        (lambda: ob.bertadam(1e-3, weight_decay_mask={}), "use mask={}"),
        (lambda: ob.bertadam(1e-3, num_training_steps=10), "use t_total=10"),
        (lambda: ob.create_optimizer(1e-3, 10, lr=1e-3), "use init_lr=0.001"),
        (lambda: ob.adamw(params={}, learning_rate=1e-3), "pass the parameters to tx.init(params)"),
    ],
)
def test_pytorch_argument_names_get_what_to_write(call, fix):
    with pytest.raises(TypeError) as err:
        call()
    assert fix in _one_line(err.value)


def test_an_unknown_argument_without_a_pytorch_meaning_keeps_pythons_message():
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        ob.adamw(1e-3, colour="red")


def test_the_signature_is_the_factorys():
    import inspect

    import optax

    assert "learning_rate" in inspect.signature(ob.adamw).parameters
    tx = optax.inject_hyperparams(ob.adamw)(learning_rate=1e-3)
    tx.init({"w": jnp.ones(2)})


torch = pytest.importorskip("torch")


def test_torch_parameters_given_to_the_factory():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError) as err:
        ob.adamw(model.parameters(), lr=1e-3)
    assert "tx.init(params)" in _one_line(err.value) and "ob.params_from_torch" in str(err.value)


@pytest.mark.parametrize("kind", ["generator", "torch tensors", "named generator"])
def test_torch_parameters_given_to_init(kind):
    model = torch.nn.Linear(2, 2)
    params = {"generator": lambda: model.parameters(),
              "named generator": lambda: model.named_parameters(),
              "torch tensors": lambda: dict(model.named_parameters())}[kind]()
    for tx in (ob.adamw(1e-3), ob.bertadam(1e-3), ob.sgd(0.1, momentum=0.9)):
        with pytest.raises(TypeError) as err:
            tx.init(params)
        assert "convert with ob.params_from_torch(model.named_parameters())" in _one_line(err.value)


def test_torch_tensors_given_to_decay_mask():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"ob.params_from_torch") as err:
        ob.decay_mask(dict(model.named_parameters()))
    _one_line(err.value)


def test_a_mask_from_the_full_nnx_state_says_to_use_the_param_state():
    nnx = pytest.importorskip("flax.nnx")

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(2, 2, rngs=rngs)
            self.drop = nnx.Dropout(0.1, rngs=rngs)

    model = Model(nnx.Rngs(0))
    tx = ob.adamw(1e-3, weight_decay=0.1, mask=ob.decay_mask(nnx.state(model)))
    with pytest.raises(ValueError) as err:
        nnx.Optimizer(model, tx, wrt=nnx.Param)
    message = _one_line(err.value)
    assert "nnx.state(model, nnx.Param)" in message and "'drop/rngs/count'" in message


def test_a_mask_of_another_tree_names_the_differences():
    tx = ob.adamw(1e-3, mask={"w": True, "v": False})
    with pytest.raises(ValueError) as err:
        tx.init({"w": jnp.ones(1), "u": jnp.ones(1)})
    message = _one_line(err.value)
    assert "lack" in message and "'v'" in message and "'u'" in message


def _required_positional(fn):
    import inspect

    return sum(p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
               for p in inspect.signature(fn).parameters.values())


def test_compare_training_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails as if not installed
    with pytest.raises(ModuleNotFoundError) as err:
        ob.compare_training(*[None] * _required_positional(ob.compare_training))
    assert "pip install optax-bertadam[torch]" in _one_line(err.value)


# ---------------------------------------------------------------------------------------------
# Warnings, raised when built
# ---------------------------------------------------------------------------------------------


def test_warmup_without_t_total_warns_and_keeps_the_constant_rate():
    with pytest.warns(ob.WarmupIgnoredWarning, match="pass t_total=") as record:
        tx = ob.bertadam(1e-3, warmup=0.1)
    assert record[0].filename == __file__  # attributed to the user's line
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    assert float(ob.get_lr(state)) == pytest.approx(1e-3)
    assert issubclass(ob.WarmupIgnoredWarning, ob.OptaxBertAdamWarning)


def test_warmup_linear_past_t_total_warns_once_when_built_and_never_per_step():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tx = ob.bertadam(1e-3, warmup=0.1, t_total=4)
        state = tx.init({"w": jnp.ones(2)})
        step = jax.jit(tx.update)
        for _ in range(6):
            _, state = step({"w": jnp.ones(2)}, state, {"w": jnp.ones(2)})
    assert [w.category for w in caught] == [ob.NegativeLearningRateWarning]
    assert "clamp_lr_at_zero=True" in str(caught[0].message)
    assert float(ob.get_lr(state)) < 0  # the behaviour is upstream's: the warning does not change it


def test_no_warning_where_nothing_is_wrong():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ob.OptaxBertAdamWarning)
        ob.bertadam(1e-3)
        ob.bertadam(1e-3, warmup=0.1, t_total=100, clamp_lr_at_zero=True)
        ob.bertadam(1e-3, warmup=0.1, t_total=100, schedule="warmup_cosine")
        ob.adamw(1e-3)


def test_warnings_can_be_filtered_by_the_package_category():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ob.OptaxBertAdamWarning)
        ob.bertadam(1e-3, warmup=0.1)
        ob.bert_schedule("warmup_linear", 1e-3, t_total=10, warmup=0.1)


def test_float_params_still_work():
    tx = ob.adamw(1e-3)
    tx.init({"w": np.ones(2)})
