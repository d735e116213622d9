"""Save and restore a whole training state (parameters, optimizer state, step) with orbax.

::

  save_train_state("/ckpt/step_1000", params, opt_state, step=1000)
  ...
  params, opt_state, step = restore_train_state("/ckpt/step_1000", params_template, tx)

Every array is written bit for bit (``orbax.checkpoint``, tensorstore), so a run resumed from a
checkpoint continues exactly as the uninterrupted run, and :func:`optax_bertadam.get_lr` reads
the same rate. Any optimizer works: the state is stored leaf by leaf, together with a description
of its structure (every state type and leaf path, shape and dtype). Restoring checks that
description against ``tx.init(params_template)`` first and refuses a different optimizer with a
``ValueError`` that lists what differs, instead of failing inside orbax or silently loading
moments into the wrong places.

Restored arrays take the shardings of the templates: pass sharded ``params_template`` leaves
(arrays or ``jax.ShapeDtypeStruct`` with a ``sharding``), and ``opt_state_template`` for a state
sharded differently from what ``tx.init`` gives (e.g. ZeRO-sharded moments).

orbax is imported when a function is called, so ``import optax_bertadam`` does not need it.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import optax

PyTree = Any

FORMAT = "optax_bertadam.train_state/1"


def _ocp():
    try:
        import orbax.checkpoint as ocp
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "optax_bertadam.checkpoint needs orbax: pip install orbax-checkpoint"
        ) from err
    return ocp


def _is_named_tuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _describe(train_state: PyTree) -> list[str]:
    """One line per state type (``path: Type``) and per leaf (``path: dtype[shape]``)."""
    lines = []

    def visit(prefix, tree):
        paths_and_nodes, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_named_tuple)
        for path, node in paths_and_nodes:
            where = prefix + jax.tree_util.keystr(path)
            if _is_named_tuple(node):
                lines.append(f"{where}: {type(node).__module__}.{type(node).__qualname__}")
                for field in node._fields:
                    visit(f"{where}.{field}", getattr(node, field))
            else:
                shape = ",".join(map(str, np.shape(node)))
                lines.append(f"{where}: {np.dtype(getattr(node, 'dtype', np.asarray(node).dtype))}[{shape}]")

    visit("", train_state)
    return lines


def _listing(items: list[str], limit: int = 12) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; ... ({len(items) - limit} more)" if len(items) > limit else "")


def _differences(saved: list[str], wanted: list[str]) -> str:
    """What differs between two descriptions: changed entries, then state types, then leaves."""
    saved_at = dict(line.rpartition(": ")[::2] for line in saved)
    wanted_at = dict(line.rpartition(": ")[::2] for line in wanted)
    changed = [
        f"{path}: {saved_at[path]} in the checkpoint, {wanted_at[path]} in the restore target"
        for path in saved_at
        if path in wanted_at and saved_at[path] != wanted_at[path]
    ]
    parts = [f"Changed: {_listing(changed, 6)}."] if changed else []
    for label, mine, other in (
        ("the checkpoint", saved_at, wanted_at), ("the restore target", wanted_at, saved_at)
    ):
        only = [f"{path}: {what}" for path, what in mine.items() if path not in other]
        types = [line for line in only if not line.endswith("]")]
        leaves = [line for line in only if line.endswith("]")]
        if types:
            parts.append(f"State types only in {label}: {_listing(types, 6)}.")
        if leaves:
            parts.append(f"Leaves only in {label}: {_listing(leaves, 6)}.")
    return " ".join(parts) or "The same entries, in another order."


def save_train_state(
    path: str | os.PathLike, params: PyTree, opt_state: PyTree, step: int, *, overwrite: bool = False
) -> None:
    """Write ``params``, ``opt_state`` and ``step`` to the directory ``path`` (orbax).

    Args:
      path: a directory that does not exist yet (``overwrite=True`` replaces it).
      params: the parameter tree (arrays; sharded arrays are written shard by shard).
      opt_state: the state of any optax optimizer.
      step: the training step (a Python int), returned by :func:`restore_train_state`.
      overwrite: replace an existing checkpoint at ``path``.
    """
    ocp = _ocp()
    if (
        isinstance(step, bool)
        or np.ndim(step) != 0
        or not np.issubdtype(np.asarray(step).dtype, np.integer)
    ):
        raise TypeError(f"step={step!r} is invalid: expected an integer")
    train_state = {"params": params, "opt_state": opt_state}
    leaves = jax.tree.leaves(train_state)
    arrays = {f"{i:06d}": leaf if isinstance(leaf, jax.Array) else np.asarray(leaf)
              for i, leaf in enumerate(leaves)}
    meta = {"format": FORMAT, "step": int(step), "description": _describe(train_state)}
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    checkpointer.save(
        os.path.abspath(os.fspath(path)),
        ocp.args.Composite(arrays=ocp.args.PyTreeSave(arrays), meta=ocp.args.JsonSave(meta)),
        force=overwrite,
    )


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=sharding)


def restore_train_state(
    path: str | os.PathLike,
    params_template: PyTree,
    tx: optax.GradientTransformation,
    *,
    opt_state_template: PyTree | None = None,
) -> tuple[PyTree, PyTree, int]:
    """Read back what :func:`save_train_state` wrote, into the structure ``tx`` expects.

    Args:
      path: the checkpoint directory.
      params_template: arrays or ``jax.ShapeDtypeStruct`` with the structure, shapes, dtypes (and
        shardings) of the parameters; their values are not used.
      tx: the optimizer that continues the run; its state structure is checked against the
        checkpoint.
      opt_state_template: optional, the optimizer state (or its ``ShapeDtypeStruct`` tree) whose
        shardings the restored state should have; default ``jax.eval_shape(tx.init, params)``.

    Returns:
      ``(params, opt_state, step)``.

    Raises:
      ValueError: if ``path`` is not such a checkpoint, or if the checkpoint's parameters or
        optimizer state differ from the templates (different optimizer, chain, mask, moment
        dtype, shapes); the message lists what differs.
    """
    ocp = _ocp()
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise ValueError(f"path={path!r} is invalid: no checkpoint directory there")
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    meta = checkpointer.restore(path, ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"path={path!r} is invalid: not a checkpoint written by save_train_state")

    if opt_state_template is None:
        opt_state_template = jax.eval_shape(tx.init, params_template)
    else:
        expected = jax.tree.structure(jax.eval_shape(tx.init, params_template))
        if jax.tree.structure(opt_state_template) != expected:
            raise ValueError(
                "opt_state_template does not match tx: its structure is "
                f"{jax.tree.structure(opt_state_template)}, tx.init gives {expected}"
            )
    template = {"params": params_template, "opt_state": opt_state_template}
    saved, wanted = list(meta["description"]), _describe(template)
    if saved != wanted:
        raise ValueError(
            f"the checkpoint at {path!r} does not match the parameters and optimizer it is restored "
            "into (a different optimizer, chain, mask, dtype or shape?). " + _differences(saved, wanted)
        )

    leaves, treedef = jax.tree.flatten(template)
    abstract = {f"{i:06d}": _abstract(leaf) for i, leaf in enumerate(leaves)}
    restored = checkpointer.restore(
        path,
        ocp.args.Composite(
            arrays=ocp.args.PyTreeRestore(
                abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)
            )
        ),
    )["arrays"]
    state = jax.tree.unflatten(treedef, [restored[key] for key in sorted(restored)])
    return state["params"], state["opt_state"], int(meta["step"])
