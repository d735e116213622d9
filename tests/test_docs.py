"""Docs that run: every docstring example of the package executes, and every public callable has one.

(a) Each module of ``optax_bertadam`` (private ones too) goes through ``doctest``; any failing
example fails its module's test. (b) Every public callable (``optax_bertadam.__all__`` and the
``__all__`` of ``optax_bertadam.schedules.pytorch``) has a ``>>>`` example and a ``Returns:``
section; ``NamedTuple`` states are exempt from both but must carry their own docstring.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import jax
import pytest

import optax_bertadam

MODULE_NAMES = sorted(
    info.name for info in pkgutil.walk_packages(optax_bertadam.__path__, prefix="optax_bertadam.")
) + ["optax_bertadam"]

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _doctests(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [test for test in finder.find(module, module_name) if test.examples]


@pytest.mark.parametrize("module_name", MODULE_NAMES)
def test_docstring_examples_run(module_name, tmp_path, monkeypatch):
    # Examples that build a transformers Trainer write its output_dir: not into the checkout.
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    report: list[str] = []
    # The examples print float32 values: run them as a user would, with x64 off.
    with jax.enable_x64(False):
        for test in _doctests(module_name):
            runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)


def test_examples_are_found():
    # A finder that silently finds nothing would pass the test above.
    count = sum(len(test.examples) for name in MODULE_NAMES for test in _doctests(name))
    print(f"{count} doctest examples in {len(MODULE_NAMES)} modules")
    assert count >= 200


def _public_callables() -> list[tuple[str, object]]:
    names = [(name, getattr(optax_bertadam, name)) for name in optax_bertadam.__all__]
    pytorch = importlib.import_module("optax_bertadam.schedules.pytorch")
    names += [(f"schedules.pytorch.{n}", getattr(pytorch, n)) for n in getattr(pytorch, "__all__", ())]
    return [(name, obj) for name, obj in names if callable(obj)]


def _is_namedtuple(obj: object) -> bool:
    return inspect.isclass(obj) and issubclass(obj, tuple) and hasattr(obj, "_fields")


def _own_docs(cls: type) -> list[str]:
    """The class docstring and those of the methods it defines (where a class says what it returns)."""
    docs = [inspect.getdoc(cls) or ""]
    for name, member in vars(cls).items():
        if (name == "__call__" or not name.startswith("_")) and callable(member):
            docs.append(inspect.getdoc(member) or "")
    return docs


PUBLIC = _public_callables()


@pytest.mark.parametrize("name,obj", PUBLIC, ids=[name for name, _ in PUBLIC])
def test_public_callable_is_documented(name, obj):
    doc = obj.__doc__ or ""
    if _is_namedtuple(obj):
        # namedtuple's generated docstring is "Name(field, ...)": a state must say what it holds.
        assert doc.strip() and not doc.startswith(f"{obj.__name__}("), f"{name} has no docstring"
        return
    assert ">>>" in doc, f"{name} has no >>> example in its docstring"
    if inspect.isclass(obj) and issubclass(obj, Warning):
        return  # a warning category is raised, not called: nothing to return
    docs = _own_docs(obj) if inspect.isclass(obj) else [inspect.getdoc(obj) or ""]
    assert any("Returns:" in d for d in docs), f"{name} has no Returns: section"
