"""``python -m bert_demo parity``: run the parity tests and print the measured figures.

Every parity test records what it measured through :func:`parity_tests.harness.assert_within`;
this runs them (on all cores if pytest-xdist is installed) and prints, per test file and figure,
the worst value over its cases next to its tolerance.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import pathlib
import tempfile


def _family(test_id: str) -> str:
    module = test_id.split("::")[0]
    return pathlib.Path(module).stem.removeprefix("test_")


def _dtype(test_id: str) -> str:
    for dtype in ("float64", "float32", "bfloat16", "float16"):
        if dtype in test_id:
            return dtype
    return "varied"  # the case id does not name one dtype (e.g. hypothesis over dtypes)


def summarize(rows: list[dict]) -> list[tuple[str, str, str, int, float, float]]:
    """(family, dtype, metric, cases, worst value, its tolerance) sorted by family."""
    worst: dict[tuple[str, str, str], tuple[float, float]] = {}
    counts: collections.Counter = collections.Counter()
    for row in rows:
        key = (_family(row["test"]), _dtype(row["test"]), row["metric"])
        counts[key] += 1
        ratio = row["value"] / row["tolerance"] if row["tolerance"] else float("inf")
        best = worst.get(key)
        if best is None or ratio > best[0] / best[1]:
            worst[key] = (row["value"], row["tolerance"])
    return [(*key, counts[key], *worst[key]) for key in sorted(worst)]


def format_table(summary) -> str:
    lines = [f"{'family':<26} {'dtype':<8} {'figure':<30} {'cases':>5} {'worst':>10} {'bound':>8}  ok"]
    for family, dtype, metric, cases, value, tolerance in summary:
        ok = "yes" if value <= tolerance else "NO"
        lines.append(f"{family:<26} {dtype:<8} {metric:<30} {cases:>5} {value:>10.2e} "
                     f"{tolerance:>8.0e}  {ok}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import pytest

    here = pathlib.Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "parity.json")
        args = [str(here), "-q", "-p", "no:cacheprovider", f"--parity-report={report}",
                "--rootdir", str(here.parent)]
        try:
            import xdist  # noqa: F401

            args += ["-n", str(min(os.cpu_count() or 1, 4))]
        except ImportError:
            pass
        status = pytest.main(args + list(argv or []))
        rows = [row for path in glob.glob(report + "*") for row in json.load(open(path))]
    print()
    print(format_table(summarize(rows)))
    return int(status)


if __name__ == "__main__":
    raise SystemExit(main())
