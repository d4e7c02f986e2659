r"""Measure-valued derivatives: gradients from differences of coupled evaluations.

For a distribution ``q_θ`` and a scalar parameter ``θ_i``, the derivative of the density splits
into a positive and a negative part, each a probability measure times a constant (a *weak
derivative*; Pflug 1989; Mohamed et al. 2020, "Monte Carlo Gradient Estimation in Machine
Learning", §6):

    ∂/∂θ_i q_θ(z) = c_i(θ) (q⁺_i(z) − q⁻_i(z)),
    ∂/∂θ_i E_{q_θ}[f(z)] = c_i(θ) (E_{q⁺_i}[f] − E_{q⁻_i}[f]).

The estimate needs no derivative of ``f``: ``f`` is evaluated at a draw from each part. The
draws share random numbers with the sample from ``q_θ`` (common random numbers), which keeps the
difference small. The decompositions used here:

- Bernoulli, ``probs`` p: ``c = 1``, ``z⁺ = 1``, ``z⁻ = 0``.
- Categorical, ``probs`` π_j: ``c = 1``, ``z⁺ = j``, ``z⁻ = z`` (any draw of ``q``: the
  probabilities sum to one, so ``Σ_j (∂π_j/∂φ) f(z) = 0``).
- Poisson, ``rate`` λ: ``c = 1``, ``z⁺ = z + 1``, ``z⁻ = z``.
- Geometric (failures before the first success), ``probs`` p: ``c = 1/p``, ``z⁺ = z``,
  ``z⁻ = 1 + z + z'`` with ``z' ~ Geo(p)`` (a shifted negative binomial).
- Normal, ``loc`` μ: ``c = 1/(σ√(2π))``, ``z^± = μ ± σR`` with ``R`` Rayleigh.
- Normal, ``scale`` σ: ``c = 1/σ``, ``z⁺ = μ + σM`` with ``M`` double-sided Maxwell, ``z⁻ = z``.

with ``z`` the site's own draw; for the Normal, ``ε = (z − μ)/σ``, ``R = √(ε² + e₂²)`` and
``M = sign(ε)√(ε² + e₂² + e₃²)`` with fresh ``e₂, e₃ ~ N(0, 1)``: marginally Rayleigh and
double-sided Maxwell, and coupled to ``z``. The chain rule from ``θ`` to the family's
parameters ``φ`` is left to autodiff: the estimator adds ``Σ_i ⊥[c_i (f⁺_i − f⁻_i)] · θ_i(φ)``
to the surrogate (:mod:`vijax.objectives.expectation` does the evaluations).

The two-sided difference is its own control variate: a constant baseline cancels exactly, so
:func:`mvd` takes none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

__all__ = ["MVD_FAMILIES", "MeasureValued", "couplings", "mvd"]

#: distributions with a measure-valued decomposition here (NumPyro class names)
MVD_FAMILIES = (
    "BernoulliProbs",
    "BernoulliLogits",
    "CategoricalProbs",
    "CategoricalLogits",
    "Poisson",
    "GeometricProbs",
    "GeometricLogits",
    "Normal",
)


@dataclass(frozen=True)
class MeasureValued:
    """Measure-valued derivative of a site: coupled re-evaluations of the objective."""

    uses_score = False
    name = "mvd"


def mvd() -> MeasureValued:
    """The measure-valued derivative strategy (Mohamed et al. 2020, §6).

    Supported for Bernoulli, Categorical, Poisson, Geometric and Normal (location and scale)
    sites, alone or inside ``Independent`` / ``expand`` wrappers and plates. Cost: the
    objective is re-evaluated (vectorized) at each coupled value, once per element that is not
    on a plate axis (a site's elements along a plate axis are perturbed together, as they are
    conditionally independent), so it suits low-dimensional or plated sites.

    Example:
        >>> import numpyro.distributions as dist, vijax as vj
        >>> def family(params):
        ...     return vj.sample("z", dist.Bernoulli(logits=params), estimator=vj.mvd())
    """
    return MeasureValued()


@jax.tree_util.register_dataclass
@dataclass
class Coupling:
    """One parameter's weak derivative at a draw: ``∂E/∂θ ≈ coef · (f(plus) − f(minus))``.

    ``plus`` / ``minus`` are values of the site (its shape), ``None`` meaning the draw itself.
    ``theta`` carries the gradient path to the family's parameters; ``coef`` is constant.
    """

    theta: jax.Array
    coef: jax.Array
    plus: jax.Array | None
    minus: jax.Array | None


def base_distribution(fn):
    """The distribution under ``Independent`` / ``expand`` / ``mask`` wrappers."""
    while hasattr(fn, "base_dist") and type(fn).__name__ in (
        "ExpandedDistribution",
        "Independent",
        "MaskedDistribution",
    ):
        fn = fn.base_dist
    return fn


def couplings(fn, value, key, site: str) -> list[Coupling]:
    """The couplings of ``fn`` at its draw ``value`` (parameters broadcast to ``value``'s shape).

    Raises ``ValueError`` naming ``site`` for a distribution without a decomposition here.
    """
    base = base_distribution(fn)
    kind = type(base).__name__
    shape = jnp.shape(value)
    stop = jax.lax.stop_gradient
    if kind not in MVD_FAMILIES:
        raise ValueError(
            f"site {site!r}: measure-valued derivatives are implemented for "
            f"{list(MVD_FAMILIES)}, not {kind}"
        )
    if kind.startswith("Bernoulli"):
        probs = jnp.broadcast_to(base.probs, shape)
        one = jnp.ones(shape, value.dtype)
        return [Coupling(probs, jnp.ones(shape), one, jnp.zeros(shape, value.dtype))]
    if kind.startswith("Categorical"):
        probs = jnp.broadcast_to(base.probs, (*shape, base.probs.shape[-1]))
        return [
            Coupling(probs[..., j], jnp.ones(shape), jnp.full(shape, j, value.dtype), None)
            for j in range(probs.shape[-1])
        ]
    if kind == "Poisson":
        rate = jnp.broadcast_to(base.rate, shape)
        return [Coupling(rate, jnp.ones(shape), value + 1, None)]
    if kind.startswith("Geometric"):
        probs = jnp.broadcast_to(base.probs, shape)
        extra = type(base)(probs=stop(probs)) if kind == "GeometricProbs" else None
        if extra is None:
            extra = type(base)(logits=stop(jnp.broadcast_to(base.logits, shape)))
        other = extra.sample(key).astype(value.dtype)
        return [Coupling(probs, 1.0 / stop(probs), None, 1 + value + other)]
    # Normal: location (Rayleigh pair) and scale (double-sided Maxwell against the draw)
    loc = jnp.broadcast_to(base.loc, shape)
    scale = jnp.broadcast_to(base.scale, shape)
    mu, sigma = stop(loc), stop(scale)
    eps = (value - mu) / sigma
    e2, e3 = jax.random.normal(key, (2, *shape), dtype=jnp.result_type(value))
    rayleigh = jnp.sqrt(eps**2 + e2**2)
    maxwell = jnp.sign(eps) * jnp.sqrt(eps**2 + e2**2 + e3**2)
    return [
        Coupling(
            loc,
            1.0 / (sigma * math.sqrt(2 * math.pi)),
            mu + sigma * rayleigh,
            mu - sigma * rayleigh,
        ),
        Coupling(scale, 1.0 / sigma, mu + sigma * maxwell, None),
    ]
