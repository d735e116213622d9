"""Multi-host data-parallel training with BertAdam: ``jax.distributed``, one global device mesh.

Every process runs this same script. ``jax.distributed.initialize`` connects the processes; then
``jax.devices()`` lists the devices of *all* hosts, and one ``Mesh`` over them carries the batch
axis. Each process loads only its own slice of the global batch
(``jax.make_array_from_process_local_data``); parameters and BertAdam's state are replicated, and
the jitted step averages the loss over the global batch, so XLA all-reduces the gradients across
hosts. The step is the same code on one device or on a thousand.

Launch, the same command on every host with its own ``--process-id`` (0 .. N-1)::

  python examples/multihost_data_parallel.py \\
      --coordinator-address HOST0:12355 --num-processes N --process-id I

On SLURM, Cloud TPU and other managed clusters, pass none of the three:
``jax.distributed.initialize()`` finds them itself (here: ``--auto``).

Try it on one machine: two processes of four simulated CPU devices each behave as two hosts::

  python examples/multihost_data_parallel.py --coordinator-address localhost:12355 \\
      --num-processes 2 --process-id 0 --local-device-count 4 &
  python examples/multihost_data_parallel.py --coordinator-address localhost:12355 \\
      --num-processes 2 --process-id 1 --local-device-count 4

and with no arguments it is the degenerate case, one process (a single host)::

  python examples/multihost_data_parallel.py

``--checkpoint-dir`` saves parameters and optimizer state at the end with orbax (every process
writes its shards; see ``optax_bertadam.checkpoint``) and checks that they restore bit for bit.
"""

from __future__ import annotations

import argparse
import os
import socket


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--coordinator-address", default=None, help="host:port of process 0")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--auto", action="store_true",
                        help="let jax.distributed.initialize() detect the cluster (SLURM, TPU, ...)")
    parser.add_argument("--local-device-count", type=int, default=None,
                        help="simulate this many CPU devices in this process")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--per-device-batch", type=int, default=8)
    parser.add_argument("--checkpoint-dir", default=None)
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def main(argv=None) -> float:
    args = parse_args(argv)
    if args.local_device_count:
        # Must be set before jax initializes its CPU backend, hence the imports below.
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.local_device_count}"
        )
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import optax_bertadam as ob

    if args.auto:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(
            coordinator_address=args.coordinator_address or f"localhost:{free_port()}",
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    is_main = jax.process_index() == 0
    mesh = Mesh(np.array(jax.devices()), ("data",))  # every device of every host
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    if is_main:
        print(f"{jax.process_count()} process(es), {jax.device_count()} devices "
              f"({jax.local_device_count()} local)")

    class Regressor(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.dense = nnx.Linear(8, 32, rngs=rngs)
            self.LayerNorm = nnx.LayerNorm(32, rngs=rngs)
            self.head = nnx.Linear(32, 1, rngs=rngs)

        def __call__(self, x):
            return self.head(jax.nn.gelu(self.LayerNorm(self.dense(x))))

    # The same seed on every process: identical initial parameters, placed replicated.
    graphdef, host_params = nnx.split(Regressor(nnx.Rngs(0)), nnx.Param)
    host_params = jax.tree.map(np.asarray, host_params)

    def replicate(x):
        return jax.make_array_from_callback(np.shape(x), replicated, lambda index: x[index])

    params = jax.tree.map(replicate, host_params)
    tx = ob.bertadam(
        3e-2, warmup=0.1, t_total=args.steps, schedule="warmup_linear", weight_decay=0.01,
        max_grad_norm=1.0, mask=ob.decay_mask(host_params),
    )
    opt_state = jax.jit(tx.init, out_shardings=replicated)(params)

    def loss_fn(params, x, y):
        model = nnx.merge(graphdef, params)
        return jnp.mean((model(x)[:, 0] - y) ** 2)  # the mean over the *global* batch

    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)  # all-reduced by XLA
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    w_true = np.random.default_rng(0).normal(size=8).astype(np.float32)
    global_batch = args.per_device_batch * jax.device_count()
    local_batch = args.per_device_batch * jax.local_device_count()
    rows = slice(jax.process_index() * local_batch, (jax.process_index() + 1) * local_batch)
    for step in range(args.steps):
        # Each process keeps only its own rows of the global batch (a real loader would read only
        # those); any split into processes therefore trains on the same data.
        x_global = np.random.default_rng(step).normal(size=(global_batch, 8)).astype(np.float32)
        x_local = x_global[rows]
        x = jax.make_array_from_process_local_data(batch_sharding, x_local)
        y = jax.make_array_from_process_local_data(batch_sharding, x_local @ w_true)
        params, opt_state, loss = train_step(params, opt_state, x, y)
        if is_main and (step % 25 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {float(loss):.4f}  next lr {float(ob.get_lr(opt_state)):.2e}")

    if args.checkpoint_dir:
        from optax_bertadam.checkpoint import restore_train_state, save_train_state

        path = os.path.abspath(args.checkpoint_dir)
        save_train_state(path, params, opt_state, args.steps, overwrite=True)
        r_params, r_state, r_step = restore_train_state(path, params, tx, opt_state_template=opt_state)
        same = all(
            np.array_equal(np.asarray(a.addressable_data(0)), np.asarray(b.addressable_data(0)))
            for a, b in zip(jax.tree.leaves((params, opt_state)), jax.tree.leaves((r_params, r_state)),
                            strict=True)
        )
        if is_main:
            print(f"checkpoint at step {r_step} restored {'bit for bit' if same else 'WITH DIFFERENCES'}")
        assert same and r_step == args.steps

    if is_main:
        print(f"final loss {float(loss):.8e}")
    jax.distributed.shutdown()
    return float(loss)


if __name__ == "__main__":
    main()
