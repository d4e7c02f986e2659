r"""Likelihoods ``p(y | f)`` of a latent GP value ``f``, and their predictive moments.

Each likelihood is a frozen dataclass with

- ``init()``: its parameters (unconstrained; ``{}`` when it has none);
- ``distribution(params, f)``: ``p(y | f)`` as a NumPyro distribution (the model's ``y`` site);
- ``predict(params, mean, variance)``: mean and variance of ``y`` under
  ``p(y) = ∫ p(y | f) N(f; μ, σ²) df``;
- ``log_predictive(params, y, mean, variance)``: ``log ∫ p(y | f) N(f; μ, σ²) df`` per point
  (closed form for the Gaussian, Gauss–Hermite quadrature otherwise);
- ``check_targets(y)``: refuses targets outside the support (on concrete arrays).

=====================  ==============================  =====================================
likelihood             ``p(y | f)``                     parameters
=====================  ==============================  =====================================
:class:`Gaussian`      ``N(y; f, σ²)``                  ``variance`` (positive)
:class:`Bernoulli`     ``Bern(y; g(f))``,               none
                       ``g = σ`` (logit) or ``Φ`` (probit)
:class:`Poisson`       ``Poisson(y; exp f)``            none
:class:`StudentT`      ``t_ν(y; f, s)``                 ``scale`` (positive); ``ν`` fixed
=====================  ==============================  =====================================

Example:
    >>> import jax.numpy as jnp
    >>> from vijax.models import gp
    >>> likelihood = gp.Bernoulli(link="probit")
    >>> mean, var = likelihood.predict({}, jnp.array([0.0, 1.0]), jnp.array([1.0, 0.0]))
    >>> [round(float(m), 4) for m in mean]  # Φ(μ / √(1 + σ²))
    [0.5, 0.8413]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr, ndtr

from vijax.models.gp.kernels import positive_transform
from vijax.models.gp.linalg import is_concrete

__all__ = [
    "Bernoulli",
    "Gaussian",
    "Poisson",
    "ProbitBernoulli",
    "StudentT",
    "gauss_hermite_log_predictive",
    "gauss_hermite_rule",
]


def gauss_hermite_rule(num_points: int, dtype=None) -> tuple[jax.Array, jax.Array]:
    r"""Nodes ``x_k``, weights ``w_k`` (``Σ w_k = 1``): ``E_{ξ~N(0,1)}[g(ξ)] ≈ Σ_k w_k g(x_k)``.

    The probabilists' Gauss–Hermite rule (exact for polynomials of degree ``< 2K``).

    Example:
        >>> nodes, weights = gauss_hermite_rule(3)
        >>> round(float((weights * nodes**2).sum()), 6)  # E[ξ²] = 1
        1.0
    """
    if not isinstance(num_points, int) or isinstance(num_points, bool) or num_points < 1:
        raise ValueError(f"num_points must be a positive int, got {num_points!r}")
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_points)
    dtype = dtype or jnp.result_type(float)
    return jnp.asarray(nodes, dtype), jnp.asarray(weights / math.sqrt(2 * math.pi), dtype)


def gauss_hermite_log_predictive(log_prob, mean, variance, num_points: int = 40) -> jax.Array:
    r"""``log ∫ exp(log_prob(f)) N(f; μ, σ²) df ≈ log Σ_k w_k exp(log_prob(μ + σ x_k))``.

    ``log_prob(f)`` maps an array shaped like ``mean`` (with a leading node axis) to the
    elementwise log-likelihood; the sum is a ``logsumexp``, so tiny likelihoods do not underflow.
    """
    nodes, weights = gauss_hermite_rule(num_points, jnp.result_type(mean))
    shape = (num_points,) + (1,) * jnp.ndim(mean)
    f = mean + jnp.sqrt(variance) * nodes.reshape(shape)
    return jax.nn.logsumexp(log_prob(f) + jnp.log(weights).reshape(shape), axis=0)


class ProbitBernoulli(dist.Distribution):
    """``Bernoulli(Φ(f))`` with ``log p(y | f) = log Φ((2y − 1) f)``: one ``log Φ`` per value
    (``Bernoulli(logits=log Φ(f) − log Φ(−f))`` would need two, the larger part of a step)."""

    arg_constraints: ClassVar[dict] = {"f": dist.constraints.real}
    support = dist.constraints.boolean
    has_enumerate_support = True
    pytree_data_fields = ("f",)

    def __init__(self, f, *, validate_args=None):
        self.f = jnp.asarray(f)
        super().__init__(batch_shape=jnp.shape(self.f), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        """``y = 1[U < Φ(f)]``, ``U ~ Uniform(0, 1)``."""
        shape = tuple(sample_shape) + self.batch_shape
        uniform = jax.random.uniform(key, shape, dtype=jnp.result_type(self.f))
        return (uniform < ndtr(self.f)).astype(jnp.result_type(self.f))

    def log_prob(self, value):
        """``log Φ((2y − 1) f)``."""
        return log_ndtr((2.0 * value - 1.0) * self.f)

    @property
    def mean(self):
        """``Φ(f)``."""
        return ndtr(self.f)

    @property
    def variance(self):
        """``Φ(f) (1 − Φ(f))``."""
        probability = ndtr(self.f)
        return probability * (1.0 - probability)

    def enumerate_support(self, expand=True):
        """``{0, 1}``, broadcast to the batch shape when ``expand``."""
        values = jnp.array([0.0, 1.0], dtype=jnp.result_type(self.f))
        values = values.reshape((2,) + (1,) * len(self.batch_shape))
        return jnp.broadcast_to(values, (2, *self.batch_shape)) if expand else values


def _values(y, name: str):
    if not is_concrete(y):
        return None
    return np.asarray(y)


@dataclass(frozen=True)
class Gaussian:
    """``p(y | f) = N(y; f, σ²)``; params ``{"variance": raw}``."""

    positive: str = "softplus"

    def init(self, *, variance=1.0) -> dict:
        """Unconstrained parameters at noise variance ``variance``."""
        if not (np.isfinite(variance) and variance > 0):
            raise ValueError(f"Gaussian.init: variance must be finite and > 0, got {variance!r}")
        dtype = jnp.result_type(float)
        return {"variance": positive_transform(self.positive).inv(jnp.asarray(variance, dtype))}

    def variance(self, params) -> jax.Array:
        """The noise variance ``σ²``."""
        return positive_transform(self.positive)(params["variance"])

    def distribution(self, params, f) -> dist.Distribution:
        """``N(f, σ²)``."""
        return dist.Normal(f, jnp.sqrt(self.variance(params)))

    def predict(self, params, mean, variance) -> tuple[jax.Array, jax.Array]:
        """``E[y] = μ``, ``Var[y] = σ_f² + σ²``."""
        return mean, variance + self.variance(params)

    def log_predictive(self, params, y, mean, variance) -> jax.Array:
        """``log N(y; μ, σ_f² + σ²)`` (exact)."""
        return dist.Normal(mean, jnp.sqrt(variance + self.variance(params))).log_prob(y)

    def check_targets(self, y) -> None:
        """Any finite real target is allowed (finiteness is checked elsewhere)."""

    def constrained(self, params) -> dict:
        """``{"variance": σ²}``."""
        return {"variance": self.variance(params)}


@dataclass(frozen=True)
class Bernoulli:
    """``p(y = 1 | f) = σ(f)`` (``link="logit"``) or ``Φ(f)`` (``link="probit"``); no params."""

    link: str = "logit"

    def __post_init__(self):
        if self.link not in ("logit", "probit"):
            raise ValueError(f"Bernoulli: link must be 'logit' or 'probit', got {self.link!r}")

    def init(self) -> dict:
        """No parameters."""
        return {}

    def logits(self, f) -> jax.Array:
        """``log p(y=1|f) − log p(y=0|f)``: ``f`` (logit) or ``log Φ(f) − log Φ(−f)`` (probit)."""
        return f if self.link == "logit" else log_ndtr(f) - log_ndtr(-f)

    def distribution(self, params, f) -> dist.Distribution:
        """``Bernoulli(logits=f)``, or :class:`ProbitBernoulli` (``log Φ`` is accurate in the
        tails, where ``log Φ(f)`` itself would underflow)."""
        if self.link == "probit":
            return ProbitBernoulli(f)
        return dist.Bernoulli(logits=f)

    def predict(self, params, mean, variance) -> tuple[jax.Array, jax.Array]:
        """``p = E[g(f)]`` (``Φ(μ/√(1+σ²))`` for the probit, quadrature for the logit);
        ``Var[y] = p(1 − p)``."""
        if self.link == "probit":
            probability = ndtr(mean / jnp.sqrt(1.0 + variance))
        else:
            log_p = gauss_hermite_log_predictive(jax.nn.log_sigmoid, mean, variance)
            probability = jnp.exp(log_p)
        return probability, probability * (1.0 - probability)

    def log_predictive(self, params, y, mean, variance) -> jax.Array:
        """``log p(y)`` with ``p(y=1) = E[g(f)]``."""
        if self.link == "probit":
            scaled = mean / jnp.sqrt(1.0 + variance)
            return jnp.where(y > 0.5, log_ndtr(scaled), log_ndtr(-scaled))
        return gauss_hermite_log_predictive(
            lambda f: self.distribution(params, f).log_prob(y), mean, variance
        )

    def check_targets(self, y) -> None:
        """Targets must be 0 or 1."""
        values = _values(y, "y")
        if values is not None and not np.all((values == 0) | (values == 1)):
            raise ValueError("Bernoulli likelihood: y must contain only 0 and 1")

    def constrained(self, params) -> dict:
        """No parameters."""
        return {}


@dataclass(frozen=True)
class Poisson:
    """``p(y | f) = Poisson(y; exp f)``; no params."""

    def init(self) -> dict:
        """No parameters."""
        return {}

    def distribution(self, params, f) -> dist.Distribution:
        """``Poisson(rate = exp f)``."""
        return dist.Poisson(jnp.exp(f))

    def predict(self, params, mean, variance) -> tuple[jax.Array, jax.Array]:
        """``E[y] = e^{μ+σ²/2}``, ``Var[y] = E[y] + (e^{σ²} − 1) e^{2μ+σ²}`` (log-normal rate)."""
        rate = jnp.exp(mean + 0.5 * variance)
        return rate, rate + jnp.expm1(variance) * rate**2

    def log_predictive(self, params, y, mean, variance) -> jax.Array:
        """``log ∫ Poisson(y; e^f) N(f; μ, σ²) df`` by quadrature."""
        return gauss_hermite_log_predictive(
            lambda f: self.distribution(params, f).log_prob(y), mean, variance
        )

    def check_targets(self, y) -> None:
        """Targets must be non-negative integers."""
        values = _values(y, "y")
        if values is not None and not np.all((values >= 0) & (values == np.round(values))):
            raise ValueError("Poisson likelihood: y must contain non-negative integers")

    def constrained(self, params) -> dict:
        """No parameters."""
        return {}


@dataclass(frozen=True)
class StudentT:
    """``p(y | f) = t_ν(y; f, s)``, heavy-tailed regression; ``ν = df`` fixed, params
    ``{"scale": raw}``."""

    df: float = 4.0
    positive: str = "softplus"

    def __post_init__(self):
        if not (isinstance(self.df, int | float) and self.df > 0):
            raise ValueError(f"StudentT: df must be a positive number, got {self.df!r}")

    def init(self, *, scale=1.0) -> dict:
        """Unconstrained parameters at scale ``scale``."""
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"StudentT.init: scale must be finite and > 0, got {scale!r}")
        dtype = jnp.result_type(float)
        return {"scale": positive_transform(self.positive).inv(jnp.asarray(scale, dtype))}

    def scale(self, params) -> jax.Array:
        """The scale ``s``."""
        return positive_transform(self.positive)(params["scale"])

    def distribution(self, params, f) -> dist.Distribution:
        """``StudentT(ν, f, s)``."""
        return dist.StudentT(self.df, f, self.scale(params))

    def predict(self, params, mean, variance) -> tuple[jax.Array, jax.Array]:
        """``E[y] = μ``; ``Var[y] = σ² + s² ν/(ν − 2)`` (infinite for ``ν ≤ 2``)."""
        noise = self.scale(params) ** 2 * (self.df / (self.df - 2.0) if self.df > 2 else jnp.inf)
        return mean, variance + noise

    def log_predictive(self, params, y, mean, variance) -> jax.Array:
        """``log ∫ t_ν(y; f, s) N(f; μ, σ²) df`` by quadrature."""
        return gauss_hermite_log_predictive(
            lambda f: self.distribution(params, f).log_prob(y), mean, variance
        )

    def check_targets(self, y) -> None:
        """Any finite real target is allowed."""

    def constrained(self, params) -> dict:
        """``{"scale": s}``."""
        return {"scale": self.scale(params)}
