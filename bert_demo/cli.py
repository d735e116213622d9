"""The main job's command line: ``python -m bert_demo`` (from the repository root).

Subcommands:

``demo``
    Trains the small BERT of :mod:`bert_demo.models` on masked-LM batches from the
    shipped corpus twice, from identical weights and on identical batches: once with
    ``optax_bertadam.bertadam`` in JAX and once with ``torch_ref.BertAdam`` in PyTorch. It
    prints a table as it goes, writes ``demo.png`` (loss curves, learning rate, divergence),
    ``demo.json`` and ``demo.csv``, and exits with status 1 when the two sides' parameters
    diverge by more than :data:`DIVERGENCE_BOUNDS` allows.
``schedules``
    Plots every learning-rate schedule of the package on one figure.
``parity``
    Prints the parity table of the test harness (``parity_tests.quick_table``), if present.

torch, flax and matplotlib are imported inside the subcommands that use them, so that
``--help`` and argument errors do not wait for them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# The largest parameter divergence (max over tensors of max|p_jax - p_torch| / max|p_torch|)
# the demo accepts at any step, per dtype. Measured on CPU with the default settings (300
# steps, batch 16 x 32, lr 5e-4), every schedule and seeds 0-9: float32 at most 4e-5, float64
# at most 2e-14. The bounds leave a margin of 12x and 60x for other BLAS libraries and GPUs.
# They hold for the defaults, not for any learning rate: the two runs start apart by
# round-off, and training amplifies that gap, the more the higher the rate. At lr 1e-3 most
# seeds stay below 4e-4 (float32) and 2e-12 (float64), but seed 2 reaches 5e-2 and 4e-11,
# after one badly conditioned step that Adam's 1/sqrt(v) scales up for a rare word.
DIVERGENCE_BOUNDS = {"float32": 5e-4, "float64": 1e-12}

DTYPES = ("float32", "float64")
DEVICES = ("cpu", "gpu")
# PyTorch BERT scripts' grouping: parameters whose name contains one of these get no decay.
TORCH_NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")
# The two `*_decay_exp` schedules need a decay rate and a period; the demo halves the rate
# every third of the run, so that their curve stays visible on the plot.
DECAY_RATE = 0.5


def _bert_schedule_names() -> tuple[str, ...]:
    from optax_bertadam.schedules.bert import SCHEDULE_NAMES

    return SCHEDULE_NAMES


def bert_schedule_kwargs(schedule: str, t_total: int) -> dict[str, float]:
    """The ``schedule_kwargs`` the demo and the plot give ``schedule`` (empty if none needed)."""
    from optax_bertadam.schedules.bert import SCHEDULE_KWARGS

    required = SCHEDULE_KWARGS[schedule][0]
    values = {"decay_rate": DECAY_RATE, "decay_steps": max(1, t_total // 3)}
    return {key: values[key] for key in required}


# ------------------------------------------------------------------------------ schedules


def _bert_family(t_total: int, warmup_steps: int) -> dict[str, Callable]:
    """The six BertAdam schedules, enumerated from ``SCHEDULE_NAMES``."""
    from optax_bertadam.schedules.bert import bert_schedule

    warmup = warmup_steps / t_total
    return {
        name: bert_schedule(name, 1.0, t_total, warmup,
                            schedule_kwargs=bert_schedule_kwargs(name, t_total))
        for name in _bert_schedule_names()
    }


def _transformers_family(t_total: int, warmup_steps: int) -> dict[str, Callable]:
    """Every ``transformers.get_scheduler`` name that is a function of the update count."""
    import optax

    from optax_bertadam.schedules import transformers as hf

    # The few keyword arguments some names require; the others use transformers' defaults.
    required_kwargs = {
        "cosine_with_min_lr": {"min_lr_rate": 0.1},
        "cosine_warmup_with_min_lr": {"min_lr_rate": 0.1},
        "warmup_stable_decay": {"num_decay_steps": t_total // 4},
    }
    family = {}
    for name in hf.SCHEDULER_NAMES:
        schedule = hf.get_scheduler(name, 1.0, warmup_steps, t_total,
                                    required_kwargs.get(name))
        # reduce_lr_on_plateau follows the loss, not the count: nothing to plot.
        if not isinstance(schedule, optax.GradientTransformation):
            family[name] = schedule
    return family


def _classic_family(t_total: int, warmup_steps: int) -> dict[str, Callable]:
    """The tutorial and Annotated-Transformer schedules (this module has no name registry)."""
    from optax_bertadam.schedules import classic

    model_size = 512
    return {
        "cosine_warmup": classic.cosine_warmup(1.0, warmup_steps, t_total),
        "linear_decay": classic.linear_decay(1.0, t_total),
        "polynomial_decay (power 2)": classic.polynomial_decay(1.0, t_total, 2.0),
        "inverse_sqrt": classic.inverse_sqrt(1.0, max(1, warmup_steps)),
        "constant_with_linear_cooldown": classic.constant_with_linear_cooldown(
            1.0, t_total, t_total // 5),
        # factor chosen so that the peak, factor / sqrt(model_size * warmup), is 1.
        "noam": classic.noam(model_size, max(1, warmup_steps),
                             factor=math.sqrt(model_size * max(1, warmup_steps))),
    }


# family -> function building that family's schedules.
SCHEDULE_FAMILIES: dict[str, Callable[[int, int], dict[str, Callable]]] = {
    "bert": _bert_family,
    "transformers": _transformers_family,
    "classic": _classic_family,
}


def all_schedules_for_plot(t_total: int = 1000, warmup_steps: int = 100) -> dict[str, Callable]:
    """``"family/name" -> schedule`` (peak rate about 1) for every schedule of the package.

    Walks :data:`SCHEDULE_FAMILIES`; each family enumerates its module's own registry where it
    has one (``SCHEDULE_NAMES`` of ``schedules.bert``, ``SCHEDULER_NAMES`` of
    ``schedules.transformers``), so a schedule added there appears here without a change.
    """
    schedules = {}
    for family, build in SCHEDULE_FAMILIES.items():
        for name, fn in build(t_total, warmup_steps).items():
            schedules[f"{family}/{name}"] = fn
    return schedules


def plot_schedules(out_file: Path, t_total: int = 1000, warmup_steps: int = 100) -> list[str]:
    """Draw every schedule of :func:`all_schedules_for_plot` into ``out_file``; return names."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    plt = _pyplot()
    schedules = all_schedules_for_plot(t_total, warmup_steps)
    families = list(dict.fromkeys(label.split("/")[0] for label in schedules))
    figure, axes = plt.subplots(len(families), 1, figsize=(9, 3.6 * len(families)),
                                squeeze=False)
    # A little past t_total, to show what each schedule does after the end (warmup_linear
    # goes negative there, faithfully).
    counts = jnp.arange(int(t_total * 1.1) + 1)
    # Several schedules coincide over stretches (the two *_decay_exp after warmup): varied
    # line styles, and earlier curves drawn on top of later ones, keep each one visible.
    line_styles = ("-", "--", "-.", ":")
    for axis, family in zip(axes[:, 0], families, strict=True):
        members = [(label, fn) for label, fn in schedules.items()
                   if label.startswith(family + "/")]
        for index, (label, fn) in enumerate(members):
            rates = np.asarray(jax.vmap(fn)(counts))
            axis.plot(np.asarray(counts), rates, label=label.split("/", 1)[1],
                      linestyle=line_styles[index % len(line_styles)], linewidth=1.6,
                      zorder=len(members) - index + 2)
        axis.axvline(t_total, color="grey", linestyle=":", linewidth=1)
        axis.axvline(warmup_steps, color="grey", linestyle=":", linewidth=1)
        axis.set_title(f"{family} schedules (t_total={t_total}, warmup={warmup_steps} steps)")
        axis.set_xlabel("update count")
        axis.set_ylabel("learning rate / peak")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_file, dpi=110)
    plt.close(figure)
    return list(schedules)


