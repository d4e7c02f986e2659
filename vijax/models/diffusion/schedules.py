r"""Noise schedules γ(t) of a variational diffusion model (Kingma et al. 2021, sec. 3–4).

The forward process is ``q(z_t | x) = N(α_t x, σ_t² I)`` with the variance-preserving choice

    α_t² = sigmoid(−γ(t)),   σ_t² = sigmoid(γ(t)),   SNR(t) = α_t² / σ_t² = exp(−γ(t)),

and ``γ`` must increase on ``[0, 1]`` (the signal-to-noise ratio falls). A schedule is a pair of
pure functions ``init(key) -> params`` and ``gamma(params, t) -> γ(t)`` (elementwise in ``t``),
so a learned schedule trains like any other parameter pytree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Schedule",
    "alpha_sigma",
    "gamma_and_derivative",
    "learned_schedule",
    "linear_schedule",
    "validate_schedule",
]


class Schedule(NamedTuple):
    """A noise schedule: ``init(key) -> params`` and ``gamma(params, t) -> γ(t)``."""

    init: Callable[[jax.Array], Any]
    gamma: Callable[[Any, jax.Array], jax.Array]


def _check_endpoints(gamma_min: float, gamma_max: float) -> None:
    if not (np.isfinite(gamma_min) and np.isfinite(gamma_max)):
        raise ValueError(f"gamma_min and gamma_max must be finite, got {gamma_min}, {gamma_max}")
    if not gamma_max > gamma_min:
        raise ValueError(
            f"gamma_max must exceed gamma_min (γ must increase), got gamma_min={gamma_min}, "
            f"gamma_max={gamma_max}"
        )


def alpha_sigma(gamma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(α, σ)`` with ``α² = sigmoid(−γ)``, ``σ² = sigmoid(γ)``.

    Example:
        >>> a, s = alpha_sigma(jnp.asarray(0.0))
        >>> round(float(a**2 + s**2), 6)
        1.0
    """
    return jnp.sqrt(jax.nn.sigmoid(-gamma)), jnp.sqrt(jax.nn.sigmoid(gamma))


def linear_schedule(gamma_min: float = -13.3, gamma_max: float = 5.0) -> Schedule:
    """The fixed linear schedule ``γ(t) = γ_0 + (γ_1 − γ_0) t`` (VDM's fixed baseline).

    Raises:
      ValueError: ``gamma_max <= gamma_min`` (the schedule would not increase).

    Example:
        >>> s = linear_schedule(-10.0, 6.0)
        >>> float(s.gamma(s.init(jax.random.key(0)), jnp.asarray(0.5)))
        -2.0
    """
    _check_endpoints(gamma_min, gamma_max)
    gamma_min, gamma_max = float(gamma_min), float(gamma_max)

    def init(key):
        del key
        return {}

    def gamma(params, t):
        del params
        return gamma_min + (gamma_max - gamma_min) * t

    return Schedule(init, gamma)


