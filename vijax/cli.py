"""The ``vijax`` command: run the built-in experiments.

Usage::

    vijax run logreg [--steps 5000] [--lr 0.01] [--particles 1] [--seed 0] [--no-progress]
                     [--out runs/logreg]

Each experiment is a subcommand of ``run``: a function that adds its parser (setting
``handler``) and a handler that takes the parsed options, prints a report and writes its
results into ``--out``. Bad arguments exit with status 2 and a message naming the argument.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# JAX, vijax and matplotlib are imported inside the handlers, so that `vijax --help` and bad
# arguments answer at once.

__all__ = ["main"]

_TABLE_WEIGHTS = 10  # the posterior table shows the first weights, then the intercept
_POSTERIOR_DRAWS = 1000
_TEST_FRACTION = 0.2
_FINAL_WINDOW = 100  # the final ELBO averages this many last steps (the estimate is noisy)
_START_WINDOW = 10  # the starting ELBO averages this many first steps


# ----------------------------------------------------------------------------------------------
# Argument types: each names what it wants, argparse adds the argument's name.
# ----------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer in [0, 2**32), got {text!r}"
        ) from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32), got {text!r}")
    return value


def _output_folder(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    return path


# ----------------------------------------------------------------------------------------------
# vijax run logreg
# ----------------------------------------------------------------------------------------------


def _add_run_options(parser, out: str, handler, *, seed: bool = True) -> None:
    """The options every ``vijax run`` experiment ends with, and its handler."""
    if seed:
        parser.add_argument(
            "--seed", type=_seed, default=0, help="random seed (default: %(default)s)"
        )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the progress bar"
    )
    parser.add_argument(
        "--out",
        type=_output_folder,
        default=out,
        help="output folder, created if needed (default: %(default)s)",
    )
    parser.set_defaults(handler=handler)


def _add_logreg(experiments: argparse._SubParsersAction) -> None:
    parser = experiments.add_parser(
        "logreg",
        help="Bayesian logistic regression on scikit-learn's breast-cancer data",
        description=(
            "Fit a mean-field Normal family to Bayesian logistic regression on the breast-cancer "
            "data (80% train / 20% test) by maximizing the ELBO with Adam; print the posterior "
            "of the weights and the test accuracy and log predictive density; write "
            "metrics.json and elbo.png into --out."
        ),
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=5000, help="optimizer steps (default: %(default)s)"
    )
    parser.add_argument(
        "--lr", type=_positive_float, default=0.01, help="Adam learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--particles",
        type=_positive_int,
        default=1,
        help="ELBO particles per step (default: %(default)s)",
    )
    _add_run_options(parser, "runs/logreg", _run_logreg)


def _posterior_table(names, draws) -> str:
    rows = [f"{'weight':<26}{'mean':>9}{'std':>9}{'5%':>9}{'95%':>9}"]
    shown = [*range(min(_TABLE_WEIGHTS, len(names) - 1)), len(names) - 1]
    for index in shown:
        column = draws[:, index]
        low, high = np.quantile(column, [0.05, 0.95])
        rows.append(
            f"{names[index]:<26}{column.mean():>9.3f}{column.std():>9.3f}{low:>9.3f}{high:>9.3f}"
        )
    return "\n".join(rows)


def _plot_history(history, path: Path, title: str) -> None:
    """The ELBO at every step and its running mean, drawn with the Agg backend (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    steps = np.arange(1, len(history) + 1)
    axes.plot(steps, history, color="tab:blue", alpha=0.35, linewidth=0.8, label="ELBO estimate")
    window = min(_FINAL_WINDOW, len(history))
    smooth = np.convolve(history, np.ones(window) / window, mode="valid")
    axes.plot(steps[window - 1 :], smooth, color="tab:blue", label=f"running mean ({window} steps)")
    # The first steps sit hundreds of nats below the rest; keep the converged part readable.
    low, high = np.percentile(history, [2, 100])
    axes.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    axes.set(xlabel="step", ylabel="ELBO (nats)", title=title)
    axes.legend(loc="lower right")
    figure.savefig(path, dpi=120)


def _fit_logreg(options: argparse.Namespace) -> dict:
    """Fit, draw from the posterior and score the test set; the run's numbers and arrays."""
    import jax
    import optax

    import vijax as vj
    from vijax.data import breast_cancer, split
    from vijax.models import log_predictive_density, logistic_regression, predictive_probability

    x, y = breast_cancer()
    split_key, init_key, fit_key, posterior_key = jax.random.split(jax.random.key(options.seed), 4)
    data = split(x, y, _TEST_FRACTION, split_key)
    train = (data.x_train, data.y_train)
    family = vj.mean_field_normal(logistic_regression)
    objective = vj.elbo(logistic_regression, family, num_particles=options.particles)

    fit_start = time.perf_counter()
    # One compiled program each for initialization and evaluation: run eagerly, their many small
    # operations would each be compiled on their own (seconds on CPU).
    initial_params = jax.jit(family.init)(init_key, *train)
    result = vj.fit(
        objective,
        initial_params,
        optax.adam(options.lr),
        fit_key,
        *train,
        num_steps=options.steps,
        progress=options.progress,
    )
    fit_seconds = time.perf_counter() - fit_start

    @jax.jit
    def evaluate(params, key):
        weights = vj.sample_posterior(family, params, key, _POSTERIOR_DRAWS, *train)["w"]
        probability = predictive_probability(data.x_test, weights)
        log_predictive = log_predictive_density(data.x_test, data.y_test, weights)
        return weights, probability, log_predictive

    weights, probability, log_predictive = evaluate(result.params, posterior_key)
    correct = (np.asarray(probability) > 0.5) == np.asarray(data.y_test)
    return {
        "history": np.asarray(result.history),
        "weights": np.asarray(weights),
        "num_train": len(data.y_train),
        "num_test": len(data.y_test),
        "test_accuracy": float(np.mean(correct)),
        "test_log_predictive_density": float(log_predictive),
        "fit_seconds": fit_seconds,
    }


def _run_logreg(options: argparse.Namespace) -> int:
    from vijax import NonFiniteError
    from vijax.data import breast_cancer_feature_names

    start = time.perf_counter()
    try:
        run = _fit_logreg(options)
    except NonFiniteError as error:
        print(f"vijax run logreg: error: {error}", file=sys.stderr)
        return 1
    history, weights, names = run["history"], run["weights"], breast_cancer_feature_names()
    final_window, start_window = min(_FINAL_WINDOW, len(history)), min(_START_WINDOW, len(history))
    options.out.mkdir(parents=True, exist_ok=True)
    plot_path = options.out / "elbo.png"
    _plot_history(history, plot_path, "Bayesian logistic regression (breast cancer)")
    quantiles = np.quantile(weights, [0.05, 0.95], axis=0)
    metrics = {
        "experiment": "logreg",
        "config": {
            "steps": options.steps,
            "lr": options.lr,
            "particles": options.particles,
            "seed": options.seed,
            "test_fraction": _TEST_FRACTION,
            "posterior_draws": _POSTERIOR_DRAWS,
        },
        "num_train": run["num_train"],
        "num_test": run["num_test"],
        "elbo_final": float(history[-final_window:].mean()),
        "elbo_start": float(history[:start_window].mean()),
        "test_accuracy": run["test_accuracy"],
        "test_log_predictive_density": run["test_log_predictive_density"],
        "fit_seconds": run["fit_seconds"],
        "wall_seconds": time.perf_counter() - start,
        "posterior": {
            name: {
                "mean": float(weights[:, index].mean()),
                "std": float(weights[:, index].std()),
                "q05": float(quantiles[0, index]),
                "q95": float(quantiles[1, index]),
            }
            for index, name in enumerate(names)
        },
    }

    print(
        f"Bayesian logistic regression, breast cancer: {metrics['num_train']} train / "
        f"{metrics['num_test']} test rows, {len(names)} weights (30 features + intercept)"
    )
    print(
        f"mean-field Normal family, ELBO with {options.particles} particle(s), "
        f"Adam lr={options.lr:g}, {options.steps} steps, seed {options.seed}"
    )
    print(
        f"final ELBO (mean of the last {final_window} steps): {metrics['elbo_final']:.2f}"
        f"   (first {start_window} steps: {metrics['elbo_start']:.2f})"
    )
    print()
    print(f"posterior of the weights ({_POSTERIOR_DRAWS} draws from the fitted family):")
    print(_posterior_table(names, weights))
    print()
    print(f"test accuracy:                 {metrics['test_accuracy']:.4f}")
    print(
        f"test log predictive density:   {metrics['test_log_predictive_density']:.4f} "
        "nats per example"
    )
    print(
        f"wall time:                     {metrics['wall_seconds']:.1f} s "
        f"(fit {metrics['fit_seconds']:.1f} s, compilation included)"
    )
    metrics_path = options.out / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    print(f"wrote {metrics_path} and {plot_path}")
    return 0


# ----------------------------------------------------------------------------------------------
# vijax run flow
# ----------------------------------------------------------------------------------------------


def _add_flow(experiments: argparse._SubParsersAction) -> None:
    # the names of vijax.flows.targets.TARGETS and vijax.flows.FLOW_KINDS, written out so that
    # `vijax run flow --help` answers without importing JAX (a test keeps them in step)
    targets = ("U1", "U2", "U3", "U4", "banana", "funnel")
    kinds = (
        "planar",
        "radial",
        "affine_coupling",
        "spline",
        "maf",
        "iaf",
        "diagonal_gaussian",
        "gaussian",
    )
    parser = experiments.add_parser(
        "flow",
        help="fit a normalizing flow to a 2-D target density",
        description=(
            "Fit a normalizing flow to a 2-D target (Rezende & Mohamed's energies U1-U4, a "
            "banana, Neal's funnel) by maximizing the ELBO with Adam, with the fast path "
            "gradient (--gradient path) or the standard one; print the ELBO against log Z "
            "(grid quadrature) and an importance-sampled estimate; write metrics.json, "
            "density.png (target beside the fitted density) and elbo.png into --out."
        ),
    )
    parser.add_argument(
        "--target", choices=targets, default="U1", help="target density (default: %(default)s)"
    )
    parser.add_argument(
        "--flow", choices=kinds, default="planar", help="flow family (default: %(default)s)"
    )
    parser.add_argument(
        "--length", type=_positive_int, default=32, help="number of layers (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=5000, help="optimizer steps (default: %(default)s)"
    )
    parser.add_argument(
        "--lr",
        type=_positive_float,
        default=0.005,
        help="Adam learning rate (default: %(default)s)",
    )
    parser.add_argument(
        "--particles",
        type=_positive_int,
        default=32,
        help="ELBO particles per step (default: %(default)s)",
    )

    def fraction(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0.0 <= value <= 1.0:
            raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
        return value

    parser.add_argument(
        "--anneal",
        type=fraction,
        default=0.5,
        metavar="FRACTION",
        help=(
            "raise the inverse temperature from 0.01 to 1 in 10 stages over this fraction of "
            "the steps, as Rezende & Mohamed did (0: no annealing; default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--gradient",
        choices=("path", "standard"),
        default="path",
        help="the family's gradient: fast path gradient or standard (default: %(default)s)",
    )
    _add_run_options(parser, "runs/flow", _run_flow)


def _run_flow(options: argparse.Namespace) -> int:
    import jax
    import optax

    import vijax as vj
    from vijax.flows.targets import log_normalizer, plot_densities, target_model

    evaluation_particles = 10_000
    start = time.perf_counter()
    model = target_model(options.target)
    estimator = vj.path() if options.gradient == "path" else vj.reparameterized()
    family = vj.flow_family(2, options.flow, options.length, estimator=estimator)
    init_key, fit_key, elbo_key, iwae_key = jax.random.split(jax.random.key(options.seed), 4)
    params = jax.jit(family.init)(init_key)
    objective = vj.elbo(model, family, num_particles=options.particles)
    optimizer = optax.adam(options.lr)
    # annealing: stages of a tempered target, then the target itself; β is an argument of the
    # model, so every stage reuses one compiled step, and the optimizer state carries over
    stages, annealed_steps = 10, int(options.anneal * options.steps)
    schedule = [
        (min(1.0, 0.01 + (stage + 1) / stages), annealed_steps // stages)
        for stage in range(stages)
        if annealed_steps >= stages
    ]
    schedule.append((1.0, options.steps - sum(steps for _, steps in schedule)))
    state, histories = None, []
    try:
        for inverse_temperature, steps in schedule:
            result = vj.fit(
                objective,
                params,
                optimizer,
                fit_key,
                np.float32(inverse_temperature),
                num_steps=steps,
                state=state,
                progress=options.progress,
            )
            state = result.state
            histories.append(result.history)
    except vj.NonFiniteError as error:
        print(f"vijax run flow: error: {error}", file=sys.stderr)
        return 1
    fit_seconds = time.perf_counter() - start

    @jax.jit
    def evaluate(params):
        elbo = vj.elbo(model, family, evaluation_particles)(params, elbo_key).value
        bound = vj.iwae(model, family, evaluation_particles)(params, iwae_key).value
        return elbo, bound

    elbo, importance_weighted = (float(v) for v in evaluate(result.params))
    log_z = float(log_normalizer(options.target))
    history = np.concatenate(histories)
    final_window, start_window = min(_FINAL_WINDOW, len(history)), min(_START_WINDOW, len(history))
    options.out.mkdir(parents=True, exist_ok=True)
    label = f"{options.flow} flow, length {options.length}"
    density_path, history_path = options.out / "density.png", options.out / "elbo.png"
    log_q = jax.jit(lambda z: family.flow.log_prob(result.params, z))
    plot_densities(options.target, log_q, density_path, title=f"{label}: q")
    _plot_history(history, history_path, f"{label} on {options.target}")
    metrics = {
        "experiment": "flow",
        "config": {
            "target": options.target,
            "flow": options.flow,
            "length": options.length,
            "steps": options.steps,
            "lr": options.lr,
            "particles": options.particles,
            "gradient": options.gradient,
            "anneal": options.anneal,
            "seed": options.seed,
            "evaluation_particles": evaluation_particles,
        },
        "elbo_start": float(history[:start_window].mean()),
        "elbo_final": float(history[-final_window:].mean()),
        "elbo": elbo,
        "importance_weighted_bound": importance_weighted,
        "log_normalizer": log_z,
        "kl_estimate": log_z - elbo,
        "fit_seconds": fit_seconds,
        "wall_seconds": time.perf_counter() - start,
    }
    print(
        f"{label} ({options.gradient} gradient) on {options.target}: {options.steps} Adam steps, "
        f"lr={options.lr:g}, {options.particles} particles, seed {options.seed}, "
        f"annealed over {annealed_steps if len(schedule) > 1 else 0} steps"
    )
    print(
        f"final ELBO (mean of the last {final_window} steps): {metrics['elbo_final']:.4f}"
        f"   (first {start_window} steps, tempered if annealed: {metrics['elbo_start']:.4f})"
    )
    print(f"ELBO ({evaluation_particles} particles):           {elbo:.4f}")
    print(f"importance-weighted bound ({evaluation_particles}): {importance_weighted:.4f}")
    print(f"log Z (grid quadrature):              {log_z:.4f}")
    print(f"KL(q || p) = log Z - ELBO:            {log_z - elbo:.4f}")
    print(
        f"wall time:                            {metrics['wall_seconds']:.1f} s "
        f"(fit {fit_seconds:.1f} s, compilation included)"
    )
    metrics_path = options.out / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    print(f"wrote {metrics_path}, {density_path} and {history_path}")
    return 0


# ----------------------------------------------------------------------------------------------
# vijax run vae
# ----------------------------------------------------------------------------------------------


def _add_vae(experiments: argparse._SubParsersAction) -> None:
    # the choices of vijax.models.vae.experiment, written out so that `vijax run vae --help`
    # answers without importing JAX (tests/test_vae_cli.py keeps them in step)
    objectives = ("elbo", "iwae", "dreg", "vimco")
    latents = ("gaussian", "bernoulli", "categorical")
    estimators = (
        "auto",
        "reparam",
        "path",
        "enum",
        "mvd",
        "score",
        "score-running-mean",
        "score-learned",
        "score-loo",
        "relaxed",
    )
    parser = experiments.add_parser(
        "vae",
        help="train and evaluate a variational autoencoder on digits or Fashion-MNIST",
        description=(
            "Train a VAE (a decoder model and an encoder family, both vijax programs) on "
            "scikit-learn's 8x8 digits or Fashion-MNIST with Adam, by the ELBO, the per-datum "
            "IWAE bound (--objective iwae), IWAE with DReG gradients (dreg) or VIMCO (vimco), "
            "with a Gaussian or a discrete latent whose gradient strategy --estimator chooses; "
            "checkpoint every --checkpoint-every steps (--resume continues a killed run "
            "exactly); report the test log-likelihood by importance sampling with "
            "--test-particles particles, the ELBO and IWAE bounds, KL per latent dimension and "
            "active units; write metrics.json, reconstructions.png, samples.png and elbo.png "
            "into --out."
        ),
    )
    parser.add_argument(
        "--data",
        choices=("digits", "fashion-mnist"),
        default="digits",
        help="dataset (default: %(default)s; fashion-mnist reads the IDX files of the Debian "
        "package dataset-fashion-mnist)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="folder with the Fashion-MNIST IDX files (default: /usr/share/datasets/fashion-mnist)",
    )
    parser.add_argument(
        "--binarization",
        choices=("dynamic", "static", "none"),
        default="dynamic",
        help="binarize training images afresh each step, once, or not at all "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--likelihood",
        choices=("bernoulli", "continuous-bernoulli"),
        default="bernoulli",
        help="pixel likelihood (default: %(default)s)",
    )
    parser.add_argument(
        "--network", choices=("mlp", "conv"), default="mlp", help="network (default: %(default)s)"
    )
    parser.add_argument(
        "--hidden",
        type=_positive_int,
        default=200,
        help="units per hidden layer (default: %(default)s)",
    )
    parser.add_argument(
        "--latent", choices=latents, default="gaussian", help="latent kind (default: %(default)s)"
    )
    parser.add_argument(
        "--latent-dim",
        type=_positive_int,
        default=8,
        help="latent dimensions (variables for discrete latents; default: %(default)s)",
    )
    parser.add_argument(
        "--classes",
        type=_positive_int,
        default=4,
        help="classes of each categorical latent (default: %(default)s)",
    )
    parser.add_argument(
        "--objective", choices=objectives, default="elbo", help="objective (default: %(default)s)"
    )
    parser.add_argument(
        "--particles",
        type=_positive_int,
        default=None,
        help="particles per datum (default: 1 for elbo, 5 otherwise)",
    )
    parser.add_argument(
        "--estimator",
        choices=estimators,
        default="auto",
        help="gradient strategy of the latent (default: reparam for a Gaussian latent, mvd for "
        "a discrete one, score-running-mean with iwae, score-loo for vimco)",
    )
    parser.add_argument(
        "--temperature",
        type=_positive_float,
        default=0.5,
        help="relaxation temperature for --estimator relaxed (default: %(default)s)",
    )
    parser.add_argument(
        "--beta",
        type=_positive_float,
        default=1.0,
        help="weight of the KL term: a beta-VAE when not 1 (default: %(default)s)",
    )
    parser.add_argument(
        "--conditional", action="store_true", help="condition encoder and decoder on the class"
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=10000, help="optimizer steps (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=128,
        help="minibatch size (default: %(default)s)",
    )
    parser.add_argument(
        "--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default: %(default)s)"
    )
    parser.add_argument("--seed", type=_seed, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--test-particles",
        type=_positive_int,
        default=5000,
        help="importance samples per test image for the log-likelihood (default: %(default)s)",
    )
    parser.add_argument(
        "--test-size",
        type=_positive_int,
        default=None,
        help="evaluate on the first N test images (default: all)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=1000,
        help="steps between checkpoints and validation (default: %(default)s)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --out/checkpoints",
    )
    _add_run_options(parser, "runs/vae", _run_vae, seed=False)


def _run_vae(options: argparse.Namespace) -> int:
    from vijax import NonFiniteError
    from vijax.models.vae.experiment import Config, check_config, run

    settings = {
        name: getattr(options, name)
        for name in Config.__dataclass_fields__
        if hasattr(options, name)
    }
    try:
        config = check_config(Config(**settings))
    except ValueError as error:
        print(f"vijax run vae: error: {error}", file=sys.stderr)
        return 2
    if options.test_particles % 500 and options.test_particles > 500:
        print(
            "vijax run vae: error: argument --test-particles: must be at most 500 or a "
            f"multiple of 500, got {options.test_particles}",
            file=sys.stderr,
        )
        return 2
    try:
        metrics = run(config, options.out, resume=options.resume, progress=options.progress)
    except (FileNotFoundError, NonFiniteError, ValueError) as error:
        print(f"vijax run vae: error: {error}", file=sys.stderr)
        return 1
    test = metrics["test"]
    ll_name = f"log_likelihood_{config.test_particles}"
    shape = "x".join(map(str, metrics["image_shape"]))
    print(
        f"VAE on {config.data}: {metrics['num_train']} train / {metrics['num_valid']} "
        f"validation / {metrics['num_test']} test images of {shape}, "
        f"{config.binarization} binarization, {config.likelihood} likelihood"
    )
    latent = f"{config.latent} latent of {config.latent_dim}"
    if config.latent == "categorical":
        latent += f" x {config.classes} classes"
    print(
        f"{config.network} networks ({config.hidden} units), {latent}, {config.objective} with "
        f"{config.particles} particle(s), estimator {config.estimator}"
        + (f", beta {config.beta:g}" if config.beta != 1.0 else "")
        + (", conditional on the class" if config.conditional else "")
        + f"; Adam lr={config.lr:g}, batch {config.batch_size}, {config.steps} steps, "
        f"seed {config.seed}"
    )
    if metrics["resumed_from"] is not None:
        print(f"resumed from the checkpoint at step {metrics['resumed_from']}")
    print()
    print(f"test set, nats per image (mean ± standard error over {metrics['num_test']} images):")
    rows = [(f"log-likelihood (K={config.test_particles})", test[ll_name])]
    rows += [(f"IWAE bound K={name[5:]}", test[name]) for name in test if name.startswith("iwae_")]
    if "elbo" in test:
        rows.append(("ELBO", test["elbo"]))
    for label, value in rows:
        print(f"  {label:<28}{value['mean']:>10.3f} ± {value['standard_error']:.3f}")
    print(
        f"KL(q || p) per image: {metrics['kl_total']:.3f} nats; active units "
        f"{metrics['active_units']} of {len(metrics['posterior_mean_variance'])}"
    )
    print(
        f"training objective per image (mean of the last steps): "
        f"{metrics['train_objective_final']:.3f}"
    )
    print(
        f"wall time {metrics['wall_seconds']:.1f} s (fit {metrics['fit_seconds']:.1f} s, "
        f"{1000 * metrics['seconds_per_step']:.2f} ms per step; evaluation "
        f"{metrics['eval_seconds']:.1f} s)"
    )
    files = metrics["files"]
    print(f"pictures: {files['reconstructions']}, {files['samples']} and {files['elbo_curve']}")
    print(f"wrote {files['metrics']}; checkpoints in {metrics['checkpoint']}")
    return 0


# ----------------------------------------------------------------------------------------------
# vijax run gp
# ----------------------------------------------------------------------------------------------


def _add_gp(experiments: argparse._SubParsersAction) -> None:
    # the names of vijax.models.gp.datasets.DATASETS, written out so that `vijax run gp --help`
    # answers without importing JAX (a test keeps them in step)
    datasets = ("diabetes", "breast-cancer", "sine", "counts")
    kernels = ("rbf", "matern12", "matern32", "matern52", "rational-quadratic")

    def step_size(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0.0 <= value <= 1.0:
            raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
        return value

    parser = experiments.add_parser(
        "gp",
        help="sparse variational GP regression / classification on a small data set",
        description=(
            "Fit a sparse variational Gaussian process (whitened SVGP, ARD kernel, inducing "
            "inputs learned) to a data set that needs no download (80% train / 20% test) by "
            "maximizing the ELBO, its per-datum expectations by Gauss-Hermite quadrature or "
            "Monte Carlo, with Adam, or natural gradients for q(u) and Adam for the rest; print "
            "the ELBO (and Titsias's collapsed bound for Gaussian noise), the hyperparameters "
            "and the test NLPD and RMSE or error rate; write metrics.json, elbo.png and, for "
            "1-D data, fit.png (predictive bands) into --out."
        ),
    )
    parser.add_argument(
        "--data", choices=datasets, default="diabetes", help="data set (default: %(default)s)"
    )
    parser.add_argument(
        "--kernel", choices=kernels, default="rbf", help="ARD kernel (default: %(default)s)"
    )
    parser.add_argument(
        "--inducing",
        type=_positive_int,
        default=32,
        help="number of inducing points (default: %(default)s)",
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=2000, help="optimizer steps (default: %(default)s)"
    )
    parser.add_argument(
        "--lr", type=_positive_float, default=0.01, help="Adam learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="minibatch size of the data plate (default: all training rows)",
    )
    parser.add_argument(
        "--expectation",
        choices=("quadrature", "monte-carlo"),
        default="quadrature",
        help=(
            "per-datum expected log-likelihood: Gauss-Hermite (2 nodes for Gaussian noise, "
            "20 otherwise), or one local reparameterized draw (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--natural-gradients",
        type=step_size,
        default=0.0,
        metavar="STEP",
        help=(
            "natural-gradient step size for q(u), Adam training only the hyperparameters and "
            "inducing inputs (1 is exact for Gaussian noise, ~0.1 for classification; "
            "0: Adam for everything; default: %(default)s)"
        ),
    )
    _add_run_options(parser, "runs/gp", _run_gp)


def _run_gp(options: argparse.Namespace) -> int:
    import dataclasses

    import jax
    import optax

    import vijax as vj
    from vijax.models import gp
    from vijax.models.gp.datasets import load

    start = time.perf_counter()
    kernels = {
        "rbf": gp.RBF,
        "matern12": gp.Matern12,
        "matern32": gp.Matern32,
        "matern52": gp.Matern52,
        "rational-quadratic": gp.RationalQuadratic,
    }
    likelihoods = {"gaussian": gp.Gaussian, "bernoulli": gp.Bernoulli, "poisson": gp.Poisson}

    # GP algebra (Cholesky factors of kernel matrices) wants float64; the context restores the
    # setting afterwards, so a caller in the same process keeps its own.
    with jax.enable_x64(True):
        split_key, init_key, fit_key = jax.random.split(jax.random.key(options.seed), 3)
        data = load(options.data, split_key, _TEST_FRACTION)
        num_train, num_features = data.x_train.shape
        batch_size = options.batch_size if options.batch_size else None
        if batch_size is not None and batch_size > num_train:
            print(
                f"vijax run gp: error: --batch-size {batch_size} is more than the {num_train} "
                "training rows",
                file=sys.stderr,
            )
            return 2
        if options.inducing > num_train:
            print(
                f"vijax run gp: error: --inducing {options.inducing} is more than the "
                f"{num_train} training rows",
                file=sys.stderr,
            )
            return 2
        # Gauss-Hermite with 2 nodes is exact for Gaussian noise (a quadratic in f), 20 otherwise
        rule = gp.gauss_hermite(2 if data.likelihood == "gaussian" else 20)
        expectation = rule if options.expectation == "quadrature" else gp.local_reparameterized()
        model = gp.svgp(
            kernels[options.kernel](ard=num_features > 1),
            likelihoods[data.likelihood](),
            options.inducing,
            expectation=expectation,
            batch_size=batch_size,
        )
        train = (data.x_train, data.y_train)
        params = model.init(init_key, *train)
        if options.natural_gradients > 0:
            optimizer = gp.natural_gradients(options.natural_gradients, optax.adam(options.lr))
        else:
            optimizer = optax.adam(options.lr)
        fit_start = time.perf_counter()
        try:
            result = vj.fit(
                model.elbo(),
                params,
                optimizer,
                fit_key,
                *train,
                num_steps=options.steps,
                progress=options.progress,
            )
        except vj.NonFiniteError as error:
            print(f"vijax run gp: error: {error}", file=sys.stderr)
            return 1
        fit_seconds = time.perf_counter() - fit_start
        # the ELBO on every training row, by quadrature (the history holds minibatch or Monte
        # Carlo estimates when those were chosen)
        full = dataclasses.replace(model, batch_size=None, expectation=rule)
        elbo_full = float(jax.jit(full.elbo())(result.params, fit_key, *train).value)
        test = {
            k: float(v) for k, v in model.evaluate(result.params, data.x_test, data.y_test).items()
        }
        train_metrics = {k: float(v) for k, v in model.evaluate(result.params, *train).items()}
        collapsed = None
        if data.likelihood == "gaussian":
            collapsed = float(model.collapsed_elbo(result.params, *train))
        hyper = model.hyperparameters(result.params)
        kernel_values = {
            name: np.asarray(value).tolist() for name, value in hyper["kernel"].items()
        }
        likelihood_values = {name: float(value) for name, value in hyper["likelihood"].items()}
        history = np.asarray(result.history)
        figure_path = None
        options.out.mkdir(parents=True, exist_ok=True)
        if num_features == 1:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            figure = Figure(figsize=(7, 4), layout="constrained")
            FigureCanvasAgg(figure)
            gp.plot_1d(
                figure.add_subplot(),
                model,
                result.params,
                *train,
                title=f"SVGP on {options.data} ({options.inducing} inducing points)",
            )
            figure_path = options.out / "fit.png"
            figure.savefig(figure_path, dpi=120)

    final_window, start_window = min(_FINAL_WINDOW, len(history)), min(_START_WINDOW, len(history))
    plot_path = options.out / "elbo.png"
    _plot_history(history, plot_path, f"SVGP on {options.data}")
    metrics = {
        "experiment": "gp",
        "config": {
            "data": options.data,
            "kernel": options.kernel,
            "inducing": options.inducing,
            "steps": options.steps,
            "lr": options.lr,
            "batch_size": batch_size,
            "expectation": options.expectation,
            "natural_gradients": options.natural_gradients,
            "seed": options.seed,
            "test_fraction": _TEST_FRACTION,
        },
        "likelihood": data.likelihood,
        "num_train": num_train,
        "num_test": int(data.x_test.shape[0]),
        "num_features": num_features,
        "elbo_final": float(history[-final_window:].mean()),
        "elbo_start": float(history[:start_window].mean()),
        "elbo_full_data": elbo_full,
        "collapsed_bound": collapsed,
        "test": test,
        "train": train_metrics,
        "hyperparameters": {"kernel": kernel_values, "likelihood": likelihood_values},
        "fit_seconds": fit_seconds,
        "wall_seconds": time.perf_counter() - start,
    }
    if data.likelihood == "gaussian" and data.y_scale != 1.0:
        metrics["test"]["rmse_original_units"] = test["rmse"] * data.y_scale

    print(
        f"sparse variational GP, {options.data}: {num_train} train / {metrics['num_test']} test "
        f"rows, {num_features} input dimension(s), {data.likelihood} likelihood"
    )
    optimizer_text = (
        f"natural gradients (step {options.natural_gradients:g}) for q(u) + Adam lr={options.lr:g}"
        if options.natural_gradients > 0
        else f"Adam lr={options.lr:g}"
    )
    print(
        f"{options.kernel} ARD kernel, {options.inducing} inducing points (whitened), "
        f"{options.expectation} expectations, {optimizer_text}, "
        f"{'full batch' if batch_size is None else f'minibatches of {batch_size}'}, "
        f"{options.steps} steps, seed {options.seed}"
    )
    print(
        f"final ELBO (mean of the last {final_window} steps): {metrics['elbo_final']:.2f}"
        f"   (first {start_window} steps: {metrics['elbo_start']:.2f})"
    )
    print(f"ELBO on all training rows (quadrature):   {elbo_full:.3f}")
    if collapsed is not None:
        print(
            f"collapsed bound (Titsias) at these hyperparameters: {collapsed:.3f} "
            f"(gap {collapsed - elbo_full:.3f} nats)"
        )
    print()
    print("hyperparameters:")
    for part, values in (("kernel", kernel_values), ("likelihood", likelihood_values)):
        for name, value in values.items():
            shown = np.round(np.asarray(value), 4).tolist()
            print(f"  {part + '.' + name:<24} {shown}")
    print()
    print(f"test NLPD:                     {test['nlpd']:.4f} nats per point")
    if "rmse" in test:
        extra = (
            f" (standardized; {test['rmse_original_units']:.2f} in original units)"
            if "rmse_original_units" in test
            else ""
        )
        print(f"test RMSE:                     {test['rmse']:.4f}{extra}")
    else:
        print(f"test error rate:               {test['error_rate']:.4f}")
    print(
        f"wall time:                     {metrics['wall_seconds']:.1f} s "
        f"(fit {metrics['fit_seconds']:.1f} s, compilation included)"
    )
    metrics_path = options.out / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    written = f"{metrics_path}, {plot_path}" + (f" and {figure_path}" if figure_path else "")
    print(f"wrote {written}")
    return 0


# ----------------------------------------------------------------------------------------------
# vijax run diffusion
# ----------------------------------------------------------------------------------------------


def _add_diffusion(experiments: argparse._SubParsersAction) -> None:
    parser = experiments.add_parser(
        "diffusion",
        help="variational diffusion model on 2-D data, scikit-learn's digits or Fashion-MNIST",
        description=(
            "Train a variational diffusion model (Kingma et al. 2021) by maximizing the "
            "continuous-time ELBO with Adam (stratified times); print held-out bits/dim against "
            "the baselines and the diffusion loss's variance with and without stratified "
            "times; write metrics.json, elbo.png and samples.png into --out. Fashion-MNIST's "
            "bits/dim are estimated on --test-size of its test images."
        ),
    )
    parser.add_argument(
        "--data",
        choices=("gmm", "moons", "digits", "fashion-mnist"),
        default="digits",
        help="data: an 8-component 2-D Gaussian mixture, scikit-learn's two moons, "
        "scikit-learn's 8×8 digits on 17 levels, or Fashion-MNIST's 28×28 images on 256 levels "
        "(the IDX files of the Debian package dataset-fashion-mnist; default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="folder with the Fashion-MNIST IDX files (default: /usr/share/datasets/fashion-mnist)",
    )
    parser.add_argument(
        "--train-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="(fashion-mnist) train on a random subset of N of the 60,000 images (default: all)",
    )
    parser.add_argument(
        "--test-size",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="(fashion-mnist) estimate bits/dim on a random subset of N of the 10,000 test "
        "images (default: %(default)s)",
    )
    parser.add_argument(
        "--base",
        choices=("none", "independent"),
        default="none",
        help="independent: train the MLP as a correction to the exact denoiser of the "
        "independent-pixel model (digits, fashion-mnist), so training starts at its bits/dim "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=2000, help="optimizer steps (default: %(default)s)"
    )
    parser.add_argument(
        "--lr", type=_positive_float, default=2e-3, help="Adam learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--schedule",
        choices=("learned", "linear"),
        default="learned",
        help="noise schedule (default: %(default)s)",
    )
    parser.add_argument(
        "--sampling-steps",
        type=_positive_int,
        default=200,
        help="steps of ancestral sampling for samples.png (default: %(default)s)",
    )
    _add_run_options(parser, "runs/diffusion", _run_diffusion)


def _run_diffusion(options: argparse.Namespace) -> int:
    import jax

    from vijax import NonFiniteError
    from vijax.models.diffusion import ancestral_sample
    from vijax.models.diffusion.experiment import plot_samples, train

    start = time.perf_counter()
    try:
        run = train(
            options.data,
            num_steps=options.steps,
            learning_rate=options.lr,
            schedule=options.schedule,
            seed=options.seed,
            progress=options.progress,
            base=options.base,
            data_dir=options.data_dir,
            train_size=options.train_size,
            test_size=options.test_size,
        )
    except (FileNotFoundError, NonFiniteError, ValueError) as error:
        print(f"vijax run diffusion: error: {error}", file=sys.stderr)
        return 1
    metrics = run.metrics
    num_samples = 64 if options.data in ("digits", "fashion-mnist") else 2000
    samples = jax.jit(
        lambda key: ancestral_sample(
            run.denoiser,
            run.schedule,
            run.decoder,
            run.params,
            key,
            num_samples,
            metrics["dim"],
            options.sampling_steps,
        )
    )(jax.random.key(options.seed + 1))
    options.out.mkdir(parents=True, exist_ok=True)
    samples_path, history_path = options.out / "samples.png", options.out / "elbo.png"
    plot_samples(np.asarray(samples), options.data, samples_path)
    _plot_history(run.history, history_path, f"variational diffusion model ({options.data})")
    metrics = {
        "experiment": "diffusion",
        **metrics,
        "sampling_steps": options.sampling_steps,
        "seed": options.seed,
        "wall_seconds": time.perf_counter() - start,
    }
    variance = metrics["diffusion_loss_batch_mean"]
    print(
        f"variational diffusion model on {options.data}: {metrics['num_train']} train / "
        f"{metrics['num_test']} test rows of dimension {metrics['dim']}; {options.schedule} "
        f"schedule, {options.steps} Adam steps (lr {options.lr:g}), seed {options.seed}"
        + (", independent-pixel base denoiser" if options.base == "independent" else "")
    )
    if "test_subset" in metrics:
        print(metrics["test_subset"]["note"])
    print(f"γ(0) = {metrics['gamma_0']:.2f}, γ(1) = {metrics['gamma_1']:.2f}")
    print(f"test bits/dim (−ELBO):          {metrics['test_bits_per_dim']:.4f}")
    if "uniform_bits_per_dim" in metrics:
        print(f"independent-pixel baseline:      {metrics['independent_pixel_bits_per_dim']:.4f}")
        print(f"uniform baseline (log2 levels):  {metrics['uniform_bits_per_dim']:.4f}")
    print(
        "variance of the batch-mean diffusion loss: "
        f"stratified t {variance['stratified']['variance']:.3f}, "
        f"uniform t {variance['uniform']['variance']:.3f}"
    )
    print(f"wall time: {metrics['wall_seconds']:.1f} s (fit {metrics['fit_seconds']:.1f} s)")
    metrics_path = options.out / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    print(f"wrote {metrics_path}, {history_path} and {samples_path}")
    return 0


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vijax", description="Programmable variational inference in JAX."
    )
    parser.add_argument(
        "--version", action="version", version=f"vijax {importlib.metadata.version('vijax')}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a built-in experiment",
        description="Run a built-in experiment and write its results into --out.",
    )
    experiments = run.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    _add_logreg(experiments)
    _add_vae(experiments)
    _add_flow(experiments)
    _add_gp(experiments)
    _add_diffusion(experiments)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``vijax`` command with ``argv`` (default: ``sys.argv[1:]``); return its status.

    Bad arguments print a usage message naming the argument and raise ``SystemExit(2)``.
    """
    options = _parser().parse_args(None if argv is None else [str(arg) for arg in argv])
    return options.handler(options)


if __name__ == "__main__":
    sys.exit(main())
