"""End-to-end tests of `vijax run vae`: a short run, resuming it, and its argument checks."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math

import pytest

from vijax.cli import _parser, main
from vijax.models.vae import experiment

SHORT = [
    "run",
    "vae",
    "--hidden",
    "32",
    "--test-particles",
    "100",
    "--test-size",
    "40",
    "--checkpoint-every",
    "30",
    "--no-progress",
]


def _run(arguments):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(arguments)
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """One short run (60 steps) shared by the tests below: ``(code, stdout, out)``."""
    out = tmp_path_factory.mktemp("vae")
    code, stdout = _run([*SHORT, "--steps", "60", "--out", out])
    return code, stdout, out


def test_a_short_run_writes_metrics_pictures_and_a_checkpoint(vae_run):
    code, stdout, out = vae_run
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["steps"] == 60 and metrics["num_test"] == 40
    assert metrics["num_train"] + metrics["num_valid"] + 360 == 1797  # digits, 20% test
    test = metrics["test"]
    ll, elbo = test["log_likelihood_100"]["mean"], test["elbo"]["mean"]
    # 64 binary pixels: a model that learned nothing scores 64 log 2 ≈ 44 nats or worse; after
    # 60 steps the bounds are far below 0 but finite, and ordered L_1 ≤ L_5 ≤ L_50 ≤ log p̂.
    assert -80.0 < elbo <= test["iwae_5"]["mean"] <= test["iwae_50"]["mean"] <= ll < 0.0
    assert len(metrics["kl_per_dimension"]) == 8 and metrics["kl_total"] >= 0.0
    assert 0 <= metrics["active_units"] <= 8
    assert metrics["validation"]["step"] == [30.0, 60.0]
    assert all(math.isfinite(v) for v in metrics["validation"]["validation_elbo"])
    for name in ("reconstructions", "samples", "elbo_curve"):
        png = (out / f"{name if name != 'elbo_curve' else 'elbo'}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000, name
    assert (out / "checkpoints" / "step_000000060" / "state.msgpack").is_file()
    for expected in (
        "log-likelihood (K=100)",
        "IWAE bound K=5",
        "ELBO",
        "active units",
        "pictures:",
        "reconstructions.png",
        "ms per step",
    ):
        assert expected in stdout


def test_resume_continues_the_run_and_refuses_another_configuration(vae_run, capsys):
    _, _, out = vae_run
    code, _ = _run([*SHORT, "--steps", "60", "--out", out])  # no --resume: refused
    assert code == 1
    assert "already holds checkpoints" in capsys.readouterr().err
    code, _ = _run([*SHORT, "--steps", "60", "--latent-dim", "4", "--resume", "--out", out])
    assert code == 1
    assert "latent_dim=8 there vs 4 here" in capsys.readouterr().err
    code, stdout = _run([*SHORT, "--steps", "90", "--resume", "--out", out])
    assert code == 0 and "resumed from the checkpoint at step 60" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from"] == 60 and metrics["steps_run"] == 30
    assert metrics["validation"]["step"] == [30.0, 60.0, 90.0]


def test_every_valid_combination_builds_and_traces():
    # each latent × objective × estimator the command accepts gives an objective whose
    # gradient estimate traces (eval_shape: no compilation) on a minibatch of digits
    import jax
    import jax.numpy as jnp

    import vijax as vj

    images = jnp.full((4, 8, 8), 0.5)
    traced = 0
    for latent in ("gaussian", "bernoulli"):  # categorical latents share bernoulli's paths
        for objective in experiment.OBJECTIVES:
            for estimator in experiment.ESTIMATORS:
                config = experiment.Config(
                    latent=latent,
                    latent_dim=2,
                    classes=3,
                    objective=objective,
                    estimator=estimator,
                    hidden=8,
                )
                try:
                    config = experiment.check_config(config)
                except ValueError:
                    continue
                _, built, params = experiment.build(config, 100, (8, 8), jax.random.key(0))
                grads = jax.eval_shape(vj.grad_estimate(built), params, jax.random.key(1), images)
                assert jax.tree.structure(grads) == jax.tree.structure(params), config
                traced += 1
    assert traced >= 15


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["--estimator", "enum"], 2, "argument --estimator: 'enum' needs a discrete latent"),
        (["--latent", "bernoulli", "--objective", "dreg"], 2, "argument --objective: dreg"),
        (["--latent", "bernoulli", "--estimator", "reparam"], 2, "argument --estimator"),
        (["--latent", "bernoulli", "--latent-dim", "13", "--estimator", "enum"], 2, "2^13"),
        (["--objective", "vimco", "--estimator", "score"], 2, "vimco is the score function"),
        (["--likelihood", "continuous-bernoulli"], 2, "argument --binarization"),
        (["--test-particles", "700"], 2, "argument --test-particles"),
        (
            ["--data", "fashion-mnist", "--data-dir", "/nonexistent/fashion"],
            1,
            "apt-get install -y dataset-fashion-mnist",
        ),
    ],
)
def test_bad_combinations_exit_with_a_message_naming_the_option(
    arguments, code, message, tmp_path, capsys
):
    assert main(["run", "vae", *arguments, "--steps", "1", "--out", tmp_path]) == code
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--steps", "0"], "argument --steps: must be a positive integer"),
        (["--latent-dim", "-1"], "argument --latent-dim"),
        (["--beta", "0"], "argument --beta: must be a positive finite number"),
        (["--objective", "rws"], "argument --objective: invalid choice"),
    ],
)
def test_bad_arguments_exit_with_status_2(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "vae", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_diverging_run_reports_where_and_keeps_its_checkpoint(tmp_path, capsys):
    arguments = [*SHORT, "--steps", "4", "--lr", "1e30", "--checkpoint-every", "1"]
    code, _ = _run([*arguments, "--out", tmp_path])
    assert code == 1
    error = capsys.readouterr().err
    assert "not finite at step" in error
    assert not (tmp_path / "metrics.json").exists()


def _vae_parser() -> argparse.ArgumentParser:
    run = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    experiments = next(
        a for a in run.choices["run"]._actions if isinstance(a, argparse._SubParsersAction)
    )
    return experiments.choices["vae"]


def test_the_command_offers_the_experiment_s_choices():
    actions = {a.dest: a for a in _vae_parser()._actions}
    assert tuple(actions["objective"].choices) == experiment.OBJECTIVES
    assert tuple(actions["latent"].choices) == experiment.LATENTS
    assert tuple(actions["estimator"].choices) == experiment.ESTIMATORS
    assert set(vars(experiment.Config())) <= set(actions)
