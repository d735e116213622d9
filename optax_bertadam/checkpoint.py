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

Checkpoints are verified: saving records a SHA-256 checksum of every array (of its dtype, shape
and bytes) and of the metadata (the step, the structure description and those checksums), and
restoring recomputes them. A checkpoint with bytes changed, files truncated or files missing is
refused with :class:`DamagedCheckpointError` (a ``ValueError``) naming the damaged part, instead of
restoring different numbers. Saving is atomic: the checkpoint is written into a temporary
directory next to ``path`` and renamed into place once complete, so a process killed in the middle
of a save leaves the previous checkpoint at ``path`` readable (and no half-written one).

Long runs keep their checkpoints with orbax's ``CheckpointManager``::

  manager = ocp.CheckpointManager("/ckpt", options=ocp.CheckpointManagerOptions(max_to_keep=3))
  manager.save(step, args=train_state_args(params, opt_state, step))
  ...
  params, opt_state, step = restore_latest_train_state(manager, params_template, tx)

:func:`restore_latest_train_state` resumes from the latest step, refuses it if it is damaged,
and falls back to the newest undamaged one before it only with ``fallback=True``.

orbax is imported when a function is called, so ``import optax_bertadam`` does not need it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from typing import Any

import jax
import numpy as np
import optax

from optax_bertadam import _validation

PyTree = Any

# /2: verified checkpoints (checksums of every array and of the metadata).
FORMAT = "optax_bertadam.train_state/2"
# save_train_state writes into `path + _STAGING`, then renames it to `path`; with overwrite=True
# the previous checkpoint sits at `path + _REPLACED` for the instant between two renames, and
# restore_train_state points there if a kill left nothing at `path`.
_STAGING = ".saving"
_REPLACED = ".replaced"


class DamagedCheckpointError(ValueError):
    """A checkpoint whose files were changed, truncated or removed after it was saved.

    Its message names the checkpoint and the damaged part (the metadata, the arrays' files, or
    the arrays whose checksums differ).
    """


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


