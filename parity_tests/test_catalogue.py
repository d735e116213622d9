"""The catalogue of PyTorch-side classes (:mod:`optax_bertadam.catalogue`), record by record.

Every optimizer record has a live object here, built with two parameter groups whose every
hyperparameter differs from the class's defaults and from the other group; its reader must give
each group its own values (a reader that takes ``optimizer.defaults`` or the first group's value
fails). Every scheduler record recognises a live object of its class, and nothing else. A new
record without a live builder here fails ``test_every_record_has_a_live_object``.
"""

from __future__ import annotations

import importlib
import inspect
import types

import pytest
import torch
import transformers
from deepspeed.runtime import lr_schedules as ds_lr
from pytorch_pretrained_bert.optimization import BertAdam as PublishedBertAdam
from torch.optim import lr_scheduler

from optax_bertadam import algorithms, catalogue
from optax_bertadam import deepspeed as ds_engine
from parity_tests.timm_lamb import Lamb as TimmLamb
from torch_ref import BertAdam as DeepSpeedBertAdam


def two_groups(first, second):
    model = torch.nn.Linear(3, 2)
    return [{"params": [model.weight], **first}, {"params": [model.bias], **second}]


class _StubOp:
    """A DeepSpeed op builder whose ``load()`` compiles nothing: the readers never run the
    kernel (``test_deepspeed_compiled.py`` runs the real ones through the engine)."""

    def load(self):
        return types.SimpleNamespace(multi_tensor_adam=None, create_adam=lambda *args: None,
                                     destroy_adam=lambda *args: None)


DEEPSPEED_CLASSES = {  # record name -> (module, op builder attribute, class)
    "deepspeed.ops.adam.FusedAdam": ("deepspeed.ops.adam.fused_adam", "FusedAdamBuilder", "FusedAdam"),
    "deepspeed.ops.adam.DeepSpeedCPUAdam": ("deepspeed.ops.adam.cpu_adam", "CPUAdamBuilder",
                                            "DeepSpeedCPUAdam"),
    "deepspeed.ops.lamb.FusedLamb": ("deepspeed.ops.lamb.fused_lamb", "FusedLambBuilder", "FusedLamb"),
}


def deepspeed_class(name):
    module, builder, cls = DEEPSPEED_CLASSES[name]
    module = importlib.import_module(module)

    def build(*args, **kwargs):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(module, builder, _StubOp)
            return getattr(module, cls)(*args, **kwargs)

    build.cls = getattr(module, cls)
    return build


