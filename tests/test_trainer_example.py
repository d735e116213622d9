"""examples/trainer_to_flax.py runs: the Trainer's run, replayed in Flax NNX with from_trainer,
agrees with it at every step (compare_training finds no divergence)."""

import importlib.util
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "trainer_to_flax.py"


def test_trainer_to_flax_has_no_divergence():
    spec = importlib.util.spec_from_file_location("trainer_to_flax", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(steps=4, verbose=False)
    assert report.first_divergence is None, report.explanation
    assert report.trainer_difference == 0.0
