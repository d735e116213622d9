"""Output that reads at a glance: table names cut in the middle, one plotting path.

The demo's terminal table (compare's ``report.table``) names tensors by both ends and their layer;
the demo's error panel is ``report.plot`` drawn into an axis of the demo's figure.
"""

from __future__ import annotations

import warnings

import pytest

from optax_bertadam.compare import _short


@pytest.mark.parametrize(
    "name, width, expected",
    [
        ("bert.encoder.layer.0.attention.self.query.bias", 36, "bert.encoder.layer.0…self.query.bias"),
        ("bert.encoder.layer.1.attention.output.LayerNorm.weight", 36,
         "bert…layer.1…output.LayerNorm.weight"),
        ("bert.embeddings.LayerNorm.bias", 36, "bert.embeddings.LayerNorm.bias"),  # whole: it fits
        ("encoder/layer_0/attention/self/key/kernel", 31, "encoder/layer_0…self/key/kernel"),
    ],
)
def test_names_are_cut_in_the_middle_keeping_the_ends_and_the_layer(name, width, expected):
    assert _short(name, width) == expected
    assert len(expected) <= width


def test_report_plot_draws_into_a_given_axis_or_a_file_not_both(tmp_path):
    import types

    from matplotlib.figure import Figure

    from optax_bertadam.compare import ComparisonReport

    report = types.SimpleNamespace(steps=[], dtype="float32", ignore=[], bounds={}, mode="end_to_end",
                                   first_divergence=None)
    ax = Figure().add_subplot()
    with pytest.raises(ValueError, match="exactly one of them"):
        ComparisonReport.plot(report, str(tmp_path / "x.png"), ax=ax)
    with pytest.raises(ValueError, match="exactly one of them"):
        ComparisonReport.plot(report)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an empty panel has nothing for its legend
        ComparisonReport.plot(report, ax=ax)  # drawn into ax, nothing written
    assert not (tmp_path / "x.png").exists()