# record name -> a live optimizer over two groups with values that differ from the defaults and
# from each other (the reader must read each group's own).
LIVE_OPTIMIZERS = {
    "torch.optim.AdamW": lambda: torch.optim.AdamW(two_groups(
        dict(lr=0.01, betas=(0.8, 0.95), eps=1e-5, weight_decay=0.03),
        dict(lr=0.02, betas=(0.7, 0.9), eps=1e-4, weight_decay=0.0))),
    "torch.optim.Adam": lambda: torch.optim.Adam(two_groups(
        dict(lr=0.01, betas=(0.8, 0.95), eps=1e-5, weight_decay=0.03, amsgrad=True),
        dict(lr=0.02, betas=(0.7, 0.9), eps=1e-4, weight_decay=0.0, amsgrad=False))),
    "torch.optim.SGD": lambda: torch.optim.SGD(two_groups(
        dict(lr=0.01, momentum=0.8, dampening=0.1, weight_decay=0.03),
        dict(lr=0.02, momentum=0.5, dampening=0.0, weight_decay=0.0, nesterov=False)), lr=0.1),
    "torch.optim.Adagrad": lambda: torch.optim.Adagrad(two_groups(
        dict(lr=0.01, lr_decay=0.01, eps=1e-9, weight_decay=0.03),
        dict(lr=0.02, lr_decay=0.02, eps=1e-8, weight_decay=0.0)), initial_accumulator_value=0.1),
    "torch.optim.RMSprop": lambda: torch.optim.RMSprop(two_groups(
        dict(lr=0.01, alpha=0.9, eps=1e-7, weight_decay=0.03, momentum=0.8, centered=True),
        dict(lr=0.02, alpha=0.8, eps=1e-6, weight_decay=0.0, momentum=0.5, centered=False))),
    "transformers.Adafactor": lambda: transformers.Adafactor(two_groups(
        dict(lr=0.01, clip_threshold=0.5, decay_rate=-0.7, beta1=0.9, weight_decay=0.03),
        dict(lr=0.02, clip_threshold=2.0, decay_rate=-0.6, beta1=0.8, weight_decay=0.0)),
        relative_step=False, scale_parameter=False),
    "BertAdam of DeepSpeedExamples (bing_bert optimization.py)": lambda: DeepSpeedBertAdam(two_groups(
        dict(lr=0.01, b1=0.8, b2=0.95, e=1e-5, weight_decay=0.03, max_grad_norm=0.5),
        dict(lr=0.02, b1=0.7, b2=0.9, e=1e-4, weight_decay=0.0, max_grad_norm=2.0)),
        lr=0.1, warmup=0.1, t_total=100),
    "pytorch_pretrained_bert.BertAdam": lambda: PublishedBertAdam(two_groups(
        dict(lr=0.01, b1=0.8, b2=0.95, e=1e-5, weight_decay=0.03, max_grad_norm=0.5),
        dict(lr=0.02, b1=0.7, b2=0.9, e=1e-4, weight_decay=0.0, max_grad_norm=2.0)), lr=0.1),
    "timm.optim.Lamb (apex FusedLAMB)": lambda: TimmLamb(two_groups(
        dict(lr=0.01, betas=(0.8, 0.95), eps=1e-5, weight_decay=0.03, grad_averaging=False),
        dict(lr=0.02, betas=(0.7, 0.9), eps=1e-4, weight_decay=0.0, trust_clip=True))),
    "deepspeed.ops.adam.FusedAdam": lambda: deepspeed_class("deepspeed.ops.adam.FusedAdam")(two_groups(
        dict(lr=0.01, betas=(0.8, 0.95), eps=1e-5, weight_decay=0.03, bias_correction=False),
        dict(lr=0.02, betas=(0.7, 0.9), eps=1e-4, weight_decay=0.0)), adam_w_mode=False),
    "deepspeed.ops.adam.DeepSpeedCPUAdam": lambda: deepspeed_class(
        "deepspeed.ops.adam.DeepSpeedCPUAdam")(two_groups(
            dict(lr=0.01, betas=(0.8, 0.95), eps=1e-5, weight_decay=0.03),
            dict(lr=0.02, betas=(0.7, 0.9), eps=1e-4, weight_decay=0.0, bias_correction=False))),
    "deepspeed.ops.lamb.FusedLamb": lambda: deepspeed_class("deepspeed.ops.lamb.FusedLamb")(two_groups(
        dict(lr=0.01, betas=(0.8, 0.95), eps=1e-5, weight_decay=0.03, max_coeff=0.3),
        dict(lr=0.02, betas=(0.7, 0.9), eps=1e-4, weight_decay=0.0, bias_correction=False,
             min_coeff=0.1)), eps_inside_sqrt=True),
}

# The argument names of factories outside the algorithm registry.
TORCH_ARGUMENTS = {
    ds_engine.fused_adam: {"b1": "betas[0]", "b2": "betas[1]", "eps": "eps",
                           "weight_decay": "weight_decay", "bias_correction": "bias_correction"},
}


def test_every_record_has_a_live_object():
    assert sorted(LIVE_OPTIMIZERS) == sorted(record.name for record in catalogue.OPTIMIZERS)


def _torch_value(group, torch_name):
    if torch_name.endswith("]"):  # "betas[0]"
        key, index = torch_name[:-1].split("[")
        return group[key][int(index)] if key in group else None
    return group.get(torch_name)


@pytest.mark.parametrize("name", sorted(LIVE_OPTIMIZERS))
def test_each_group_is_read_with_its_own_values(name):
    optimizer = LIVE_OPTIMIZERS[name]()
    record = catalogue.optimizer_record(optimizer)
    assert record.name == name
    read = [record.read_group(optimizer, group, i) for i, group in enumerate(optimizer.param_groups)]
    entry = next((e.torch_arguments for e in algorithms.ALGORITHMS if e.factory is read[0].factory),
                 None) or TORCH_ARGUMENTS[read[0].factory]
    compared = 0
    for group, got in zip(optimizer.param_groups, read, strict=True):
        assert got.factory in record.factories
        for argument, value in got.kwargs.items():
            torch_name = entry.get(argument)
            # Not a group key (correct_bias), or done across the groups (timm's max_grad_norm).
            if torch_name is None or _torch_value(group, torch_name) is None or value is None:
                continue
            if argument == "initial_accumulator_value":  # torch reads the constructor's only
                continue
            want = _torch_value(group, torch_name)
            assert value == (tuple(want) if isinstance(want, list) else want), (name, argument)
            compared += 1
    # The two groups differ in what was compared: a reader of the first group (or of the
    # defaults) for both would fail above.
    assert read[0].kwargs != read[1].kwargs
    assert compared >= 4, compared


