"""Train and evaluate a VDM end to end (for ``vijax run diffusion``, the tests, notebooks).

Data: ``gmm`` and ``moons`` (2-D, real-valued), ``digits`` (8 × 8 on 17 levels) and
``fashion-mnist`` (28 × 28 on 256 levels, flattened to 784; the longer option: its held-out
bits/dim are estimated on a subset of the 10,000 test images, ``test_size``).
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vijax.infer import fit
from vijax.models.diffusion.data import (
    digit_levels,
    fashion_mnist_levels,
    gaussian_mixture_2d,
    independent_pixel_bits_per_dim,
    level_frequencies,
    two_moons,
)
from vijax.models.diffusion.networks import (
    categorical_denoiser,
    mlp_denoiser,
    residual_denoiser,
)
from vijax.models.diffusion.schedules import learned_schedule, linear_schedule, validate_schedule
from vijax.models.diffusion.vdm import (
    bits_per_dim,
    check_data,
    continuous_time_elbo,
    diffusion_loss_variance,
    discretized_decoder,
    gaussian_decoder,
    losses,
    stratified_times,
    uniform_times,
)

__all__ = ["DATASETS", "Run", "evaluate_bits_per_dim", "load_data", "plot_samples", "train"]

#: The data sets :func:`load_data` knows.
DATASETS = ("gmm", "moons", "digits", "fashion-mnist")
#: Fashion-MNIST test images evaluated by default (of 10,000; ``test_size=None``: all of them).
FASHION_MNIST_TEST_SIZE = 1000


class Run(NamedTuple):
    """A trained VDM: its pieces, parameters, loss history and numbers."""

    denoiser: Any
    schedule: Any
    decoder: Any
    params: Any
    history: np.ndarray
    metrics: dict


def load_data(
    name: str,
    key: jax.Array,
    *,
    data_dir: str | os.PathLike | None = None,
    train_size: int | None = None,
    test_size: int | None = FASHION_MNIST_TEST_SIZE,
):
    """``(x_train, x_test, decoder)`` for ``name`` in :data:`DATASETS`.

    ``gmm``: 8-component 2-D mixture, 4000 / 1000 points, real-valued (Gaussian decoder).
    ``moons``: scikit-learn's two moons (:func:`two_moons`), 4000 / 1000 points drawn with two
    scikit-learn seeds taken from ``key``, real-valued (Gaussian decoder).
    ``digits``: scikit-learn digits on 17 levels of ``[−1, 1]``, 1497 / 300 images.
    ``fashion-mnist``: Fashion-MNIST's own train / test split on 256 levels of ``[−1, 1]``
    (:func:`fashion_mnist_levels`, read from ``data_dir``), 784-vectors; ``train_size`` and
    ``test_size`` (``None``: all 60,000 / 10,000) take random subsets drawn from ``key``.
    ``train_size`` and ``test_size`` apply to Fashion-MNIST only.

    Raises:
      FileNotFoundError: Fashion-MNIST's files are not in ``data_dir``.
    """
    if name == "gmm":
        train_key, test_key = jax.random.split(key)
        return (
            gaussian_mixture_2d(train_key, 4000),
            gaussian_mixture_2d(test_key, 1000),
            gaussian_decoder(),
        )
    if name == "moons":
        train_seed, test_seed = np.asarray(jax.random.randint(key, (2,), 0, 2**31 - 1)).tolist()
        return (
            two_moons(4000, seed=train_seed),
            two_moons(1000, seed=test_seed),
            gaussian_decoder(),
        )
    if name == "digits":
        x, _ = digit_levels()
        order = np.asarray(jax.random.permutation(key, x.shape[0]))
        x = x[order]
        return x[:-300], x[-300:], discretized_decoder(17)
    if name == "fashion-mnist":
        for label, size in (("train_size", train_size), ("test_size", test_size)):
            if size is not None and int(size) < 1:
                raise ValueError(f"{label} must be a positive integer or None, got {size}")
        # the subsets' rows come from a NumPy generator seeded from key: a host-side
        # permutation is much quicker than jax.random.choice(replace=False) on 60,000 rows
        seeds = np.asarray(jax.random.randint(key, (2,), 0, 2**31 - 1)).tolist()
        parts = []
        for split, size, seed in zip(("train", "test"), (train_size, test_size), seeds):
            x, _ = fashion_mnist_levels(split, data_dir)
            if size is not None and int(size) < x.shape[0]:
                rows = np.random.default_rng(seed).permutation(x.shape[0])[: int(size)]
                x = x[np.sort(rows)]
            parts.append(x)
        return parts[0], parts[1], discretized_decoder(256)
    raise ValueError(f"data must be one of {', '.join(map(repr, DATASETS))}, got {name!r}")


def evaluate_bits_per_dim(
    denoiser,
    schedule,
    decoder,
    params,
    key,
    x,
    num_samples: int = 8,
    batch_size: int | None = None,
):
    """``−ELBO`` in bits/dim on ``x``, averaged over ``num_samples`` draws of ``(t, ε)``.

    ``batch_size``: evaluate ``x`` in chunks of that many rows (the chunk ``i`` with the key
    ``fold_in(key, i)``; the last chunk may be smaller), which bounds the memory of a decoder on
    many levels; ``None``: all rows at once.
    """

    @jax.jit
    def negative_elbo(params, key, x):
        keys = jax.random.split(key, num_samples)
        totals = jax.lax.map(
            lambda k: losses(denoiser, schedule, decoder, params, k, x).total.mean(), keys
        )
        return totals.mean()

    if batch_size is None or int(batch_size) >= x.shape[0]:
        return float(bits_per_dim(negative_elbo(params, key, x), x.shape[-1]))
    size = int(batch_size)
    total = 0.0
    for index, start in enumerate(range(0, x.shape[0], size)):
        chunk = x[start : start + size]
        total += float(negative_elbo(params, jax.random.fold_in(key, index), chunk)) * len(chunk)
    return float(bits_per_dim(total / x.shape[0], x.shape[-1]))


def train(
    data: str = "digits",
    *,
    num_steps: int = 2000,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    schedule: str = "learned",
    hidden: int = 256,
    depth: int = 2,
    seed: int = 0,
    progress: bool = False,
    variance_repeats: int = 128,
    gamma_range: tuple[float, float] | None = None,
    base: str = "none",
    data_dir: str | os.PathLike | None = None,
    train_size: int | None = None,
    test_size: int | None = FASHION_MNIST_TEST_SIZE,
) -> Run:
    """Fit a VDM by maximizing the continuous-time ELBO with Adam; bits/dim on held-out data.

    ``data``: ``"gmm"``, ``"moons"``, ``"digits"`` or ``"fashion-mnist"`` (read from
    ``data_dir``; ``train_size`` / ``test_size`` images, see :func:`load_data`; its bits/dim
    are evaluated in chunks of 250 images); ``schedule``: ``"learned"`` or ``"linear"``;
    ``gamma_range``: the schedule's ``(γ(0), γ(1))`` at the start (default ``(−6, 6)`` for
    digits, ``(−13.3, 5)`` for Fashion-MNIST (VDM's CIFAR-10 endpoints: ``σ_0 ≈ 0.0013``, a
    sixth of the gap between its 256 levels), ``(−10, 6)`` for 2-D data).
    ``base="independent"`` (data on levels: digits, Fashion-MNIST) trains the MLP as a
    correction on top of the exact denoiser of the independent-pixel model fit to the training
    images (:func:`categorical_denoiser`, :func:`residual_denoiser`), so training starts at that
    model's log-likelihood. The run's numbers are in ``Run.metrics``
    (held-out bits/dim, baselines, the diffusion loss's variance with stratified and uniform
    times over ``variance_repeats`` keys, skipped when it is below 2, the learned endpoints).
    """
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
    if schedule not in ("linear", "learned"):
        raise ValueError(f"schedule must be 'linear' or 'learned', got {schedule!r}")
    if base not in ("none", "independent"):
        raise ValueError(f"base must be 'none' or 'independent', got {base!r}")
    if base == "independent" and data not in ("digits", "fashion-mnist"):
        raise ValueError(
            f"base='independent' needs data on levels ('digits' or 'fashion-mnist'), got {data!r}"
        )
    data_key, init_key, sched_key, fit_key, eval_key, var_key = jax.random.split(
        jax.random.key(seed), 6
    )
    x_train, x_test, decoder = load_data(
        data, data_key, data_dir=data_dir, train_size=train_size, test_size=test_size
    )
    check_data(decoder, x_train)
    check_data(decoder, x_test)
    dim = x_train.shape[-1]
    if gamma_range is None:
        gamma_range = {"digits": (-6.0, 6.0), "fashion-mnist": (-13.3, 5.0)}.get(data, (-10.0, 6.0))
    gamma_min, gamma_max = (float(g) for g in gamma_range)
    noise = (
        linear_schedule(gamma_min, gamma_max)
        if schedule == "linear"
        else learned_schedule(gamma_min, gamma_max)
    )
    denoiser = mlp_denoiser(dim, hidden=hidden, depth=depth)
    if base == "independent":
        grid = jnp.linspace(-1.0, 1.0, decoder.levels)
        log_probs = jnp.log(level_frequencies(x_train, decoder.levels))
        denoiser = residual_denoiser(categorical_denoiser(grid, log_probs), denoiser)
    params = {"denoiser": denoiser.init(init_key), "schedule": noise.init(sched_key)}
    validate_schedule(noise, params["schedule"])
    objective = continuous_time_elbo(denoiser, noise, decoder, time_sampler=stratified_times)
    optimizer = optax.chain(
        optax.clip_by_global_norm(100.0),
        optax.adamw(optax.cosine_decay_schedule(learning_rate, num_steps, 0.05), 1e-4),
    )
    start = time.perf_counter()
    result = fit(
        objective,
        params,
        optimizer,
        fit_key,
        data=(x_train,),
        batch_size=min(batch_size, x_train.shape[0]),
        num_steps=num_steps,
        progress=progress,
    )
    fit_seconds = time.perf_counter() - start
    validate_schedule(noise, result.params["schedule"])
    eval_batch = 250 if data == "fashion-mnist" else None
    eval_start = time.perf_counter()
    test_bpd = evaluate_bits_per_dim(
        denoiser, noise, decoder, result.params, eval_key, x_test, batch_size=eval_batch
    )
    eval_seconds = time.perf_counter() - eval_start
    batch = x_test[:128]
    variance = {}
    samplers = (("stratified", stratified_times), ("uniform", uniform_times))
    for name, sampler in samplers if variance_repeats > 1 else ():
        mean, var = jax.jit(
            lambda p, k, s=sampler: diffusion_loss_variance(
                denoiser, noise, decoder, p, k, batch, num_repeats=variance_repeats, time_sampler=s
            )
        )(result.params, var_key)
        variance[name] = {"mean": float(mean), "variance": float(var)}
    gammas = noise.gamma(result.params["schedule"], jnp.asarray([0.0, 1.0]))
    metrics = {
        "data": data,
        "dim": int(dim),
        "num_train": int(x_train.shape[0]),
        "num_test": int(x_test.shape[0]),
        "steps": int(num_steps),
        "batch_size": int(batch_size),
        "learning_rate": float(learning_rate),
        "schedule": schedule,
        "base": base,
        "gamma_0": float(gammas[0]),
        "gamma_1": float(gammas[1]),
        "test_bits_per_dim": test_bpd,
        "final_train_elbo_nats": float(np.mean(result.history[-100:])),
        "diffusion_loss_batch_mean": variance,
        "fit_seconds": fit_seconds,
        "eval_seconds": eval_seconds,
    }
    if data == "fashion-mnist":
        metrics["test_subset"] = {
            "evaluated": int(x_test.shape[0]),
            "available": 10000,
            "note": (
                f"test bits/dim on a random subset of {int(x_test.shape[0])} of the 10,000 "
                "Fashion-MNIST test images (8 draws of (t, ε) each)"
                if x_test.shape[0] < 10000
                else "test bits/dim on all 10,000 Fashion-MNIST test images"
            ),
        }
    if decoder.levels is not None:
        metrics["uniform_bits_per_dim"] = float(np.log2(decoder.levels))
        metrics["independent_pixel_bits_per_dim"] = independent_pixel_bits_per_dim(
            x_train, x_test, decoder.levels
        )
    return Run(denoiser, noise, decoder, result.params, np.asarray(result.history), metrics)


def plot_samples(samples: np.ndarray, data: str, path) -> None:
    """Save a grid of 8×8 digit or 28×28 Fashion-MNIST samples, or a 2-D scatter, as a PNG
    (Agg backend, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if data in ("digits", "fashion-mnist"):
        side = 8 if data == "digits" else 28
        count = int(np.sqrt(len(samples)))
        images = samples[: count * count].reshape(count, count, side, side)
        # a one-pixel light gray border around each image keeps neighbours apart
        images = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-0.7)
        grid = images.transpose(0, 2, 1, 3).reshape(count * (side + 2), count * (side + 2))
        axes.imshow(grid, cmap="gray_r", vmin=-1.0, vmax=1.0)
        axes.set_axis_off()
    else:
        axes.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5)
        axes.set_aspect("equal")
    axes.set_title(f"ancestral samples ({data})")
    figure.savefig(path, dpi=100)