# ----------------------------------------------------------------------------------- demo


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Everything that defines a demo run; both sides get the same values."""

    steps: int = 300
    batch_size: int = 16
    seq_len: int = 32
    learning_rate: float = 5e-4  # the loss falls from 5.5 to 3.9; see DIVERGENCE_BOUNDS
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    schedule: str = "warmup_linear"
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    print_every: int = 30
    out_dir: Path = Path("out/demo")
    progress_bar: bool = True


@dataclasses.dataclass
class StepRecord:
    """The figures of one training step."""

    step: int
    loss_jax: float
    loss_torch: float
    lr: float  # the rate this step applied (JAX side)
    next_lr_jax: float  # ob.get_lr(state) after the step
    next_lr_torch: float  # BertAdam.get_lr()[0] after the step
    divergence: float  # max over tensors of max|p_jax - p_torch| / max|p_torch|
    worst_tensor: str  # the tensor behind `divergence`


@dataclasses.dataclass
class DemoResult:
    """A finished demo run: its settings, one record per step, and its duration."""

    settings: DemoSettings
    records: list[StepRecord]
    seconds: float

    @property
    def bound(self) -> float:
        return DIVERGENCE_BOUNDS[self.settings.dtype]

    @property
    def max_divergence(self) -> float:
        return max(record.divergence for record in self.records)

    @property
    def passed(self) -> bool:
        """Whether every step stayed within the bound (a NaN divergence fails)."""
        return all(r.divergence <= self.bound for r in self.records)


def parameter_divergence(jax_params: dict[str, Any], torch_params: dict[str, Any]
                         ) -> tuple[float, str]:
    """Max over tensors of ``max|p_jax - p_torch| / max|p_torch|``, and the worst tensor.

    Both arguments map torch names to numpy arrays in torch layout.
    """
    import numpy as np

    worst, worst_name = -1.0, ""
    for name, reference in torch_params.items():
        scale = max(float(np.max(np.abs(reference))), 1e-30)
        difference = float(np.max(np.abs(jax_params[name] - reference))) / scale
        if not difference <= worst:  # NaN counts as the worst
            worst, worst_name = difference, name
    return worst, worst_name


class _JaxSide:
    """The Flax model trained by ``optax_bertadam.bertadam`` with a jitted, donating step."""

    def __init__(self, config, torch_state_dict, settings: DemoSettings, param_dtype):
        import jax
        import optax
        from flax import nnx

        import optax_bertadam as ob
        from bert_demo.models import bert_from_torch_state_dict, masked_lm_loss
        from bert_demo.models.convert import nnx_to_torch_state_dict

        self._to_torch_layout = nnx_to_torch_state_dict
        model = bert_from_torch_state_dict(config, torch_state_dict, param_dtype=param_dtype)
        graphdef, self.params = nnx.split(model, nnx.Param)
        tx = ob.bertadam(
            settings.learning_rate,
            warmup=settings.warmup,
            t_total=settings.steps,
            schedule=settings.schedule,
            weight_decay=settings.weight_decay,
            max_grad_norm=settings.max_grad_norm,
            weight_decay_mask=ob.decay_mask(self.params),
            schedule_kwargs=bert_schedule_kwargs(settings.schedule, settings.steps) or None,
        )
        self.opt_state = tx.init(self.params)

        def loss_of(params, input_ids, attention_mask, labels):
            logits = nnx.merge(graphdef, params)(input_ids, attention_mask)
            return masked_lm_loss(logits, labels)

        def train_step(params, opt_state, input_ids, attention_mask, labels):
            applied_lr = ob.get_lr(opt_state)
            loss, grads = jax.value_and_grad(loss_of)(params, input_ids, attention_mask, labels)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return params, opt_state, loss, applied_lr, ob.get_lr(opt_state)

        # Parameters and optimizer state are donated: XLA updates them in place.
        self._train_step = jax.jit(train_step, donate_argnums=(0, 1))

    def step(self, batch) -> tuple[float, float, float]:
        """One update; returns (loss, rate applied, rate of the next update)."""
        import jax.numpy as jnp

        self.params, self.opt_state, loss, lr, next_lr = self._train_step(
            self.params, self.opt_state, *(jnp.asarray(array) for array in batch)
        )
        return float(loss), float(lr), float(next_lr)

    def parameters(self) -> dict:
        return self._to_torch_layout(self.params)


class _TorchSide:
    """The twin torch model trained by ``torch_ref.BertAdam`` with DeepSpeed's two groups."""

    def __init__(self, model, settings: DemoSettings, device):
        import torch_ref
        from torch_ref.bert import masked_lm_loss

        self.model = model
        self.device = device
        self._loss = masked_lm_loss
        named = dict(model.named_parameters())
        decayed = [p for n, p in named.items() if not any(nd in n for nd in TORCH_NO_DECAY)]
        not_decayed = [p for n, p in named.items() if any(nd in n for nd in TORCH_NO_DECAY)]
        self.optimizer = torch_ref.BertAdam(
            [{"params": decayed, "weight_decay": settings.weight_decay},
             {"params": not_decayed, "weight_decay": 0.0}],
            lr=settings.learning_rate,
            warmup=settings.warmup,
            t_total=settings.steps,
            schedule=settings.schedule,
            weight_decay=settings.weight_decay,
            max_grad_norm=settings.max_grad_norm,
            schedule_kwargs=bert_schedule_kwargs(settings.schedule, settings.steps) or None,
        )

    def step(self, batch) -> tuple[float, float]:
        """One update; returns (loss, rate of the next update)."""
        import torch

        input_ids, attention_mask, labels = (torch.from_numpy(a).to(self.device) for a in batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(self.model(input_ids, attention_mask), labels)
        loss.backward()
        self.optimizer.step()
        return loss.item(), float(self.optimizer.get_lr()[0])

    def parameters(self) -> dict:
        return {name: tensor.detach().cpu().numpy() for name, tensor in
                self.model.state_dict().items()}


class DeviceUnavailableError(RuntimeError):
    """The requested ``--device`` has no backend in jax or in torch."""


def _select_devices(device: str):
    """(jax device, torch device) for ``--device``; raises DeviceUnavailableError."""
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


def run_demo(settings: DemoSettings) -> DemoResult:
    """Train both sides ``settings.steps`` updates and record the figures of every step."""
    import torch

    started = time.perf_counter()
    jax_device, torch_device = _select_devices(settings.device)
    # One intra-op thread: for a model this small, torch's thread pool costs more than it
    # gains, and its spin-waiting threads slow to a crawl (30x measured) when they share
    # the cores with JAX's or another process's threads.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        records = _train_both(settings, jax_device, torch_device)
    finally:
        torch.set_num_threads(torch_threads)
    return DemoResult(settings, records, time.perf_counter() - started)


def _train_both(settings: DemoSettings, jax_device, torch_device) -> list[StepRecord]:
    import jax
    import jax.numpy as jnp
    import torch
    from tqdm.auto import tqdm

    from bert_demo.models import BertConfig
    from bert_demo.text_data import corpus_batches
    from torch_ref.bert import BertConfig as TorchBertConfig
    from torch_ref.bert import BertForMaskedLM as TorchBertForMaskedLM

    float64 = settings.dtype == "float64"
    tokenizer, batches = corpus_batches(settings.batch_size, settings.seq_len, settings.seed)
    sizes = dict(vocab_size=tokenizer.vocab_size, max_len=settings.seq_len)

    records: list[StepRecord] = []
    with jax.enable_x64(float64), jax.default_device(jax_device):
        torch_model = TorchBertForMaskedLM(TorchBertConfig(**sizes), seed=settings.seed)
        torch_model = torch_model.to(device=torch_device,
                                     dtype=torch.float64 if float64 else torch.float32)
        jax_side = _JaxSide(BertConfig(**sizes), torch_model.state_dict(), settings,
                            jnp.float64 if float64 else jnp.float32)
        torch_side = _TorchSide(torch_model, settings, torch_device)

        header = (f"{'step':>6} {'loss JAX':>12} {'loss PyTorch':>12} {'lr':>11} "
                  f"{'max rel param diff':>19}")
        progress = tqdm(range(settings.steps), desc=f"demo {settings.dtype}", unit="step",
                        disable=not settings.progress_bar, file=sys.stderr)
        show = progress.write if settings.progress_bar else print
        show(header)
        for step in progress:
            batch = batches.next_batch()
            loss_jax, lr, next_lr_jax = jax_side.step(batch)
            loss_torch, next_lr_torch = torch_side.step(batch)
            divergence, worst = parameter_divergence(jax_side.parameters(),
                                                     torch_side.parameters())
            records.append(StepRecord(step, loss_jax, loss_torch, lr, next_lr_jax,
                                      next_lr_torch, divergence, worst))
            if step % settings.print_every == 0 or step == settings.steps - 1:
                show(f"{step:>6} {loss_jax:>12.6f} {loss_torch:>12.6f} {lr:>11.4e} "
                     f"{divergence:>19.3e}")
            progress.set_postfix(loss=f"{loss_jax:.3f}", diff=f"{divergence:.1e}")
        progress.close()
    return records


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed (or available on CI)
    import matplotlib.pyplot as plt

    return plt


def save_demo_plot(result: DemoResult, out_file: Path) -> None:
    """Loss curves of both sides overlaid, the learning rate, and the divergence per step."""
    plt = _pyplot()
    steps = [r.step for r in result.records]
    settings = result.settings
    figure, (loss_axis, lr_axis, divergence_axis) = plt.subplots(
        3, 1, figsize=(8, 9), sharex=True, height_ratios=(2, 1, 1.3)
    )
    loss_axis.plot(steps, [r.loss_jax for r in result.records], label="optax bertadam (JAX)",
                   linewidth=2.5, alpha=0.6)
    loss_axis.plot(steps, [r.loss_torch for r in result.records],
                   label="torch_ref.BertAdam (PyTorch)", linewidth=1, linestyle="--",
                   color="black")
    loss_axis.set_ylabel("masked-LM loss")
    loss_axis.set_title(f"BertAdam, JAX vs PyTorch: {settings.schedule}, {settings.dtype}, "
                        f"{settings.steps} steps, batch {settings.batch_size}x{settings.seq_len}")
    loss_axis.legend()

    lr_axis.plot(steps, [r.lr for r in result.records], color="tab:green")
    lr_axis.set_ylabel("learning rate")

    # A zero divergence has no place on a log axis: leave a gap there.
    divergences = [r.divergence if r.divergence > 0 else float("nan") for r in result.records]
    divergence_axis.semilogy(steps, divergences, color="tab:red")
    divergence_axis.axhline(result.bound, color="grey", linestyle=":",
                            label=f"bound {result.bound:g}")
    divergence_axis.set_ylabel("max rel. param diff")
    divergence_axis.set_xlabel("step")
    divergence_axis.legend()
    for axis in (loss_axis, lr_axis, divergence_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_file, dpi=100)
    plt.close(figure)


def save_demo_records(result: DemoResult, json_file: Path, csv_file: Path) -> None:
    """The per-step figures as CSV, and the settings, summary and figures as JSON."""
    rows = [dataclasses.asdict(record) for record in result.records]
    json_file.parent.mkdir(parents=True, exist_ok=True)
    settings = {key: str(value) if isinstance(value, Path) else value
                for key, value in dataclasses.asdict(result.settings).items()}
    summary = {
        "settings": settings,
        "seconds": result.seconds,
        "final_divergence": result.records[-1].divergence,
        "max_divergence": result.max_divergence,
        "bound": result.bound,
        "passed": result.passed,
        "steps": rows,
    }
    json_file.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    with csv_file.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def demo_command(settings: DemoSettings) -> int:
    """Run the demo, write its files, print the verdict; 0 if within the bound, else 1."""
    result = run_demo(settings)
    out_dir = settings.out_dir
    save_demo_plot(result, out_dir / "demo.png")
    save_demo_records(result, out_dir / "demo.json", out_dir / "demo.csv")
    first, last = result.records[0], result.records[-1]
    print(f"loss {first.loss_jax:.4f} -> {last.loss_jax:.4f} (JAX), "
          f"{first.loss_torch:.4f} -> {last.loss_torch:.4f} (PyTorch); "
          f"{result.seconds:.1f} s; wrote {out_dir / 'demo.png'}, demo.json, demo.csv")
    verdict = "OK" if result.passed else "FAILED"
    print(f"final divergence {last.divergence:.3e} (max {result.max_divergence:.3e}, "
          f"{settings.dtype} bound {result.bound:.0e}): {verdict}")
    return 0 if result.passed else 1


# ---------------------------------------------------------------------------------- parity


def parity_command(argv: Sequence[str]) -> int:
    """Print the parity table, if the test harness provides ``parity_tests.quick_table``."""
    try:
        quick_table = importlib.import_module("parity_tests.quick_table")
    except ModuleNotFoundError:
        print("parity: parity_tests.quick_table is not available in this installation "
              "(run from a source checkout: pytest parity_tests)", file=sys.stderr)
        return 2
    return int(quick_table.main(list(argv)) or 0)


# ------------------------------------------------------------------------------------ args


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid: expected a positive integer")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} is invalid: expected a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bert_demo",
        description="BertAdam in optax, checked against PyTorch.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="train a small BERT with optax and with PyTorch side by side",
        description="Train the same small BERT from the same weights on the same masked-LM "
                    "batches with optax_bertadam.bertadam (JAX) and torch_ref.BertAdam "
                    "(PyTorch); report the losses and how far the parameters drift apart. "
                    "Exits 1 if they drift beyond the bound for the dtype ("
                    + ", ".join(f"{k}: {v:g}" for k, v in DIVERGENCE_BOUNDS.items())
                    + "), set for the default learning rate: training amplifies round-off, "
                    "and more so at higher rates.",
    )
    defaults = DemoSettings()
    demo.add_argument("--steps", type=_positive_int, default=defaults.steps,
                      help="number of updates (default: %(default)s)")
    demo.add_argument("--out", type=Path, default=defaults.out_dir,
                      help="directory for demo.png, demo.json, demo.csv (default: %(default)s)")
    demo.add_argument("--schedule", choices=_bert_schedule_names(), default=defaults.schedule,
                      help="BertAdam schedule (default: %(default)s)")
    demo.add_argument("--device", choices=DEVICES, default=defaults.device,
                      help="where both sides run (default: %(default)s)")
    demo.add_argument("--dtype", choices=DTYPES, default=defaults.dtype,
                      help="parameter and compute precision (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=defaults.seed,
                      help="seed of the initial weights and of the batches (default: %(default)s)")
    demo.add_argument("--lr", type=_positive_float, default=defaults.learning_rate,
                      help="peak learning rate (default: %(default)s)")
    demo.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size,
                      help="sequences per batch (default: %(default)s)")
    demo.add_argument("--seq-len", type=_positive_int, default=defaults.seq_len,
                      help="tokens per sequence, at least 3 (default: %(default)s)")
    demo.add_argument("--print-every", type=_positive_int, default=None,
                      help="table row every N steps (default: steps / 10)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    schedules = commands.add_parser("schedules", help="plot every schedule of the package")
    schedules.add_argument("--out", type=Path, default=Path("out/schedules.png"),
                           help="PNG file to write (default: %(default)s)")
    schedules.add_argument("--t-total", type=_positive_int, default=1000,
                           help="total updates of each schedule (default: %(default)s)")
    schedules.add_argument("--warmup-steps", type=int, default=100,
                           help="warmup updates, 0 <= N < t_total (default: %(default)s)")

    commands.add_parser(
        "parity", help="run the parity tests and print their table; further arguments go to "
        "pytest, e.g. `parity -k bertadam`")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bert_demo``; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["parity"]:
        # Everything after `parity` belongs to pytest (-k, -x, ...), which argparse would refuse.
        parser.parse_args(["parity"])
        return parity_command(argv[1:])
    args = parser.parse_args(argv)

    if args.command == "demo":
        if args.seq_len < 3:
            parser.error(f"argument --seq-len: {args.seq_len} is invalid: expected at least 3 "
                         "([CLS], one token, [SEP])")
        settings = DemoSettings(
            steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
            learning_rate=args.lr, schedule=args.schedule, dtype=args.dtype,
            device=args.device, seed=args.seed,
            print_every=args.print_every or max(1, args.steps // 10),
            out_dir=args.out, progress_bar=not args.no_progress,
        )
        try:
            return demo_command(settings)
        except DeviceUnavailableError as error:
            parser.error(f"argument --device: {error}")

    if args.command == "schedules":
        if not 0 <= args.warmup_steps < args.t_total:
            parser.error(f"argument --warmup-steps: {args.warmup_steps} is invalid: expected "
                         f"0 <= N < --t-total ({args.t_total})")
        names = plot_schedules(args.out, args.t_total, args.warmup_steps)
        print(f"wrote {args.out}: {len(names)} schedules ({', '.join(names)})")
        return 0

    parser.error(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
