r"""IWAE with doubly reparameterized gradients (DReG), written as a program.

For the importance-weighted bound ``L_K = E[log (1/K) Σ_k w_k]``, ``w_k = p_θ(x, z_k) /
q_φ(z_k)``, ``z_k = g_φ(ε_k)``, Tucker et al. (2019), "Doubly Reparameterized Gradient Estimators
for Monte Carlo Objectives", show

    ∇_φ L_K = E[Σ_k w̃_k² ∂ log w_k / ∂z_k · ∂z_k / ∂φ],   w̃_k = w_k / Σ_j w_j,

while ``∇_θ L_K`` keeps the usual ``Σ_k w̃_k ∇_θ log w_k``. Unlike the plain IWAE gradient, whose
signal-to-noise ratio for ``φ`` vanishes as ``K`` grows (Rainforth et al. 2018), this one is
exactly zero when ``q`` is the posterior.

vijax builds it from its own pieces: every family site uses the ``path`` strategy (the density
``log q`` with ``φ`` held fixed, so ``φ`` reaches ``log w_k`` only through ``z_k``), and particle
``k`` sees the family parameters through an identity whose gradient is scaled by ``w̃_k`` (held
fixed), which turns the ``w̃_k`` of the IWAE gradient into ``w̃_k²`` for ``φ`` alone. The
normalized weights come from a first pass over the same particles, whose forward computation
XLA shares with the second.

Example:
    >>> import jax, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model():
    ...     z = vj.sample("z", dist.Normal(0.0, 1.0))
    ...     vj.sample("x", dist.Normal(z, 1.0), obs=0.5)
    >>> def family(params):
    ...     vj.sample("z", dist.Normal(params, 1.0))
    >>> grads = vj.grad_estimate(vj.iwae_dreg(model, family, 8))(0.0, jax.random.key(0))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax

from vijax.core import block
from vijax.estimators import path, with_estimators
from vijax.objectives.expectation import Terms, particle_log_mean_exp
from vijax.objectives.gradients import scale_gradient
from vijax.objectives.programs import ModelAndFamilyParams, log_weight

__all__ = ["DReGIWAE", "iwae_dreg"]


def _scale_family_gradient(params, factor):
    scale = lambda tree: jax.tree.map(lambda x: scale_gradient(x, factor), tree)  # noqa: E731
    if isinstance(params, ModelAndFamilyParams):
        return params._replace(family=scale(params.family))
    return scale(params)


@dataclass(frozen=True)
class DReGIWAE:
    """The IWAE objective whose gradient is DReG's (see :func:`iwae_dreg`)."""

    model: Callable
    family: Callable
    num_particles: int

    def __call__(self, params, key, *args, **kwargs) -> Terms:
        family = with_estimators(self.family, default=path())

        def one(particle_key, factor=None):
            scaled = params if factor is None else _scale_family_gradient(params, factor)
            return log_weight(self.model, family, scaled, particle_key, args, kwargs)

        keys = jax.random.split(key, self.num_particles)  # the keys particle_log_mean_exp uses
        with block():  # a first pass for the weights, hidden from the estimator
            log_weights = jax.vmap(lambda k: one(k).value)(keys)
        normalized = jax.lax.stop_gradient(jax.nn.softmax(log_weights))
        return particle_log_mean_exp(one, key, self.num_particles, normalized)


def iwae_dreg(model: Callable, family: Callable, num_particles: int) -> DReGIWAE:
    """The IWAE bound with ``num_particles`` particles and the DReG gradient for the family.

    Every latent site of the family must be reparameterizable (a ``ValueError`` names the one
    that is not). The value is the IWAE bound's estimate, as with :func:`vijax.iwae`.
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"iwae_dreg: num_particles must be a positive int, got {num_particles!r}")
    return DReGIWAE(model, family, num_particles)
