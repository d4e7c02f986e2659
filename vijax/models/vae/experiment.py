r"""The VAE experiment behind ``vijax run vae``: data, model, objective, training with checkpoints,
evaluation, pictures and ``metrics.json``.

Every piece is a public vijax function; this module only wires them from a configuration:

1. data: :func:`vijax.data.load_images` (digits or Fashion-MNIST; a fixed split key, so runs
   with different seeds share the test set), binarized dynamically (a fresh
   ``x̃ ~ Bernoulli(x)`` per step), statically (once) or not at all;
2. model: :func:`mlp_vae` / :func:`conv_vae` with the chosen latent, likelihood, ``β`` and
   condition;
3. objective: ``vj.elbo`` (``K`` particles), :func:`per_datum_iwae`, :func:`per_datum_iwae_dreg`
   or ``vj.vimco``, the latent site differentiated by the chosen strategy
   (``vj.with_estimators``);
4. training: :func:`vijax.infer.fit_with_checkpoints` (Adam; a checkpoint every
   ``checkpoint_every`` steps, validation bounds recorded at each; resumable bit for bit);
5. evaluation: :func:`evaluate_bounds` on the test set (``K = test_particles``, default 5000),
   KL per latent dimension, active units, reconstruction and sample grids, ELBO curves.

Example:
    >>> from vijax.models.vae.experiment import Config, check_config
    >>> check_config(Config(latent="bernoulli", estimator="enum", latent_dim=4)).estimator
    'enum'
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ESTIMATORS", "LATENTS", "OBJECTIVES", "Config", "check_config", "run"]

OBJECTIVES = ("elbo", "iwae", "dreg", "vimco")
LATENTS = ("gaussian", "bernoulli", "categorical")
ESTIMATORS = (
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
BINARIZATIONS = ("dynamic", "static", "none")
NETWORKS = ("mlp", "conv")
SPLIT_SEED = 0  # fixes the train / validation / test split across runs
TEST_BINARIZATION_SEED = 1  # fixes the binarized test and validation sets
VALIDATION_PARTICLES = 10
VALIDATION_IMAGES = 1000  # the validation curve uses at most this many images
#: decodings per compiled evaluation call (particles × images): bounds the evaluation's memory
#: (a convolutional decoder's activations are ~50× an MLP's per image)
DECODINGS = {"mlp": 50_000, "conv": 2_000}
IMAGES_SHOWN = 30  # reconstructions: 3 pairs of rows of 10
SAMPLES_SHOWN = 50


@dataclass(frozen=True)
class Config:
    """One run's configuration (the command's options; see ``vijax run vae --help``)."""

    data: str = "digits"
    data_dir: str | None = None
    binarization: str = "dynamic"
    likelihood: str = "bernoulli"
    network: str = "mlp"
    hidden: int = 200
    latent: str = "gaussian"
    latent_dim: int = 8
    classes: int = 4
    objective: str = "elbo"
    particles: int | None = None
    estimator: str = "auto"
    temperature: float = 0.5
    beta: float = 1.0
    conditional: bool = False
    steps: int = 10000
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    test_particles: int = 5000
    test_size: int | None = None
    checkpoint_every: int = 1000

    def model_config(self) -> dict:
        """The options that shape the model, objective and data (checked on resume)."""
        fields = dataclasses.asdict(self)
        for name in ("steps", "test_particles", "test_size", "checkpoint_every", "data_dir"):
            fields.pop(name)
        return fields


def _error(argument: str, message: str) -> ValueError:
    return ValueError(f"argument --{argument}: {message}")


def check_config(config: Config) -> Config:
    """Resolve ``auto`` choices and refuse combinations that cannot work (``ValueError`` naming
    the option)."""
    choices = {
        "data": ("digits", "fashion-mnist"),
        "binarization": BINARIZATIONS,
        "likelihood": ("bernoulli", "continuous-bernoulli"),
        "network": NETWORKS,
        "latent": LATENTS,
        "objective": OBJECTIVES,
        "estimator": ESTIMATORS,
    }
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise _error(name, f"must be one of {list(allowed)}, got {getattr(config, name)!r}")
    latent, estimator, objective = config.latent, config.estimator, config.objective
    particles = config.particles or (1 if objective == "elbo" else 5)
    if estimator == "auto":
        if objective == "vimco":
            estimator = "score-loo"
        elif latent == "gaussian":
            estimator = "reparam"
        elif objective == "iwae":
            estimator = "score-running-mean"
        else:
            estimator = "mvd"
    if latent == "gaussian" and estimator in ("enum", "relaxed"):
        raise _error("estimator", f"{estimator!r} needs a discrete latent (--latent bernoulli)")
    if latent != "gaussian" and estimator in ("reparam", "path"):
        raise _error(
            "estimator",
            f"{estimator!r} needs a reparameterizable latent; a {latent} latent takes enum, "
            "mvd, score, score-running-mean, score-learned, score-loo or relaxed",
        )
    if estimator == "relaxed" and latent != "bernoulli":
        raise _error("estimator", "relaxed (Gumbel-softmax) is implemented for --latent bernoulli")
    if estimator == "enum":
        values = 2 if latent == "bernoulli" else config.classes
        if values**config.latent_dim > 4096:
            raise _error(
                "estimator",
                f"enum lists all {values}^{config.latent_dim} joint latent values per datum; "
                "use at most 4096 (a smaller --latent-dim) or mvd / score",
            )
        if objective != "elbo":
            raise _error(
                "estimator", "enum sums over the latent of one particle: use --objective elbo"
            )
    if objective == "iwae" and estimator in ("mvd", "score-loo"):
        raise _error(
            "estimator",
            f"{estimator} with the per-datum IWAE needs each particle's coupling exposed to the "
            "estimator, which vijax cannot do yet: use --objective elbo or vimco for it, or "
            "score / score-running-mean / score-learned with iwae",
        )
    if objective == "iwae" and estimator == "path" and particles > 1:
        raise _error(
            "estimator",
            "path (sticking the landing) alone is biased for the IWAE bound with K > 1; "
            "use --objective dreg, which adds the weights' correction",
        )
    if objective == "dreg" and estimator not in ("reparam", "path"):
        raise _error("objective", "dreg needs a reparameterized latent (--latent gaussian)")
    if objective == "vimco" and estimator != "score-loo":
        raise _error("estimator", "vimco is the score function with leave-one-out (score-loo)")
    if estimator == "score-loo" and particles < 2:
        raise _error("particles", "score-loo needs at least 2 particles")
    if objective in ("vimco",) and particles < 2:
        raise _error("particles", "vimco needs at least 2 particles")
    if config.binarization != "none" and config.likelihood == "continuous-bernoulli":
        raise _error(
            "binarization",
            "a continuous Bernoulli models grey pixels: use --binarization none with it",
        )
    return dataclasses.replace(config, estimator=estimator, particles=particles)


def _strategy(estimator: str, params_holder: dict):
    import vijax as vj

    if estimator in ("reparam", "relaxed"):
        return vj.reparameterized()
    if estimator == "path":
        return vj.path()
    if estimator == "enum":
        return vj.enumeration()
    if estimator == "mvd":
        return vj.mvd()
    if estimator == "score":
        return vj.score_function()
    if estimator == "score-running-mean":
        return vj.score_function(vj.running_mean(0.9))
    if estimator == "score-loo":
        return vj.score_function(vj.leave_one_out())
    if estimator == "score-learned":
        return vj.score_function(vj.learned(params_holder["baseline"]))
    raise ValueError(f"unknown estimator {estimator!r}")


@dataclass(frozen=True)
class _LearnedBaseline:
    """``b(x_i) = MLP(x_i)``: the learned baseline's network (reads ``params.family``)."""

    network: object

    def __call__(self, params, x, *rest):
        return self.network(params.family["baseline"], x)[:, 0]


