"""The main job: ``transformers.BertForMaskedLM`` in PyTorch and its Flax NNX port, trained side by
side with BertAdam and compared step by step by ``optax_bertadam.compare.compare_training``.

PyTorch side: ``transformers.BertForMaskedLM`` (small ``BertConfig``, random init, no download,
dropout 0) trained by ``torch_ref.BertAdam`` (DeepSpeed's, the default) or the published
``pytorch_pretrained_bert.BertAdam`` 0.6.2, over DeepSpeed's two parameter groups::

    no_decay = ['bias', 'LayerNorm.bias', 'LayerNorm.weight']

JAX side: :class:`bert_demo.models.BertForMaskedLM` loaded from the transformers ``state_dict``,
trained by ``optax_bertadam.bertadam`` with ``decay_mask(params)``.

Both sides see the same masked-LM batches (sentence pairs with token types, padding, BERT's
80/10/10 masking) from the corpus in ``bert_demo/data``. ``compare_training`` compares the loss,
every gradient, the rate of every parameter group and every parameter after each update, and
names the first place where the two runs part (``first_divergence``).

The attention key biases are trained and compared like every tensor, but not counted for
``first_divergence``: the softmax cancels them, so their exact gradient is zero and what each
framework computes is round-off (see :func:`key_bias_summary` and the README).

Example::

    result = run_demo(DemoSettings(steps=50, dtype="float64"))
    print(result.report)            # the table and the verdict in words
    result.report.first_divergence  # None: the two runs agree within the bounds
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from bert_demo.bing_bert import RECIPE_DIVERGENCE_BOUNDS, RECIPES

# Scale-relative bounds of optax_bertadam.compare (tensor errors max|jax - torch| / max|torch|,
# the loss relative to the torch loss, the rate relative to the peak rate) for the demo's
# defaults (300 steps, batch 16 x 32, lr 5e-4, warmup_linear, torch_ref.BertAdam). Worst errors
# measured on CPU, attention key biases aside (they are compared but not counted, see README):
#   float32, seeds 0-9: loss 5.9e-7, gradients 4.5e-5, parameters 2.7e-5, rate 1.8e-7.
#   float64, seed 0:    loss 6.5e-16, gradients 2.3e-14, parameters 1.2e-14, rate 1.7e-16.
# float64 is held to the parity suite's 1e-12 (gradients 1e-10, compare's default); the float32
# bounds leave 5x (rate) to 17x (loss) above the worst seed for other BLAS libraries and GPUs.
# They hold for the defaults, not for any learning rate: the two runs start apart by round-off,
# and training amplifies that gap, the more the higher the rate.
DIVERGENCE_BOUNDS = {
    "float64": {"loss": 1e-12, "gradients": 1e-10, "parameters": 1e-12, "learning_rate": 1e-12},
    "float32": {"loss": 1e-5, "gradients": 5e-4, "parameters": 2e-4, "learning_rate": 1e-6},
}
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "gpu")
TORCH_OPTIMIZERS = ("torch_ref", "pytorch_pretrained_bert")
# PyTorch BERT scripts' grouping (DeepSpeed bing_bert): names containing one of these get no decay.
TORCH_NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")
# The two `*_decay_exp` schedules need a decay rate and a period; the demo halves the rate
# every third of the run, so that their curve stays visible on the plot.
DECAY_RATE = 0.5
# Tensors the softmax cancels: compared and shown, not counted for first_divergence.
KEY_BIAS_SUFFIX = "attention.self.key.bias"
# The schedules of DeepSpeed's BertAdam (the demo's --schedule) that pytorch_pretrained_bert 0.6.2
# also has, under the same name but its own formulas: optax_bertadam's pretrained_bert_schedule.
PYTORCH_PRETRAINED_BERT_SCHEDULES = ("warmup_cosine", "warmup_constant", "warmup_linear")


def bert_schedule_kwargs(schedule: str, t_total: int) -> dict[str, float]:
    """The ``schedule_kwargs`` the demo and the plot give ``schedule`` (empty if none needed).

    Returns:
      A dict with the required ``decay_rate``/``decay_steps`` of ``schedule``, else empty.

    Example::

        bert_schedule_kwargs("warmup_linear_decay_exp", 300)  # {'decay_rate': 0.5, 'decay_steps': 100}
    """
    from optax_bertadam.schedules.bert import SCHEDULE_KWARGS

    required = SCHEDULE_KWARGS[schedule][0]
    values = {"decay_rate": DECAY_RATE, "decay_steps": max(1, t_total // 3)}
    return {key: values[key] for key in required}


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Everything that defines a demo run; both sides get the same values."""

    steps: int = 300
    batch_size: int = 16
    seq_len: int = 32
    learning_rate: float = 5e-4  # the loss falls from 5.5 to about 3.6; see DIVERGENCE_BOUNDS
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    schedule: str = "warmup_linear"
    torch_optimizer: str = "torch_ref"
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    print_rows: int = 11
    out_dir: Path = Path("out/demo")
    progress_bar: bool = True
    # None: BertAdam (the fields above); "bing_bert_lamb": bert_demo.bing_bert, where the
    # recipe sets the optimizer, its rate and clipping (learning_rate, warmup, weight_decay,
    # max_grad_norm, schedule and torch_optimizer are not used).
    recipe: str | None = None

    def __post_init__(self):
        for name, allowed in (("dtype", DTYPES), ("device", DEVICES),
                              ("torch_optimizer", TORCH_OPTIMIZERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: expected one of "
                                 f"{', '.join(allowed)}")
        if self.seq_len < 3:
            raise ValueError(f"seq_len={self.seq_len} is invalid: expected at least 3 "
                             "([CLS], one token, [SEP])")
        if self.recipe is not None:
            if self.recipe not in RECIPES:
                raise ValueError(f"recipe={self.recipe!r} is invalid: expected None or one of "
                                 f"{', '.join(RECIPES)}")
            if self.dtype not in RECIPE_DIVERGENCE_BOUNDS[self.recipe]:
                raise ValueError(
                    f"dtype={self.dtype!r} is invalid with recipe={self.recipe!r}: expected "
                    f"{', '.join(RECIPE_DIVERGENCE_BOUNDS[self.recipe])} (DeepSpeed's "
                    "clip_grad_norm_ computes the norm in float32: float64 cannot agree)")
        if self.torch_optimizer == "pytorch_pretrained_bert":
            if self.schedule not in PYTORCH_PRETRAINED_BERT_SCHEDULES:
                raise ValueError(
                    f"schedule={self.schedule!r} is invalid with torch_optimizer="
                    "'pytorch_pretrained_bert': version 0.6.2 has "
                    f"{', '.join(PYTORCH_PRETRAINED_BERT_SCHEDULES)} (torch_ref has DeepSpeed's six)"
                )


@dataclasses.dataclass
class DemoResult:
    """A finished demo run: settings, the ``ComparisonReport``, the classes used, the time."""

    settings: DemoSettings
    report: Any  # optax_bertadam.compare.ComparisonReport
    classes: dict[str, str]
    seconds: float

    @property
    def bounds(self) -> dict[str, float]:
        return self.report.bounds

    @property
    def passed(self) -> bool:
        """Whether no stage passed its bound at any step (the key biases aside)."""
        return self.report.first_divergence is None

    @property
    def max_divergence(self) -> float:
        """The largest parameter error over steps and tensors, key biases aside."""
        return max(_worst_counted(r.parameter_errors, self.report.ignore) for r in self.report.steps)

    @property
    def final_divergence(self) -> float:
        return _worst_counted(self.report.steps[-1].parameter_errors, self.report.ignore)


def _worst_counted(errors: dict[str, float], ignore: list[str]) -> float:
    values = [e for n, e in errors.items() if n not in ignore]
    return math.inf if any(math.isnan(v) for v in values) else max(values)


class DeviceUnavailableError(RuntimeError):
    """The requested ``--device`` has no backend in jax or in torch."""


def _select_devices(device: str):
    """(jax device, torch device) for ``device``; raises DeviceUnavailableError."""
    import jax
    import torch

    if device == "cpu":
        return jax.devices("cpu")[0], torch.device("cpu")
    problems = []
    try:
        jax_device = jax.devices("gpu")[0]
    except RuntimeError as error:
        problems.append(f"jax has no gpu backend ({error})")
    if not torch.cuda.is_available():
        problems.append("torch.cuda.is_available() is False")
    if problems:
        raise DeviceUnavailableError(
            "--device gpu needs a GPU visible to both jax and torch: " + "; ".join(problems)
            + ". Install jax[cuda12] and a CUDA build of torch, or use --device cpu."
        )
    return jax_device, torch.device("cuda")


def transformers_config(vocab_size: int, pad_token_id: int, seq_len: int):
    """The small ``transformers.BertConfig`` of the demo: hidden 64, 4 heads, 2 layers,
    intermediate 128, no dropout, exact GELU, LayerNorm epsilon 1e-12.

    Returns:
      A ``transformers.BertConfig``.

    Example::

        transformers_config(250, 0, 32).num_hidden_layers  # 2
    """
    import transformers

    return transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=max(64, seq_len), type_vocab_size=2,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-12, initializer_range=0.02, pad_token_id=pad_token_id,
    )


