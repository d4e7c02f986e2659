r"""Latent variables of a VAE: prior ``p(z)``, the encoder's ``q(z | x)``, and the decoder's input.

Each latent kind maps the encoder's raw output ``h`` (shape ``(B, num_parameters)``) to the
family's distribution of ``z_i`` and ``z_i`` to the decoder's input features:

- :func:`gaussian`: ``p(z) = N(0, I_L)``, ``q(z | x) = N(μ(x), diag σ(x)²)`` with
  ``h = (μ, log σ)`` (Kingma & Welling 2014); reparameterized, closed-form KL.
- :func:`bernoulli`: ``p(z) = Π_l Bern(z_l; ½)``, ``q(z | x) = Π_l Bern(z_l; σ(h_l))``;
  differentiated by enumeration, measure-valued derivatives or the score function.
- :func:`categorical`: ``L`` variables of ``C`` classes, uniform prior,
  ``q(z_l | x) = Cat(softmax(h_l))``; the decoder sees one-hot codes.
- :func:`relaxed_bernoulli` (Maddison et al. 2017, "The Concrete Distribution"; Jang et al.
  2017, Gumbel-softmax): the binary latent replaced by its relaxation at temperature ``λ``,
  written in logit space for stability: ``y_l ~ Logistic(h_l/λ, 1/λ)`` under ``q`` and
  ``Logistic(0, 1/λ)`` under the prior, the decoder seeing ``σ(y)``. Its ELBO is a bound for a
  *different* (relaxed) model, so its gradient is a biased contrast for the discrete one;
  :meth:`RelaxedBernoulliLatent.discrete` gives the discrete latent to evaluate with.

Discrete latents are an ``Independent`` whose support is enumerable as the product of its
elements' supports (``C^L`` joint values), which is what exact enumeration of ``z_i`` per
datum needs; :data:`MAX_ENUMERATION` caps it.

Example:
    >>> import jax.numpy as jnp
    >>> latent = bernoulli(3)
    >>> latent.posterior(jnp.zeros((2, 3))).enumerate_support(expand=False).shape
    (8, 1, 3)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as npd

__all__ = [
    "MAX_ENUMERATION",
    "BernoulliLatent",
    "CategoricalLatent",
    "GaussianLatent",
    "Independent",
    "RelaxedBernoulliLatent",
    "bernoulli",
    "categorical",
    "gaussian",
    "relaxed_bernoulli",
]

#: the most joint values an enumerable latent lists (``C^L``)
MAX_ENUMERATION = 4096


class Independent(npd.Independent):
    """NumPyro's ``Independent`` whose finite support is enumerable as a product space.

    ``enumerate_support`` lists the ``C^L`` joint values of the ``L`` reinterpreted elements
    (row-major, the last element fastest), shape ``(C^L, 1, ..., 1, L)`` unexpanded. It keeps
    NumPyro's class name, which code that looks through NumPyro's wrappers by name relies on.
    """

    def expand(self, batch_shape):
        # NumPyro's Independent.expand rebuilds a plain Independent (``to_event``): keep ours
        batch_shape = tuple(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        ndims = self.reinterpreted_batch_ndims
        base = self.base_dist.expand(batch_shape + self.event_shape[:ndims])
        return type(self)(base, ndims)

    def enumerate_support(self, expand=True):
        if not self.has_enumerate_support or self.reinterpreted_batch_ndims != 1:
            raise NotImplementedError("only one reinterpreted axis of a finite distribution")
        values = self.base_dist.enumerate_support(expand=False).reshape(-1)
        (num_elements,) = self.event_shape
        total = values.shape[0] ** num_elements
        if total > MAX_ENUMERATION:
            raise ValueError(
                f"enumerating a latent of {num_elements} elements with {values.shape[0]} values "
                f"each means {total} joint values (more than {MAX_ENUMERATION}); use "
                "vj.mvd() or vj.score_function(...) for it"
            )
        grid = np.asarray(list(itertools.product(range(values.shape[0]), repeat=num_elements)))
        support = values[grid]
        support = support.reshape((total,) + (1,) * len(self.batch_shape) + (num_elements,))
        if expand:
            support = jnp.broadcast_to(support, (total, *self.batch_shape, num_elements))
        return support


def _check_size(kind: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{kind}: {name} must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class GaussianLatent:
    """``z ∈ ℝ^L``, standard Normal prior, diagonal Gaussian ``q`` (see :func:`gaussian`)."""

    dim: int
    name = "gaussian"
    is_discrete = False

    @property
    def num_parameters(self) -> int:
        return 2 * self.dim

    @property
    def num_features(self) -> int:
        return self.dim

    def prior(self):
        return npd.Normal(0.0, 1.0).expand([self.dim]).to_event(1)

    def _split(self, raw):
        return raw[..., : self.dim], raw[..., self.dim :]

    def posterior(self, raw):
        loc, log_scale = self._split(raw)
        return npd.Normal(loc, jnp.exp(log_scale)).to_event(1)

    def features(self, z):
        return z

    def posterior_mean(self, raw):
        return self._split(raw)[0]

    def kl_per_dimension(self, raw):
        """``KL(q(z_l | x) ‖ N(0, 1)) = ½ (μ² + σ² − 1) − log σ`` per datum and dimension."""
        loc, log_scale = self._split(raw)
        return 0.5 * (loc**2 + jnp.exp(2 * log_scale) - 1.0) - log_scale

    def sample_prior(self, key, num):
        return jax.random.normal(key, (num, self.dim))


@dataclass(frozen=True)
class BernoulliLatent:
    """``z ∈ {0, 1}^L``, uniform prior, factorized Bernoulli ``q`` (see :func:`bernoulli`)."""

    dim: int
    name = "bernoulli"
    is_discrete = True

    @property
    def num_parameters(self) -> int:
        return self.dim

    @property
    def num_features(self) -> int:
        return self.dim

    def prior(self):
        return Independent(npd.Bernoulli(probs=jnp.full((self.dim,), 0.5)), 1)

    def posterior(self, raw):
        return Independent(npd.Bernoulli(logits=raw), 1)

    def features(self, z):
        return z.astype(jnp.float32)

    def posterior_mean(self, raw):
        return jax.nn.sigmoid(raw)

    def kl_per_dimension(self, raw):
        """``KL(Bern(q) ‖ Bern(½)) = log 2 + q log q + (1 − q) log(1 − q)``."""
        q = jax.nn.sigmoid(raw)
        log_q, log_not_q = jax.nn.log_sigmoid(raw), jax.nn.log_sigmoid(-raw)
        return math.log(2.0) + q * log_q + (1.0 - q) * log_not_q

    def sample_prior(self, key, num):
        return jax.random.bernoulli(key, 0.5, (num, self.dim)).astype(jnp.float32)


@dataclass(frozen=True)
class CategoricalLatent:
    """``L`` categorical variables of ``C`` classes (see :func:`categorical`)."""

    dim: int
    num_classes: int
    name = "categorical"
    is_discrete = True

    @property
    def num_parameters(self) -> int:
        return self.dim * self.num_classes

    @property
    def num_features(self) -> int:
        return self.dim * self.num_classes

    def _logits(self, raw):
        return raw.reshape((*raw.shape[:-1], self.dim, self.num_classes))

    def prior(self):
        probs = jnp.full((self.dim, self.num_classes), 1.0 / self.num_classes)
        return Independent(npd.Categorical(probs=probs), 1)

    def posterior(self, raw):
        return Independent(npd.Categorical(logits=self._logits(raw)), 1)

    def features(self, z):
        one_hot = jax.nn.one_hot(z, self.num_classes, dtype=jnp.float32)
        return one_hot.reshape((*z.shape[:-1], self.num_features))

    def posterior_mean(self, raw):
        """The class probabilities, flattened ``(B, L·C)`` (the mean of the one-hot code)."""
        return jax.nn.softmax(self._logits(raw), axis=-1).reshape(raw.shape)

    def kl_per_dimension(self, raw):
        """``KL(Cat(π) ‖ uniform) = log C + Σ_c π_c log π_c`` per variable."""
        log_probs = jax.nn.log_softmax(self._logits(raw), axis=-1)
        return math.log(self.num_classes) + jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)

    def sample_prior(self, key, num):
        z = jax.random.randint(key, (num, self.dim), 0, self.num_classes)
        return self.features(z)


@dataclass(frozen=True)
class RelaxedBernoulliLatent:
    """A binary latent relaxed at ``temperature``, in logit space (:func:`relaxed_bernoulli`)."""

    dim: int
    temperature: float
    name = "relaxed-bernoulli"
    is_discrete = False

    @property
    def num_parameters(self) -> int:
        return self.dim

    @property
    def num_features(self) -> int:
        return self.dim

    def prior(self):
        scale = 1.0 / self.temperature
        return npd.Logistic(jnp.zeros((self.dim,)), scale).to_event(1)

    def posterior(self, raw):
        return npd.Logistic(raw / self.temperature, 1.0 / self.temperature).to_event(1)

    def features(self, z):
        return jax.nn.sigmoid(z)

    def posterior_mean(self, raw):
        return jax.nn.sigmoid(raw)

    def kl_per_dimension(self, raw):
        return self.discrete().kl_per_dimension(raw)

    def sample_prior(self, key, num):
        return self.discrete().sample_prior(key, num)

    def discrete(self) -> BernoulliLatent:
        """The binary latent this one relaxes (same encoder output: ``q = Bern(σ(h))``)."""
        return BernoulliLatent(self.dim)


def gaussian(dim: int) -> GaussianLatent:
    """A Gaussian latent of ``dim`` dimensions (standard Normal prior)."""
    return GaussianLatent(_check_size("gaussian", "dim", dim))


def bernoulli(dim: int) -> BernoulliLatent:
    """``dim`` binary latents with a uniform prior."""
    return BernoulliLatent(_check_size("bernoulli", "dim", dim))


def categorical(dim: int, num_classes: int) -> CategoricalLatent:
    """``dim`` categorical latents of ``num_classes`` classes each, uniform prior."""
    return CategoricalLatent(
        _check_size("categorical", "dim", dim),
        _check_size("categorical", "num_classes", num_classes),
    )


def relaxed_bernoulli(dim: int, temperature: float = 0.5) -> RelaxedBernoulliLatent:
    """``dim`` binary latents relaxed at ``temperature`` (Concrete / Gumbel-softmax)."""
    _check_size("relaxed_bernoulli", "dim", dim)
    if isinstance(temperature, bool) or not (
        isinstance(temperature, int | float) and 0.0 < temperature < math.inf
    ):
        raise ValueError(
            f"relaxed_bernoulli: temperature must be a positive number, got {temperature!r}"
        )
    return RelaxedBernoulliLatent(dim, float(temperature))
