"""Training recipes as they are run: a published configuration in, the same steps out.

:func:`bing_bert_lamb` is DeepSpeedExamples' ``training/bing_bert`` BERT pretraining recipe
(``deepspeed_train.py`` with ``deepspeed_bsz64k_lamb_config_seq128.json`` or
``deepspeed_bsz32k_lamb_config_seq512.json``, ``--lr_schedule EE``): its DeepSpeed config read by
:func:`optax_bertadam.from_deepspeed`, its parameter groups, and the learning rate its script sets
before every optimizer step.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import optax

from optax_bertadam import _validation, deepspeed, masks
from optax_bertadam.schedules.bert import BertScheduleMultiplier, bert_multiplier

PyTree = Any

#: The DeepSpeed configs of bing_bert's LAMB runs (``deepspeed_bsz64k_lamb_config_seq128.json``,
#: ``deepspeed_bsz32k_lamb_config_seq512.json``). The batch sizes are those of the published
#: runs (64K and 32K sequences per step over many GPUs): give ``world_size`` or your own batch
#: sizes (see :func:`bing_bert_deepspeed_config`).
BING_BERT_DEEPSPEED_CONFIGS: Mapping[int, Mapping[str, Any]] = {
    128: {
        "train_batch_size": 65536,
        "train_micro_batch_size_per_gpu": 64,
        "steps_per_print": 1000,
        "prescale_gradients": False,
        "optimizer": {"type": "Lamb", "params": {"lr": 11e-3, "weight_decay": 0.01,
                                                 "bias_correction": False, "max_coeff": 0.3,
                                                 "min_coeff": 0.01}},
        "gradient_clipping": 1.0,
        "wall_clock_breakdown": False,
        "fp16": {"enabled": True, "loss_scale": 0},
    },
    512: {
        "train_batch_size": 32768,
        "train_micro_batch_size_per_gpu": 16,
        "steps_per_print": 1000,
        "prescale_gradients": False,
        "optimizer": {"type": "Lamb", "params": {"lr": 2e-3, "weight_decay": 0.01,
                                                 "bias_correction": False, "max_coeff": 0.3,
                                                 "min_coeff": 0.01}},
        "gradient_clipping": 1.0,
        "wall_clock_breakdown": False,
        "fp16": {"enabled": True, "loss_scale": 0},
    },
}

#: The script's ``config["training"]`` per sequence length (``bert_large_lamb.json``'s
#: ``mixed_seq_training``) and its ``--lr_offset`` (``10e-4`` at 128, ``0.0`` at 512).
BING_BERT_TRAINING: Mapping[int, Mapping[str, float]] = {
    128: {"learning_rate": 11e-3, "decay_rate": 0.90, "decay_step": 250,
          "total_training_steps": 7500, "warmup_proportion": 0.06, "weight_decay": 0.01,
          "lr_offset": 10e-4},
    512: {"learning_rate": 2e-3, "decay_rate": 0.90, "decay_step": 150,
          "total_training_steps": 7500, "warmup_proportion": 0.02, "weight_decay": 0.01,
          "lr_offset": 0.0},
}

#: ``prepare_optimizer_parameters``' ``no_decay`` substrings, with DeepSpeed's fused transformer
#: kernel's names (``--deepspeed_transformer_kernel``).
BING_BERT_NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight", "attn_nw", "attn_nb",
                      "norm_w", "norm_b", "attn_qkvb", "attn_ob", "inter_b", "output_b")


def bing_bert_deepspeed_config(seq_len: int = 128, **changes: Any) -> dict[str, Any]:
    """A copy of bing_bert's DeepSpeed config for ``seq_len`` (128 or 512), top-level keys replaced
    by ``changes`` (e.g. ``train_batch_size=8, train_micro_batch_size_per_gpu=8``).

    Returns:
      A new ``dict`` (the published config is left as it is).

    Example:
      >>> import optax_bertadam as ob
      >>> config = ob.bing_bert_deepspeed_config(128, train_batch_size=8,
      ...                                        train_micro_batch_size_per_gpu=8)
      >>> config["optimizer"]["type"], config["optimizer"]["params"]["lr"], config["fp16"]
      ('Lamb', 0.011, {'enabled': True, 'loss_scale': 0})
    """
    seq_len = _check_seq_len(seq_len)
    config = copy.deepcopy(dict(BING_BERT_DEEPSPEED_CONFIGS[seq_len]))
    config.update(copy.deepcopy(changes))
    return config


def _check_seq_len(seq_len: Any) -> int:
    if seq_len not in BING_BERT_DEEPSPEED_CONFIGS or isinstance(seq_len, bool):
        raise ValueError(f"seq_len={seq_len!r} is invalid: expected 128 or 512 (bing_bert's two "
                         "phases)")
    return int(seq_len)


@dataclasses.dataclass(frozen=True)
class BingBertRate:
    """The rate ``update_learning_rate`` of bing_bert's ``deepspeed_train.py`` sets before
    optimizer step ``k`` (its ``global_step``, counted from 0 and incremented after every
    boundary, a step skipped on overflow included)::

        learning_rate * warmup_exp_decay_exp(k, decay_rate, decay_step, total_steps, warmup)
        + lr_offset

    A value (equal arguments, equal rates), so that equal recipes have equal state structures.
    Build it with :func:`bing_bert_rate`.

    Example:
      >>> import optax_bertadam as ob
      >>> rate = ob.bing_bert_rate(512, total_steps=100)
      >>> isinstance(rate, ob.recipes.BingBertRate), round(float(rate(1)), 6)  # (0.5) ** 2 * 2e-3
      (True, 0.0005)
    """

    learning_rate: float
    multiplier: BertScheduleMultiplier
    lr_offset: float

    def __call__(self, step: jax.Array) -> jax.Array:
        """The rate of optimizer step ``step``.

        Returns:
          A 0-d array in the default float dtype.
        """
        return self.learning_rate * self.multiplier(step) + self.lr_offset


def bing_bert_rate(seq_len: int = 128, total_steps: int | None = None) -> BingBertRate:
    """bing_bert's ``--lr_schedule EE`` rate of optimizer step ``k`` (see :class:`BingBertRate`).

    Args:
      seq_len: 128 or 512 (:data:`BING_BERT_TRAINING`).
      total_steps: ``total_training_steps``; default 7500.

    Returns:
      A :class:`BingBertRate`, ``k -> rate``.

    Example:
      >>> import optax_bertadam as ob
      >>> rate = ob.bing_bert_rate(128, total_steps=100)
      >>> [round(float(rate(k)), 6) for k in (0, 3, 6, 100)]  # warmup ends at 6 = 0.06 * 100
      [0.001, 0.00375, 0.012, 0.011573]
    """
    seq_len = _check_seq_len(seq_len)
    training = BING_BERT_TRAINING[seq_len]
    total = training["total_training_steps"] if total_steps is None else total_steps
    total = _validation.check_int("total_steps", total, low=1)
    multiplier = bert_multiplier(
        "warmup_exp_decay_exp", t_total=total, warmup=training["warmup_proportion"],
        schedule_kwargs={"decay_rate": training["decay_rate"], "decay_steps": training["decay_step"]})
    return BingBertRate(training["learning_rate"], multiplier, training["lr_offset"])


# ------------------------------------------------------------------------------- the recipe


def _names(params: PyTree, name_map: Mapping[str, str] | Callable[[str], str] | None):
    paths = masks.parameter_names(params)
    if name_map is None:
        return [p.replace("/", ".") for p in paths]
    if callable(name_map):
        return [str(name_map(p)) for p in paths]
    missing = [p for p in paths if p not in name_map]
    if missing:
        raise ValueError(f"name_map lacks {len(missing)} parameter paths, e.g. {missing[:3]}")
    return [name_map[p] for p in paths]


def bing_bert_lamb(
    params: PyTree,
    *,
    seq_len: int = 128,
    total_steps: int | None = None,
    config: Mapping[str, Any] | str | None = None,
    world_size: int = 1,
    name_map: Mapping[str, str] | Callable[[str], str] | None = None,
    no_decay: Sequence[str] = BING_BERT_NO_DECAY,
    frozen: Sequence[str] = ("pooler",),
) -> optax.GradientTransformationExtraArgs:
    r"""DeepSpeedExamples' bing_bert LAMB pretraining recipe, one ``update`` per micro-batch.

    What ``deepspeed_train.py --lr_schedule EE`` does with its DeepSpeed config, per micro-batch
    (``engine.backward(loss); engine.step()``), the config read by
    :func:`optax_bertadam.from_deepspeed`:

    1. the parameters whose torch name contains one of ``frozen`` (the pooler) are not optimised:
       zero updates, and their gradients count in neither the clipping norm nor the overflow
       check (DeepSpeed's fp16 optimizer sees only the optimizer's parameters);
    2. fp16: dynamic loss scaling (``loss_scale: 0``; DeepSpeed's rules, no hysteresis without
       ZeRO), a step skipped on inf/NaN gradients; the float32 masters take the step;
    3. ``gradient_clipping`` 1.0: :math:`g \leftarrow g \min(1, 1 / (\lVert g \rVert + 10^{-6}))`
       over the optimised parameters;
    4. DeepSpeed's ``FusedLamb`` (:func:`optax_bertadam.deepspeed_lamb`, per tensor, without bias
       correction, trust ratio clamped to ``[0.01, 0.3]``) in two groups: weight decay 0.01, and
       0 for the names containing one of ``no_decay`` (biases, LayerNorm, the fused kernel's);
       built by the fp16 wrapper with one zero-gradient step at the config's lr, which decays the
       masters of the first group (part of the first applied update here);
    5. at the rate the script sets before optimizer step :math:`k` (every boundary counts, a
       skipped one too): :math:`\mathrm{lr}\cdot\mathrm{warmup\_exp\_decay\_exp}(k, 0.9,
       d, T, w) + \mathrm{lr\_offset}` (seq 128: lr 11e-3, d 250, w 0.06, offset 1e-3; seq 512:
       2e-3, 150, 0.02, 0), :func:`bing_bert_rate`, given to ``from_deepspeed`` as
       ``learning_rate``.

    ``update`` takes the gradient of one micro-batch's loss (under fp16, of
    :func:`optax_bertadam.scale_loss` of it) and ``params`` (the float32 masters).
    :func:`optax_bertadam.get_lr` reads the rate of the next step,
    :func:`optax_bertadam.get_loss_scale` the loss scale.

    Args:
      params: the parameter tree (float32 masters).
      seq_len: 128 (phase 1) or 512 (phase 2).
      total_steps: the schedule's ``total_training_steps`` (optimizer steps); default 7500.
      config: the DeepSpeed config (dict or JSON path) instead of
        :data:`BING_BERT_DEEPSPEED_CONFIGS[seq_len] <BING_BERT_DEEPSPEED_CONFIGS>`, e.g.
        :func:`bing_bert_deepspeed_config` with your batch sizes; no ``scheduler`` block (the
        script sets the rate).
      world_size: data-parallel ranks (for the batch-size arithmetic of the config).
      name_map: Flax path (``/``-joined) -> torch name, on which ``no_decay`` and ``frozen``
        match as the script's substrings; default the path with ``.`` for ``/``.
      no_decay: substrings of the names without weight decay.
      frozen: substrings of the names not optimised.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, optax_bertadam as ob
      >>> params = {"dense": {"weight": jnp.ones((2, 2)), "bias": jnp.zeros(2)},
      ...           "pooler": {"weight": jnp.ones((2, 2))}}
      >>> config = ob.bing_bert_deepspeed_config(128, train_batch_size=4,
      ...                                        train_micro_batch_size_per_gpu=4)
      >>> tx = ob.bing_bert_lamb(params, total_steps=100, config=config)
      >>> state = tx.init(params)
      >>> round(float(ob.get_lr(state)), 6), float(ob.get_loss_scale(state))
      (0.001, 65536.0)
    """
    seq_len = _check_seq_len(seq_len)
    training = BING_BERT_TRAINING[seq_len]
    rate = bing_bert_rate(seq_len, total_steps)
    raw = bing_bert_deepspeed_config(seq_len) if config is None else deepspeed._load(config)
    if raw.get("scheduler") is not None:
        raise ValueError(f"config scheduler={raw['scheduler']!r} is invalid: bing_bert's script "
                         "sets the rate before every step; expected no scheduler block")
    world_size = _validation.check_int("world_size", world_size, low=1)
    for name, value in (("no_decay", no_decay), ("frozen", frozen)):
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"{name}={value!r} is invalid: expected a sequence of name substrings")

    leaves, treedef = jax.tree.flatten(params)
    names = _names(params, name_map)
    is_frozen = [any(s in n for s in frozen) for n in names]
    is_plain = [not f and any(s in n for s in no_decay) for n, f in zip(names, is_frozen, strict=True)]
    is_decayed = [not f and not p for f, p in zip(is_frozen, is_plain, strict=True)]

    def tree(flags):
        return jax.tree.unflatten(treedef, flags)

    # The script's two groups, in its order; a group it would leave empty is left out, as
    # DeepSpeed drops empty groups.
    groups = []
    if any(is_decayed):
        groups.append({"params": tree(is_decayed), "weight_decay": training["weight_decay"]})
    if any(is_plain):
        groups.append({"params": tree(is_plain), "weight_decay": 0.0})
    if any(is_frozen):
        groups.append({"params": tree(is_frozen), "frozen": True})
    tx = deepspeed.from_deepspeed(raw, params=params, groups=groups, world_size=world_size,
                                  learning_rate=rate)
    if any(is_frozen):
        # Outside DeepSpeed's optimizer: neither in its clipping norm nor in its overflow check.
        tx = optax.chain(optax.masked(optax.set_to_zero(), tree(is_frozen)), tx)
    return optax.with_extra_args_support(tx)


__all__ = [
    "BING_BERT_DEEPSPEED_CONFIGS",
    "BING_BERT_NO_DECAY",
    "BING_BERT_TRAINING",
    "BingBertRate",
    "bing_bert_deepspeed_config",
    "bing_bert_lamb",
    "bing_bert_rate",
]