def torch_model_from_seed(config, seed: int):
    """``transformers.BertForMaskedLM(config)`` initialised from ``seed``, torch's global random
    state left as it was.

    Returns:
      The model, in train mode (dropout is 0 in the demo's config).

    Example::

        model = torch_model_from_seed(transformers_config(250, 0, 32), seed=0)
    """
    import torch
    import transformers

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.BertForMaskedLM(config)
    return model.train()


def torch_param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """DeepSpeed's two parameter groups: decay for the weights, none for biases and LayerNorm.

    Returns:
      ``[{"params": decayed, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0}]``.

    Example::

        torch_ref.BertAdam(torch_param_groups(model, 0.01), lr=5e-4)
    """
    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if not any(nd in n for nd in TORCH_NO_DECAY)],
         "weight_decay": weight_decay},
        {"params": [p for n, p in named if any(nd in n for nd in TORCH_NO_DECAY)],
         "weight_decay": 0.0},
    ]


def make_torch_optimizer(settings: DemoSettings, model):
    """``torch_ref.BertAdam`` or ``pytorch_pretrained_bert.BertAdam`` over DeepSpeed's groups.

    Returns:
      The torch optimizer (``DemoSettings`` has refused what ``pytorch_pretrained_bert`` 0.6.2
      cannot run).

    Example::

        make_torch_optimizer(DemoSettings(), model).get_lr()  # [0] before the first step
    """
    groups = torch_param_groups(model, settings.weight_decay)
    common = dict(lr=settings.learning_rate, warmup=settings.warmup, t_total=settings.steps,
                  schedule=settings.schedule, weight_decay=settings.weight_decay,
                  max_grad_norm=settings.max_grad_norm)
    if settings.torch_optimizer == "torch_ref":
        import torch_ref

        kwargs = bert_schedule_kwargs(settings.schedule, settings.steps)
        return torch_ref.BertAdam(groups, **common, schedule_kwargs=kwargs or None)
    import warnings

    with warnings.catch_warnings():
        # Its module imports trigger deprecation warnings of torch APIs it uses; not ours.
        warnings.simplefilter("ignore")
        from pytorch_pretrained_bert.optimization import BertAdam

    return BertAdam(groups, **common)