LIVE_SCHEDULERS = {
    "StepLR": lambda o: lr_scheduler.StepLR(o, 3),
    "MultiStepLR": lambda o: lr_scheduler.MultiStepLR(o, [2, 5]),
    "ConstantLR": lambda o: lr_scheduler.ConstantLR(o),
    "LinearLR": lambda o: lr_scheduler.LinearLR(o),
    "ExponentialLR": lambda o: lr_scheduler.ExponentialLR(o, 0.9),
    "PolynomialLR": lambda o: lr_scheduler.PolynomialLR(o),
    "ChainedScheduler": lambda o: lr_scheduler.ChainedScheduler([lr_scheduler.StepLR(o, 3)]),
    "MultiplicativeLR": lambda o: lr_scheduler.MultiplicativeLR(o, lambda k: 0.9),
    "LambdaLR": lambda o: transformers.get_linear_schedule_with_warmup(o, 2, 10),
    "CosineAnnealingLR": lambda o: lr_scheduler.CosineAnnealingLR(o, 10),
    "CosineAnnealingWarmRestarts": lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 3),
    "CyclicLR": lambda o: lr_scheduler.CyclicLR(o, 0.001, 0.1),
    "OneCycleLR": lambda o: lr_scheduler.OneCycleLR(o, 0.1, total_steps=10),
    "SequentialLR": lambda o: lr_scheduler.SequentialLR(
        o, [lr_scheduler.ConstantLR(o), lr_scheduler.ExponentialLR(o, 0.9)], [3]),
    "SWALR": lambda o: torch.optim.swa_utils.SWALR(o, swa_lr=0.01),
    "ReduceLROnPlateau": lambda o: lr_scheduler.ReduceLROnPlateau(o),
    "AdafactorSchedule": lambda o: transformers.optimization.AdafactorSchedule(o),
    "GreedyLR": lambda o: transformers.optimization.GreedyLR(o),
    "WarmupLR": lambda o: ds_lr.WarmupLR(o, warmup_num_steps=5),
    "WarmupDecayLR": lambda o: ds_lr.WarmupDecayLR(o, total_num_steps=20, warmup_num_steps=5),
    "WarmupCosineLR": lambda o: ds_lr.WarmupCosineLR(o, total_num_steps=20, warmup_num_steps=5),
    "OneCycle": lambda o: ds_lr.OneCycle(o, 0.01, 0.1, cycle_first_step_size=5),
    "LRRangeTest": lambda o: ds_lr.LRRangeTest(o),
}


def test_every_scheduler_record_recognises_its_class_and_no_other():
    assert sorted(LIVE_SCHEDULERS) == sorted(r.short_name for r in catalogue.SCHEDULERS)
    for short_name, make in LIVE_SCHEDULERS.items():
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if short_name == "AdafactorSchedule":
            optimizer = transformers.Adafactor(model.parameters(), lr=None)
        scheduler = make(optimizer)
        matching = [r.name for r in catalogue.SCHEDULERS if r.recognises(scheduler)]
        assert [r.rsplit(".", 1)[-1] for r in matching] == [short_name]
        record = catalogue.scheduler_record(scheduler)
        assert record.loss_driven == catalogue.is_loss_driven(scheduler)
        assert record.loss_driven == (short_name in ("ReduceLROnPlateau", "GreedyLR"))


def test_every_trainer_optim_is_a_transformers_name_and_a_catalogued_class():
    known = {name.value for name in transformers.training_args.OptimizerNames}
    for record in catalogue.TRAINER_OPTIMS:
        assert record.name in known
        catalogue.optimizer_record_by_name(record.optimizer)


def test_deepspeed_classes_keep_their_attributes_off_the_groups():
    adam = LIVE_OPTIMIZERS["deepspeed.ops.adam.FusedAdam"]()
    read = catalogue.optimizer_record(adam).read_group(adam, adam.param_groups[0], 0)
    assert read.kwargs["adam_w_mode"] is False and read.factory is ds_engine.fused_adam
    lamb = LIVE_OPTIMIZERS["deepspeed.ops.lamb.FusedLamb"]()
    assert catalogue.optimizer_record(lamb).read_group(lamb, lamb.param_groups[0], 0).kwargs[
        "eps_inside_sqrt"] is True


