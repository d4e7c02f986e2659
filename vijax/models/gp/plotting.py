r"""One-dimensional GP plots: the predictive mean with ``±2σ`` bands for ``f`` and ``y``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from matplotlib.figure import Figure
    >>> from vijax.models import gp
    >>> X = jnp.linspace(-1.0, 1.0, 10)[:, None]
    >>> svgp = gp.svgp(gp.RBF(), gp.Gaussian(), num_inducing=4)
    >>> params = svgp.init(jax.random.key(0), X, jnp.sin(X[:, 0]))
    >>> axes = Figure().add_subplot()
    >>> gp.plot_1d(axes, svgp, params, X, jnp.sin(X[:, 0])) is axes
    True
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vijax.models.gp.likelihoods import Bernoulli, Gaussian, StudentT

__all__ = ["plot_1d"]


def plot_1d(
    axes,
    svgp,
    params,
    X_train=None,
    y_train=None,
    *,
    grid=None,
    num_grid: int = 200,
    bands: bool = True,
    title: str | None = None,
):
    r"""Draw ``E[y(x)]`` (or ``p(y=1|x)`` for a Bernoulli likelihood) on a grid, bands
    ``E[y] ± 2 sd[y]`` for observations and, where ``f`` is on the scale of ``y`` (Gaussian
    and Student-t likelihoods), ``μ_f ± 2σ_f`` for the latent function, the training points
    and the inducing inputs (ticks at the bottom).

    Args:
      axes: a matplotlib ``Axes``.
      svgp: an :class:`~vijax.models.gp.SVGP` with one input dimension; params: its parameters.
      X_train, y_train: training data to scatter (optional).
      grid: inputs ``(G, 1)`` to predict at (default: ``num_grid`` points spanning the data and
        the inducing inputs, with a 10% margin).
      bands: draw the uncertainty bands.
      title: the axes title.

    Returns:
      ``axes``.
    """
    Z = np.asarray(params["hyperparameters"]["inducing_inputs"])
    if Z.shape[1] != 1:
        raise ValueError(f"plot_1d: the GP must have one input dimension, got {Z.shape[1]}")
    if grid is None:
        points = [Z[:, 0]] + ([] if X_train is None else [np.asarray(X_train)[:, 0]])
        low, high = min(p.min() for p in points), max(p.max() for p in points)
        margin = 0.1 * (high - low + 1e-12)
        grid = jnp.linspace(low - margin, high + margin, num_grid)[:, None]
    grid = jnp.asarray(grid)
    x = np.asarray(grid[:, 0])
    f_mean, f_var = (np.asarray(a) for a in svgp.predict_f(params, grid))
    y_mean, y_var = (np.asarray(a) for a in svgp.predict_y(params, grid))
    bernoulli = isinstance(svgp.likelihood, Bernoulli)
    if bands and not bernoulli:
        y_sd = np.sqrt(y_var)
        axes.fill_between(
            x,
            y_mean - 2 * y_sd,
            y_mean + 2 * y_sd,
            color="tab:blue",
            alpha=0.12,
            label="y: mean ± 2 sd",
        )
    if bands and isinstance(svgp.likelihood, Gaussian | StudentT):  # f on the scale of y
        f_sd = np.sqrt(f_var)
        axes.fill_between(
            x,
            f_mean - 2 * f_sd,
            f_mean + 2 * f_sd,
            color="tab:blue",
            alpha=0.3,
            label="f: mean ± 2 sd",
        )
    if bernoulli and bands:
        axes.fill_between(
            x, 0.0, 1.0, where=y_mean > 0.5, color="tab:orange", alpha=0.08, label="p(y=1) > ½"
        )
    label = "p(y = 1 | x)" if bernoulli else "E[y | x]"
    axes.plot(x, y_mean, color="tab:blue", label=label)
    if X_train is not None and y_train is not None:
        axes.scatter(
            np.asarray(X_train)[:, 0],
            np.asarray(y_train),
            s=8,
            color="k",
            alpha=0.5,
            label="training data",
        )
    low = axes.get_ylim()[0]
    axes.plot(
        Z[:, 0],
        np.full(Z.shape[0], low),
        "|",
        color="tab:red",
        markersize=12,
        label="inducing inputs",
    )
    axes.set_xlabel("x")
    axes.set_ylabel("y")
    if title:
        axes.set_title(title)
    axes.legend(loc="best", fontsize="small")
    return axes