def make_optax_optimizer(settings: DemoSettings, params):
    """``optax_bertadam.bertadam`` with ``decay_mask(params)``, and the schedule of the torch
    optimizer: DeepSpeed's by name, or for ``pytorch_pretrained_bert`` its own formulas
    (``pretrained_bert_schedule``: its ``warmup_linear`` and ``warmup_cosine`` rescale the decay
    to the steps after warmup, DeepSpeed's do not).

    Returns:
      An ``optax.GradientTransformation``.

    Example::

        tx = make_optax_optimizer(DemoSettings(), params)
    """
    import optax_bertadam as ob
    from optax_bertadam.schedules.bert import pretrained_bert_schedule

    common = dict(weight_decay=settings.weight_decay, max_grad_norm=settings.max_grad_norm,
                  mask=ob.decay_mask(params))
    if settings.torch_optimizer == "pytorch_pretrained_bert":
        rate = pretrained_bert_schedule(settings.schedule, settings.learning_rate,
                                        t_total=settings.steps, warmup=settings.warmup)
        return ob.bertadam(rate, **common)
    kwargs = bert_schedule_kwargs(settings.schedule, settings.steps)
    with warnings.catch_warnings():
        # The run is exactly t_total updates long: warmup_linear never goes below zero here.
        warnings.simplefilter("ignore", ob.NegativeLearningRateWarning)
        return ob.bertadam(settings.learning_rate, warmup=settings.warmup, t_total=settings.steps,
                           schedule=settings.schedule, schedule_kwargs=kwargs or None, **common)


