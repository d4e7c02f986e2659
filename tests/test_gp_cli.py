"""End-to-end tests of `vijax run gp`: one short run, its outputs, and the argument checks."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math

import jax
import pytest

from vijax.cli import _parser, main
from vijax.models.gp.datasets import DATASETS

STEPS = 40


@pytest.fixture(scope="module")
def gp_run(tmp_path_factory):
    """One short run (natural gradients + Adam on the 1-D sine data), shared by the tests."""
    out = tmp_path_factory.mktemp("gp")
    stdout = io.StringIO()
    arguments = ["run", "gp", "--data", "sine", "--steps", STEPS, "--inducing", 10]
    arguments += ["--natural-gradients", 1, "--lr", 0.05, "--no-progress", "--out", out]
    with contextlib.redirect_stdout(stdout):
        code = main(arguments)
    return code, stdout.getvalue(), out


def test_gp_run_writes_metrics_that_show_a_fitted_gp(gp_run):
    code, _, out = gp_run
    assert code == 0
    # the run computes in float64 inside a context: the process setting is left as it was
    assert not jax.config.jax_enable_x64
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["steps"] == STEPS and metrics["config"]["natural_gradients"] == 1.0
    assert metrics["num_train"] + metrics["num_test"] == 200 and metrics["likelihood"] == "gaussian"
    for key in ("elbo_start", "elbo_final", "elbo_full_data", "collapsed_bound"):
        assert math.isfinite(metrics[key]), key
    # The SVGP bound never exceeds the collapsed bound (its maximum over q(u)); natural gradients
    # of size 1 keep q(u) close to that maximum while Adam moves the hyperparameters (gaps of
    # 0.008-0.67 nats over seeds 0-3 at 40 steps; with Adam alone it is tens of nats).
    assert metrics["elbo_full_data"] <= metrics["collapsed_bound"] + 1e-6
    assert metrics["collapsed_bound"] - metrics["elbo_full_data"] < 2.0
    # The data are sin 2x + x/3 plus noise of sd 0.2: a fitted GP predicts to about that error
    # (test RMSE 0.20-0.27, NLPD 0.33-0.39 over seeds 0-3); predicting 0 scores RMSE ≈ 0.9.
    assert metrics["test"]["rmse"] < 0.35
    assert metrics["test"]["nlpd"] < 0.8
    noise = metrics["hyperparameters"]["likelihood"]["variance"]
    assert 0.01 < noise < 1.0


def test_gp_run_prints_a_report_and_writes_plots(gp_run):
    _, stdout, out = gp_run
    for expected in (
        "sparse variational GP, sine",
        "natural gradients (step 1)",
        "collapsed bound (Titsias)",
        "kernel.lengthscale",
        "likelihood.variance",
        "test NLPD",
        "test RMSE",
        "wall time",
    ):
        assert expected in stdout, expected
    for name in ("elbo.png", "fit.png"):
        png = (out / name).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000, name


def test_the_data_choices_are_the_data_sets():
    experiments = next(
        action
        for action in _parser()._subparsers._group_actions[0].choices["run"]._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    data = next(a for a in experiments.choices["gp"]._actions if a.dest == "data")
    assert sorted(data.choices) == sorted(DATASETS)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--data", "mnist"], "argument --data: invalid choice: 'mnist'"),
        (["--kernel", "cosine"], "argument --kernel: invalid choice"),
        (["--inducing", "0"], "argument --inducing: must be a positive integer"),
        (["--batch-size", "-4"], "argument --batch-size: must be a positive integer"),
        (["--natural-gradients", "2"], "argument --natural-gradients: must be a number in [0, 1]"),
        (["--expectation", "exact"], "argument --expectation: invalid choice"),
        (["--lr", "0"], "argument --lr: must be a positive finite number"),
    ],
)
def test_bad_arguments_exit_with_a_message(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "gp", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_more_inducing_points_than_rows_is_refused(tmp_path, capsys):
    code = main(["run", "gp", "--data", "sine", "--inducing", "500", "--out", tmp_path])
    assert code == 2
    assert "--inducing 500 is more than the 160 training rows" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()
