r"""Reweighted wake-sleep (RWS), written as a program.

Bornschein & Bengio (2015), "Reweighted Wake-Sleep"; Le et al. (2019), "Revisiting Reweighted
Wake-Sleep for Models with Stochastic Control Flow". With ``K`` particles ``z_k ~ q_φ`` and
normalized weights ``w̃_k ∝ p_θ(x, z_k) / q_φ(z_k)``:

- wake-θ: ``Σ_k w̃_k ∇_θ log p_θ(x, z_k)``, the IWAE gradient for the model;
- wake-φ: ``Σ_k w̃_k ∇_φ log q_φ(z_k)`` at fixed ``z_k``, a self-normalized estimate of
  ``∇_φ E_{p(z|x)}[log q_φ(z)] = −∇_φ KL(p(z | x) ‖ q_φ)`` (the inclusive KL), which needs no
  reparameterization and works for discrete latents.

The value is the IWAE bound's estimate. vijax writes it with the IWAE pieces: the family's
draws are detached (no path, no score term), and the family's density terms enter each log
weight through an identity whose gradient is negated, which turns the IWAE gradient's
``−Σ_k w̃_k ∇_φ log q`` into wake-φ's ``+Σ_k w̃_k ∇_φ log q`` and leaves the model's untouched.
One ``fit`` step then performs both updates (both ascend).

Example:
    >>> import jax, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model():
    ...     z = vj.sample("z", dist.Bernoulli(0.3))
    ...     vj.sample("x", dist.Normal(z, 1.0), obs=0.5)
    >>> def family(params):
    ...     vj.sample("z", dist.Bernoulli(logits=params))
    >>> grads = vj.grad_estimate(vj.rws(model, family, 8))(0.0, jax.random.key(0))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax

from vijax.objectives.expectation import Terms, particle_log_mean_exp
from vijax.objectives.gradients import scale_gradient
from vijax.objectives.programs import detached_densities

__all__ = ["RWS", "rws"]


@dataclass(frozen=True)
class RWS:
    """The reweighted wake-sleep objective (see :func:`rws`)."""

    model: Callable
    family: Callable
    num_particles: int

    def __call__(self, params, key, *args, **kwargs) -> Terms:
        def log_weight(particle_key):
            log_p, log_q = detached_densities(
                self.model, self.family, params, particle_key, args, kwargs
            )
            flipped = jax.tree.map(lambda a: scale_gradient(a, -1.0), log_q)
            return log_p - flipped

        return particle_log_mean_exp(log_weight, key, self.num_particles)


def rws(model: Callable, family: Callable, num_particles: int) -> RWS:
    """Reweighted wake-sleep with ``num_particles`` particles (wake-θ and wake-φ in one step)."""
    if not isinstance(num_particles, int) or num_particles < 2:
        raise ValueError(f"rws: num_particles must be an int >= 2, got {num_particles!r}")
    return RWS(model, family, num_particles)