def key_bias_summary(report) -> dict[str, Any]:
    """What the report shows about the attention key biases, which the softmax cancels.

    The gradient of a key bias is the sum over positions of the gradients of the keys, which
    cancels exactly; the key weight's gradient is the same terms weighted by the inputs, which
    does not. Their ratio measures the cancellation: about the dtype's epsilon (times a few)
    when the key-bias gradient is round-off.

    Returns:
      ``names``; ``max_parameter_error`` (scale-relative, as for every tensor);
      ``max_gradient_scale``, the largest ``max|grad|`` of a key bias over the run;
      ``roundoff_ratio``, the largest ``max|grad key bias| / max|grad key weight|`` of a layer
      over the run; ``epsilon`` of the dtype for comparison.

    Example::

        key_bias_summary(result.report)["roundoff_ratio"]  # ~1e-7 in float32
    """
    import numpy as np

    names = list(report.ignore)
    ratios = [r.gradient_scales[n] / r.gradient_scales[n[: -len("bias")] + "weight"]
              for r in report.steps for n in names]
    return {
        "names": names,
        "max_parameter_error": max(r.parameter_errors[n] for r in report.steps for n in names),
        "max_gradient_scale": max(r.gradient_scales[n] for r in report.steps for n in names),
        "roundoff_ratio": max(ratios),
        "epsilon": float(np.finfo(report.dtype).eps),
    }


def run_demo(settings: DemoSettings) -> DemoResult:
    """Train both sides ``settings.steps`` updates through ``compare_training``.

    Returns:
      A :class:`DemoResult`.

    Raises:
      DeviceUnavailableError: ``device="gpu"`` without a GPU for both frameworks.
      ValueError: a schedule or warmup the chosen torch optimizer cannot run in parity.

    Example::

        run_demo(DemoSettings(steps=20, dtype="float64")).passed  # True
    """
    import torch

    started = time.perf_counter()
    jax_device, torch_device = _select_devices(settings.device)
    # One intra-op thread: for a model this small, torch's thread pool costs more than it
    # gains, and its spin-waiting threads slow to a crawl (30x measured) when they share
    # the cores with JAX's or another process's threads.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if settings.recipe is None:
            report, classes = _compare(settings, jax_device, torch_device)
        else:
            from bert_demo.bing_bert import compare_bing_bert

            report, classes = compare_bing_bert(settings, jax_device, torch_device)
    finally:
        torch.set_num_threads(torch_threads)
    return DemoResult(settings, report, classes, time.perf_counter() - started)


