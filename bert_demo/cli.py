"""The main job's command line: ``python -m bert_demo`` (from the repository root).

Subcommands:

``demo``
    Trains ``transformers.BertForMaskedLM`` (PyTorch, ``torch_ref.BertAdam`` or
    ``pytorch_pretrained_bert.BertAdam``) and its Flax NNX port (``optax_bertadam.bertadam``)
    from identical weights on identical masked-LM batches, through
    ``optax_bertadam.compare.compare_training`` (see :mod:`bert_demo.main_job`). It prints the
    report, writes ``demo.png``, ``demo.json`` and ``demo.csv``, and exits with status 1 when
    the two runs part beyond the bounds of :data:`bert_demo.main_job.DIVERGENCE_BOUNDS`.

    ``demo --recipe bing_bert_lamb`` runs DeepSpeedExamples' bing_bert LAMB recipe instead: the
    PyTorch model under a real ``deepspeed.initialize`` engine with the recipe's config (the
    ``torch_ref`` twin of ``FusedLamb`` as client optimizer), the Flax port with
    ``optax_bertadam.bing_bert_lamb`` (see :mod:`bert_demo.bing_bert`); same report and files.
``schedules``
    Plots every learning-rate schedule of the package on one figure.
``parity``
    Runs the parity tests and prints their table (``parity_tests.quick_table``).

torch, transformers, flax and matplotlib are imported inside the subcommands that use them, so
that ``--help`` and argument errors do not wait for them.

Example::

    python -m bert_demo demo --steps 100 --dtype float64 --out out/
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bert_demo.main_job import (
    DEVICES,
    DIVERGENCE_BOUNDS,
    DTYPES,
    RECIPE_DIVERGENCE_BOUNDS,
    RECIPES,
    TORCH_OPTIMIZERS,
    DemoSettings,
    DeviceUnavailableError,
    _pyplot,
    demo_command,
)


def _bert_schedule_names() -> tuple[str, ...]:
    from optax_bertadam.schedules.bert import SCHEDULE_NAMES

    return SCHEDULE_NAMES


# ------------------------------------------------------------------------------ schedules


def all_schedules_for_plot(t_total: int = 1000, warmup_steps: int = 100) -> dict[str, Callable]:
    """``"family/name" -> schedule`` (peak rate about 1) for every schedule of the package.

    Enumerates :data:`optax_bertadam.schedules.registry.SCHEDULES`, each record's example built
    over ``t_total`` updates with ``warmup_steps`` of warmup, so a schedule added to the registry
    appears here without a change. Loss-driven records (``reduce_lr_on_plateau``, ``greedy``)
    follow the loss, not the count: nothing to plot.

    Returns:
      The schedules by record name, in registry order.
    """
    from optax_bertadam.schedules.registry import SCHEDULES

    return {record.name: record.schedule(1.0, t_total, warmup_steps)
            for record in SCHEDULES if not record.loss_driven}


def plot_schedules(out_file: Path, t_total: int = 1000, warmup_steps: int = 100,
                   columns: int = 6) -> list[str]:
    """Draw every schedule of :func:`all_schedules_for_plot` into ``out_file``, one small panel
    per schedule (small multiples: no shared axis, no legend over the data), grouped by family
    (one colour per family, named in the panel titles); return the names."""
    import math

    import jax
    import jax.numpy as jnp
    import numpy as np

    plt = _pyplot()
    schedules = all_schedules_for_plot(t_total, warmup_steps)
    families = list(dict.fromkeys(label.split("/")[0] for label in schedules))
    colours = {family: f"C{i}" for i, family in enumerate(families)}
    rows = math.ceil(len(schedules) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.0 * rows),
                                sharex=True, squeeze=False)
    # A little past t_total, to show what each schedule does after the end (warmup_linear
    # goes negative there, faithfully).
    counts = jnp.arange(int(t_total * 1.1) + 1)
    for axis, (label, fn) in zip(list(axes.flat)[: len(schedules)], schedules.items(), strict=True):
        family, name = label.split("/", 1)
        rates = np.asarray(jax.vmap(fn)(counts))
        axis.plot(np.asarray(counts), rates, color=colours[family], linewidth=1.4)
        axis.axhline(0.0, color="grey", linewidth=0.5)
        axis.axvline(t_total, color="grey", linestyle=":", linewidth=0.8)
        axis.axvline(warmup_steps, color="grey", linestyle=":", linewidth=0.8)
        axis.set_title(f"{family}: {name}", fontsize=7.5, color=colours[family])
        axis.tick_params(labelsize=6)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(schedules):]:
        axis.set_visible(False)
    figure.suptitle(f"every schedule, learning rate / peak over the update count "
                    f"(dotted: warmup end {warmup_steps}, t_total {t_total})", fontsize=10)
    figure.tight_layout()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_file, dpi=90)
    plt.close(figure)
    return list(schedules)


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
        description="The main job of optax-bertadam: BERT trained with BertAdam in PyTorch "
                    "and in JAX, compared step by step.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="train transformers' BERT in PyTorch and its Flax port side by side",
        description="Train transformers.BertForMaskedLM (PyTorch, BertAdam over DeepSpeed's "
                    "no_decay groups) and its Flax NNX port (optax_bertadam.bertadam) from the "
                    "same weights on the same masked-LM batches, through "
                    "optax_bertadam.compare.compare_training: losses, gradients, rates and "
                    "parameters compared at every step. Exits 1 if they part beyond the "
                    "scale-relative bounds of the dtype (parameters: "
                    + ", ".join(f"{k}: {v['parameters']:g}" for k, v in DIVERGENCE_BOUNDS.items())
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
    demo.add_argument("--torch-optimizer", choices=TORCH_OPTIMIZERS,
                      default=defaults.torch_optimizer,
                      help="torch_ref.BertAdam (DeepSpeed's) or the published "
                           "pytorch_pretrained_bert.BertAdam 0.6.2, which has warmup_linear, "
                           "warmup_cosine and warmup_constant with its own formulas "
                           "(default: %(default)s)")
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
    demo.add_argument("--rows", type=_positive_int, default=defaults.print_rows,
                      help="rows of the printed table, evenly spaced (default: %(default)s)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.add_argument("--recipe", choices=RECIPES, default=None,
                      help="run a published recipe instead of BertAdam: bing_bert_lamb is "
                           "DeepSpeedExamples' bing_bert LAMB pretraining (seq-128 phase: "
                           "LAMB, clipping 1.0, the script's per-step rate with lr_offset) on a "
                           "DeepSpeed engine vs optax_bertadam.bing_bert_lamb; float32 only, "
                           "parameter bound "
                           + ", ".join(f"{k}: {v['float32']['parameters']:g}"
                                       for k, v in RECIPE_DIVERGENCE_BOUNDS.items())
                           + "; --lr, --schedule and --torch-optimizer do not apply")

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
        if args.recipe is not None:
            # The recipe sets the optimizer and its rate: a choice of these would be ignored.
            defaults = DemoSettings()
            for flag, value, default in (("--lr", args.lr, defaults.learning_rate),
                                         ("--schedule", args.schedule, defaults.schedule),
                                         ("--torch-optimizer", args.torch_optimizer,
                                          defaults.torch_optimizer)):
                if value != default:
                    parser.error(f"argument {flag}: {value} is invalid with --recipe "
                                 f"{args.recipe}: the recipe sets the optimizer and its rate")
            if args.dtype not in RECIPE_DIVERGENCE_BOUNDS[args.recipe]:
                parser.error(f"argument --dtype: {args.dtype} is invalid with --recipe "
                             f"{args.recipe}: expected "
                             f"{', '.join(RECIPE_DIVERGENCE_BOUNDS[args.recipe])} (DeepSpeed's "
                             "clip_grad_norm_ computes the norm in float32: float64 cannot agree)")
        try:
            settings = DemoSettings(
                steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                learning_rate=args.lr, schedule=args.schedule,
                torch_optimizer=args.torch_optimizer, dtype=args.dtype, device=args.device,
                seed=args.seed, print_rows=args.rows, out_dir=args.out,
                progress_bar=not args.no_progress, recipe=args.recipe,
            )
        except ValueError as error:  # a schedule pytorch_pretrained_bert does not have
            parser.error(f"argument --schedule: {error}")
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
