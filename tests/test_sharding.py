"""The optimizers under ``jax.jit`` with parameters and optimizer state sharded over 8 devices.

JAX fixes the number of CPU devices when it initializes, so the sharded runs happen in a
subprocess: this file, run as a script, sets ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
before importing jax, runs every check and prints the figures as JSON; the tests below start it
once and assert on the figures. (The pytest process itself keeps its single device.)

Layouts, on a 1-D mesh ``("data",)`` of 8 devices:

* ``data_parallel``: parameters and optimizer state replicated, the batch sharded; the gradient
  is reduced across devices by XLA.
* ``fsdp``: every parameter whose first axis divides by 8 is sharded along it, its gradient and
  moments alike; the update is jitted with no output shardings, so the moments must *stay*
  sharded by propagation alone.
* ``zero``: parameters and gradients replicated, moments sharded (ZeRO stage 1), kept so with
  ``jax.lax.with_sharding_constraint`` inside the step.

Each is compared with the same computation on one device: parameters within ``TOL`` after
``STEPS`` updates. Per-tensor and global clipping norms are checked on sharded gradients too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

DEVICES = 8
STEPS = 8
TOL = 1e-6  # max |sharded - single device| over all parameters (magnitudes <= ~2)
MARKER = "SHARDING_RESULTS="


# ---------------------------------------------------------------------------------------------
# The sharded runs (in the subprocess)
# ---------------------------------------------------------------------------------------------


def _optimizers(params):
    import optax

    import optax_bertadam as ob

    candidates = {
        "bertadam": lambda: ob.bertadam(
            0.02, warmup=0.25, t_total=STEPS, mask=ob.decay_mask(params)
        ),
        "bertadam_global_clip": lambda: ob.bertadam(
            0.02, warmup=0.25, t_total=STEPS, clip_mode="global", max_grad_norm=0.5
        ),
        "optax_chain_clip_adamw": lambda: optax.chain(
            ob.clip_grad_norm(1.0), optax.adamw(1e-2, weight_decay=0.1)
        ),
    }
    from parity_tests.twins import ALGORITHMS

    # Every optimizer of the registry, with its example hyperparameters (a mask where it takes one).
    for entry in ALGORITHMS:
        extra = {entry.mask_argument: ob.decay_mask(params)} if entry.mask_argument else {}
        candidates[f"optax_bertadam.{entry.name}"] = lambda entry=entry, extra=extra: entry.build(**extra)
    return {name: make() for name, make in candidates.items()}


def _sharded_checks() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import optax_bertadam as ob
    from parity_tests import harness

    assert jax.device_count() == DEVICES, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated = NamedSharding(mesh, P())
    single = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def split_first_axis(x):
        if np.ndim(x) >= 1 and np.shape(x)[0] % DEVICES == 0:
            return NamedSharding(mesh, P("data"))
        return replicated

    params = harness.nest({n: jnp.asarray(v, jnp.float32) for n, v in harness.initial_params(0).items()})
    grads = [harness.nest({n: jnp.asarray(g, jnp.float32) for n, g in step.items()})
             for step in harness.gradient_stream(STEPS, 1)]
    results: dict = {"max_diff": {}, "sharding_ok": {}, "notes": {}}

    def put(tree, sharding_of):
        return jax.tree.map(lambda x: jax.device_put(x, sharding_of(x)), tree)

    def max_diff(a, b):
        return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0.0))
                   for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

    def same_sharding(x, sharding):
        return x.sharding.is_equivalent_to(sharding, np.ndim(x))

    def moments_follow_params(state, param_sharding_of):
        """Every state subtree shaped like the parameters has the parameters' shardings."""
        ok, matched = True, 0
        treedef = jax.tree.structure(params)
        for node in jax.tree.leaves(state, is_leaf=lambda n: jax.tree.structure(n) == treedef):
            if jax.tree.structure(node) == treedef:
                for m, p in zip(jax.tree.leaves(node), jax.tree.leaves(params), strict=True):
                    if np.shape(m) == np.shape(p):
                        matched += 1
                        ok &= same_sharding(m, param_sharding_of(p))
        return bool(ok and matched)

    def run_steps(tx, params, grads, *, state_sharding=None, out_shardings=None):
        """``tx.init`` then one jitted update per step, as a training loop runs them."""

        def update(params, state, step_grads):
            updates, state = tx.update(step_grads, state, params)
            return optax.apply_updates(params, updates), state

        # Eager init (its small ops are compiled once for all optimizers), then placed.
        state = tx.init(params)
        if state_sharding is not None:
            state = jax.device_put(state, state_sharding)
        step = jax.jit(update, out_shardings=out_shardings)
        for step_grads in grads:
            params, state = step(params, state, step_grads)
        return params, state

    # --- every optimizer, FSDP and ZeRO layouts, against one device -----------------------
    for name, tx in _optimizers(params).items():
        ref_params, _ = run_steps(tx, put(params, lambda x: single), put(grads, lambda x: single))
        state_split = jax.tree.map(split_first_axis, jax.eval_shape(tx.init, params))

        # FSDP: parameters, gradients, moments sharded; the update has no output shardings: the
        # moments must stay sharded by propagation alone.
        out_params, out_state = run_steps(
            tx, put(params, split_first_axis), put(grads, split_first_axis), state_sharding=state_split
        )
        results["max_diff"][f"fsdp/{name}"] = max_diff(out_params, ref_params)
        results["sharding_ok"][f"fsdp/{name}"] = bool(
            moments_follow_params(out_state, split_first_axis)
            and all(same_sharding(p, split_first_axis(p)) for p in jax.tree.leaves(out_params))
        )

        # ZeRO-1: parameters and gradients replicated, moments sharded (out_shardings).
        param_replicated = jax.tree.map(lambda x: replicated, params)
        out_params, out_state = run_steps(
            tx, put(params, lambda x: replicated), put(grads, lambda x: replicated),
            state_sharding=state_split, out_shardings=(param_replicated, state_split),
        )
        results["max_diff"][f"zero/{name}"] = max_diff(out_params, ref_params)
        results["sharding_ok"][f"zero/{name}"] = bool(
            moments_follow_params(out_state, split_first_axis)
            and all(same_sharding(p, replicated) for p in jax.tree.leaves(out_params))
        )

    # --- data parallel: gradients from a batch sharded over the devices --------------------
    batch = jnp.asarray(np.random.default_rng(3).normal(size=(STEPS, 4 * DEVICES)), jnp.float32)
    targets = grads[0]

    def loss_fn(params, x):
        # Per example b: sum over tensors of x_b * <G, p> + x_b^2 * |p|^2 / 2, averaged over b.
        per_example = sum(
            x * jnp.sum(g * p) + 0.5 * x * x * jnp.sum(p * p)
            for g, p in zip(jax.tree.leaves(targets), jax.tree.leaves(params), strict=True)
        )
        return jnp.mean(per_example)

    for name in ("bertadam",):
        tx = _optimizers(params)[name]

        def train(params, batches, tx=tx):
            def body(carry, batch_x):
                params, state = carry
                grads = jax.grad(loss_fn)(params, batch_x)
                updates, state = tx.update(grads, state, params)
                return (optax.apply_updates(params, updates), state), None

            return jax.lax.scan(body, (params, tx.init(params)), batches)[0]

        ref_params, _ = jax.jit(train)(put(params, lambda x: single), jax.device_put(batch, single))
        dp_params, dp_state = jax.jit(train)(
            put(params, lambda x: replicated), jax.device_put(batch, NamedSharding(mesh, P(None, "data")))
        )
        results["max_diff"][f"data_parallel/{name}"] = max_diff(dp_params, ref_params)
        results["sharding_ok"][f"data_parallel/{name}"] = all(
            same_sharding(x, replicated) for x in jax.tree.leaves((dp_params, dp_state))
        )

    # --- clipping norms of sharded gradients -------------------------------------------------
    for per_tensor in (True, False):
        clip = ob.clip_grad_norm(0.5, per_tensor=per_tensor)
        apply = jax.jit(lambda g, clip=clip: clip.update(g, clip.init(g))[0])
        key = f"clip/{'per_tensor' if per_tensor else 'global'}"
        sharded = apply(put(grads[0], split_first_axis))
        results["max_diff"][key] = max_diff(sharded, apply(put(grads[0], lambda x: single)))
        results["sharding_ok"][key] = all(
            same_sharding(g, split_first_axis(g)) for g in jax.tree.leaves(sharded)
        )
    norms = jax.jit(lambda g: [jnp.sqrt(jnp.sum(x * x)) for x in jax.tree.leaves(g)])
    # Norms up to ~100: compared relatively.
    sharded_norms = np.asarray(norms(put(grads[0], split_first_axis)))
    single_norms = np.asarray(norms(put(grads[0], lambda x: single)))
    results["max_diff"]["norms/per_tensor_relative"] = float(
        np.max(np.abs(sharded_norms - single_norms) / single_norms)
    )
    results["notes"]["optimizers"] = sorted(_optimizers(params))
    return results


