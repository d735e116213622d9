"""``python -m bert_demo demo --recipe bing_bert_lamb``: the bing_bert recipe on a real DeepSpeed
engine vs ``optax_bertadam.bing_bert_lamb``, through ``compare_training``.

The run is a subprocess: DeepSpeed initialises its process group (and sets ``MASTER_PORT``,
``RANK``, ...) once per process, which must not leak into the test process. A few steps, enough
to leave the warmup (6% of the run) and to see clipping and the rate with its offset.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from bert_demo import bing_bert, cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = 6


def test_recipe_runs_deepspeed_against_bing_bert_lamb_within_the_bound(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)  # the demo sets them for its one rank
    result = subprocess.run(
        [sys.executable, "-m", "bert_demo", "demo", "--recipe", "bing_bert_lamb", "--steps",
         str(STEPS), "--out", str(tmp_path), "--no-progress", "--rows", "4"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env, check=False)
    output = result.stdout
    assert result.returncode == 0, output[-3000:] + result.stderr[-3000:]

    lines = output.splitlines()
    # DeepSpeed may log its accelerator choice first, at import.
    recipe = next(line for line in lines if line.startswith("recipe: "))
    assert recipe.startswith("recipe: bing_bert_lamb (DeepSpeedExamples bing_bert")
    assert "+ lr_offset 0.001" in recipe
    import deepspeed

    assert (f"PyTorch side: DeepSpeed engine {deepspeed.__version__} with torch_ref FusedLamb "
            "(the CUDA FusedLamb cannot build on CPU)") in output
    assert "fp16 with dynamic loss scaling is refused by DeepSpeed's CPU engine" in output
    assert "JAX:     bert_demo.models.bert.BertForMaskedLM + optax_bertadam.bing_bert_lamb" in output
    assert lines[-1].startswith("parameters after the last step differ by ")
    assert lines[-1].endswith(": OK")

    png = tmp_path / "demo.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert png.stat().st_size > 30_000  # four panels, not an empty canvas

    summary = json.loads((tmp_path / "demo.json").read_text())
    bounds = bing_bert.RECIPE_DIVERGENCE_BOUNDS["bing_bert_lamb"]["float32"]
    assert summary["settings"]["recipe"] == "bing_bert_lamb"
    assert summary["deepspeed_engine"] == "deepspeed.runtime.engine.DeepSpeedEngine"
    assert summary["torch_optimizer"] == "torch_ref.lamb.FusedLamb"
    assert summary["optax_optimizer"] == "optax_bertadam.bing_bert_lamb"
    assert summary["recipe"]["deepspeed_config"]["gradient_clipping"] == 1.0
    assert summary["bounds"] == bounds
    assert summary["passed"] is True and summary["first_divergence"] is None
    assert summary["final_divergence"] <= summary["max_divergence"] <= bounds["parameters"]
    steps = summary["steps"]
    assert len(steps) == STEPS
    # The script's rate, set in the engine's optimizer before every step, is optax's get_lr:
    # lr_offset at step 0 (warmup starts at 0), then 11e-3 * 0.9 ** ((k - 0.36) / 250) + 1e-3.
    assert math.isclose(steps[0]["lr_torch"], 1e-3, rel_tol=1e-12)
    for k, record in enumerate(steps):
        assert math.isclose(record["lr_jax"], record["lr_torch"], rel_tol=1e-6)
        if k > 0:
            expected = 11e-3 * 0.9 ** ((k - 0.06 * STEPS) / 250) + 1e-3
            assert math.isclose(record["lr_torch"], expected, rel_tol=1e-12)
        assert math.isclose(record["loss_jax"], record["loss_torch"], rel_tol=bounds["loss"])
    assert steps[-1]["loss_torch"] < steps[0]["loss_torch"]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--dtype", "float64"], "argument --dtype: float64 is invalid with --recipe "
                                 "bing_bert_lamb: expected float32"),
        (["--lr", "1e-3"], "argument --lr: 0.001 is invalid with --recipe bing_bert_lamb"),
        (["--schedule", "warmup_cosine"], "argument --schedule: warmup_cosine is invalid"),
        (["--torch-optimizer", "pytorch_pretrained_bert"],
         "argument --torch-optimizer: pytorch_pretrained_bert is invalid"),
        (["--recipe", "bing_bert_adam"], "argument --recipe: invalid choice: 'bing_bert_adam'"),
    ],
)
def test_recipe_refuses_what_it_does_not_use(arguments, expected, capsys, tmp_path):
    recipe = [] if "--recipe" in arguments else ["--recipe", "bing_bert_lamb"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", *recipe, *arguments, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "demo.png").exists()
