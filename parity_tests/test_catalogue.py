"""The catalogue of PyTorch-side classes (:mod:`optax_bertadam.catalogue`), record by record.

Every optimizer record has a live object here, built with two parameter groups whose every
hyperparameter differs from the class's defaults and from the other group; its reader must give
each group its own values (a reader that takes ``optimizer.defaults`` or the first group's value
fails). Every scheduler record recognises a live object of its class, and nothing else. A new
record without a live builder here fails ``test_every_record_has_a_live_object``.

Every scheduler record with an options reader (``record.options``, the one reader of its
hyperparameters) is read from a live object over two groups with different values: the closed
form and the step-by-step replay built from those options, alone and inside a
``ChainedScheduler``, give each group the rates (and momenta) the live scheduler sets, in float32
and float64 (``harness.LR_TOL``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import types
import warnings

import numpy as np
import pytest
import torch
import transformers
from deepspeed.runtime import lr_schedules as ds_lr
from pytorch_pretrained_bert.optimization import BertAdam as PublishedBertAdam
from torch.optim import lr_scheduler

from optax_bertadam import algorithms, catalogue
from optax_bertadam import deepspeed as ds_engine
from optax_bertadam.schedules import pytorch as torch_schedules
from parity_tests import harness
from parity_tests.harness import DTYPES
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


# ------------------------------------------------- one options reader, two readings of it

def _hf_lambda(name, **keywords):
    """A transformers get_scheduler function, as a live LambdaLR holds it."""
    return functools.partial(getattr(transformers.optimization, name), **keywords)


# Record short name -> a live scheduler over two groups (lr 0.1 and 0.03, momentum 0.9) whose
# per-group values differ from each other and from the class's defaults: a reader of the first
# group's value (or of a default) gives the other group a wrong rate. Every record that the
# replay can read alone (it has options) is here.
REPLAYED_LEAVES = {
    "StepLR": lambda o: lr_scheduler.StepLR(o, 3, 0.5),
    "MultiStepLR": lambda o: lr_scheduler.MultiStepLR(o, [5, 2, 5], 0.6),
    "ConstantLR": lambda o: lr_scheduler.ConstantLR(o, 0.4, 4),
    "LinearLR": lambda o: lr_scheduler.LinearLR(o, 0.25, 0.8, 6),
    "ExponentialLR": lambda o: lr_scheduler.ExponentialLR(o, 0.9),
    "PolynomialLR": lambda o: lr_scheduler.PolynomialLR(o, 7, 2.0),
    "MultiplicativeLR": lambda o: lr_scheduler.MultiplicativeLR(o, [
        _hf_lambda("_get_cosine_schedule_with_warmup_lr_lambda", num_warmup_steps=0,
                   num_training_steps=40, num_cycles=0.5),
        _hf_lambda("_get_cosine_schedule_with_warmup_lr_lambda", num_warmup_steps=0,
                   num_training_steps=30, num_cycles=0.5)]),
    "LambdaLR": lambda o: lr_scheduler.LambdaLR(o, [
        _hf_lambda("_get_linear_schedule_with_warmup_lr_lambda", num_warmup_steps=2,
                   num_training_steps=14),
        _hf_lambda("_get_cosine_schedule_with_warmup_lr_lambda", num_warmup_steps=3,
                   num_training_steps=12, num_cycles=0.5)]),
    "CosineAnnealingLR": lambda o: lr_scheduler.CosineAnnealingLR(o, 7, 1e-3),
    "CosineAnnealingWarmRestarts": lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 3, 2, 1e-3),
    "CyclicLR": lambda o: lr_scheduler.CyclicLR(
        o, base_lr=[0.01, 0.002], max_lr=[0.1, 0.04], step_size_up=3, step_size_down=5,
        mode="triangular2", base_momentum=[0.8, 0.75], max_momentum=[0.9, 0.95]),
    "OneCycleLR": lambda o: lr_scheduler.OneCycleLR(
        o, max_lr=[0.2, 0.05], total_steps=24, pct_start=0.25, anneal_strategy="linear",
        base_momentum=[0.8, 0.7], max_momentum=[0.95, 0.9], div_factor=8.0, final_div_factor=50.0,
        three_phase=True),
    "SWALR": lambda o: torch.optim.swa_utils.SWALR(o, swa_lr=[0.02, 0.01], anneal_epochs=5),
}
REPLAY_STEPS = 20
# No closed form: the product of the user's factors (a transformers function here) is replayed.
NO_CLOSED_FORM = {"MultiplicativeLR"}


def test_every_replayed_leaf_record_has_a_live_object():
    assert sorted(REPLAYED_LEAVES) == sorted(
        r.short_name for r in catalogue.SCHEDULERS if r.replay and r.options is not None)


def _live(make, chained):
    optimizer = torch.optim.SGD(two_groups(dict(lr=0.1), dict(lr=0.03)), lr=0.5, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = make(optimizer)
        return optimizer, lr_scheduler.ChainedScheduler([scheduler]) if chained else scheduler


def _torch_rates(optimizer, scheduler):
    rates, momenta = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(REPLAY_STEPS):
            rates.append([g["lr"] for g in optimizer.param_groups])
            momenta.append([g["momentum"] for g in optimizer.param_groups])
            optimizer.step()
            scheduler.step()
    return np.asarray(rates), np.asarray(momenta)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(REPLAYED_LEAVES))
def test_one_options_reader_gives_the_closed_form_and_the_replay_each_groups_values(name, dtype):
    """record.options is the only reader of the class's hyperparameters: the closed form
    (factory(**options)) and the replay (TorchScheduler(name, options)), alone and inside a
    ChainedScheduler, give each group the rates (and momenta) the live scheduler sets.
    Tolerances: harness.LR_TOL (1e-6 float32, 1e-12 float64), relative to the peak rate."""
    record = catalogue.scheduler_record_by_name(name)
    optimizer, scheduler = _live(REPLAYED_LEAVES[name], chained=False)
    options = [record.options(scheduler, group) for group in range(2)]
    assert options[0] != options[1], options  # the groups' own values, each read
    spec = dict(catalogue.torch_scheduler(scheduler, 1).options)  # the replay's, of the same reader
    assert spec.keys() == options[1].keys()
    assert {k: v for k, v in spec.items() if not callable(v)} == {
        k: v for k, v in options[1].items() if not callable(v)}
    base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    readings = {"replay": catalogue.replay_scheduler(scheduler, base_lrs, num_steps=REPLAY_STEPS)}
    if name in NO_CLOSED_FORM:
        with pytest.raises(ValueError, match="function of your own"):
            catalogue.read_scheduler(scheduler, optimizer, "momentum")
    else:
        readings["closed form"] = [torch_schedules.CycleSchedules(*rate) for rate in
                                   catalogue.read_scheduler(scheduler, optimizer, "momentum")]
    rates, momenta = _torch_rates(optimizer, scheduler)
    chain_optimizer, chain = _live(REPLAYED_LEAVES[name], chained=True)
    chain_base = [g["initial_lr"] for g in chain_optimizer.param_groups]
    readings["replay in a ChainedScheduler"] = catalogue.replay_scheduler(chain, chain_base,
                                                                          num_steps=REPLAY_STEPS)
    chain_rates, chain_momenta = _torch_rates(chain_optimizer, chain)
    cycles = name in ("CyclicLR", "OneCycleLR")
    for reading, schedules in readings.items():
        want_rates, want_momenta = ((chain_rates, chain_momenta) if "Chained" in reading
                                    else (rates, momenta))
        for group, cycle in enumerate(schedules):
            harness.check_schedule(f"{name} {reading}[{group}]", lambda c=cycle: c.learning_rate,
                                   want_rates[:, group], dtype, jit_scalar=False)
            assert (cycle.momentum is not None) == cycles, (reading, group)
            if cycles:
                harness.check_schedule(f"{name} {reading}[{group}].momentum",
                                       lambda c=cycle: c.momentum, want_momenta[:, group], dtype,
                                       jit_scalar=False)
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


def test_from_torch_documents_every_record():
    """from_torch's docstring lists what it reads: a record added to the catalogue is named there."""
    doc = importlib.import_module("optax_bertadam.from_torch").from_torch.__doc__
    missing = [record.name for record in (*catalogue.OPTIMIZERS, *catalogue.SCHEDULERS)
               if record.name.split(" ")[0].rsplit(".", 1)[-1] not in doc]
    assert not missing, missing
