r"""Two-dimensional targets for flows, as vijax models, with grid quadrature and plots.

The four energy densities of Rezende & Mohamed (2015, Table 1), ``p(z) ∝ exp(−U(z))`` with
``w₁(z) = sin(2π z₁/4)``, ``w₂(z) = 3 exp(−½((z₁ − 1)/0.6)²)``, ``w₃(z) = 3 σ((z₁ − 1)/0.3)``:

    U1(z) = ½((‖z‖ − 2)/0.4)² − log(e^{−½((z₁−2)/0.6)²} + e^{−½((z₁+2)/0.6)²})
    U2(z) = ½((z₂ − w₁)/0.4)²
    U3(z) = −log(e^{−½((z₂−w₁)/0.35)²} + e^{−½((z₂−w₁+w₂)/0.35)²})
    U4(z) = −log(e^{−½((z₂−w₁)/0.4)²} + e^{−½((z₂−w₁+w₃)/0.35)²})

U2–U4 do not decay along ``z₁`` (their mass is infinite); as in the paper's figures, drawn on
``[−4, 4]²``, they are confined to ``|z₁| ≤ 4`` here by a wall ``½((|z₁| − 4)₊ / 0.1)²``.

Two normalized targets (``log Z = 0``) for Gaussian-versus-flow comparisons:

    banana: z₁ ~ N(0, 1.5²),  z₂ | z₁ ~ N(z₁²/2 − 1, 0.5²)
    funnel (Neal 2003): z₂ ~ N(0, 3²),  z₁ | z₂ ~ N(0, e^{z₂})

Each is a model with one latent site ``"z"`` (an improper flat "prior" plus
``vj.factor("log_density", −U(z))``), so ``vj.elbo(target_model("U1"), family)`` is the paper's
objective and its optimum is ``log Z = log ∫ e^{−U}``, which :func:`log_normalizer` computes by
quadrature on a grid.

Example:
    >>> round(float(log_normalizer("U1")), 3)
    1.878
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as npd
from numpyro.distributions import constraints

from vijax.core import factor, sample

__all__ = ["TARGETS", "Target", "log_normalizer", "plot_densities", "target", "target_model"]


def _w1(z):
    return jnp.sin(2 * jnp.pi * z[..., 0] / 4)


def _w2(z):
    return 3 * jnp.exp(-0.5 * ((z[..., 0] - 1) / 0.6) ** 2)


def _w3(z):
    return 3 * jax.nn.sigmoid((z[..., 0] - 1) / 0.3)


def _wall(z):
    return 0.5 * (jax.nn.relu(jnp.abs(z[..., 0]) - 4.0) / 0.1) ** 2


def _log_sum_of_gaussian_kernels(a, b):
    return jnp.logaddexp(-0.5 * a**2, -0.5 * b**2)


def _u1(z):
    radius = jnp.sqrt(jnp.sum(z * z, axis=-1))
    ring = 0.5 * ((radius - 2) / 0.4) ** 2
    return ring - _log_sum_of_gaussian_kernels((z[..., 0] - 2) / 0.6, (z[..., 0] + 2) / 0.6)


def _u2(z):
    return 0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2 + _wall(z)


def _u3(z):
    a = (z[..., 1] - _w1(z)) / 0.35
    b = (z[..., 1] - _w1(z) + _w2(z)) / 0.35
    return -_log_sum_of_gaussian_kernels(a, b) + _wall(z)


def _u4(z):
    a = (z[..., 1] - _w1(z)) / 0.4
    b = (z[..., 1] - _w1(z) + _w3(z)) / 0.35
    return -_log_sum_of_gaussian_kernels(a, b) + _wall(z)


def _banana(z):
    z1, z2 = z[..., 0], z[..., 1]
    return -(npd.Normal(0.0, 1.5).log_prob(z1) + npd.Normal(0.5 * z1**2 - 1.0, 0.5).log_prob(z2))


def _funnel(z):
    z1, z2 = z[..., 0], z[..., 1]
    return -(npd.Normal(0.0, 3.0).log_prob(z2) + npd.Normal(0.0, jnp.exp(0.5 * z2)).log_prob(z1))


@dataclass(frozen=True)
class Target:
    """A 2-D target: its energy ``U``, a plotting box, and its exact ``log Z`` if known."""

    name: str
    energy: Callable
    box: tuple[tuple[float, float], tuple[float, float]]
    exact_log_normalizer: float | None = None

    def log_density(self, z):
        """The unnormalized ``log p(z) = −U(z)`` (any leading axes)."""
        return -self.energy(z)


TARGETS = {
    "U1": Target("U1", _u1, ((-4.0, 4.0), (-4.0, 4.0))),
    "U2": Target("U2", _u2, ((-4.5, 4.5), (-4.0, 4.0))),
    "U3": Target("U3", _u3, ((-4.5, 4.5), (-4.0, 4.0))),
    "U4": Target("U4", _u4, ((-4.5, 4.5), (-4.0, 4.0))),
    "banana": Target("banana", _banana, ((-5.0, 5.0), (-3.0, 9.0)), 0.0),
    "funnel": Target("funnel", _funnel, ((-10.0, 10.0), (-9.0, 9.0)), 0.0),
}


def target(name: str) -> Target:
    """The target called ``name`` (one of ``TARGETS``); ``ValueError`` otherwise."""
    if name not in TARGETS:
        raise ValueError(f"target: name must be one of {list(TARGETS)}, got {name!r}")
    return TARGETS[name]


@dataclass(frozen=True)
class TargetModel:
    """The model ``z ~ flat, factor(−β U(z))`` of a target (hashable: equal names, equal models).

    Call it as ``model()`` or ``model(inverse_temperature)``: ``β < 1`` flattens the target, and
    raising ``β`` from about 0.01 to 1 during a fit (annealing, as Rezende & Mohamed did) lets
    a flow spread over both modes of U1 before it sharpens. ``β`` is an argument, so passing
    a new value to ``vj.fit`` compiles nothing.
    """

    name: str

    def __call__(self, inverse_temperature=1.0):
        z = sample("z", npd.ImproperUniform(constraints.real_vector, (), (2,)))
        factor("log_density", inverse_temperature * target(self.name).log_density(z))
        return z


def target_model(name: str) -> TargetModel:
    """The target ``name`` as a model with one latent site ``"z"`` of shape ``(2,)``."""
    target(name)
    return TargetModel(name)


def log_normalizer(name: str, points: int = 801) -> jax.Array:
    """``log ∫ e^{−U(z)} dz`` by the midpoint rule on a ``points × points`` grid.

    The grid covers the target's box widened by 50% on each side (the mass outside is below
    1e-6 for every target here); with the default 801 points the rule is exact to about 1e-6
    on U1 (its energy is smooth on the scale of the grid step, 0.015).
    """
    spec = target(name)
    if spec.exact_log_normalizer is not None:
        return jnp.asarray(spec.exact_log_normalizer)
    (x0, x1), (y0, y1) = spec.box
    wx, wy = 0.5 * (x1 - x0), 0.5 * (y1 - y0)
    xs = np.linspace(x0 - wx, x1 + wx, points)
    ys = np.linspace(y0 - wy, y1 + wy, points)
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    log_p = spec.log_density(jnp.asarray(grid))
    return jax.nn.logsumexp(log_p) + jnp.log(cell)


def _grid(box, points: int):
    (x0, x1), (y0, y1) = box
    xs, ys = np.linspace(x0, x1, points), np.linspace(y0, y1, points)
    return xs, ys, np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1)


def plot_densities(
    name: str, log_q: Callable, path: Path | str, *, title: str = "", points: int = 200
) -> None:
    """Write a PNG with the target's density beside the fitted one, on the target's box.

    ``log_q(z)`` evaluates the fitted log-density at points of shape ``(n, 2)``. Drawn with the
    Agg backend (no pyplot, no display).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    spec = target(name)
    xs, ys, grid = _grid(spec.box, points)
    flat = jnp.asarray(grid.reshape(-1, 2))
    target_density = np.exp(np.asarray(spec.log_density(flat))).reshape(points, points)
    fitted_density = np.exp(np.asarray(log_q(flat))).reshape(points, points)
    figure = Figure(figsize=(8, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (density, label) in enumerate(
        [(target_density, f"target {name}: exp(−U)"), (fitted_density, title or "fitted q")]
    ):
        axes = figure.add_subplot(1, 2, index + 1)
        axes.pcolormesh(xs, ys, np.nan_to_num(density), shading="auto", cmap="viridis")
        axes.set(title=label, xlabel="$z_1$", ylabel="$z_2$", aspect="equal")
    figure.savefig(path, dpi=100)