@pytest.mark.parametrize("record", [r for r in catalogue.OPTIMIZERS if r.construct], ids=lambda r: r.name)
def test_each_constructor_takes_the_arguments_and_defaults_of_its_class(record):
    module, _, name = record.name.rpartition(".")
    cls = deepspeed_class(record.name).cls if record.name in DEEPSPEED_CLASSES else getattr(
        importlib.import_module(module), name)
    signature = inspect.signature(cls.__init__).parameters
    defaults = {k: p.default for k, p in signature.items() if k not in ("self", "params", "model_params")}
    assert dict(record.construct.defaults) == defaults


# (optimizer.type, params, offload, the class the engine builds).
CONFIGURED = [
    ("Adam", dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.03, bias_correction=False), False,
     "deepspeed.ops.adam.FusedAdam"),
    ("adam", dict(lr=0.01, adam_w_mode=False, eps=1e-5, weight_decay=0.03), True,
     "deepspeed.ops.adam.DeepSpeedCPUAdam"),
    ("AdamW", dict(lr=0.01, adam_w_mode=False, torch_adam=True, amsgrad=True), False,
     "torch.optim.AdamW"),
    ("Adam", dict(lr=0.01, adam_w_mode=False, torch_adam=True, weight_decay=0.03), True,
     "torch.optim.Adam"),
    ("LAMB", dict(lr=0.01, max_coeff=0.3, min_coeff=0.02, eps_inside_sqrt=True), True,
     "deepspeed.ops.lamb.FusedLamb"),
    ("SGD", dict(lr=0.01, momentum=0.9, dampening=0.1, nesterov=False), True, "torch.optim.SGD"),
]


@pytest.mark.parametrize("kind, params, offload, built", CONFIGURED)
def test_a_config_type_is_read_as_the_live_class_the_engine_builds(kind, params, offload, built):
    """One path: the configured group and a live object of the class, built with the keyword
    arguments the engine passes, read the same."""
    record, configured = catalogue.deepspeed_optimizer_type(kind).configure(params, offload)
    name, kwargs = catalogue.deepspeed_optimizer_type(kind).builds(dict(params), offload)
    assert record.name == name == built
    if built in DEEPSPEED_CLASSES:
        live = deepspeed_class(built)(torch.nn.Linear(2, 1).parameters(), **kwargs)
    else:
        module, _, cls = built.rpartition(".")
        live = getattr(importlib.import_module(module), cls)(torch.nn.Linear(2, 1).parameters(),
                                                             **kwargs)
    assert record.recognises(live)
    ours = record.read_group(configured, configured.param_groups[0], 0)
    theirs = record.read_group(live, live.param_groups[0], 0)
    assert (ours.factory, dict(ours.kwargs)) == (theirs.factory, dict(theirs.kwargs))


@pytest.mark.parametrize("kind, params, match", [
    ("Adam", dict(amsgrad=True), "optimizer.params.amsgrad=True is invalid: FusedAdam"),
    ("Adam", dict(torch_adam=True, bias_correction=False),
     "optimizer.params.bias_correction=False is invalid: torch.optim.AdamW takes"),
    ("Lamb", dict(momentum=0.9), "optimizer.params.momentum=0.9 is invalid: FusedLamb takes"),
    ("Adam", dict(adam_w_mode=1), "optimizer.params.adam_w_mode=1 is invalid: expected true or false"),
    ("OneBitAdam", {}, "optimizer.type='OneBitAdam' is invalid: expected one of Adam, AdamW, Lamb, SGD"),
    ("sgd", {}, "optimizer.type='sgd'"),  # torch.optim classes by their exact name, as DeepSpeed
])
def test_config_types_refuse_naming_the_key(kind, params, match):
    with pytest.raises(ValueError, match=match):
        catalogue.deepspeed_optimizer_type(kind).configure(params, False)


def test_live_fused_lamb_refuses_max_grad_norm():
    lamb = deepspeed_class("deepspeed.ops.lamb.FusedLamb")(torch.nn.Linear(2, 1).parameters(),
                                                           max_grad_norm=1.0)
    with pytest.raises(ValueError, match=r"FusedLamb\(param_groups\[0\]\['max_grad_norm'\]=1.0\)"):
        catalogue.optimizer_record(lamb).read_group(lamb, lamb.param_groups[0], 0)