def _compare(settings: DemoSettings, jax_device, torch_device):
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from tqdm.auto import tqdm

    import optax_bertadam as ob
    from bert_demo.models import bert_from_transformers, masked_lm_loss, parameter_name_map
    from bert_demo.text_data import corpus_batches
    from optax_bertadam.compare import compare_training

    float64 = settings.dtype == "float64"
    tokenizer, stream = corpus_batches(settings.batch_size, settings.seq_len, settings.seed)
    batches = [stream.next_batch()._asdict() for _ in range(settings.steps)]
    config = transformers_config(tokenizer.vocab_size, tokenizer.pad_id, settings.seq_len)

    with jax.enable_x64(float64), jax.default_device(jax_device):
        torch_model = torch_model_from_seed(config, settings.seed).to(
            device=torch_device, dtype=torch.float64 if float64 else torch.float32)
        torch_optimizer = make_torch_optimizer(settings, torch_model)
        flax_model = bert_from_transformers(torch_model, jnp.float64 if float64 else jnp.float32)
        graphdef, params = nnx.split(flax_model, nnx.Param)
        tx = make_optax_optimizer(settings, params)
        name_map = parameter_name_map(params)

        def torch_loss(model, batch):
            batch = {key: value.to(torch_device) for key, value in batch.items()}
            return model(**batch).loss  # BertForMaskedLM's own cross-entropy over the labels

        def jax_loss(params, batch):
            model = nnx.merge(graphdef, params)
            logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            return masked_lm_loss(logits, batch["labels"])

        progress = tqdm(batches, desc=f"demo {settings.dtype}", unit="step", file=sys.stderr,
                        disable=not settings.progress_bar)
        report = compare_training(
            torch_model, torch_optimizer, torch_loss, params, tx, jax_loss, progress,
            name_map=name_map, transform=ob.transpose_kernels,
            bounds=DIVERGENCE_BOUNDS[settings.dtype],
            ignore=[n for n in name_map.values() if n.endswith(KEY_BIAS_SUFFIX)],
            # Jitted once: get_lr walks the state and evaluates the schedule, which costs more
            # than the whole training step when dispatched op by op at every step.
            jax_lr=jax.jit(ob.get_lr),
        )
        progress.close()
    classes = {
        "torch_model": _class_name(torch_model),
        "torch_optimizer": _class_name(torch_optimizer),
        "flax_model": _class_name(flax_model),
        "optax_optimizer": "optax_bertadam.bertadam",
    }
    return report, classes


def _class_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


# ------------------------------------------------------------------------------------ output


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed (or available on CI)
    import matplotlib.pyplot as plt

    return plt


