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
    parser.add_argument("--seed", type=_seed, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the progress bar"
    )
    parser.add_argument(
        "--out",
        type=_output_folder,
        default="runs/logreg",
        help="output folder, created if needed (default: %(default)s)",
    )
    parser.set_defaults(handler=_run_logreg)


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
    parser.add_argument("--seed", type=_seed, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the progress bar"
    )
    parser.add_argument(
        "--out",
        type=_output_folder,
        default="runs/flow",
        help="output folder, created if needed (default: %(default)s)",
    )
    parser.set_defaults(handler=_run_flow)


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
# vijax run diffusion
# ----------------------------------------------------------------------------------------------


def _add_diffusion(experiments: argparse._SubParsersAction) -> None:
    parser = experiments.add_parser(
        "diffusion",
        help="variational diffusion model on 2-D data or scikit-learn's digits",
        description=(
            "Train a variational diffusion model (Kingma et al. 2021) by maximizing the "
            "continuous-time ELBO with Adam (stratified times); print held-out bits/dim against "
            "the baselines and the diffusion loss's variance with and without stratified "
            "times; write metrics.json, elbo.png and samples.png into --out."
        ),
    )
    parser.add_argument(
        "--data", choices=("gmm", "digits"), default="digits", help="data (default: %(default)s)"
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
    parser.add_argument("--seed", type=_seed, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the progress bar"
    )
    parser.add_argument(
        "--out",
        type=_output_folder,
        default="runs/diffusion",
        help="output folder, created if needed (default: %(default)s)",
    )
    parser.set_defaults(handler=_run_diffusion)


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
        )
    except NonFiniteError as error:
        print(f"vijax run diffusion: error: {error}", file=sys.stderr)
        return 1
    metrics = run.metrics
    num_samples = 64 if options.data == "digits" else 2000
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
    )
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
    _add_flow(experiments)
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