def learned_schedule(
    gamma_min: float = -13.3, gamma_max: float = 5.0, hidden: int = 64, learn_endpoints: bool = True
) -> Schedule:
    r"""A learned monotone schedule γ_η(t) with learned endpoints (VDM, Appendix H).

    A network with positive weights (softplus of raw weights),

        f(t) = a t + Σ_j c_j sigmoid(d_j (a t + b) + e_j),   a, c_j, d_j > 0,

    is increasing in ``t``; normalized between learned endpoints,

        γ_η(t) = γ_0 + (γ_1 − γ_0) (f(t) − f(0)) / (f(1) − f(0)),   γ_1 = γ_0 + softplus(δ),

    it increases for every parameter value, and ``γ_η(0) = γ_0``, ``γ_η(1) = γ_1`` exactly.

    Args:
      gamma_min, gamma_max: initial endpoints ``γ_0 < γ_1``.
      hidden: width of the sigmoid layer.
      learn_endpoints: if False the endpoints are held at their initial values.

    Raises:
      ValueError: ``gamma_max <= gamma_min`` or ``hidden < 1``.

    Example:
        >>> s = learned_schedule(-10.0, 6.0, hidden=8)
        >>> p = s.init(jax.random.key(0))
        >>> [round(float(s.gamma(p, jnp.asarray(t))), 4) for t in (0.0, 1.0)]
        [-10.0, 6.0]
    """
    _check_endpoints(gamma_min, gamma_max)
    if int(hidden) < 1:
        raise ValueError(f"hidden must be a positive integer, got {hidden}")
    gap0 = float(gamma_max - gamma_min)
    raw_gap0 = float(np.log(np.expm1(gap0))) if gap0 < 30 else gap0

    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        params = {
            "a": jnp.asarray(0.5413),  # softplus⁻¹(1)
            "b": jnp.asarray(0.0),
            "d": jax.random.normal(k1, (hidden,)) * 0.5 + 1.0,
            "e": jax.random.normal(k2, (hidden,)) * 0.5,
            "c": jax.random.normal(k3, (hidden,)) * 0.5 - 1.0,
        }
        if learn_endpoints:
            params["gamma_min"] = jnp.asarray(float(gamma_min))
            params["raw_gap"] = jnp.asarray(raw_gap0)
        return params

    def gamma(params, t):
        t = jnp.asarray(t, jnp.result_type(float))
        if learn_endpoints:
            g0, gap = params["gamma_min"], jax.nn.softplus(params["raw_gap"])
        else:
            g0, gap = float(gamma_min), gap0
        # the positive weights once, and f at (0, 1, t) in one pass (one sigmoid layer, one
        # matrix-vector product): the endpoints cost no separate evaluations of the network
        a = jax.nn.softplus(params["a"])
        d, c = jax.nn.softplus(params["d"]), jax.nn.softplus(params["c"])
        u = jnp.concatenate([jnp.asarray([0.0, 1.0], t.dtype), t.reshape(-1)])
        f = a * u + jax.nn.sigmoid((a * d) * u[:, None] + (d * params["b"] + params["e"])) @ c
        f0, f1 = f[0], f[1]
        return g0 + (gap / (f1 - f0)) * (f[2:].reshape(t.shape) - f0)

    return Schedule(init, gamma)


def gamma_and_derivative(schedule: Schedule, params, t: jax.Array):
    """``(γ(t), γ'(t))`` by forward-mode differentiation (γ is elementwise in ``t``).

    Example:
        >>> s = linear_schedule(-10.0, 6.0)
        >>> g, dg = gamma_and_derivative(s, {}, jnp.asarray([0.0, 1.0]))
        >>> dg.tolist()
        [16.0, 16.0]
    """
    t = jnp.asarray(t, jnp.result_type(float))
    return jax.jvp(lambda u: schedule.gamma(params, u), (t,), (jnp.ones_like(t),))


def validate_schedule(schedule: Schedule, params, num_points: int = 1001) -> None:
    """Raise ``ValueError`` unless γ is finite and strictly increasing on a grid of ``[0, 1]``.

    Runs on the host (call it outside ``jit``), e.g. on parameters a user built by hand.

    Example:
        >>> bad = Schedule(lambda key: {}, lambda params, t: 5.0 - 10.0 * t)
        >>> validate_schedule(bad, {})
        Traceback (most recent call last):
        ...
        ValueError: schedule: γ(t) must be strictly increasing on [0, 1], but it decreases near t=0
    """
    grid = jnp.linspace(0.0, 1.0, num_points)
    values = np.asarray(schedule.gamma(params, grid))
    if not np.all(np.isfinite(values)):
        raise ValueError("schedule: γ(t) must be finite on [0, 1]")
    steps = np.diff(values)
    if np.any(steps <= 0):
        where = float(grid[int(np.argmax(steps <= 0))])
        raise ValueError(
            f"schedule: γ(t) must be strictly increasing on [0, 1], but it decreases near "
            f"t={where:g}"
        )