def build(config: Config, num_data: int, image_shape: tuple[int, ...], key):
    """``(vae, objective, initial params)`` for a checked ``config``."""
    import jax

    import vijax as vj
    from vijax.data import dynamic_binarization
    from vijax.models import vae as vae_lib

    if config.latent == "gaussian":
        latent = vae_lib.gaussian(config.latent_dim)
    elif config.latent == "categorical":
        latent = vae_lib.categorical(config.latent_dim, config.classes)
    elif config.estimator == "relaxed":
        latent = vae_lib.relaxed_bernoulli(config.latent_dim, config.temperature)
    else:
        latent = vae_lib.bernoulli(config.latent_dim)
    likelihood = vae_lib.LIKELIHOODS[config.likelihood]()
    common = dict(
        likelihood=likelihood,
        num_classes=10 if config.conditional else None,
        beta=config.beta,
        num_data=num_data,
    )
    if config.network == "mlp":
        model = vae_lib.mlp_vae(
            image_shape, latent, hidden=(config.hidden, config.hidden), **common
        )
    else:
        model = vae_lib.conv_vae(image_shape, latent, hidden=config.hidden, **common)
    init_key, baseline_key = jax.random.split(key)
    params = model.init(init_key)
    holder = {}
    if config.estimator == "score-learned":
        network = vae_lib.mlp_encoder(image_shape, 1, hidden=(64,))
        holder["baseline"] = _LearnedBaseline(network)
        params = params._replace(family={**params.family, "baseline": network.init(baseline_key)})
    if config.estimator in ("reparam", "relaxed"):
        # the default rule reparameterizes these latents; the bare family keeps the objective
        # equal (by value) across calls, so a second run in one process reuses the compilation
        family = model.family
    else:
        family = vj.with_estimators(model.family, {"z": _strategy(config.estimator, holder)})
    k = config.particles
    if config.objective == "elbo":
        objective = vj.elbo(model.model, family, k)
    elif config.objective == "iwae":
        objective = vae_lib.per_datum_iwae(model.model, family, k)
    elif config.objective == "dreg":
        objective = vae_lib.per_datum_iwae_dreg(model.model, family, k)
    else:
        objective = vj.iwae(model.model, family, k)  # the family's site is score-loo: VIMCO
    if config.binarization == "dynamic":
        objective = dynamic_binarization(objective)
    return model, objective, params


