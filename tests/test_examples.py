"""The README's Flax loops run and learn."""

import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["nnx_bertadam", "linen_trainstate"])
def test_example_trains(name):
    first = load(name).main(steps=1)
    last = load(name).main(steps=120)
    assert last < 0.5 * first, (first, last)
