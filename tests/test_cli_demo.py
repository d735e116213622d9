"""The ``python -m bert_demo`` command: the demo runs, keeps parity, writes its files; bad
arguments are refused the argparse way (exit status 2, the argument named)."""

import csv
import json
import math
import pathlib
import subprocess
import sys

import pytest

from bert_demo import cli

# `python -m bert_demo` runs from the repository root, where the bert_demo folder is.
ROOT = pathlib.Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEMO_STEPS = 20


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_demo_trains_both_sides_in_parity_and_writes_its_files(dtype, tmp_path, capsys):
    status = cli.main(["demo", "--steps", str(DEMO_STEPS), "--dtype", dtype, "--out",
                       str(tmp_path), "--no-progress", "--print-every", "5"])
    output = capsys.readouterr().out
    assert status == 0, output

    png = tmp_path / "demo.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert png.stat().st_size > 10_000  # three panels, not an empty canvas

    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["settings"]["dtype"] == dtype
    assert summary["passed"] is True
    assert summary["bound"] == cli.DIVERGENCE_BOUNDS[dtype]
    assert summary["max_divergence"] <= cli.DIVERGENCE_BOUNDS[dtype]
    steps = summary["steps"]
    assert len(steps) == DEMO_STEPS
    with (tmp_path / "demo.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == DEMO_STEPS

    # Same batches, same weights: the losses agree, and the loss falls.
    for record in steps:
        assert math.isclose(record["loss_jax"], record["loss_torch"], rel_tol=1e-5)
        # Both sides report the same rate for the next update.
        assert math.isclose(record["next_lr_jax"], record["next_lr_torch"], rel_tol=1e-6)
    assert steps[0]["lr"] == 0.0  # warmup_linear starts at 0
    assert sum(r["loss_jax"] for r in steps[-5:]) < sum(r["loss_jax"] for r in steps[:5])

    # A table row every 5 steps plus the last, then the one-line verdict.
    assert output.count("\n") >= 6
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("final divergence ") and last_line.endswith(": OK")


def test_demo_exits_1_when_the_divergence_exceeds_the_bound(monkeypatch, tmp_path, capsys):
    def diverging_run(settings):
        records = [cli.StepRecord(step, 5.0 - step, 5.0 - step, 1e-3, 1e-3, 1e-3, divergence,
                                  "mlm_head.decoder.weight")
                   for step, divergence in enumerate([0.0, 1e-6, 2 * settings_bound])]
        return cli.DemoResult(settings, records, seconds=1.0)

    settings_bound = cli.DIVERGENCE_BOUNDS["float32"]
    monkeypatch.setattr(cli, "run_demo", diverging_run)
    status = cli.main(["demo", "--steps", "3", "--out", str(tmp_path), "--no-progress"])
    assert status == 1
    assert capsys.readouterr().out.strip().endswith(": FAILED")
    assert json.loads((tmp_path / "demo.json").read_text())["passed"] is False


@pytest.mark.parametrize(
    ("arguments", "expected", "allowed"),
    [
        (["demo", "--steps", "-5"], "argument --steps: -5 is invalid", "positive integer"),
        (["demo", "--steps", "0"], "argument --steps: 0 is invalid", "positive integer"),
        (["demo", "--steps", "ten"], "argument --steps: 'ten' is not an integer", ""),
        (["demo", "--schedule", "warmup_banana"],
         "argument --schedule: invalid choice: 'warmup_banana'", "warmup_exp_decay_poly"),
        (["demo", "--dtype", "float16"], "argument --dtype: invalid choice: 'float16'", "float64"),
        (["demo", "--device", "tpu"], "argument --device: invalid choice: 'tpu'", "gpu"),
        (["demo", "--lr=-1e-3"], "argument --lr: -1e-3 is invalid", "positive number"),
        (["demo", "--seq-len", "2"], "argument --seq-len: 2 is invalid", "at least 3"),
        (["schedules", "--warmup-steps", "2000"], "argument --warmup-steps: 2000 is invalid",
         "0 <= N < --t-total (1000)"),
        (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'", ""),
        ([], "the following arguments are required: COMMAND", ""),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(arguments, expected, allowed, capsys):
    """``allowed``: a value the message must list (argparse quotes choices or not by version)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "usage: python -m bert_demo" in error
    assert expected in error
    assert allowed in error


def test_gpu_request_without_gpu_is_refused_clearly(capsys, tmp_path):
    import jax
    import torch

    try:
        has_jax_gpu = bool(jax.devices("gpu"))
    except RuntimeError:
        has_jax_gpu = False
    if has_jax_gpu and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--device", "gpu", "--steps", "2", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "argument --device: --device gpu needs a GPU visible to both jax and torch" in error
    assert not (tmp_path / "demo.png").exists()


def test_schedules_plot_covers_every_registered_schedule(tmp_path, capsys):
    from optax_bertadam.schedules.bert import SCHEDULE_NAMES
    from optax_bertadam.schedules.transformers import SCHEDULER_NAMES

    names = list(cli.all_schedules_for_plot(t_total=100, warmup_steps=10))
    assert {f"bert/{name}" for name in SCHEDULE_NAMES} <= set(names)
    # Every transformers name except the loss-driven reduce_lr_on_plateau.
    expected = {f"transformers/{name}" for name in SCHEDULER_NAMES} - {
        "transformers/reduce_lr_on_plateau"}
    assert expected <= set(names)
    assert "classic/noam" in names
    out_file = tmp_path / "plots" / "schedules.png"
    status = cli.main(["schedules", "--out", str(out_file), "--t-total", "100",
                       "--warmup-steps", "10"])
    assert status == 0
    assert out_file.read_bytes()[:8] == PNG_SIGNATURE
    assert f"{len(names)} schedules" in capsys.readouterr().out


def test_parameter_divergence_is_relative_per_tensor_and_nan_is_worst():
    import numpy as np

    torch_side = {"a": np.array([2.0, -4.0]), "b": np.array([0.5])}
    jax_side = {"a": np.array([2.0, -4.4]), "b": np.array([0.51])}
    divergence, worst = cli.parameter_divergence(jax_side, torch_side)
    assert worst == "a" and math.isclose(divergence, 0.1)
    jax_side["b"] = np.array([np.nan])
    divergence, worst = cli.parameter_divergence(jax_side, torch_side)
    assert worst == "b" and math.isnan(divergence)


def test_python_dash_m_runs_the_command():
    result = subprocess.run([sys.executable, "-m", "bert_demo", "demo", "--help"],
                            capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    bound = f"float64: {cli.DIVERGENCE_BOUNDS['float64']:g}"
    assert "--schedule" in result.stdout and bound in " ".join(result.stdout.split())


def test_parity_command_runs_the_parity_tests_and_prints_their_table():
    result = subprocess.run(
        [sys.executable, "-m", "bert_demo", "parity", "-n", "0", "-k",
         "test_hyperparameter_variants and 0.37 and float64"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    table = result.stdout.split("family")[-1]
    assert "bertadam" in table and "param error" in table and "float64" in table
    assert " yes" in table and " NO" not in table