# ---------------------------------------------------------------------------------------------
# The tests (in the pytest process)
# ---------------------------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_script(args, *, env_extra=None, timeout=300):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.update(env_extra or {})
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def results():
    proc = _run_script([os.path.abspath(__file__)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith(MARKER))
    return json.loads(line[len(MARKER):])


def test_every_layout_matches_one_device(results):
    print(json.dumps(results["max_diff"], indent=1))
    worst = {k: v for k, v in results["max_diff"].items() if not v <= TOL}
    assert not worst, worst
    layouts = {key.split("/")[0] for key in results["max_diff"]}
    assert {"fsdp", "zero", "data_parallel", "clip", "norms"} <= layouts
    assert {"bertadam", "bertadam_global_clip", "optax_chain_clip_adamw"} <= set(
        results["notes"]["optimizers"]
    )


def test_moments_of_sharded_parameters_stay_sharded(results):
    bad = [key for key, ok in results["sharding_ok"].items() if not ok]
    assert not bad, bad


def test_the_pytest_process_keeps_one_device():
    import jax

    assert "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", "")
    assert jax.device_count() >= 1


def _final_loss(stdout):
    return float(next(line for line in stdout.splitlines() if line.startswith("final loss")).split()[-1])


def test_multihost_example_one_process_and_two_processes_agree():
    """examples/multihost_data_parallel.py: one process with 4 devices (the degenerate case),
    and two processes of 2 devices each talking through ``jax.distributed``: the same run."""
    example = ["examples/multihost_data_parallel.py", "--steps", "5", "--local-device-count"]
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    workers = [
        subprocess.Popen(
            [sys.executable, *example, "2", "--coordinator-address", f"localhost:{port}",
             "--num-processes", "2", "--process-id", str(i)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        for i in (0, 1)
    ]
    single = _run_script([*example, "4"])
    outputs = [w.communicate(timeout=300) for w in workers]
    assert single.returncode == 0, single.stderr[-4000:]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-4000:]
    assert "2 process(es), 4 devices (2 local)" in outputs[0][0]
    one, two = _final_loss(single.stdout), _final_loss(outputs[0][0])
    print(f"final loss: 1 process {one!r}, 2 processes {two!r}")
    assert abs(one - two) <= 1e-6 * max(1.0, abs(one))


if __name__ == "__main__":
    # Before jax initializes. Compilation dominates this script; LLVM's expensive passes are off
    # for the sharded and the single-device programs alike (XLA's own passes, which decide the
    # arithmetic and the partitioning, are unaffected).
    os.environ["XLA_FLAGS"] = " ".join([
        os.environ.get("XLA_FLAGS", ""),
        f"--xla_force_host_platform_device_count={DEVICES}",
        "--xla_backend_optimization_level=0",
        "--xla_llvm_disable_expensive_passes=true",
    ]).strip()
    sys.path.insert(0, ROOT)
    print(MARKER + json.dumps(_sharded_checks()))
