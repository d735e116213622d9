"""The optax contract, for every optimizer and transform of the registry.

Modelled on optax's ``optax/contrib/_common_test.py``: one list (``ALGORITHMS + TRANSFORMS`` of
:mod:`optax_bertadam.algorithms`), every check over it. Checks:

* ``optax.inject_hyperparams(factory, static_args=entry.static_args)`` gives the updates of the
  plain factory, under ``jax.jit``, and a value changed in ``state.hyperparams`` mid-run is the one
  the next update applies;
* a full-tree mask works inside ``optax.partition``, ``optax.multi_transform`` and ``optax.masked``,
  and a partition of two copies of a per-tensor optimizer equals it on the whole tree;
* bfloat16 parameters get bfloat16 updates; the state's tree structure and dtypes do not change
  across updates; ``optax.MultiSteps``, ``optax.apply_if_finite`` and
  ``optax.tree_utils.tree_get`` work on the state.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_bertadam as ob
from parity_tests.twins import ALGORITHMS, TRANSFORMS

ENTRIES = {entry.name: entry for entry in ALGORITHMS + TRANSFORMS}
MASKED = [name for name, entry in ENTRIES.items() if entry.mask_argument]
STEPS = 4


def make_params(dtype=jnp.float32):
    return {
        "encoder": {"dense": {"kernel": jnp.linspace(-1.0, 1.0, 12, dtype=dtype).reshape(3, 4),
                              "bias": jnp.full((4,), 0.5, dtype)},
                    "LayerNorm": {"scale": jnp.ones((4,), dtype)}},
        "head": {"kernel": jnp.linspace(0.5, -0.5, 8, dtype=dtype).reshape(4, 2),
                 "bias": jnp.zeros((2,), dtype)},
    }


def grads_at(step, params):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(step), len(leaves))
    return jax.tree.unflatten(treedef, [
        (0.3 * jax.random.normal(k, p.shape)).astype(p.dtype) for k, p in zip(keys, leaves, strict=True)
    ])


def loss_value(step):
    """The value fed to loss-driven transforms (``reduce_lr_on_plateau``) at update ``step``."""
    return jnp.asarray(1.0 / (step + 1), jnp.float32)


def update(entry, tx, grads, state, params, value=None):
    extra = {"value": loss_value(0) if value is None else value} if entry.needs_value else {}
    return tx.update(grads, state, params, **extra)


def run(entry, tx, params, steps=STEPS, *, jit=False):
    """``steps`` updates, jitted (one compilation) or eager (primitives compiled once per
    process, which is cheaper for the checks that are not about jit); returns (all updates,
    final params, all states)."""
    state = tx.init(params)
    step_fn = lambda g, s, p, v: update(entry, tx, g, s, p, v)
    if jit:
        step_fn = jax.jit(step_fn)
    updates_seen, states = [], [state]
    for step in range(steps):
        updates, state = step_fn(grads_at(step, params), state, params, loss_value(step))
        params = optax.apply_updates(params, updates)
        updates_seen.append(updates)
        states.append(state)
    return updates_seen, params, states


def max_abs_diff(a, b):
    return max(float(jnp.max(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_registry_is_complete():
    """Every optimizer factory the package exports has exactly one entry."""
    exported = {"bertadam", "adamw", "adafactor", "adam_weight_decay"}
    assert exported <= {entry.name for entry in ALGORITHMS}
    assert len(ENTRIES) == len(ALGORITHMS) + len(TRANSFORMS), "duplicate names in the registry"
    for entry in ALGORITHMS:
        assert entry.torch_class, entry.name
        assert set(entry.injectable) <= set(entry.example), entry.name


@pytest.mark.parametrize("name", [n for n, e in ENTRIES.items() if e.injectable])
def test_inject_hyperparams_matches_plain_factory_under_jit(name):
    entry = ENTRIES[name]
    params = make_params()
    plain, _, _ = run(entry, entry.build(), params)
    injected, _, states = run(entry, entry.inject(), params, jit=True)
    # Injected hyperparameters are float32 arrays (optax's convention), the plain ones Python
    # doubles: they differ by float32 rounding of e.g. b2 = 0.99 only.
    assert max_abs_diff(plain, injected) <= 1e-5, name
    assert set(entry.injectable) <= set(states[-1].hyperparams), name


@pytest.mark.parametrize("name", [n for n, e in ENTRIES.items() if e.injectable])
def test_injected_value_changed_mid_run_is_the_one_applied(name):
    entry = ENTRIES[name]
    params = make_params()
    tx = entry.inject()
    _, params_after, states = run(entry, tx, params, steps=3)
    state = states[-1]
    grads = grads_at(3, params_after)
    jitted_update = jax.jit(lambda g, s, p: update(entry, tx, g, s, p))  # one compilation
    for hyperparameter in entry.injectable:
        old = float(entry.example[hyperparameter])
        # Large enough a change to show in the update (eps 1e-6 -> 1e-2), on either side of 0.
        new = old * 0.5 if abs(old) >= 0.01 else (old * 1e4 if old else 0.01)
        changed = state._replace(hyperparams={**state.hyperparams, hyperparameter: jnp.asarray(new)})
        got, _ = jitted_update(grads, changed, params_after)
        # The same update from the plain factory built with the new value, on the same state.
        want, _ = update(entry, entry.build(**{hyperparameter: new}), grads, state.inner_state,
                         params_after)
        same_as_old, _ = update(entry, entry.build(), grads, state.inner_state, params_after)
        # Relative to the update's scale: the injected value is a float32 array, the plain one a
        # Python double, and the jitted and eager updates round differently.
        scale = max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(want))
        assert max_abs_diff(got, want) <= 1e-6 * max(scale, 1e-30), (name, hyperparameter)
        # ... and the change mattered (a test that cannot fail would not show that).
        assert max_abs_diff(got, same_as_old) > 1e-7, (name, hyperparameter)


def numeric_structural_arguments(entry):
    """Structural arguments that optax.inject_hyperparams would inject unless made static."""
    return [a for a in entry.static_args
            if isinstance(entry.example.get(a), (int, float))
            and not isinstance(entry.example.get(a), bool)]


@pytest.mark.parametrize("name", [e.name for e in ALGORITHMS if numeric_structural_arguments(e)])
def test_traced_structural_argument_is_refused_with_static_args_hint(name):
    entry = ENTRIES[name]
    numeric_static = numeric_structural_arguments(entry)
    tx = optax.inject_hyperparams(entry.factory)(**entry.example)
    params = make_params()
    with pytest.raises(TypeError, match="must be a concrete value.*static_args=") as error:
        jax.jit(lambda s: tx.update(grads_at(0, params), s, params))(tx.init(params))
    assert any(f"static_args=('{a}',)" in str(error.value) for a in numeric_static), error.value


@pytest.mark.parametrize("name", MASKED)
def test_full_tree_mask_inside_partition_multi_transform_and_masked(name):
    entry = ENTRIES[name]
    params = make_params()
    mask = ob.decay_mask(params)  # built for the whole tree, as a user does
    labels = {"encoder": jax.tree.map(lambda _: "enc", params["encoder"]),
              "head": jax.tree.map(lambda _: "head", params["head"])}
    with_mask = entry.build(**{entry.mask_argument: mask})
    whole, _, _ = run(entry, with_mask, params)
    for wrapper in (optax.partition, optax.multi_transform):
        split = wrapper({"enc": entry.build(**{entry.mask_argument: mask}),
                         "head": entry.build(**{entry.mask_argument: mask})}, labels)
        parts, _, _ = run(entry, split, params)
        # Per-tensor algorithms: two copies over a partition are the algorithm on the whole tree.
        assert max_abs_diff(parts, whole) <= 1e-6, (name, wrapper.__name__)
    only_head = jax.tree.map(lambda label: label == "head", labels)
    masked = optax.masked(entry.build(**{entry.mask_argument: mask}), only_head)
    head_updates, _, _ = run(entry, masked, params)
    assert max_abs_diff(head_updates[-1]["head"], whole[-1]["head"]) <= 1e-6, name


def test_a_mask_of_another_tree_is_still_refused_inside_partition():
    params = make_params()
    wrong = {"encoder": ob.decay_mask(params["encoder"])}
    labels = jax.tree.map(lambda _: "all", params)
    tx = optax.partition({"all": ob.bertadam(1e-3, mask=wrong)}, labels)
    with pytest.raises(ValueError, match="mask does not match"):
        tx.init(params)


@pytest.mark.parametrize("name", ENTRIES)
def test_bfloat16_updates_and_a_stable_state(name):
    entry = ENTRIES[name]
    params = make_params(jnp.bfloat16)
    updates, _, states = run(entry, entry.build(), params)
    for u in updates:
        assert {leaf.dtype for leaf in jax.tree.leaves(u)} == {jnp.dtype(jnp.bfloat16)}, name
    first = states[0]
    for state in states[1:]:
        assert jax.tree.structure(state) == jax.tree.structure(first), name
        assert [leaf.dtype for leaf in jax.tree.leaves(state)] == \
               [leaf.dtype for leaf in jax.tree.leaves(first)], name
        assert all(bool(jnp.all(jnp.isfinite(leaf.astype(jnp.float32))))
                   for leaf in jax.tree.leaves(state) if jnp.issubdtype(leaf.dtype, jnp.floating)
                   and leaf.size and not np.isinf(np.asarray(leaf, np.float32)).all()), name


@pytest.mark.parametrize("name", ENTRIES)
def test_multi_steps_apply_if_finite_and_tree_get(name):
    entry = ENTRIES[name]
    params = make_params()
    plain, _, _ = run(entry, entry.build(), params, steps=2)
    # MultiSteps with k=1 applies every update: the same updates as the plain transform.
    multi, _, multi_states = run(entry, optax.MultiSteps(entry.build(), every_k_schedule=1), params,
                                 steps=2)
    assert max_abs_diff(multi, plain) <= 1e-6, name
    assert jax.tree.structure(multi_states[0]) == jax.tree.structure(multi_states[-1])
    finite, _, finite_states = run(entry, optax.apply_if_finite(entry.build(), 2), params, steps=2)
    assert max_abs_diff(finite, plain) <= 1e-6, name
    counts = optax.tree_utils.tree_get_all_with_path(finite_states[-1], "count")
    if entry in ALGORITHMS:
        assert counts, f"{name}: tree_get finds no update count in its state"
        # The package's own count sits with the learning rate: 2 updates applied.
        rate_counts = [c for path, c in counts if "ScheduledLearningRateState" in str(path)]
        assert rate_counts and all(int(c) == 2 for c in rate_counts), (name, counts)


@pytest.mark.parametrize("name", [e.name for e in ALGORITHMS])
def test_get_lr_through_every_wrapper_after_loading_counts(name):
    """The rate is computed from the count: setting the count (as load_torch_state_dict and a
    checkpoint restore do) gives the right rate through every wrapper."""
    entry = ENTRIES[name]
    params = make_params()
    wrappers = {
        "plain": lambda tx: tx,
        "chain": lambda tx: optax.chain(optax.identity(), tx),
        "gradient_accumulation": lambda tx: ob.gradient_accumulation(tx, 2),
        "MultiSteps": lambda tx: optax.MultiSteps(tx, 3),
        "apply_if_finite": lambda tx: optax.apply_if_finite(tx, 2),
        "skip_nonfinite": ob.skip_nonfinite,
        "inject_hyperparams": lambda tx: None,
    }
    reference = entry.build()
    _, _, states = run(entry, reference, params, steps=3)
    want = float(ob.get_lr(states[-1]))
    for wrapper_name, wrap in wrappers.items():
        tx = wrap(entry.build()) if wrapper_name != "inject_hyperparams" else entry.inject()
        state = jax.tree_util.tree_map_with_path(
            lambda path, leaf: jnp.asarray(3, leaf.dtype)
            if getattr(path[-1], "name", None) == "count" else leaf, tx.init(params))
        assert float(ob.get_lr(state)) == pytest.approx(want, rel=1e-6), (name, wrapper_name)


@pytest.mark.parametrize("name", [n for n, e in ENTRIES.items() if e.injectable])
def test_bad_hyperparameters_are_refused_when_built_naming_the_argument(name):
    """Every float hyperparameter of every registry entry: NaN and a string are refused by the
    factory itself (not inside XLA), and the message names the argument."""
    entry = ENTRIES[name]
    for hyperparameter in entry.injectable:
        for bad, error in ((float("nan"), ValueError), ("0.1", TypeError)):
            with pytest.raises(error, match=re.escape(hyperparameter)):
                entry.build(**{hyperparameter: bad})
