"""The ``python -m bert_demo`` command: the demo runs, keeps parity, writes its files; bad
arguments are refused the argparse way (exit status 2, the argument named)."""

import csv
import json
import math
import pathlib
import subprocess
import sys

import pytest

from bert_demo import cli, main_job

# `python -m bert_demo` runs from the repository root, where the bert_demo folder is.
ROOT = pathlib.Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEMO_STEPS = 20


CLASSES = {
    "torch_model": "transformers.models.bert.modeling_bert.BertForMaskedLM",
    "flax_model": "bert_demo.models.bert.BertForMaskedLM",
    "optax_optimizer": "optax_bertadam.bertadam",
}
TORCH_OPTIMIZER_CLASSES = {
    "torch_ref": "torch_ref.bertadam.BertAdam",
    "pytorch_pretrained_bert": "pytorch_pretrained_bert.optimization.BertAdam",
}


@pytest.mark.parametrize(
    ("dtype", "torch_optimizer"),
    # float64 with the published optimizer: the other pairings cost a compile each and add no path.
    [("float32", "torch_ref"), ("float64", "pytorch_pretrained_bert")],
)
def test_demo_trains_both_sides_in_parity_and_writes_its_files(dtype, torch_optimizer, tmp_path,
                                                               capsys):
    status = cli.main(["demo", "--steps", str(DEMO_STEPS), "--dtype", dtype, "--out",
                           str(tmp_path), "--no-progress", "--rows", "5",
                           "--torch-optimizer", torch_optimizer])
    output = capsys.readouterr().out
    assert status == 0, output

    png = tmp_path / "demo.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert png.stat().st_size > 30_000  # four panels, not an empty canvas

    summary = json.loads((tmp_path / "demo.json").read_text())
    assert {key: summary[key] for key in CLASSES} == CLASSES
    assert summary["torch_optimizer"] == TORCH_OPTIMIZER_CLASSES[torch_optimizer]
    assert summary["settings"]["dtype"] == dtype
    assert summary["passed"] is True and summary["first_divergence"] is None
    assert summary["bounds"] == main_job.DIVERGENCE_BOUNDS[dtype]
    assert summary["max_divergence"] <= main_job.DIVERGENCE_BOUNDS[dtype]["parameters"]
    assert summary["report"]["first_divergence"] is None
    steps = summary["steps"]
    assert len(steps) == DEMO_STEPS
    with (tmp_path / "demo.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == DEMO_STEPS

    # The key biases are trained and compared, but their gradient is round-off on both sides:
    # within 1e3 epsilons of the key weight's (measured over 300 steps: 8-25 epsilons).
    key_bias = summary["key_bias"]
    assert key_bias["names"] == [f"bert.encoder.layer.{i}.attention.self.key.bias"
                                 for i in range(2)]
    assert key_bias["roundoff_ratio"] <= 1e3 * key_bias["epsilon"]
    assert all(name in summary["report"]["names"] for name in key_bias["names"])

    # Same batches, same weights: the losses agree, the rates agree, and the loss falls.
    for record in steps:
        assert math.isclose(record["loss_jax"], record["loss_torch"], rel_tol=1e-5)
        if record["lr_torch"] is not None:  # BertAdam's get_lr() is [0] before its first step
            assert math.isclose(record["lr_jax"], record["lr_torch"], rel_tol=1e-6, abs_tol=1e-12)
    assert steps[0]["lr_jax"] == 0.0  # warmup_linear starts at 0
    assert sum(r["loss_jax"] for r in steps[-5:]) < sum(r["loss_jax"] for r in steps[:5])

    assert "transformers.models.bert.modeling_bert.BertForMaskedLM" in output
    assert "attention key biases (2; compared, not counted" in output
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("parameters after the last step differ by ") and last_line.endswith(": OK")


def test_demo_exits_1_and_names_the_stage_when_the_runs_part(monkeypatch, tmp_path, capsys):
    """Bounds below float32 round-off: the update stage must be reported, exit status 1."""
    tight = dict(main_job.DIVERGENCE_BOUNDS["float32"], parameters=1e-30)
    monkeypatch.setitem(main_job.DIVERGENCE_BOUNDS, "float32", tight)
    status = cli.main(["demo", "--steps", "3", "--out", str(tmp_path), "--no-progress"])
    output = capsys.readouterr().out
    assert status == 1
    assert output.strip().endswith(": FAILED")
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["passed"] is False
    assert summary["first_divergence"]["stage"] in ("init", "update")


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
        (["demo", "--torch-optimizer", "adamw"],
         "argument --torch-optimizer: invalid choice: 'adamw'", "pytorch_pretrained_bert"),
        (["demo", "--torch-optimizer", "pytorch_pretrained_bert", "--schedule",
          "warmup_exp_decay_poly"],
         "argument --schedule: schedule='warmup_exp_decay_poly' is invalid with "
         "torch_optimizer='pytorch_pretrained_bert'", "warmup_linear"),
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
    from optax_bertadam.schedules.registry import SCHEDULES

    names = list(cli.all_schedules_for_plot(t_total=100, warmup_steps=10))
    # Every record of the registry except the loss-driven ones, whose rate follows the loss.
    assert names == [record.name for record in SCHEDULES if not record.loss_driven]
    out_file = tmp_path / "plots" / "schedules.png"
    status = cli.main(["schedules", "--out", str(out_file), "--t-total", "100",
                       "--warmup-steps", "10"])
    assert status == 0
    assert out_file.read_bytes()[:8] == PNG_SIGNATURE
    assert f"{len(names)} schedules" in capsys.readouterr().out


def test_python_dash_m_runs_the_command():
    result = subprocess.run([sys.executable, "-m", "bert_demo", "demo", "--help"],
                            capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    bound = f"float64: {main_job.DIVERGENCE_BOUNDS['float64']['parameters']:g}"
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
