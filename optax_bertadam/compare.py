"""Find where a JAX port of a PyTorch training run parts from the original: :func:`compare_training`.

A user porting a PyTorch training loop to JAX/Flax/optax sees the two runs drift and asks: is it
my model port, my loss, my schedule or my optimizer, and where does it start?
:func:`compare_training` runs both training steps on the same batches and compares, at every
step and per tensor, in the order the computation happens:

=================  ========================================================================
stage              what differs (everything before it agrees)
=================  ========================================================================
``init``           the parameters before the first update (the weight conversion)
``forward``        the loss (the model ports or the loss functions)
``gradients``      the gradient of a tensor while the losses agree (the backward passes)
``learning_rate``  the rate an update applies to a parameter group (the schedules)
``update``         a parameter after the update while loss, gradients, rate agree (the optimizers)
=================  ========================================================================

The first stage and step where the two part is :attr:`ComparisonReport.first_divergence`.
``learning_rate`` is a stage of its own, not folded into ``update``, because it names a
different culprit (the schedule, e.g. read one step late) from a wrong update rule (e.g. a weight
decay mask that disagrees with the PyTorch parameter groups).

Nothing here imports torch or matplotlib at module import time: torch is imported when
:func:`compare_training` runs, matplotlib when :meth:`ComparisonReport.plot` does.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_bertadam import _validation, catalogue
from optax_bertadam import lr as lr_lib
from optax_bertadam.torch_params import match_parameters
from optax_bertadam.torch_state import _to_numpy, torch_parameter_names

PyTree = Any

STAGES = ("init", "forward", "gradients", "learning_rate", "update")
MODES = ("end_to_end", "torch_gradients")

# Scale-relative bounds (see ComparisonReport: a tensor's error is max|jax - torch| / max|torch|,
# the loss error is relative to |torch loss|, a rate error relative to the peak rate so far).
# Worst errors measured on correct ports over 200 steps (tests/test_compare.py's MLP with GELU and
# LayerNorm, and its attention block; BertAdam and AdamW with a linear warmup schedule):
#   float64: loss 6.3e-16, gradients 7.0e-14, parameters 7.1e-15, rate 0
#   float32: loss 5.8e-7,  gradients 1.5e-4,  parameters 5.2e-6,  rate 9.4e-8
# float64 bounds leave 140x-1600x (gradients: a tensor's gradient sums many terms, more in bigger
# models); float32 bounds leave ~10x, because float32 errors grow as the two runs drift apart.
# Diagnose in float64 where possible: a bug stands out there by ten orders of magnitude.
# Read-only: a module-level dict a caller could change would change every later comparison.
DEFAULT_BOUNDS: Mapping[str, Mapping[str, float]] = MappingProxyType({
    "float64": MappingProxyType(
        {"loss": 1e-12, "gradients": 1e-10, "parameters": 1e-12, "learning_rate": 1e-12}),
    "float32": MappingProxyType(
        {"loss": 5e-6, "gradients": 1e-3, "parameters": 5e-5, "learning_rate": 1e-6}),
})
BOUND_KEYS = ("loss", "gradients", "parameters", "learning_rate")
# The bound each stage is judged by ("init" compares parameters, before any update).
STAGE_BOUND: Mapping[str, str] = MappingProxyType({
    "init": "parameters",
    "forward": "loss",
    "gradients": "gradients",
    "learning_rate": "learning_rate",
    "update": "parameters",
})

_EXPLANATIONS = {
    None: (
        "no divergence: losses, gradients, learning rates and parameters agree within the bounds "
        "at every step compared."
    ),
    "init": (
        "init: the parameters differ before any update, first {name}: `params` is not the torch "
        "model's weights under name_map/transform. Check the weight conversion of that tensor "
        "(a transpose, reshape or wrong source tensor?)."
    ),
    "forward": (
        "forward: the losses differ at step {step}: the model ports (or the loss functions) "
        "differ. Compare the forward pass layer by layer on this batch: activations (GELU erf vs "
        "tanh), LayerNorm epsilon, masking, which kernels are transposed, the loss reduction."
    ),
    "gradients": (
        "gradients: the losses agree at step {step} but the gradient of {name} differs: the "
        "backward passes differ (a stop_gradient, a custom_vjp, a parameter used twice or not at "
        "all). Compare jax.grad with torch autograd for that tensor."
    ),
    "learning_rate": (
        "learning_rate: losses and gradients agree at step {step} but the rate this update "
        "applies to {name} differs: the schedule ports differ (read one step early or late? "
        "warmup or total steps? per-group rates?). Compare the schedule with torch's scheduler "
        "step by step."
    ),
    "update": (
        "update: {agree} at step {step} but {name} differs after the update: the optimizer ports "
        "differ (hyperparameters, the weight-decay mask vs the torch parameter groups, clipping, "
        "epsilon, bias correction).{hint}"
    ),
}
_UPDATE_E2E = dict(
    agree="losses, gradients and rates agree",
    hint=" mode='torch_gradients' confirms it with the model port out of the way.",
)
_UPDATE_TORCH_GRADIENTS = dict(
    agree="both optimizers received torch's gradients (the model port is not involved), the rates agree",
    hint="",
)
# A gradient at most this many ulps of the largest gradient is round-off (said in the explanation).
ROUNDOFF_RATIO = 1000


class Divergence(NamedTuple):
    """Where two runs first part: ``(step, stage, name)``.

    ``step`` counts updates from 0 (``init`` is reported at step 0); ``stage`` is one of
    :data:`STAGES`; ``name`` is the torch parameter name (``gradients``, ``update``, ``init``),
    ``"param_groups[i]"`` (``learning_rate``) or ``None`` (``forward``).
    """

    step: int
    stage: str
    name: str | None


@dataclasses.dataclass
class StepRecord:
    """What one training step measured; errors are scale-relative (see :class:`ComparisonReport`).

    Attributes:
      step: the update index, from 0.
      torch_loss, jax_loss: the two losses on this step's batch (``jax_loss`` is ``None`` in
        ``torch_gradients`` mode without a JAX loss).
      loss_error: ``|jax_loss - torch_loss| / |torch_loss|``.
      gradient_errors: torch name -> gradient error (empty without a JAX loss).
      gradient_scales: torch name -> ``max|torch gradient|``: a tensor whose scale is round-off
        next to the others has a gradient that is zero up to rounding.
      parameter_errors: torch name -> error of the parameter after this update.
      torch_lr, jax_lr: the rate this update applies, per torch parameter group (``None``: not
        readable on that side).
      lr_errors: per group, ``|jax - torch|`` over the largest rate seen so far on either side.
      stage: the first stage of this step over its bound, or ``None``.
    """

    step: int
    torch_loss: float
    jax_loss: float | None
    loss_error: float | None
    gradient_errors: dict[str, float]
    gradient_scales: dict[str, float]
    parameter_errors: dict[str, float]
    torch_lr: list[float] | None
    jax_lr: list[float] | None
    lr_errors: list[float] | None
    stage: str | None = None

    @property
    def lr_error(self) -> float | None:
        """The largest rate error over the parameter groups, ``None`` when rates are unreadable."""
        return max(self.lr_errors) if self.lr_errors else None


def _worst(errors: Mapping[str, float], ignore: Iterable[str] = ()) -> tuple[str | None, float]:
    """``(name, error)`` of the largest of ``errors`` outside ``ignore`` (NaN counts as largest)."""
    ignore = set(ignore)
    candidates = [(n, e) for n, e in errors.items() if n not in ignore]
    if not candidates:
        return None, 0.0
    return max(candidates, key=lambda item: math.inf if math.isnan(item[1]) else item[1])


def _over(error: float | None, bound: float) -> bool:
    return error is not None and not error <= bound  # NaN counts as over


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


@dataclasses.dataclass
class ComparisonReport:
    """The result of :func:`compare_training`; ``print(report)`` shows it as a table.

    Errors are scale-relative so that one bound fits every tensor: for a tensor,
    ``max|jax - torch| / max|torch|`` (or ``/ max|jax|`` where torch's is all zeros); for the loss,
    ``|jax - torch| / |torch|``; for a rate, ``|jax - torch|`` over the largest rate seen so far
    on either side. Tensors are compared in the Flax layout (torch tensors go through
    ``transform``) and named by their torch names.

    Attributes:
      first_divergence: ``None`` when the runs agree within ``bounds``, else a
        :class:`Divergence` ``(step, stage, name)``.
      explanation: what the first divergence means, in words.
      steps: one :class:`StepRecord` per step.
      initial_errors: torch name -> parameter error before the first update.
      bounds: the bound of each of ``loss``, ``gradients``, ``parameters``, ``learning_rate``.
      mode: ``"end_to_end"`` or ``"torch_gradients"``.
      dtype: ``"float32"`` or ``"float64"``: the lower precision of the two sides.
      names: the torch names of the compared parameters.
      groups: torch name -> index of its parameter group in the torch optimizer.
      ignore: torch names compared and recorded but not counted for ``first_divergence``.
      counted_stages: the stages that can be the first divergence in this mode.
      notes: anything the reader should know (unreadable rates, ...).
    """

    first_divergence: Divergence | None
    steps: list[StepRecord]
    initial_errors: dict[str, float]
    bounds: dict[str, float]
    mode: str
    dtype: str
    names: list[str]
    groups: dict[str, int]
    ignore: list[str]
    counted_stages: tuple[str, ...]
    notes: list[str]

    @property
    def explanation(self) -> str:
        """The first divergence in words, with what to check next."""
        d = self.first_divergence
        if d is None:
            return _EXPLANATIONS[None]
        words = _UPDATE_E2E if self.mode == "end_to_end" else _UPDATE_TORCH_GRADIENTS
        text = _EXPLANATIONS[d.stage].format(step=d.step, name=d.name, **words)
        error, bound = self.divergence_error()
        text = f"{text} Error {_fmt(error)} > bound {bound:.0e}."
        others = self.over_bound(d.step, d.stage)[1:]
        if others:
            text += f" Also over the bound at this stage: {_validation.listing(others, 8)}."
        if d.stage in ("gradients", "update"):
            ratio = self.gradient_ratio(d.step, d.name)
            if ratio is not None and ratio <= ROUNDOFF_RATIO * np.finfo(self.dtype).eps:
                text += (
                    f" Note: the torch gradient of {d.name} is {ratio:.0e} of the largest gradient, "
                    "i.e. zero up to round-off on both sides (an attention key bias is: softmax "
                    "ignores a shift of the scores along the keys), and Adam scales round-off up. "
                    "If that is expected, pass ignore=[...] with it and compare the rest."
                )
        return text

    def over_bound(self, step: int, stage: str) -> list[str]:
        """Tensor names (``param_groups[i]`` for rates) over the bound of ``stage`` at ``step``,
        worst first, ignored tensors left out (``init`` is judged at step 0)."""
        bound = self.bounds[STAGE_BOUND[stage]]
        if stage == "init":
            errors = self.initial_errors
        elif stage == "forward":
            return []
        elif stage == "learning_rate":
            errors = {f"param_groups[{g}]": e for g, e in enumerate(self.steps[step].lr_errors or [])}
        else:
            record = self.steps[step]
            errors = record.gradient_errors if stage == "gradients" else record.parameter_errors
        over = [(n, e) for n, e in errors.items() if n not in self.ignore and _over(e, bound)]
        over.sort(key=lambda item: math.inf if math.isnan(item[1]) else item[1], reverse=True)
        return [n for n, _ in over]

    def gradient_ratio(self, step: int, name: str) -> float | None:
        """``max|torch gradient of name|`` over the largest gradient of any tensor at ``step``."""
        scales = self.steps[step].gradient_scales
        largest = max(scales.values(), default=0.0)
        return scales[name] / largest if largest > 0 and name in scales else None

    def divergence_error(self) -> tuple[float | None, float | None]:
        """``(error, bound)`` of the first divergence; ``(None, None)`` without one."""
        d = self.first_divergence
        if d is None:
            return None, None
        bound = self.bounds[STAGE_BOUND[d.stage]]
        if d.stage == "init":
            return self.initial_errors[d.name], bound
        record = self.steps[d.step]
        if d.stage == "forward":
            return record.loss_error, bound
        if d.stage == "gradients":
            return record.gradient_errors[d.name], bound
        if d.stage == "learning_rate":
            return record.lr_errors[int(d.name.split("[")[1].rstrip("]"))], bound
        return record.parameter_errors[d.name], bound

    def rejudged(
        self,
        bounds: Mapping[str, float] | None = None,
        ignore: Iterable[str] | Callable[[str], bool] | None = None,
    ) -> ComparisonReport:
        """The same measurements judged with other ``bounds`` (overrides) or ``ignore`` (replaces),
        without training again: a new report with its own ``first_divergence``. After
        ``stop_at_divergence``, only the steps that ran can be judged."""
        merged = _merge_bounds(self.bounds, bounds)
        ignore = _check_ignore(self.ignore if ignore is None else ignore, self.names)
        steps = [dataclasses.replace(r, stage=None) for r in self.steps]
        first = _judge_init(self.initial_errors, merged, ignore)
        for record in steps:
            divergence = _judge(record, merged, ignore, self.counted_stages)
            first = first or divergence
        return dataclasses.replace(self, first_divergence=first, steps=steps, bounds=merged, ignore=ignore)

    def table(self, max_rows: int = 40) -> str:
        """The per-step table; with more steps than ``max_rows``, evenly spaced rows plus the
        first and last step and the step of the first divergence."""
        n = len(self.steps)
        rows = list(range(n))
        if n > max_rows:
            keep = {round(i * (n - 1) / (max_rows - 1)) for i in range(max_rows)}
            if self.first_divergence is not None:
                keep.add(self.first_divergence.step)
            rows = sorted(keep)
        # Name columns as wide as the longest name shown (whole names), at most 36 characters
        # (longer ones cut in the middle by _short).
        shown_names = [n for i in rows for n in (_worst(self.steps[i].gradient_errors, self.ignore)[0],
                                                 _worst(self.steps[i].parameter_errors, self.ignore)[0])
                       if n]
        w = min(max([len("worst parameter"), *map(len, shown_names)]), 36)
        head = (
            f"{'step':>4}  {'torch loss':>11}  {'loss err':>8}  {'grad err':>8}  "
            f"{'worst gradient':<{w}}  {'param err':>9}  {'worst parameter':<{w}}  {'lr err':>7}  stage"
        )
        lines = [head, "-" * len(head)]
        shown = -1
        for i in rows:
            if i > shown + 1:
                lines.append(f"{'...':>4}")
            shown = i
            r = self.steps[i]
            g_name, g_err = _worst(r.gradient_errors, self.ignore)
            p_name, p_err = _worst(r.parameter_errors, self.ignore)
            lines.append(
                f"{r.step:>4}  {r.torch_loss:>11.6g}  {_fmt(r.loss_error):>8}  "
                f"{_fmt(g_err if g_name else None):>8}  {_short(g_name if g_err else None, w):<{w}}  "
                f"{_fmt(p_err if p_name else None):>9}  {_short(p_name if p_err else None, w):<{w}}  "
                f"{_fmt(r.lr_error):>7}  {r.stage or 'ok'}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        bounds = ", ".join(f"{k} {v:.0e}" for k, v in self.bounds.items())
        init_name, init_err = _worst(self.initial_errors, self.ignore)
        parts = [
            f"compare_training: {len(self.steps)} steps, mode={self.mode}, dtype={self.dtype}, "
            f"{len(self.names)} tensors",
            f"bounds (scale-relative): {bounds}",
            f"initial parameters: worst error {_fmt(init_err)}" + (f" ({init_name})" if init_err else ""),
            self.table(),
        ]
        if self.ignore:
            g = max((r.gradient_errors.get(n, 0.0) for r in self.steps for n in self.ignore), default=0.0)
            p = max((r.parameter_errors[n] for r in self.steps for n in self.ignore), default=0.0)
            parts.append(
                f"ignored for first_divergence: {', '.join(self.ignore)} (worst gradient error "
                f"{_fmt(g)}, worst parameter error {_fmt(p)})"
            )
        parts.extend(f"note: {note}" for note in self.notes)
        parts.append(f"first_divergence: {self.first_divergence}")
        parts.append(self.explanation)
        return "\n".join(parts)

    def __repr__(self) -> str:
        return (
            f"ComparisonReport(mode={self.mode!r}, dtype={self.dtype!r}, steps={len(self.steps)}, "
            f"first_divergence={self.first_divergence!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report as JSON-ready Python values (NaN and inf become strings)."""
        d = self.first_divergence
        error, bound = self.divergence_error()
        out = {
            "first_divergence": None if d is None else {**d._asdict(), "error": error, "bound": bound},
            "explanation": self.explanation,
            "mode": self.mode,
            "dtype": self.dtype,
            "bounds": self.bounds,
            "names": self.names,
            "groups": self.groups,
            "ignore": self.ignore,
            "counted_stages": list(self.counted_stages),
            "notes": self.notes,
            "initial_errors": self.initial_errors,
            "steps": [dataclasses.asdict(r) | {"lr_error": r.lr_error} for r in self.steps],
        }
        return _json_safe(out)

    def to_json(self, path: str | None = None, indent: int | None = 1) -> str:
        """The report as a JSON string (:meth:`to_dict`); also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    def plot(self, path: str | None = None, title: str | None = None, *, ax: Any = None) -> None:
        """Write a PNG of the per-stage errors over the steps (log scale) with their bounds.

        One line per stage: the loss error, the worst gradient error, the worst rate error, the
        worst parameter error (ignored tensors left out); dashed lines are the bounds, a vertical
        line marks the first divergence. Errors of exactly 0 are drawn at a tenth of the dtype's
        epsilon.

        Args:
          path: the PNG to write (not with ``ax``).
          title: the axis title (default: mode, dtype and the first divergence).
          ax: a matplotlib ``Axes`` to draw into instead, e.g. one panel of a larger figure
            (the caller saves it).
        """
        if (path is None) == (ax is None):
            raise ValueError(f"path={path!r}, ax={ax!r} is invalid: expected exactly one of them")
        from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

        steps = [r.step for r in self.steps]

        floor = float(np.finfo(self.dtype).eps) / 10  # where exact zeros are drawn

        def series(values):
            return [np.nan if v is None else max(v, floor) for v in values]

        lines = {
            "loss": ("forward: loss", [r.loss_error for r in self.steps], "tab:blue"),
            "gradients": (
                "gradients: worst tensor",
                [_worst(r.gradient_errors, self.ignore)[1] if r.gradient_errors else None
                 for r in self.steps],
                "tab:orange",
            ),
            "learning_rate": ("learning rate: worst group", [r.lr_error for r in self.steps], "tab:green"),
            "parameters": (
                "update: worst parameter",
                [_worst(r.parameter_errors, self.ignore)[1] for r in self.steps],
                "tab:red",
            ),
        }
        fig = None
        if ax is None:
            fig = Figure(figsize=(8, 4.5), dpi=110)
            ax = fig.add_subplot()
        for key, (label, values, color) in lines.items():
            if all(v is None for v in values):
                continue
            counted = key not in ("loss", "gradients") or self.mode == "end_to_end"
            ax.plot(steps, series(values), marker=".", color=color,
                    label=f"{label} (bound {self.bounds[key]:.0e}{'' if counted else ', not counted'})")
            ax.axhline(self.bounds[key], color=color, linestyle="--", linewidth=0.8)
        if self.first_divergence is not None:
            ax.axvline(self.first_divergence.step, color="black", linestyle=":", linewidth=1,
                       label=f"first divergence: {self.first_divergence.stage}")
        ax.set_yscale("log")
        ax.set_xlabel("step (update index)")
        ax.set_ylabel(f"scale-relative error (dashed: bounds; 0 drawn at {floor:.0e})")
        d = self.first_divergence
        status = "no divergence" if d is None else (
            f"first divergence: step {d.step}, {d.stage}" + (f", {d.name}" if d.name else "")
        )
        ax.set_title(title or f"{self.mode}, {self.dtype}: {status}", fontsize=10)
        ax.legend(fontsize=8, loc="best")
        ax.grid(True, which="major", alpha=0.3)
        if fig is not None:
            fig.tight_layout()
            fig.savefig(path, format="png")


def _short(name: str | None, width: int = 24) -> str:
    """``name`` in ``width`` characters, cut in the middle: whole path components are left out
    from the middle outwards, never the first, the last two or a layer number and the name
    before it, so both ends and the layer still say which tensor it is
    (``bert.encoder.layer.0…self.query.bias``)."""
    if name is None:
        return "-"
    if len(name) <= width:
        return name
    separator = "/" if "/" in name and "." not in name else "."
    parts = name.split(separator)
    kept = [True] * len(parts)

    def joined() -> str:
        out, elided = "", False
        for part, keep in zip(parts, kept, strict=True):
            if not keep:
                elided = True
                continue
            out += ("…" if elided else (separator if out else "")) + part
            elided = False
        return out

    centre = (len(parts) - 1) / 2
    # A layer number and the name before it ("layer.0") say which block: kept.
    protected = {i for i, p in enumerate(parts) if p.isdigit()}
    protected |= {i - 1 for i in protected}
    candidates = sorted((i for i in range(1, len(parts) - 2) if i not in protected),
                        key=lambda i: (abs(i - centre), i))
    removed = []
    for i in candidates:
        if len(joined()) <= width:
            break
        kept[i] = False
        removed.append(i)
    for i in reversed(removed):  # put back what still fits, the outermost first
        kept[i] = True
        if len(joined()) > width:
            kept[i] = False
    text = joined()
    if len(text) <= width:
        return text
    # Still too long (long components): cut the characters in the middle.
    head = (width - 1) // 2
    return name[:head] + "…" + name[-(width - 1 - head):]


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _error(jax_value: np.ndarray, torch_value: np.ndarray) -> float:
    """``max|jax - torch| / max|torch|`` (``/ max|jax|`` where torch is all zeros), in float64."""
    a = np.asarray(jax_value, dtype=np.float64)
    b = np.asarray(torch_value, dtype=np.float64)
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    if scale == 0.0:
        scale = float(np.max(np.abs(a))) if a.size else 0.0
    if diff == 0.0:
        return 0.0
    if math.isnan(diff) or scale == 0.0 or math.isnan(scale):
        return math.nan if math.isnan(diff) or math.isnan(scale) else math.inf
    return diff / scale


def _default_torch_lr(optimizer: Any, scheduler: Any) -> list[float] | None:
    """The rate ``optimizer.step()`` applies next, per parameter group.

    BertAdam-style optimizers schedule inside ``step`` (``param_groups[i]['lr']`` is the base
    rate) and expose ``get_lr()``, one rate per parameter, ``[0]`` before the first step (no
    state yet: unreadable, ``None``). Otherwise ``param_groups[i]['lr']``, which a torch LR
    scheduler sets before each step.
    """
    del scheduler
    get_lr = getattr(optimizer, "get_lr", None)
    if not callable(get_lr):
        return [float(group["lr"]) for group in optimizer.param_groups]
    per_parameter = [float(r) for r in get_lr()]
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    if len(per_parameter) != sum(sizes):
        return None
    starts = np.cumsum([0, *sizes[:-1]])
    return [per_parameter[s] if n else math.nan for s, n in zip(starts, sizes, strict=True)]


def _default_jax_lr(opt_state: PyTree) -> list[float] | None:
    """The rate the next ``tx.update`` applies, per group (:func:`optax_bertadam.get_last_lr`);
    ``None`` when the state holds no readable rate (e.g. ``optax.adamw``'s)."""
    try:
        return [float(r) for r in lr_lib.get_last_lr(opt_state)]
    except ValueError:
        return None


def _float_dtype_name(dtype: Any) -> str:
    return "float64" if np.dtype(dtype) == np.float64 else "float32"


def compare_training(
    torch_model: Any,
    torch_optimizer: Any,
    torch_loss: Callable[[Any, Mapping[str, Any]], Any],
    params: PyTree,
    tx: optax.GradientTransformation,
    jax_loss: Callable[[PyTree, Mapping[str, Any]], Any] | None,
    batches: Iterable[Mapping[str, Any]],
    *,
    scheduler: Any = None,
    name_map: Mapping[str, str] | Callable[[str], str] | None = None,
    transform: Callable[[str, np.ndarray], np.ndarray] | None = None,
    mode: str = "end_to_end",
    bounds: Mapping[str, float] | None = None,
    ignore: Iterable[str] | Callable[[str], bool] = (),
    torch_lr: Callable[[Any, Any], Sequence[float] | None] | None = None,
    jax_lr: Callable[[PyTree], Sequence[float] | float | None] | None = None,
    torch_backward: Callable[[Any], Any] | None = None,
    torch_step: Callable[[], Any] | None = None,
    stop_at_divergence: bool = False,
    jit: bool = True,
) -> ComparisonReport:
    """Train a PyTorch model and its JAX port side by side and find the first place they part.

    At every step, on the same batch, it runs the user's PyTorch step::

        loss = torch_loss(torch_model, batch); loss.backward()
        torch_optimizer.step(); scheduler.step(); torch_optimizer.zero_grad()

    (``torch_backward(loss)`` and ``torch_step()`` in place of ``loss.backward()`` and
    ``torch_optimizer.step()`` where given: a DeepSpeed engine's ``backward`` and ``step``)

    and the JAX step (jitted once)::

        loss, grads = jax.value_and_grad(jax_loss)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)   # also value=loss
        params = optax.apply_updates(params, updates)

    and compares the loss, every gradient, the rate of every torch parameter group and every
    parameter after the update (before the first step, the parameters themselves). The result's
    ``first_divergence`` is the first ``(step, stage, name)`` over its bound, stages taken in
    computation order: ``init``, ``forward``, ``gradients``, ``learning_rate``, ``update`` (see
    :mod:`optax_bertadam.compare`). ``print(report)`` explains it in words.

    ``mode="torch_gradients"`` feeds PyTorch's gradients (taken after ``backward``, before the
    optimizer clips them) to ``tx`` instead of JAX's: the parameters then differ only if the
    optimizers or schedules do, whatever the model ports do. Loss and gradient errors are still
    recorded when ``jax_loss`` is given, but only ``init``, ``learning_rate`` and ``update`` can be
    the first divergence; ``jax_loss`` may be ``None``.

    It trains ``torch_model`` and ``torch_optimizer`` in place (pass copies to keep the
    originals); ``params`` is not modified. Make both sides deterministic (dropout off, the same
    masks in the batch). One step is one batch (no gradient accumulation). Under float64, enable
    ``jax.enable_x64`` and use a float64 torch model.

    Args:
      torch_model: a ``torch.nn.Module``; its parameters are those of ``torch_optimizer``.
      torch_optimizer: a ``torch.optim.Optimizer`` (``BertAdam``, ``AdamW``, ...) over
        ``torch_model``'s parameters, in one or more parameter groups.
      torch_loss: ``torch_loss(torch_model, batch) -> scalar tensor``; ``batch`` holds torch
        tensors (floating arrays in the model's dtype, integer arrays as ``torch.long``).
      params: the JAX parameters (a dict, Linen ``params``, ``nnx.State``), the same weights as
        ``torch_model``'s under ``name_map`` and ``transform``.
      tx: the optax optimizer; it is wrapped in ``optax.with_extra_args_support`` and receives
        ``value=loss`` (for plateau schedules).
      jax_loss: ``jax_loss(params, batch) -> scalar``; ``batch`` holds jnp arrays (floating in
        ``params``' dtype, integers as the default int type). ``None`` only with
        ``mode="torch_gradients"``.
      batches: an iterable of dicts of numpy arrays, one per step.
      scheduler: a torch LR scheduler stepped after every optimizer step (``step(loss)`` for
        ``ReduceLROnPlateau``), or ``None``.
      name_map: Flax path (``/``-joined, as :func:`optax_bertadam.parameter_names`) -> torch
        name, as a mapping or a function; ``None``: the Flax path with ``.`` for ``/``. Paired
        by :func:`optax_bertadam.match_parameters` as in :func:`optax_bertadam.from_torch`: every
        Flax path and every parameter of ``torch_optimizer`` must match, one tensor once.
      transform: ``transform(flax_path, torch_array) -> array`` in the Flax layout, e.g.
        :func:`optax_bertadam.transpose_kernels` for ``Linear`` weights.
      mode: ``"end_to_end"`` or ``"torch_gradients"``.
      bounds: overrides of the scale-relative bounds ``loss``, ``gradients``, ``parameters``,
        ``learning_rate``; defaults :data:`DEFAULT_BOUNDS` for the lower precision of the two
        sides (float64 only when both are float64).
      ignore: torch names (or a predicate on torch names) to compare and record but not count
        for ``first_divergence``: e.g. attention key biases, whose gradient is zero up to
        round-off on both sides (the explanation says when it sees one).
      torch_lr: ``torch_lr(torch_optimizer, scheduler) -> rates per group`` of the next step;
        default: ``optimizer.get_lr()`` for BertAdam-style optimizers (per parameter, reduced to
        groups), else ``param_groups[i]['lr']``.
      jax_lr: ``jax_lr(opt_state) -> rate(s)`` of the next update; default
        :func:`optax_bertadam.get_last_lr`, one rate per group (``None`` where the state has no
        learning-rate state: then rates are not compared and a note says so). A single JAX rate
        is compared with every torch group; as many rates as groups, pairwise.
      torch_backward: ``torch_backward(loss)`` instead of ``loss.backward()``, e.g. a DeepSpeed
        engine's ``engine.backward`` (which scales the loss for accumulation and fp16 and
        all-reduces the gradients). The gradients compared are those in ``.grad`` after it.
      torch_step: ``torch_step()`` instead of ``torch_optimizer.step()``, e.g. ``engine.step``
        (which clips and steps its wrapped optimizer); ``scheduler.step()`` still follows it.
        With both, ``torch_optimizer`` is the optimizer whose groups and rates are read (for
        DeepSpeed, the client optimizer ``engine.optimizer`` drives) and ``torch_model`` the
        module it trains (``engine.module``).
      stop_at_divergence: stop after the step of the first divergence (later steps inherit it).
      jit: jit the JAX step (once); ``False`` to debug it eagerly.

    Returns:
      A :class:`ComparisonReport`: ``first_divergence`` (``None`` or ``Divergence(step, stage,
      name)``), ``explanation``, per-step records, ``to_json(path)``, ``plot(path)``.

    Raises:
      ValueError: an unknown mode or bound name, names that do not match (listed), shapes that
        do not match after ``transform`` (listed), ``jax_loss=None`` in ``end_to_end`` mode.

    Example: a torch ``Linear`` and its JAX port (same layout, so no ``name_map``/``transform``),
    trained with AdamW on both sides. ``torch.optim.AdamW``'s defaults (``eps=1e-8``,
    ``weight_decay=0.01``) are not :func:`optax_bertadam.adamw`'s (``1e-6``, ``0``): left out,
    they would be the first divergence, at the ``update`` stage.

    >>> import numpy as np, torch
    >>> import optax_bertadam as ob
    >>> from optax_bertadam.compare import compare_training
    >>> rng = np.random.default_rng(0)
    >>> batches = [{"x": rng.normal(size=(8, 3)), "y": rng.normal(size=(8, 2))} for _ in range(3)]
    >>> def compare(torch_adamw_kwargs, tx):
    ...     _ = torch.manual_seed(0)
    ...     model = torch.nn.Linear(3, 2)  # trained in place: a fresh one for every comparison
    ...     params = {n: jnp.asarray(p.detach().numpy()) for n, p in model.named_parameters()}
    ...     return compare_training(
    ...         model, torch.optim.AdamW(model.parameters(), **torch_adamw_kwargs),
    ...         lambda m, b: ((m(b["x"]) - b["y"]) ** 2).mean(),
    ...         params, tx, lambda p, b: ((b["x"] @ p["weight"].T + p["bias"] - b["y"]) ** 2).mean(),
    ...         batches)
    >>> report = compare(dict(lr=1e-2, eps=1e-6, weight_decay=0.01),
    ...                  ob.adamw(1e-2, eps=1e-6, weight_decay=0.01))
    >>> print(report.first_divergence)
    None
    >>> report.explanation.split(":")[0]
    'no divergence'
    >>> compare(dict(lr=1e-2), ob.adamw(1e-2)).first_divergence  # torch's defaults are not these
    Divergence(step=0, stage='update', name=...)

    For a Flax model, ``name_map`` maps its paths to torch names (e.g. ``lambda path:
    path.replace("/", ".").replace("kernel", "weight")``) and ``transform=ob.transpose_kernels``
    puts ``Linear`` weights in the Flax layout; ``print(report)`` shows the table and the
    explanation, ``report.plot("compare.png")`` and ``report.to_json("compare.json")`` save it.
    """
    torch = _validation.import_torch("compare_training")  # only here: the module imports without torch

    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is invalid: expected one of {', '.join(map(repr, MODES))}")
    if jax_loss is None and mode == "end_to_end":
        raise ValueError("jax_loss=None is invalid with mode='end_to_end': it needs the JAX loss")

    # Names: Flax path -> torch name through the one matcher (names, shapes after transform, tied
    # weights), as from_torch pairs them: every parameter of the optimizer must have a Flax path.
    torch_params = dict(torch_model.named_parameters())
    torch_parameter_names(torch_params.items(), torch_optimizer)  # every one named by the model
    group_of_param = {
        id(p): g for g, group in enumerate(torch_optimizer.param_groups) for p in group["params"]
    }
    matches = match_parameters(torch_params, params, name_map, transform,
                               required=[p for group in torch_optimizer.param_groups
                                         for p in group["params"]])
    untrained = [f"{m.flax_path} -> {m.torch_name}" for m in matches if id(m.tensor) not in group_of_param]
    if untrained:
        raise ValueError(
            "params holds parameters that torch_optimizer does not train (compare_training compares "
            f"trained parameters, each in its group): {_validation.listing(untrained)}; leave them "
            "out of params, or add them to the optimizer"
        )
    flax_paths = [m.flax_path for m in matches]
    to_torch = {m.flax_path: m.torch_name for m in matches}
    names = [m.torch_name for m in matches]
    ignore = _check_ignore(ignore, names)
    groups = {n: group_of_param[id(torch_params[n])] for n in names}

    leaves, treedef = jax.tree.flatten(params)
    jax_float = next((x.dtype for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)), jnp.float32)
    torch_float = next((p.dtype for p in torch_params.values() if p.is_floating_point()), torch.float32)
    both64 = np.dtype(jax_float) == np.float64 and torch_float == torch.float64
    dtype = "float64" if both64 else "float32"
    notes = []
    if _float_dtype_name(jax_float) != str(torch_float).removeprefix("torch."):
        notes.append(
            f"the sides differ in precision (JAX {np.dtype(jax_float).name}, torch "
            f"{str(torch_float).removeprefix('torch.')}): float32 bounds apply"
            + ("; enable jax.enable_x64 for float64" if torch_float == torch.float64 else "")
        )
    merged = _merge_bounds(DEFAULT_BOUNDS[dtype], bounds)

    def torch_in_flax_layout(path: str, tensor: Any) -> np.ndarray:
        value = _to_numpy(tensor)
        return np.asarray(transform(path, value)) if transform is not None else value

    def torch_tree(get):
        return [torch_in_flax_layout(p, get(to_torch[p])) for p in flax_paths]

    def errors(jax_leaves, torch_leaves):
        return {n: _error(np.asarray(a), b) for n, a, b in zip(names, jax_leaves, torch_leaves, strict=True)}

    # The JAX step, jitted once.
    tx = optax.with_extra_args_support(tx)
    value_and_grad = jax.value_and_grad(jax_loss) if jax_loss is not None else None

    def jax_step(params, opt_state, batch, torch_grads, torch_loss_value):
        if value_and_grad is not None:
            loss, grads = value_and_grad(params, batch)
        else:
            loss, grads = None, None
        feed = grads if mode == "end_to_end" else torch_grads
        value = loss if mode == "end_to_end" else torch_loss_value
        updates, opt_state = tx.update(feed, opt_state, params, value=value)
        return loss, grads, optax.apply_updates(params, updates), opt_state

    step_fn = jax.jit(jax_step) if jit else jax_step
    opt_state = tx.init(params)
    read_torch_lr = torch_lr or _default_torch_lr
    read_jax_lr = jax_lr or _default_jax_lr
    counted = ("init", "learning_rate", "update") if mode == "torch_gradients" else STAGES

    def to_jax_batch(batch):
        out = {}
        for key, value in batch.items():
            value = np.asarray(value)
            if np.issubdtype(value.dtype, np.floating):
                out[key] = jnp.asarray(value, dtype=jax_float)
            else:
                out[key] = jnp.asarray(value, dtype=jax.dtypes.canonicalize_dtype(value.dtype))
        return out

    def to_torch_batch(batch):
        out = {}
        for key, value in batch.items():
            value = np.asarray(value)
            tensor = torch.from_numpy(np.array(value, order="C"))
            if np.issubdtype(value.dtype, np.floating):
                tensor = tensor.to(torch_float)
            elif np.issubdtype(value.dtype, np.integer):
                tensor = tensor.long()
            out[key] = tensor
        return out

    initial_errors = errors(leaves, torch_tree(lambda n: torch_params[n]))
    first: Divergence | None = None
    first = _judge_init(initial_errors, merged, ignore)

    records: list[StepRecord] = []
    peak_rate = 0.0
    rate_notes = set()
    for step, batch in enumerate([] if stop_at_divergence and first is not None else batches):
        # Rates this update applies, read before it.
        t_rates = read_torch_lr(torch_optimizer, scheduler)
        j_rates = read_jax_lr(opt_state)
        t_rates = None if t_rates is None else [float(r) for r in t_rates]
        if j_rates is not None:
            j_rates = [float(r) for r in np.ravel(np.asarray(j_rates, dtype=np.float64))]
        lr_errors = None
        if t_rates is None:
            rate_notes.add(
                f"torch rate unreadable at step {step} (BertAdam-style get_lr() returns [0] before "
                "its first step): not compared there"
            )
        elif j_rates is None:
            rate_notes.add("JAX rate unreadable (no scheduled-rate state in tx; pass jax_lr=)")
        elif len(j_rates) not in (1, len(t_rates)):
            rate_notes.add(f"{len(j_rates)} JAX rates for {len(t_rates)} torch groups: rates not compared")
        else:
            if len(j_rates) == 1:
                j_rates = j_rates * len(t_rates)
            peak_rate = max([peak_rate, *map(abs, t_rates), *map(abs, j_rates)])
            lr_errors = [
                0.0 if a == b else (abs(a - b) / peak_rate if peak_rate > 0 else math.inf)
                for a, b in zip(j_rates, t_rates, strict=True)
            ]

        # PyTorch.
        torch_optimizer.zero_grad()
        loss = torch_loss(torch_model, to_torch_batch(batch))
        if torch_backward is None:
            loss.backward()
        else:
            torch_backward(loss)
        t_loss = float(loss.detach())
        t_grads = torch_tree(
            lambda n: torch_params[n].grad if torch_params[n].grad is not None
            else torch.zeros_like(torch_params[n])
        )
        if torch_step is None:
            torch_optimizer.step()
        else:
            torch_step()
        if scheduler is not None:
            if catalogue.is_loss_driven(scheduler):
                scheduler.step(t_loss)
            else:
                scheduler.step()
        torch_optimizer.zero_grad()

        # JAX.
        feed = jax.tree.unflatten(
            treedef, [jnp.asarray(g, dtype=leaf.dtype) for g, leaf in zip(t_grads, leaves, strict=True)]
        )
        j_loss, j_grads, params, opt_state = step_fn(
            params, opt_state, to_jax_batch(batch), feed, jnp.asarray(t_loss, dtype=jax_float)
        )
        leaves = jax.tree.leaves(params)

        record = StepRecord(
            step=step,
            torch_loss=t_loss,
            jax_loss=None if j_loss is None else float(j_loss),
            loss_error=None if j_loss is None else _error(np.asarray(j_loss), np.asarray(t_loss)),
            gradient_errors={} if j_grads is None else errors(jax.tree.leaves(j_grads), t_grads),
            gradient_scales={n: float(np.max(np.abs(g))) if g.size else 0.0 for n, g in zip(names, t_grads,
                                                                                           strict=True)},
            parameter_errors=errors(leaves, torch_tree(lambda n: torch_params[n])),
            torch_lr=t_rates,
            jax_lr=j_rates,
            lr_errors=lr_errors,
        )
        records.append(record)
        divergence = _judge(record, merged, ignore, counted)
        first = first or divergence
        if stop_at_divergence and first is not None:
            break

    notes.extend(sorted(rate_notes))
    if mode == "torch_gradients":
        notes.append("torch_gradients mode: tx received torch's gradients; forward/gradients "
                     "errors are shown but not counted")
    return ComparisonReport(
        first_divergence=first,
        steps=records,
        initial_errors=initial_errors,
        bounds=merged,
        mode=mode,
        dtype=dtype,
        names=names,
        groups=groups,
        ignore=ignore,
        counted_stages=tuple(counted),
        notes=notes,
    )


def _merge_bounds(base: Mapping[str, float], overrides: Mapping[str, float] | None) -> dict[str, float]:
    merged = dict(base)
    for key, value in (overrides or {}).items():
        if key not in BOUND_KEYS:
            raise ValueError(f"bounds has an unknown key {key!r}: expected some of {', '.join(BOUND_KEYS)}")
        merged[key] = float(value)
    return merged


def _check_ignore(ignore: Iterable[str] | Callable[[str], bool], names: Sequence[str]) -> list[str]:
    if callable(ignore):
        return [n for n in names if ignore(n)]
    ignore = [str(n) for n in ignore]
    unknown = sorted(set(ignore) - set(names))
    if unknown:
        raise ValueError(f"ignore names tensors that are not compared: {_validation.listing(unknown)}")
    return ignore


def _judge_init(
    initial_errors: Mapping[str, float], bounds: Mapping[str, float], ignore: Sequence[str]
) -> Divergence | None:
    name, error = _worst(initial_errors, ignore)
    return Divergence(0, "init", name) if _over(error, bounds["parameters"]) else None


def _judge(
    record: StepRecord, bounds: Mapping[str, float], ignore: Sequence[str], counted: Sequence[str]
) -> Divergence | None:
    """Set ``record.stage`` (the first stage over its bound, counted or not) and return the
    divergence of the first counted stage, if any."""
    stage, name = _first_stage(record, bounds, ignore, counted)
    if stage is not None:
        record.stage = stage
        return Divergence(record.step, stage, name)
    record.stage, _ = _first_stage(record, bounds, ignore, STAGES)  # shown, not counted
    return None


def _first_stage(
    record: StepRecord, bounds: Mapping[str, float], ignore: Sequence[str], stages: Sequence[str]
) -> tuple[str | None, str | None]:
    """The first of ``stages`` over its bound in ``record`` and the name it concerns."""
    for stage in stages:
        if stage == "forward" and _over(record.loss_error, bounds["loss"]):
            return stage, None
        if stage == "gradients" and record.gradient_errors:
            name, err = _worst(record.gradient_errors, ignore)
            if name is not None and _over(err, bounds["gradients"]):
                return stage, name
        if stage == "learning_rate" and record.lr_errors:
            worst = max(range(len(record.lr_errors)),
                        key=lambda g: math.inf if math.isnan(record.lr_errors[g]) else record.lr_errors[g])
            if _over(record.lr_errors[worst], bounds["learning_rate"]):
                return stage, f"param_groups[{worst}]"
        if stage == "update":
            name, err = _worst(record.parameter_errors, ignore)
            if name is not None and _over(err, bounds["parameters"]):
                return stage, name
    return None, None
