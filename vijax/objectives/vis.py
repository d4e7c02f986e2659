r"""Variational importance sampling with the forward χ² divergence (VIS), written as a program.

Li, Wang, Li & Wu (2024), "Forward χ² Divergence Based Variational Importance Sampling". The
model is fitted by maximizing the importance-sampling estimate of ``log p_θ(x)``, and the
proposal ``q_φ`` by minimizing the forward χ² divergence from the posterior, which governs the
variance of that estimate:

    χ²(p(z | x) ‖ q_φ) = E_{q_φ}[(p(z | x) / q_φ(z))²] − 1 = E_{q_φ}[w²] / p(x)² − 1,
    w = p_θ(x, z) / q_φ(z).

With ``K`` particles ``z_k ~ q_φ``, ``w_k = p_θ(x, z_k) / q_φ(z_k)``, normalized weights
``w̃_k = w_k / Σ_j w_j`` and squared-normalized weights ``v_k = w_k² / Σ_j w_j²``:

- value: ``log p̂(x) = log 1/K Σ_k w_k``, the importance-sampling estimate (the IWAE bound's);
- θ ascends ``Σ_k w̃_k ∇_θ log p_θ(x, z_k)``, a self-normalized estimate of
  ``∇_θ log p_θ(x) = E_{p(z|x)}[∇_θ log p_θ(x, z)]`` (and the exact gradient of the IWAE
  bound's draw in θ, so unbiased for ``∇_θ L_K``);
- φ ascends ``Σ_k v_k ∇_φ log q_φ(z_k)``, a self-normalized estimate of

      −∇_φ log(1 + χ²(p(z | x) ‖ q_φ)) = E_q[w² ∇_φ log q_φ(z)] / E_q[w²]

  (from ``∇_φ ∫ p² / q_φ = −∫ p² / q_φ ∇_φ log q_φ``; the ``log`` makes the step scale-free and
  has the minimizers of ``χ²``; it is ``−2 ∇_φ CUBO_2``, Dieng et al. 2017).

Both estimates are self-normalized: **consistent** as ``K → ∞``, biased by ``O(1/K)`` for finite
``K``, not unbiased. At ``q_φ = p(z | x)`` every ``v_k = 1/K`` and the φ-estimate is the mean
of ``K`` scores, exactly zero in expectation for every ``K``. As in reweighted wake-sleep
(:mod:`vijax.objectives.rws`), the draws are detached (no path, no score term), so any latent,
discrete ones included, works; one :func:`vijax.fit` step performs both updates.

vijax writes the step as one value whose gradient is both updates:

    log 1/K Σ_k exp(log p_θ(x, z_k) − ⊥log q_φ(z_k))  +  Σ_k ⊥v_k (log q_φ(z_k) − ⊥log q_φ(z_k)),

the second term being zero-valued (``⊥`` is ``stop_gradient``).

Example:
    >>> import jax, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model():
    ...     z = vj.sample("z", dist.Bernoulli(0.3))
    ...     vj.sample("x", dist.Normal(z, 1.0), obs=0.5)
    >>> def family(params):
    ...     vj.sample("z", dist.Bernoulli(logits=params))
    >>> value, grads = vj.value_and_grad_estimate(vj.vis(model, family, 16))(0.0, jax.random.key(0))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from vijax.objectives.expectation import Terms
from vijax.objectives.programs import detached_densities

__all__ = ["VIS", "vis"]


@dataclass(frozen=True)
class VIS:
    """The variational importance sampling objective (see :func:`vis`)."""

    model: Callable
    family: Callable
    num_particles: int

    def __call__(self, params, key, *args, **kwargs) -> Terms:
        def densities(particle_key):
            log_p, log_q = detached_densities(
                self.model, self.family, params, particle_key, args, kwargs
            )
            return log_p.value, log_q.value

        keys = jax.random.split(key, self.num_particles)
        log_p, log_q = jax.vmap(densities)(keys)
        fixed_q = jax.lax.stop_gradient(log_q)
        # wake-θ: the importance-sampling estimate of log p(x), the proposal held fixed
        estimate = jax.nn.logsumexp(log_p - fixed_q) - jnp.log(self.num_particles)
        # wake-φ: zero-valued; its gradient is Σ_k v_k ∇_φ log q_φ(z_k), v ∝ w²
        squared = jax.lax.stop_gradient(jax.nn.softmax(2.0 * (log_p - log_q)))
        proposal = jnp.sum(squared * (log_q - fixed_q))
        return Terms.of(estimate + proposal)


def vis(model: Callable, family: Callable, num_particles: int) -> VIS:
    """Variational importance sampling with ``num_particles`` particles (Li et al. 2024).

    The model's parameters follow the self-normalized estimate of ``∇_θ log p_θ(x)``; the
    family's descend the forward χ² divergence ``log(1 + χ²(p(z | x) ‖ q_φ))`` (formulas in
    the module docstring). Pass ``vj.ModelAndFamilyParams(model=θ, family=φ)`` to train both.
    Needs ``num_particles >= 2`` (with one particle both estimates are uninformative).
    """
    if not isinstance(num_particles, int) or isinstance(num_particles, bool) or num_particles < 2:
        raise ValueError(f"vis: num_particles must be an int >= 2, got {num_particles!r}")
    return VIS(model, family, num_particles)