def save_demo_plot(result: DemoResult, out_file: Path) -> None:
    """Four panels over the steps: both losses; both rates; the worst error of each compared
    stage (loss, gradients, parameters, rate) with its bound; the attention key biases.

    Example::

        save_demo_plot(result, Path("out/demo/demo.png"))
    """
    import numpy as np

    plt = _pyplot()
    report, settings = result.report, result.settings
    records = report.steps
    steps = [r.step for r in records]
    ignore = report.ignore

    # A zero has no place on a log axis: the key panel draws an exact zero a decade below its
    # smallest nonzero value (report.plot, the error panel, draws it at a tenth of epsilon), not
    # at 1e-20, 17 decades below everything else; nonzero values are drawn as they are.
    def floor(values):
        return [np.nan if v is None else (v if v > 0 else zero_at) for v in values]

    figure, (loss_axis, lr_axis, error_axis, key_axis) = plt.subplots(
        4, 1, figsize=(8.5, 12), sharex=True, height_ratios=(1.6, 1, 1.6, 1.4))
    loss_axis.plot(steps, [r.jax_loss for r in records], linewidth=2.5, alpha=0.6,
                   label=f"JAX: {result.classes['flax_model'].rsplit('.', 1)[1]} (Flax NNX) + "
                         f"{result.classes['optax_optimizer']}")
    torch_model = result.classes["torch_model"].rsplit(".", 1)[1]
    if settings.recipe is None:
        torch_label = f"PyTorch: transformers {torch_model} + {result.classes['torch_optimizer']}"
        title = f"BertAdam, JAX vs PyTorch: {settings.schedule}"
        torch_rate = "torch (get_lr)"
    else:
        torch_label = (f"PyTorch: transformers {torch_model} in DeepSpeed "
                       f"{result.classes['deepspeed_version']} + "
                       f"{result.classes['torch_optimizer']}")
        title = f"{settings.recipe} recipe, JAX vs DeepSpeed"
        torch_rate = "torch (param_groups lr, set by the script's rule)"
    loss_axis.plot(steps, [r.torch_loss for r in records], linewidth=1, linestyle="--",
                   color="black", label=torch_label)
    loss_axis.set_ylabel("masked-LM loss")
    loss_axis.set_title(f"{title}: {settings.dtype}, {settings.steps} steps, batch "
                        f"{settings.batch_size}x{settings.seq_len}", fontsize=10)
    loss_axis.legend(fontsize=8)

    # The rate of each update; the torch side's is unreadable before its first step.
    lr_axis.plot(steps, [r.jax_lr[0] if r.jax_lr else np.nan for r in records],
                 color="tab:green", linewidth=2.5, alpha=0.6, label="optax (get_lr)")
    lr_axis.plot(steps, [r.torch_lr[0] if r.torch_lr else np.nan for r in records],
                 color="black", linestyle="--", linewidth=1, label=torch_rate)
    lr_axis.set_ylabel("learning rate")
    lr_axis.legend(fontsize=8)

    # The per-stage errors and their bounds: the same drawing as report.plot("compare.png") (one
    # plotting path), into this panel.
    report.plot(ax=error_axis)  # titled with the verdict; key biases are report.ignore
    error_axis.set_xlabel("")
    error_axis.set_ylabel("scale-relative error\n(dashed: bounds, named in the legend)")
    error_axis.title.set_fontsize(9)

    key_errors = [max(r.parameter_errors[n] for n in ignore) for r in records]
    key_scales = [max(r.gradient_scales[n] for n in ignore) for r in records]
    weight_scales = [min(r.gradient_scales[n[: -len("bias")] + "weight"] for n in ignore)
                     for r in records]
    nonzero = [v for v in (*key_errors, *key_scales, *weight_scales) if v is not None and v > 0]
    zero_at = min(nonzero) / 10 if nonzero else float(np.finfo(report.dtype).eps) / 10
    key_axis.semilogy(steps, floor(key_errors), color="tab:purple",
                      label="key bias: parameter error (scale-relative, not counted)")
    key_axis.semilogy(steps, floor(key_scales), color="tab:purple", linestyle="--",
                      label="key bias: max|gradient| (torch; exactly 0 without round-off)")
    key_axis.semilogy(steps, floor(weight_scales), color="grey", linestyle="--",
                      label="key weight: max|gradient| (torch), for scale")
    key_axis.set_ylabel(f"attention key biases (softmax\ncancels them); 0 drawn at {zero_at:.0e}",
                        fontsize=9)
    key_axis.set_xlabel("step")
    key_axis.legend(fontsize=7, loc="best")
    for axis in (loss_axis, lr_axis, error_axis, key_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_file, dpi=100)
    plt.close(figure)


def step_rows(result: DemoResult) -> list[dict[str, Any]]:
    """One flat row per step: losses, rates, the worst error per stage and the key biases.

    Returns:
      A list of dicts with the same keys (the columns of ``demo.csv``).

    Example::

        step_rows(result)[0]["loss_torch"]
    """
    ignore = result.report.ignore
    rows = []
    for r in result.report.steps:
        counted_params = {n: e for n, e in r.parameter_errors.items() if n not in ignore}
        counted_grads = {n: e for n, e in r.gradient_errors.items() if n not in ignore}
        rows.append({
            "step": r.step,
            "loss_jax": r.jax_loss,
            "loss_torch": r.torch_loss,
            "lr_jax": r.jax_lr[0] if r.jax_lr else None,
            "lr_torch": r.torch_lr[0] if r.torch_lr else None,
            "loss_error": r.loss_error,
            "gradient_error": max(counted_grads.values()),
            "worst_gradient": max(counted_grads, key=counted_grads.get),
            "divergence": max(counted_params.values()),
            "worst_tensor": max(counted_params, key=counted_params.get),
            "lr_error": r.lr_error,
            "key_bias_error": max(r.parameter_errors[n] for n in ignore),
            "key_bias_gradient_scale": max(r.gradient_scales[n] for n in ignore),
            "stage": r.stage,
        })
    return rows