def _host_value(leaf: Any) -> np.ndarray:
    """The whole value of ``leaf`` on this host (gathered across processes when sharded so)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(leaf)


def _digest(leaf: Any) -> str:
    """SHA-256 of an array's dtype, shape and bytes (so a reinterpreted buffer differs too)."""
    value = np.ascontiguousarray(_host_value(leaf))
    digest = hashlib.sha256(f"{value.dtype.name}{list(value.shape)}".encode())
    digest.update(value.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _meta_checksum(meta: dict[str, Any]) -> str:
    """SHA-256 of the metadata without its ``checksum`` entry, in a canonical JSON form."""
    rest = {key: value for key, value in meta.items() if key != "checksum"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _brief(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def _differences(saved: list[str], wanted: list[str]) -> str:
    """What differs between two descriptions: changed entries, then state types, then leaves."""
    saved_at = dict(line.rpartition(": ")[::2] for line in saved)
    wanted_at = dict(line.rpartition(": ")[::2] for line in wanted)
    changed = [
        f"{path}: {saved_at[path]} in the checkpoint, {wanted_at[path]} in the restore target"
        for path in saved_at
        if path in wanted_at and saved_at[path] != wanted_at[path]
    ]
    parts = [f"Changed: {_validation.listing(changed, 6, '; ')}."] if changed else []
    for label, mine, other in (
        ("the checkpoint", saved_at, wanted_at), ("the restore target", wanted_at, saved_at)
    ):
        only = [f"{path}: {what}" for path, what in mine.items() if path not in other]
        types = [line for line in only if not line.endswith("]")]
        leaves = [line for line in only if line.endswith("]")]
        if types:
            parts.append(f"State types only in {label}: {_validation.listing(types, 6, '; ')}.")
        if leaves:
            parts.append(f"Leaves only in {label}: {_validation.listing(_by_field(leaves), 6, '; ')}.")
    return " ".join(parts) or "The same entries, in another order."


def _by_field(lines: list[str]) -> list[str]:
    """Leaves of one state field (a per-parameter tree) as one entry with their count."""
    groups: dict[str, list[str]] = {}
    for line in lines:
        path = line.rpartition(": ")[0]
        dot = path.rfind(".")
        bracket = path.find("[", dot) if dot >= 0 else -1
        groups.setdefault(path[:bracket] if bracket > dot >= 0 else path, []).append(line)
    return [members[0] if len(members) == 1 else f"{field} ({len(members)} leaves)"
            for field, members in groups.items()]


def _check_step(step: Any) -> int:
    if (
        isinstance(step, bool)
        or np.ndim(step) != 0
        or not np.issubdtype(np.asarray(step).dtype, np.integer)
    ):
        raise TypeError(f"step={step!r} is invalid: expected an integer")
    return int(step)


def train_state_args(params: PyTree, opt_state: PyTree, step: int):
    """What orbax writes for one checkpoint: ``manager.save(step, args=train_state_args(...))``.

    An ``orbax.checkpoint.args.Composite`` of the arrays (one item per leaf) and the metadata: the
    format, ``step``, the structure description and the SHA-256 checksum of every array, and a
    checksum of all of that. :func:`save_train_state` writes it to a directory; pass it to an
    ``orbax.checkpoint.CheckpointManager`` to keep the last checkpoints of a run, and read them
    back with :func:`restore_latest_train_state`.

    Args:
      params: the parameter tree.
      opt_state: the state of any optax optimizer.
      step: the training step (an integer).

    Returns:
      An ``ocp.args.Composite(arrays=..., meta=...)``.

    >>> import jax.numpy as jnp, optax_bertadam as ob
    >>> params = {"w": jnp.ones(3)}
    >>> args = train_state_args(params, ob.bertadam(1e-3).init(params), 0)
    >>> sorted(args.keys())
    ['arrays', 'meta']
    """
    ocp = _ocp()
    step = _check_step(step)
    train_state = {"params": params, "opt_state": opt_state}
    leaves = jax.tree.leaves(train_state)
    arrays = {f"{i:06d}": leaf if isinstance(leaf, jax.Array) else np.asarray(leaf)
              for i, leaf in enumerate(leaves)}
    meta = {
        "format": FORMAT,
        "step": step,
        "description": _describe(train_state),
        "arrays": {key: _digest(leaf) for key, leaf in arrays.items()},
    }
    meta["checksum"] = _meta_checksum(meta)
    return ocp.args.Composite(arrays=ocp.args.PyTreeSave(arrays), meta=ocp.args.JsonSave(meta))


def save_train_state(
    path: str | os.PathLike, params: PyTree, opt_state: PyTree, step: int, *, overwrite: bool = False
) -> None:
    """Write ``params``, ``opt_state`` and ``step`` to the directory ``path`` (orbax), atomically.

    The checkpoint is written into a new directory next to ``path`` and renamed to ``path`` once
    complete (with ``overwrite=True`` the previous one is swapped out then deleted): a process
    killed during the save leaves the previous checkpoint at ``path`` as it was. Checksums of
    every array and of the metadata are recorded; :func:`restore_train_state` verifies them.

    Args:
      path: a directory that does not exist yet (``overwrite=True`` replaces it).
      params: the parameter tree (arrays; sharded arrays are written shard by shard).
      opt_state: the state of any optax optimizer.
      step: the training step (a Python int), returned by :func:`restore_train_state`.
      overwrite: replace an existing checkpoint at ``path``.

    Returns:
      None.

    >>> import tempfile, jax.numpy as jnp, optax_bertadam as ob
    >>> params = {"w": jnp.ones(3)}
    >>> tx = ob.bertadam(1e-3)
    >>> path = tempfile.mkdtemp() + "/step_0"
    >>> save_train_state(path, params, tx.init(params), 0)
    >>> restore_train_state(path, params, tx)[2]
    0
    """
    ocp = _ocp()
    args = train_state_args(params, opt_state, step)
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise ValueError(
            f"path={path!r} is invalid: it already exists; pass overwrite=True to replace it"
        )
    # orbax writes into its own temporary directory and renames it to `staging` when complete;
    # `staging` then replaces `path` by renames, so `path` never holds a partial checkpoint.
    # (orbax's own force=True would delete `path` before writing.) Fixed names: every process of
    # a multi-process save must agree on them.
    staging, replaced = path + _STAGING, path + _REPLACED
    primary = jax.process_index() == 0
    if primary:
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed save: never read
    _sync_processes(f"optax_bertadam save {path}: start")
    ocp.Checkpointer(ocp.CompositeCheckpointHandler()).save(staging, args)
    if primary:
        if os.path.exists(path):
            shutil.rmtree(replaced, ignore_errors=True)  # stale: `path` holds a newer one
            os.rename(path, replaced)
        os.rename(staging, path)
        # The previous checkpoint, or one left by a save killed between the two renames.
        shutil.rmtree(replaced, ignore_errors=True)
    _sync_processes(f"optax_bertadam save {path}: done")


def _sync_processes(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=sharding)


def _damaged(where: str, part: str) -> DamagedCheckpointError:
    return DamagedCheckpointError(f"the checkpoint at {where} is damaged: {part}")


def _restore(read, where: str, params_template, tx, opt_state_template):
    """The restore shared by a checkpoint directory and a CheckpointManager step.

    ``read(ocp_args)`` reads items of the checkpoint; ``where`` names it in messages.
    """
    ocp = _ocp()
    try:
        meta = read(ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as err:  # orbax, tensorstore, json and OS errors alike: the files are bad
        raise _damaged(where, f"its metadata (meta/) cannot be read ({_brief(err)})") from err
    if isinstance(meta, dict) and "checksum" in meta:
        if meta["checksum"] != _meta_checksum(meta):
            raise _damaged(
                where, "its metadata (meta/: step, structure, array checksums) does not match "
                "the checksum recorded at save")
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"the checkpoint at {where} is invalid: format {meta.get('format')!r}, expected "
                f"{FORMAT!r} (written by save_train_state or train_state_args)")
    elif isinstance(meta, dict) and meta.get("format") == FORMAT:
        raise _damaged(where, "its metadata (meta/) lost its checksum")
    else:
        raise ValueError(
            f"the checkpoint at {where} is invalid: not a checkpoint written by save_train_state "
            f"or train_state_args (format {FORMAT!r} with checksums)"
        )

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
            f"the checkpoint at {where} does not match the parameters and optimizer it is restored "
            "into (a different optimizer, chain, mask, dtype or shape?). " + _differences(saved, wanted)
        )

    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    abstract = {f"{i:06d}": _abstract(leaf) for i, (_, leaf) in enumerate(paths_and_leaves)}
    try:
        restored = read(
            ocp.args.Composite(
                arrays=ocp.args.PyTreeRestore(
                    abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)
                )
            )
        )["arrays"]
    except Exception as err:
        raise _damaged(where, f"its arrays (arrays/) cannot be read ({_brief(err)})") from err
    if sorted(restored) != sorted(abstract) or sorted(meta["arrays"]) != sorted(abstract):
        raise _damaged(where, "its arrays (arrays/) are not the ones recorded at save")
    wrong = [
        jax.tree_util.keystr(path)
        for key, (path, _) in zip(sorted(abstract), paths_and_leaves, strict=True)
        if _digest(restored[key]) != meta["arrays"][key]
    ]
    if wrong:
        raise _damaged(
            where, f"{len(wrong)} of {len(abstract)} arrays (arrays/) differ from the checksums "
            f"recorded at save: {_validation.listing(wrong, 6, '; ')}")
    state = jax.tree.unflatten(treedef, [restored[key] for key in sorted(restored)])
    return state["params"], state["opt_state"], int(meta["step"])


def restore_train_state(
    path: str | os.PathLike,
    params_template: PyTree,
    tx: optax.GradientTransformation,
    *,
    opt_state_template: PyTree | None = None,
) -> tuple[PyTree, PyTree, int]:
    """Read back what :func:`save_train_state` wrote, into the structure ``tx`` expects, verified.

    Args:
      path: the checkpoint directory.
      params_template: arrays or ``jax.ShapeDtypeStruct`` with the structure, shapes, dtypes (and
        shardings) of the parameters; their values are not used.
      tx: the optimizer that continues the run; its state structure is checked against the
        checkpoint.
      opt_state_template: optional, the optimizer state (or its ``ShapeDtypeStruct`` tree) whose
        shardings the restored state should have; default ``jax.eval_shape(tx.init, params)``.

    Returns:
      ``(params, opt_state, step)``, bit for bit what was saved.

    Raises:
      DamagedCheckpointError: (a ``ValueError``) if files of the checkpoint were changed,
        truncated or removed: the metadata or the arrays' files cannot be read, or an array or
        the metadata differs from the checksum recorded at save; the message names which.
      ValueError: if ``path`` is not such a checkpoint, or if the checkpoint's parameters or
        optimizer state differ from the templates (different optimizer, chain, mask, moment
        dtype, shapes); the message lists what differs.

    >>> import tempfile, jax.numpy as jnp, optax_bertadam as ob
    >>> params = {"w": jnp.ones(3)}
    >>> tx = ob.bertadam(1e-3)
    >>> path = tempfile.mkdtemp() + "/step_7"
    >>> save_train_state(path, params, tx.init(params), 7)
    >>> restored_params, opt_state, step = restore_train_state(path, params, tx)
    >>> step
    7
    """
    ocp = _ocp()
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        replaced = path + _REPLACED
        hint = (
            f"; a save with overwrite=True was killed while swapping checkpoints: the previous "
            f"one is whole at {replaced!r} (rename it to {path!r})" if os.path.isdir(replaced) else ""
        )
        raise ValueError(f"path={path!r} is invalid: no checkpoint directory there{hint}")
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    return _restore(
        lambda args: checkpointer.restore(path, args), repr(path), params_template, tx,
        opt_state_template,
    )


def restore_latest_train_state(
    manager: Any,
    params_template: PyTree,
    tx: optax.GradientTransformation,
    *,
    fallback: bool = False,
    opt_state_template: PyTree | None = None,
) -> tuple[PyTree, PyTree, int]:
    """Resume from the latest checkpoint an ``orbax.checkpoint.CheckpointManager`` holds, verified.

    The manager keeps the last ``max_to_keep`` checkpoints saved with
    ``manager.save(step, args=train_state_args(params, opt_state, step))``; its saves are atomic
    (a step killed mid-save is not listed). The latest step is verified as
    :func:`restore_train_state` does. If it is damaged, :class:`DamagedCheckpointError` says so and
    names the step to fall back to; with ``fallback=True`` the newest undamaged step before it is
    restored instead, with a warning naming the damaged steps (they stay on disk: delete them with
    ``manager.delete(step)`` before the run saves those steps again).

    Args:
      manager: an ``orbax.checkpoint.CheckpointManager``.
      params_template: as in :func:`restore_train_state`.
      tx: the optimizer that continues the run.
      fallback: restore the newest undamaged step when later ones are damaged.
      opt_state_template: as in :func:`restore_train_state`.

    Returns:
      ``(params, opt_state, step)``.

    Raises:
      DamagedCheckpointError: the latest step is damaged (and ``fallback`` is False), or every
        step is damaged.
      ValueError: the manager holds no checkpoint, or the checkpoint does not match ``tx`` and
        the templates (not a reason to fall back: an older step would not match either).

    >>> import tempfile, jax.numpy as jnp, orbax.checkpoint as ocp, optax_bertadam as ob
    >>> params, tx = {"w": jnp.ones(3)}, ob.bertadam(1e-3)
    >>> manager = ocp.CheckpointManager(tempfile.mkdtemp(),
    ...                                 options=ocp.CheckpointManagerOptions(max_to_keep=2))
    >>> for step in (10, 20, 30):
    ...     _ = manager.save(step, args=train_state_args(params, tx.init(params), step))
    >>> manager.wait_until_finished()
    >>> manager.all_steps()
    [20, 30]
    >>> restore_latest_train_state(manager, params, tx)[2]
    30
    """
    if not isinstance(fallback, bool):
        raise TypeError(f"fallback={fallback!r} is invalid: expected True or False")
    manager.wait_until_finished()
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        raise ValueError(f"manager={manager.directory}: holds no checkpoint to restore")
    damaged: list[str] = []
    for index, step in enumerate(steps):
        where = f"step {step} of {str(manager.directory)!r}"
        try:
            restored = _restore(
                lambda args, step=step: manager.restore(step, args=args), where, params_template,
                tx, opt_state_template,
            )
        except DamagedCheckpointError as err:
            if not fallback:
                before = (f"pass fallback=True to resume from step {steps[index + 1]} instead "
                          "(the newest undamaged one before it)" if index + 1 < len(steps)
                          else "there is no earlier step to fall back to")
                raise DamagedCheckpointError(f"the latest checkpoint is damaged: {err}; {before}") from err
            damaged.append(str(err))
            continue
        if damaged:
            warnings.warn(
                f"resumed from step {step}: later checkpoints are damaged ({'; '.join(damaged)}); "
                "delete them with manager.delete(step) before the run saves those steps again",
                stacklevel=2,
            )
        return restored
    raise DamagedCheckpointError(
        f"every checkpoint in {str(manager.directory)!r} is damaged: {'; '.join(damaged)}"
    )
