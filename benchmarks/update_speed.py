"""Time one optimizer update on BERT-shaped parameter trees: optax_bertadam, optax and PyTorch.

An Adam-style update reads the parameters, the gradients and two moments and writes the
parameters and the moments back: it is bound by memory bandwidth. This script builds parameter
trees with the shapes of BERT (mini ~11M, base ~110M, large ~335M parameters; ``tiny`` ~4M for
smoke tests), times one jitted, donated ``tx.update`` + ``optax.apply_updates`` for each JAX
candidate and one ``optimizer.step()`` for each PyTorch candidate, and prints medians and ratios.

Candidates:

* ``ob.bertadam`` with per-tensor clipping (the reference of every ratio), with global clipping
  and without clipping (``max_grad_norm=-1``: what the norms cost);
* ``optax.adamw`` and ``optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(...))``;
* ``jax probe``: the same arrays moved (reads p, g, m, v; writes p, m, v) with a few multiply-adds;
* ``torch_ref.BertAdam``, ``torch.optim.AdamW(foreach=True)`` and ``torch.optim.AdamW(fused=True)``.

Candidates run in turn, round after round (the order rotates every round), so that load from
other processes hits all of them alike; the table shows medians over rounds. To fit BERT-large
in memory, candidates of one framework share their buffers: every JAX candidate updates the same
parameter and moment arrays (donated, so XLA updates them in place), every PyTorch optimizer the
same ``nn.Parameter`` list and moment tensors. Timing does not depend on the values.

Usage::

  python benchmarks/update_speed.py                      # mini, base, large; float32 and bf16
  python benchmarks/update_speed.py --sizes base --rounds 15
  python benchmarks/update_speed.py --quick              # BERT-tiny, 3 rounds: CI smoke test
  python benchmarks/update_speed.py --device gpu         # JAX on the GPU, torch on CUDA
  python benchmarks/update_speed.py --xla-flags=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion

XLA flags are read when JAX starts, so ``--xla-flags`` is appended to ``XLA_FLAGS`` before this
script imports JAX; no flag is set by default.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(layers=2, hidden=128, ffn=512),
    "mini": dict(layers=4, hidden=256, ffn=1024),
    "base": dict(layers=12, hidden=768, ffn=3072),
    "large": dict(layers=24, hidden=1024, ffn=4096),
}
VOCAB, POSITIONS, TOKEN_TYPES = 30522, 512, 2
VARIANTS = ("float32", "bf16")
REFERENCE = "ob.bertadam per-tensor"
# Targets of issue 6, checked on the ratios of medians from one run.
TARGETS = (
    ("ob.bertadam per-tensor / optax.adamw", "optax.adamw", "<=", 1.05),
    ("ob.bertadam per-tensor / jax probe", "jax probe", "<=", 1.25),
    ("ob.bertadam per-tensor / torch AdamW fused", "torch AdamW fused", "<=", 1.0),
    ("torch_ref BertAdam / ob.bertadam per-tensor", "torch_ref BertAdam", ">=", 8.0),
)
TEMP_LIMIT_MIB = 64.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help=f"comma list of {', '.join(SIZES)}")
    parser.add_argument("--variants", default=None, help="comma list of float32, bf16")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates per candidate")
    parser.add_argument("--quick", action="store_true", help="tiny size, 3 rounds, no warm-up")
    parser.add_argument("--only", default=None, help="regex: run only the matching candidates")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS before JAX starts")
    parser.add_argument("--hlo-dir", default=None, help="write each compiled HLO module here")
    args = parser.parse_args(argv)
    default_sizes = "tiny" if args.quick else "mini,base,large"
    args.sizes = (args.sizes or default_sizes).split(",")
    args.variants = (args.variants or ",".join(VARIANTS)).split(",")
    args.rounds = args.rounds or (3 if args.quick else 7)
    if args.quick:
        args.warmup = 0
    for size in args.sizes:
        if size not in SIZES:
            parser.error(f"--sizes: {size!r} is not one of {', '.join(SIZES)}")
    for variant in args.variants:
        if variant not in VARIANTS:
            parser.error(f"--variants: {variant!r} is not one of {', '.join(VARIANTS)}")
    return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    if ARGS.xla_flags:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {ARGS.xla_flags}".strip()
    if ARGS.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import optax_bertadam as ob  # noqa: E402
import torch_ref  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Parameter trees


def nest(flat: dict) -> dict:
    """``{'a.b': x}`` -> ``{'a': {'b': x}}``: the torch names become a pytree for JAX."""
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def bert_shapes(layers: int, hidden: int, ffn: int) -> dict[str, tuple[int, ...]]:
    """The parameters of ``BertModel`` (embeddings, encoder, pooler), named as PyTorch names them."""
    shapes = {
        "embeddings.word_embeddings.weight": (VOCAB, hidden),
        "embeddings.position_embeddings.weight": (POSITIONS, hidden),
        "embeddings.token_type_embeddings.weight": (TOKEN_TYPES, hidden),
        "embeddings.LayerNorm.weight": (hidden,),
        "embeddings.LayerNorm.bias": (hidden,),
    }
    for i in range(layers):
        prefix = f"encoder.layer.{i}."
        dense = {
            "attention.self.query": (hidden, hidden),
            "attention.self.key": (hidden, hidden),
            "attention.self.value": (hidden, hidden),
            "attention.output.dense": (hidden, hidden),
            "intermediate.dense": (ffn, hidden),
            "output.dense": (hidden, ffn),
        }
        for name, shape in dense.items():
            shapes[prefix + name + ".weight"] = shape
            shapes[prefix + name + ".bias"] = shape[:1]
            if name in ("attention.output.dense", "output.dense"):
                ln = prefix + name.rsplit(".", 1)[0] + ".LayerNorm"
                shapes[ln + ".weight"] = (hidden,)
                shapes[ln + ".bias"] = (hidden,)
    shapes["pooler.dense.weight"] = (hidden, hidden)
    shapes["pooler.dense.bias"] = (hidden,)
    return shapes


def random_arrays(shapes, scale: float, seed: int, positive: bool = False) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for shape in shapes.values():
        x = rng.standard_normal(shape, dtype=np.float32)
        x *= scale
        out.append(np.abs(x) if positive else x)
    return out


@dataclasses.dataclass
class Variant:
    name: str
    param_dtype: Any  # jnp dtype of parameters and gradients
    moment_dtype: Any  # jnp dtype of bertadam's moments
    torch_dtype: Any

    @property
    def label(self) -> str:
        if self.name == "float32":
            return "float32 params, float32 moments"
        return "bfloat16 params and grads, float32 moments (torch: bfloat16 moments)"


def make_variant(name: str) -> Variant:
    if name == "float32":
        return Variant(name, jnp.float32, jnp.float32, torch.float32)
    return Variant(name, jnp.bfloat16, jnp.float32, torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# Compiled-HLO statistics


@dataclasses.dataclass
class HloStats:
    kernels: int  # instructions of the entry computation that run code (fusions, copies, ...)
    passes: int  # of those, the ones reading or writing a parameter-sized array (>= 4096 elements)
    copies: int  # copy / convert instructions outside fusions
    bytes_per_param: float  # XLA's cost analysis: bytes accessed / number of parameters
    temp_bytes: int  # compiled.memory_analysis().temp_size_in_bytes


INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%(\S+) = (\(?[^=]*?\)?) ([a-z][\w-]*)\((.*)$", re.M)
COMPUTATION = re.compile(r"^(ENTRY )?%(\S+) .*\{$", re.M)
NON_KERNEL_OPS = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}
CONTROL_OPS = {"call", "while", "conditional"}  # their computations run kernels of their own


def largest_array(shape: str) -> int:
    dims = re.findall(r"\[([\d,]*)\]", shape)
    return max((int(np.prod([int(d) for d in ds.split(",") if d] or [1])) for ds in dims), default=0)


def hlo_stats(compiled, n_params: int) -> HloStats:
    """Count the kernels of the entry computation and of what it calls (GPU command buffers,
    while loops), not the instructions inside fusions."""
    text = compiled.as_text()
    bodies, entry = {}, None
    heads = list(COMPUTATION.finditer(text))
    for head, after in zip(heads, heads[1:] + [None], strict=True):
        bodies[head.group(2)] = text[head.end():after.start() if after else len(text)]
        entry = head.group(2) if head.group(1) else entry
    sizes: dict[str, int] = {}
    kernels = passes = copies = 0
    pending, seen = [entry], set()
    while pending:
        computation = pending.pop()
        if computation in seen or computation not in bodies:
            continue
        seen.add(computation)
        for name, shape, op, rest in INSTRUCTION.findall(bodies[computation]):
            sizes[name] = largest_array(shape)
            if op in CONTROL_OPS:
                pending += re.findall(r"(?:to_apply|body|condition|branch_computations)=\{?%([\w.-]+)",
                                      rest)
                continue
            if op in NON_KERNEL_OPS:
                continue
            kernels += 1
            copies += op in ("copy", "convert")
            operands = re.findall(r"%([\w.-]+)", rest.split("), ")[0])
            if max([sizes[name]] + [sizes.get(o, 0) for o in operands]) >= 4096:
                passes += 1
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    accessed = float(cost.get("bytes accessed", float("nan"))) if cost else float("nan")
    temp = compiled.memory_analysis().temp_size_in_bytes
    return HloStats(kernels, passes, copies, accessed / n_params, temp)


# ---------------------------------------------------------------------------------------------
# Candidates


@dataclasses.dataclass
class Candidate:
    name: str
    framework: str  # "jax" or "torch"
    run: Callable[[], float]  # one update; returns its duration in seconds
    state_bytes_per_param: float
    hlo: HloStats | None = None
    times: list[float] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def probe(params, moments, grads):
    """Bandwidth probe: reads p, g, m, v and writes p, m, v, with multiply-adds only."""
    m, v = moments
    m = jax.tree.map(lambda m, g: 0.5 * m + 0.5 * g.astype(m.dtype), m, grads)
    v = jax.tree.map(lambda v, g: 0.5 * v + 0.5 * jnp.square(g.astype(v.dtype)), v, grads)
    # The parameters' loop reads p and g, not the new moments: XLA would fuse the moments'
    # arithmetic into it, read the old moments there and copy them (they are donated) first.
    params = jax.tree.map(lambda p, g: p - (1e-6 * g).astype(p.dtype), params, grads)
    return params, (m, v)


def jax_transformations(params, variant: Variant) -> dict[str, optax.GradientTransformation]:
    mask = ob.decay_mask(params)
    lr, wd = 1e-4, 0.01
    # optax.adamw keeps nu in the parameters' dtype; only mu_dtype can be set.
    mu_dtype = variant.moment_dtype if variant.moment_dtype != variant.param_dtype else None
    return {
        REFERENCE: ob.bertadam(lr, weight_decay=wd, mask=mask,
                               moment_dtype=variant.moment_dtype),
        "ob.bertadam global": ob.bertadam(lr, weight_decay=wd, mask=mask,
                                          clip_mode="global", moment_dtype=variant.moment_dtype),
        # Without clipping: what the per-tensor norms cost.
        "ob.bertadam no clipping": ob.bertadam(lr, weight_decay=wd, mask=mask,
                                               max_grad_norm=-1, moment_dtype=variant.moment_dtype),
        "optax.adamw": optax.adamw(lr, weight_decay=wd, mask=mask, mu_dtype=mu_dtype),
        "optax clip_by_global_norm+adamw": optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.adamw(lr, weight_decay=wd, mask=mask, mu_dtype=mu_dtype),
        ),
    }


def update_step(tx: optax.GradientTransformation):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


class JaxPool:
    """One set of parameter and moment buffers shared by every JAX candidate.

    A candidate's state is split into its moment leaves (arrays with a parameter's shape: shared
    with the other candidates whose moments have the same dtypes) and its own small leaves
    (counts, rates). Every step donates parameters and state, so XLA writes the results into
    the same buffers and the pool holds them again after the step.
    """

    def __init__(self, params, grads, n_leaves: int):
        self.params = params
        self.grads = grads
        self.n_leaves = n_leaves
        self.moments: dict[tuple, list] = {}  # dtype signature -> moment leaves
        self.own: dict[str, tuple] = {}  # candidate -> (treedef, small leaves, flags, signature)

    def add(self, name: str, state, seed: int) -> None:
        leaves, treedef = jax.tree.flatten(state)
        is_moment = [np.ndim(x) > 0 for x in leaves]
        moment_leaves = [x for x, big in zip(leaves, is_moment, strict=True) if big]
        if len(moment_leaves) != 2 * self.n_leaves:
            raise ValueError(f"{name}: expected two moment trees, got {len(moment_leaves)} leaves")
        signature = tuple(str(x.dtype) for x in moment_leaves)
        if signature not in self.moments:
            # m ~ gradient magnitude, v >= 0: every candidate's arithmetic stays finite.
            shapes = {str(i): x.shape for i, x in enumerate(moment_leaves)}
            values = random_arrays(shapes, 1e-3, seed, positive=True)
            device = jax.tree.leaves(self.params)[0].device
            self.moments[signature] = [
                jax.device_put(jnp.asarray(v, x.dtype), device)
                for v, x in zip(values, moment_leaves, strict=True)
            ]
        small = [x for x, big in zip(leaves, is_moment, strict=True) if not big]
        self.own[name] = (treedef, small, is_moment, signature)

    def pack(self, name: str):
        treedef, small, is_moment, signature = self.own[name]
        big, small_iter = iter(self.moments[signature]), iter(small)
        leaves = [next(big) if flag else next(small_iter) for flag in is_moment]
        return self.params, jax.tree.unflatten(treedef, leaves)

    def unpack(self, name: str, params, state) -> None:
        treedef, _, is_moment, signature = self.own[name]
        leaves = jax.tree.leaves(state)
        self.params = params
        self.moments[signature] = [x for x, big in zip(leaves, is_moment, strict=True) if big]
        small = [x for x, big in zip(leaves, is_moment, strict=True) if not big]
        self.own[name] = (treedef, small, is_moment, signature)

    def state_bytes(self, name: str) -> int:
        _, small, _, signature = self.own[name]
        return sum(x.nbytes for x in self.moments[signature]) + sum(x.nbytes for x in small)


def jax_candidates(shapes, variant: Variant, device, args, label: str) -> list[Candidate]:
    n_params = sum(int(np.prod(s)) for s in shapes.values())
    to_device = lambda xs: nest({n: jax.device_put(jnp.asarray(x, variant.param_dtype), device)
                                 for n, x in zip(shapes, xs, strict=True)})
    params = to_device(random_arrays(shapes, 0.02, seed=0))
    grads = to_device(random_arrays(shapes, 0.01, seed=1))
    pool = JaxPool(params, grads, len(shapes))
    steps: dict[str, Callable] = {}
    for name, tx in jax_transformations(params, variant).items():
        pool.add(name, tx.init(params), seed=2)
        steps[name] = update_step(tx)
    zeros = lambda: jax.tree.map(lambda p: jnp.zeros(p.shape, variant.moment_dtype), params)
    pool.add("jax probe", (zeros(), zeros()), seed=2)
    steps["jax probe"] = probe

    candidates = []
    for name, step in steps.items():
        if args.only and not re.search(args.only, name):
            continue
        jitted = jax.jit(step, donate_argnums=(0, 1))
        params_in, state_in = pool.pack(name)
        compiled = jitted.lower(params_in, state_in, pool.grads).compile()
        if args.hlo_dir:
            os.makedirs(args.hlo_dir, exist_ok=True)
            slug = re.sub(r"\W+", "_", f"{label}_{variant.name}_{name}")
            with open(os.path.join(args.hlo_dir, slug + ".hlo"), "w") as f:
                f.write(compiled.as_text())

        def run(name=name, compiled=compiled):
            params_in, state_in = pool.pack(name)
            start = time.perf_counter()
            out = compiled(params_in, state_in, pool.grads)
            jax.block_until_ready(out)
            elapsed = time.perf_counter() - start
            pool.unpack(name, *out)
            return elapsed

        candidates.append(Candidate(name, "jax", run, pool.state_bytes(name) / n_params,
                                    hlo_stats(compiled, n_params)))
    return candidates


def torch_candidates(shapes, variant: Variant, device, args) -> list[Candidate]:
    dtype = variant.torch_dtype
    n_params = sum(int(np.prod(s)) for s in shapes.values())
    tensors = lambda xs: [torch.from_numpy(x).to(device=device, dtype=dtype) for x in xs]
    params = [torch.nn.Parameter(p) for p in tensors(random_arrays(shapes, 0.02, seed=0))]
    for p, g in zip(params, tensors(random_arrays(shapes, 0.01, seed=1)), strict=True):
        p.grad = g
    # One pair of moments shared by every optimizer (each keeps its own step counts).
    exp_avg = tensors(random_arrays(shapes, 1e-3, seed=2, positive=True))
    exp_avg_sq = tensors(random_arrays(shapes, 1e-3, seed=3, positive=True))
    decay = [p for n, p in zip(shapes, params, strict=True)
             if not any(nd in n for nd in ("bias", "LayerNorm"))]
    no_decay = [p for n, p in zip(shapes, params, strict=True)
                if any(nd in n for nd in ("bias", "LayerNorm"))]
    groups = lambda: [{"params": decay, "weight_decay": 0.01},
                      {"params": no_decay, "weight_decay": 0.0}]
    optimizers = {
        "torch_ref BertAdam": (torch_ref.BertAdam(groups(), lr=1e-4), ("next_m", "next_v")),
        "torch AdamW foreach": (torch.optim.AdamW(groups(), lr=1e-4, foreach=True),
                                ("exp_avg", "exp_avg_sq")),
        "torch AdamW fused": (torch.optim.AdamW(groups(), lr=1e-4, fused=True),
                              ("exp_avg", "exp_avg_sq")),
    }
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    threads = torch.get_num_threads()
    if device.type == "cpu" and threads > 1:
        # The same fused optimizer on one thread: on a shared machine, OpenMP's barriers wait for
        # threads that other processes keep off the cores; one thread has no barrier to wait at.
        optimizers["torch AdamW fused 1 thread"] = optimizers["torch AdamW fused"]
    candidates = []
    for name, (opt, (m_key, v_key)) in optimizers.items():
        if args.only and not re.search(args.only, name):
            continue
        if not opt.state:
            opt.step()  # creates the state; then point it at the shared moments
            for p, m, v in zip(params, exp_avg, exp_avg_sq, strict=True):
                opt.state[p][m_key] = m
                opt.state[p][v_key] = v
            gc.collect()
        n_threads = 1 if name.endswith("1 thread") else threads

        def run(opt=opt, n_threads=n_threads):
            torch.set_num_threads(n_threads)
            sync()
            start = time.perf_counter()
            opt.step()
            sync()
            elapsed = time.perf_counter() - start
            torch.set_num_threads(threads)
            return elapsed

        state_bytes = sum(m.nbytes + v.nbytes for m, v in zip(exp_avg, exp_avg_sq, strict=True))
        candidates.append(Candidate(name, "torch", run, state_bytes / n_params))
    return candidates


# ---------------------------------------------------------------------------------------------
# Running and printing


def time_candidates(candidates: list[Candidate], rounds: int, warmup: int) -> None:
    for candidate in candidates:
        for _ in range(warmup):
            candidate.run()
    for r in range(rounds):
        gc.collect()
        shift = r % len(candidates)
        for candidate in candidates[shift:] + candidates[:shift]:
            candidate.times.append(candidate.run())


def minimal_bytes_per_param(variant: Variant) -> float:
    """Read p, g, m, v and write p, m, v: the least any Adam update moves."""
    p = jnp.dtype(variant.param_dtype).itemsize
    m = jnp.dtype(variant.moment_dtype).itemsize
    return 3 * p + 4 * m


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def print_table(title: str, candidates: list[Candidate], n_params: int, variant: Variant) -> None:
    by_name = {c.name: c for c in candidates}
    reference = by_name.get(REFERENCE)
    print(f"\n{title}")
    header = (f"{'candidate':34s} {'median ms':>9s} {'min ms':>8s} {'ratio':>6s} {'paired':>6s} "
              f"{'GB/s*':>6s} {'state B/p':>9s} {'HLO B/p':>7s} {'kernels':>7s} {'passes':>6s} "
              f"{'temp MiB':>8s}")
    print(header)
    print("-" * len(header))
    minimal = minimal_bytes_per_param(variant) * n_params
    for c in candidates:
        ratio = paired = float("nan")
        if reference is not None:
            ratio = c.median / reference.median
            paired = statistics.median(
                t / r for t, r in zip(c.times, reference.times, strict=True))
        hlo = c.hlo
        cols = [
            f"{c.name:34s}", f"{fmt_ms(c.median):>9s}", f"{fmt_ms(min(c.times)):>8s}",
            f"{ratio:6.2f}", f"{paired:6.2f}", f"{minimal / c.median / 1e9:6.1f}",
            f"{c.state_bytes_per_param:9.2f}",
            f"{hlo.bytes_per_param:7.1f}" if hlo else f"{'-':>7s}",
            f"{hlo.kernels:7d}" if hlo else f"{'-':>7s}",
            f"{hlo.passes:6d}" if hlo else f"{'-':>6s}",
            f"{hlo.temp_bytes / 2**20:8.2f}" if hlo else f"{'-':>8s}",
        ]
        print(" ".join(cols))
    print(f"* GB/s: the least traffic of an Adam update (read p, g, m, v; write p, m, v = "
          f"{minimal_bytes_per_param(variant):g} B/param here) / median time. HLO B/p: XLA's "
          "'bytes accessed' / params.\n  ratio: median / median of "
          f"{REFERENCE}; paired: median over rounds of the per-round ratio. kernels: ops of the "
          "compiled entry computation;\n  passes: those reading or writing an array of >= 4096 "
          "elements. temp: compiled temp_size_in_bytes.")
    if reference is None:
        return
    print("targets (ratios of medians, this run):")
    for label, other, op, bound in TARGETS:
        if other not in by_name:
            continue
        if op == "<=":
            value = reference.median / by_name[other].median
            ok = value <= bound
        else:
            value = by_name[other].median / reference.median
            ok = value >= bound
        print(f"  {label:46s} {value:7.2f}  {op} {bound:<5g} {'met' if ok else 'NOT MET'}")
    if "jax probe" in by_name:
        fraction = by_name["jax probe"].median / reference.median
        print(f"  {'ob.bertadam per-tensor bandwidth / probe':46s} {fraction:7.0%}")
    temp = reference.hlo.temp_bytes / 2**20
    print(f"  {'ob.bertadam per-tensor temp buffers (MiB)':46s} {temp:7.2f}  <= {TEMP_LIMIT_MIB:g}   "
          f"{'met' if temp <= TEMP_LIMIT_MIB else 'NOT MET'}")


def print_scaling(results: dict[str, dict[str, tuple[int, list[Candidate]]]]) -> None:
    for variant, per_size in results.items():
        if len(per_size) < 2:
            continue
        sizes = list(per_size)
        names = [c.name for c in next(iter(per_size.values()))[1]]
        print(f"\nscaling ({variant}): median ms (ns per parameter)")
        header = f"{'candidate':34s}" + "".join(
            f" {f'{s} {per_size[s][0] / 1e6:.1f}M':>18s}" for s in sizes)
        print(header)
        print("-" * len(header))
        for name in names:
            row = f"{name:34s}"
            for s in sizes:
                n, candidates = per_size[s]
                c = next((c for c in candidates if c.name == name), None)
                cell = "-" if c is None else f"{fmt_ms(c.median)} ({c.median / n * 1e9:.2f})"
                row += f" {cell:>18s}"
            print(row)


def main(args: argparse.Namespace) -> None:
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.device == "gpu":
        jax_device = jax.devices("gpu")[0]
        torch_device = torch.device("cuda")
        hardware = f"{jax_device.device_kind} / {torch.cuda.get_device_name()}"
    else:
        jax_device = jax.devices("cpu")[0]
        torch_device = torch.device("cpu")
        hardware = f"{os.cpu_count()} CPU cores"
    print(f"update_speed: jax {jax.__version__} ({jax_device.platform}), optax {optax.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), {hardware}; "
          f"{args.rounds} rounds, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    results: dict[str, dict[str, tuple[int, list[Candidate]]]] = {}
    for variant_name in args.variants:
        variant = make_variant(variant_name)
        for size in args.sizes:
            shapes = bert_shapes(**SIZES[size])
            n_params = sum(int(np.prod(s)) for s in shapes.values())
            started = time.perf_counter()
            candidates = jax_candidates(shapes, variant, jax_device, args, size)
            candidates += torch_candidates(shapes, variant, torch_device, args)
            time_candidates(candidates, args.rounds, args.warmup)
            title = (f"BERT-{size} ({n_params / 1e6:.1f}M params, {len(shapes)} tensors), "
                     f"{variant.label}, {args.device}, {args.rounds} rounds "
                     f"({time.perf_counter() - started:.0f} s)")
            print_table(title, candidates, n_params, variant)
            for c in candidates:
                c.run = None  # drop the closures: frees this size's buffers
            results.setdefault(variant_name, {})[size] = (n_params, candidates)
            del candidates
            gc.collect()
    print_scaling(results)


if __name__ == "__main__":
    main(ARGS)