def save_demo_records(result: DemoResult, json_file: Path, csv_file: Path) -> None:
    """``demo.csv``: :func:`step_rows`. ``demo.json``: settings, classes, the verdict, the key
    biases, the rows, and the full ``compare_training`` report.

    Example::

        save_demo_records(result, Path("demo.json"), Path("demo.csv"))
    """
    rows = step_rows(result)
    json_file.parent.mkdir(parents=True, exist_ok=True)
    settings = {key: str(value) if isinstance(value, Path) else value
                for key, value in dataclasses.asdict(result.settings).items()}
    first = result.report.first_divergence
    summary = {
        "settings": settings,
        **result.classes,
        "seconds": result.seconds,
        "final_divergence": result.final_divergence,
        "max_divergence": result.max_divergence,
        "bound": result.bounds["parameters"],
        "bounds": result.bounds,
        "passed": result.passed,
        "first_divergence": None if first is None else first._asdict(),
        "explanation": result.report.explanation,
        "key_bias": key_bias_summary(result.report),
        "steps": rows,
        "report": result.report.to_dict(),
    }
    if result.settings.recipe is not None:
        from bert_demo.bing_bert import deepspeed_config, recipe_lines

        summary["recipe"] = {"name": result.settings.recipe, "notes": recipe_lines(result),
                             "deepspeed_config": deepspeed_config(result.settings)}
    json_file.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    with csv_file.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def demo_command(settings: DemoSettings) -> int:
    """Run the demo, print the report, write the files; 0 without a divergence, else 1.

    Example::

        sys.exit(demo_command(DemoSettings(steps=100)))
    """
    result = run_demo(settings)
    out_dir = settings.out_dir
    save_demo_plot(result, out_dir / "demo.png")
    save_demo_records(result, out_dir / "demo.json", out_dir / "demo.csv")
    report, classes = result.report, result.classes
    if settings.recipe is None:
        print(f"PyTorch: {classes['torch_model']} + {classes['torch_optimizer']}")
    else:
        from bert_demo.bing_bert import recipe_lines

        print("\n".join(recipe_lines(result)))
    print(f"JAX:     {classes['flax_model']} + {classes['optax_optimizer']}")
    print(report.table(max_rows=settings.print_rows))
    keys = key_bias_summary(report)
    print(f"attention key biases ({len(keys['names'])}; compared, not counted: the softmax cancels "
          f"them): max|gradient| {keys['max_gradient_scale']:.1e}, at most "
          f"{keys['roundoff_ratio']:.1e} x the key weight's (epsilon {keys['epsilon']:.1e}): "
          f"round-off; their parameters part by up to {keys['max_parameter_error']:.1e} of "
          "their own size")
    first, last = report.steps[0], report.steps[-1]
    print(f"loss {first.jax_loss:.4f} -> {last.jax_loss:.4f} (JAX), "
          f"{first.torch_loss:.4f} -> {last.torch_loss:.4f} (PyTorch); "
          f"{result.seconds:.1f} s; wrote {out_dir / 'demo.png'}, demo.json, demo.csv")
    print(report.explanation)
    verdict = "within the bound: OK" if result.passed else "above the bound: FAILED"
    print(f"parameters after the last step differ by {result.final_divergence:.1e} (largest over "
          f"the run {result.max_divergence:.1e}; {settings.dtype} bound "
          f"{result.bounds['parameters']:.0e}), {verdict}")
    return 0 if result.passed else 1
