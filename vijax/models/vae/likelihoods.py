r"""Pixel likelihoods ``p_θ(x | z)`` of a VAE's decoder, given per-pixel logits ``ℓ``.

- :func:`bernoulli`: ``log p(x | ℓ) = Σ_j x_j ℓ_j − softplus(ℓ_j)``, for binary images (or,
  as the usual cross-entropy, grey ones in ``[0, 1]``).
- :func:`continuous_bernoulli` (Loaiza-Ganem & Cunningham 2019, "The continuous Bernoulli:
  fixing a pervasive error in variational autoencoders"): the normalized density on ``[0, 1]``

      p(x | λ) = C(λ) λ^x (1 − λ)^{1−x},   C(λ) = 2 artanh(1 − 2λ) / (1 − 2λ),

  which, with ``λ = σ(ℓ)``, is ``log p(x | ℓ) = x ℓ − softplus(ℓ) + log C(ℓ)`` with
  ``C(ℓ) = ℓ / tanh(ℓ/2)`` (``C(0) = 2``); its mean is ``σ(ℓ)/tanh(ℓ/2) − 1/ℓ``.

Both need pixels in ``[0, 1]``: the data checks (:func:`vijax.data.check_images`) refuse others.

Example:
    >>> import jax.numpy as jnp
    >>> d = ContinuousBernoulli(jnp.array([0.0, 3.0]))
    >>> [round(float(v), 4) for v in d.log_prob(jnp.array([0.5, 0.9]))]
    [0.0, 0.8497]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpyro.distributions as npd
from numpyro.distributions import constraints

__all__ = [
    "LIKELIHOODS",
    "BernoulliLikelihood",
    "ContinuousBernoulli",
    "ContinuousBernoulliLikelihood",
    "bernoulli",
    "continuous_bernoulli",
]

_SMALL = 1e-2  # |ℓ| below which the series replace the closed forms (float32 cancellation)


def _log_normalizer(logits):
    """``log C(ℓ) = log(ℓ / tanh(ℓ/2))``, by its series ``log 2 + ℓ²/12 − ℓ⁴/1440`` near 0."""
    small = jnp.abs(logits) < _SMALL
    safe = jnp.where(small, 1.0, logits)
    exact = jnp.log(jnp.abs(safe)) - jnp.log(jnp.abs(jnp.tanh(0.5 * safe)))
    series = math.log(2.0) + logits**2 / 12.0 - logits**4 / 1440.0
    return jnp.where(small, series, exact)


def _continuous_bernoulli_mean(logits):
    """``σ(ℓ)/tanh(ℓ/2) − 1/ℓ``, by ``½ + ℓ/12`` near 0."""
    small = jnp.abs(logits) < _SMALL
    safe = jnp.where(small, 1.0, logits)
    exact = jax.nn.sigmoid(safe) / jnp.tanh(0.5 * safe) - 1.0 / safe
    return jnp.where(small, 0.5 + logits / 12.0, exact)


class ContinuousBernoulli(npd.Distribution):
    """The continuous Bernoulli distribution on ``[0, 1]`` with logits ``ℓ`` (module docstring)."""

    arg_constraints: ClassVar[dict] = {"logits": constraints.real}
    support = constraints.unit_interval
    reparametrized_params: ClassVar[list] = ["logits"]
    pytree_data_fields = ("logits",)

    def __init__(self, logits, *, validate_args=None):
        self.logits = jnp.asarray(logits)
        super().__init__(batch_shape=jnp.shape(self.logits), validate_args=validate_args)

    def log_prob(self, value):
        return value * self.logits - jax.nn.softplus(self.logits) + _log_normalizer(self.logits)

    @property
    def mean(self):
        return _continuous_bernoulli_mean(self.logits)

    def sample(self, key, sample_shape=()):
        """Inverse CDF: ``x = log1p(u (e^ℓ − 1)) / ℓ``, written stably for both signs of ℓ."""
        shape = sample_shape + self.batch_shape
        u = jax.random.uniform(key, shape, minval=1e-7, maxval=1.0 - 1e-7)
        logits = jnp.broadcast_to(self.logits, shape)
        small = jnp.abs(logits) < _SMALL
        safe = jnp.where(small, 1.0, logits)
        negative = jnp.log1p(u * jnp.expm1(safe)) / safe
        positive = 1.0 + jnp.log(u + (1.0 - u) * jnp.exp(-safe)) / safe
        exact = jnp.where(safe < 0, negative, positive)
        return jnp.clip(jnp.where(small, u, exact), 0.0, 1.0)


@dataclass(frozen=True)
class BernoulliLikelihood:
    """Independent Bernoulli pixels with logits ``ℓ`` (see :func:`bernoulli`)."""

    name = "bernoulli"

    def distribution(self, logits):
        return npd.Bernoulli(logits=logits)

    def mean(self, logits):
        return jax.nn.sigmoid(logits)


@dataclass(frozen=True)
class ContinuousBernoulliLikelihood:
    """Independent continuous-Bernoulli pixels (see :func:`continuous_bernoulli`)."""

    name = "continuous-bernoulli"

    def distribution(self, logits):
        return ContinuousBernoulli(logits)

    def mean(self, logits):
        return _continuous_bernoulli_mean(logits)


def bernoulli() -> BernoulliLikelihood:
    """Bernoulli pixels: ``log p(x | ℓ) = Σ_j x_j ℓ_j − softplus(ℓ_j)``."""
    return BernoulliLikelihood()


def continuous_bernoulli() -> ContinuousBernoulliLikelihood:
    """Continuous-Bernoulli pixels on ``[0, 1]`` (Loaiza-Ganem & Cunningham 2019)."""
    return ContinuousBernoulliLikelihood()


#: likelihood name → factory
LIKELIHOODS = {"bernoulli": bernoulli, "continuous-bernoulli": continuous_bernoulli}