def _load(config: Config, key):
    import jax

    from vijax.data import binarize, check_images, load_images

    data = load_images(config.data, key=jax.random.key(SPLIT_SEED), data_dir=config.data_dir)
    names = (("x_train", data.x_train), ("x_valid", data.x_valid), ("x_test", data.x_test))
    for name, images in names:
        check_images(images, name=name, image_shape=data.image_shape)
    train, valid, test = data.x_train, data.x_valid, data.x_test
    if config.test_size is not None:
        test = test[: config.test_size]
    labels = (data.y_train, data.y_valid, data.y_test[: test.shape[0]])
    if config.binarization != "none":
        fixed = jax.random.key(TEST_BINARIZATION_SEED)
        valid_key, test_key, train_key = jax.random.split(fixed, 3)
        valid, test = binarize(valid, valid_key), binarize(test, test_key)
        if config.binarization == "static":
            train = binarize(train, train_key)
    return data, (train, valid, test), labels


def _mean_and_error(values: np.ndarray) -> dict:
    values = np.asarray(values, np.float64)
    error = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": float(values.mean()), "standard_error": float(error)}


def run(config: Config, out: Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Run the experiment; write ``metrics.json``, the PNGs and checkpoints into ``out``.

    Returns:
      The metrics (also in ``out/metrics.json``), with ``"files"`` naming what was written.

    Raises:
      ValueError: a bad configuration (naming the option) or a checkpoint that does not fit.
      FileNotFoundError: Fashion-MNIST is not installed (the message says how to get it).
      vijax.NonFiniteError: training diverged (the message names the step and checkpoint).
    """
    import jax
    import optax

    from vijax.infer import fit_with_checkpoints
    from vijax.models import vae as vae_lib

    start = time.perf_counter()
    config = check_config(config)
    out = Path(out)
    run_key = jax.random.key(config.seed)
    model_key, fit_key, eval_key = jax.random.split(run_key, 3)
    data, (train, valid, test), (y_train, y_valid, y_test) = _load(config, run_key)
    num_train = int(train.shape[0])
    model, objective, params = build(config, num_train, data.image_shape, model_key)
    conditional = config.conditional
    train_data = (train, y_train) if conditional else (train,)
    valid_args = (valid, y_valid) if conditional else (valid,)
    valid_args = tuple(a[:VALIDATION_IMAGES] for a in valid_args)
    test_args = (test, y_test) if conditional else (test,)

    times: list[tuple[int, float]] = []  # (step, time) after each segment, validation excluded
    validation_seconds = [0.0]

    def on_checkpoint(step, current):
        began = time.perf_counter()
        bounds = vae_lib.evaluate_bounds(
            model,
            current,
            jax.random.key(step),
            *valid_args,
            num_particles=VALIDATION_PARTICLES,
            particle_batch=VALIDATION_PARTICLES,
            batch_size=max(1, DECODINGS[config.network] // VALIDATION_PARTICLES),
            bounds=(1,),
        )
        finished = time.perf_counter()
        validation_seconds[0] += finished - began
        times.append((step, finished - validation_seconds[0]))
        return {
            "validation_elbo": float(bounds["elbo"].mean()),
            f"validation_iwae_{VALIDATION_PARTICLES}": float(bounds["log_likelihood"].mean()),
        }

    fit_start = time.perf_counter()
    result = fit_with_checkpoints(
        objective,
        params,
        optax.adam(config.lr),
        fit_key,
        num_steps=config.steps,
        directory=out / "checkpoints",
        every=config.checkpoint_every,
        data=train_data,
        batch_size=min(config.batch_size, num_train),
        metadata=config.model_config(),
        resume=resume,
        on_checkpoint=on_checkpoint,
        progress=progress,
    )
    fit_seconds = time.perf_counter() - fit_start
    steps_run = config.steps - (result.resumed_from or 0)
    # steady speed: the segments after the first (which paid for compilation)
    if len(times) >= 2:
        seconds_per_step = (times[-1][1] - times[0][1]) / (times[-1][0] - times[0][0])
    else:
        seconds_per_step = fit_seconds / max(steps_run, 1)

    eval_start = time.perf_counter()
    decodings = DECODINGS[config.network]
    particle_batch = next(
        (p for p in (500, 100, 50) if p <= decodings and config.test_particles % p == 0),
        config.test_particles,
    )
    bounds = tuple(k for k in (1, 5, 50) if particle_batch % k == 0)
    batch = max(1, min(100, decodings // particle_batch))
    test_bounds = vae_lib.evaluate_bounds(
        model,
        result.params,
        eval_key,
        *test_args,
        num_particles=config.test_particles,
        particle_batch=particle_batch,
        batch_size=batch,
        bounds=bounds,
    )
    kl = vae_lib.kl_per_dimension(model, result.params, *test_args)
    variances = vae_lib.active_units(model, result.params, *test_args)
    eval_seconds = time.perf_counter() - eval_start

    out.mkdir(parents=True, exist_ok=True)
    shown = test_args[0][:IMAGES_SHOWN]
    shown_y = None if not conditional else test_args[1][:IMAGES_SHOWN]
    recon = vae_lib.reconstruct(model, result.params, jax.random.key(7), shown, shown_y)
    samples = vae_lib.generate(model, result.params, jax.random.key(8), SAMPLES_SHOWN)
    files = {
        "reconstructions": out / "reconstructions.png",
        "samples": out / "samples.png",
        "elbo_curve": out / "elbo.png",
        "metrics": out / "metrics.json",
    }
    title = f"{config.data}: {config.latent} VAE, {config.objective}"
    vae_lib.plot_reconstructions(
        np.asarray(shown), np.asarray(recon), files["reconstructions"], title=title
    )
    vae_lib.plot_image_grid(np.asarray(samples), files["samples"], title=f"{title}: samples")
    per_image = np.asarray(result.history, np.float64) / num_train
    validation = {name: np.asarray(v) for name, v in result.records.items()}
    vae_lib.plot_curves(
        per_image, files["elbo_curve"], validation=validation, title=f"{title} (per image)"
    )

    final_window = min(100, len(per_image))
    metrics = {
        "experiment": "vae",
        "config": dataclasses.asdict(config),
        "image_shape": list(data.image_shape),
        "num_train": num_train,
        "num_valid": int(valid.shape[0]),
        "num_test": int(test.shape[0]),
        "test": {
            f"log_likelihood_{config.test_particles}": _mean_and_error(
                test_bounds["log_likelihood"]
            ),
            **{
                name: _mean_and_error(v)
                for name, v in test_bounds.items()
                if name != "log_likelihood"
            },
        },
        "train_objective_final": float(per_image[-final_window:].mean()) if final_window else None,
        "validation": {name: v.tolist() for name, v in validation.items()},
        "kl_per_dimension": kl.tolist(),
        "kl_total": float(kl.sum()),
        "active_units": int((variances > vae_lib.evaluation.ACTIVE_THRESHOLD).sum()),
        "posterior_mean_variance": variances.tolist(),
        "resumed_from": result.resumed_from,
        "steps_run": steps_run,
        "seconds_per_step": seconds_per_step,
        "fit_seconds": fit_seconds,
        "eval_seconds": eval_seconds,
        "wall_seconds": time.perf_counter() - start,
        "checkpoint": str(out / "checkpoints"),
        "files": {name: str(path) for name, path in files.items()},
    }
    files["metrics"].write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    return metrics
