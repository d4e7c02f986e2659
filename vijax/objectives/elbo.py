r"""The evidence lower bound, written as a program.

    ELBO(φ) = E_{z ~ q_φ}[log p(x, z) − log q_φ(z)] ≤ log p(x)

(Jordan et al. 1999; Kingma & Welling 2014; Ranganath et al. 2014 for the score-function form).
With ``num_particles = K`` the estimate averages ``K`` independent draws (a particle plate, so
leave-one-out baselines apply). Where NumPyro has a closed-form ``KL(q ‖ p)`` for a latent site,
that site's ``log p − log q`` is replaced by ``−KL`` (same expectation, less variance).

Example:
    >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model(x):
    ...     z = vj.sample("z", dist.Normal(0.0, 1.0))
    ...     with vj.plate("data", x.shape[0]):
    ...         vj.sample("x", dist.Normal(z, 1.0), obs=x)
    >>> def family(params, x):
    ...     vj.sample("z", dist.Normal(params["loc"], jnp.exp(params["log_scale"])))
    >>> objective = vj.elbo(model, family, num_particles=4)
    >>> params = {"loc": 0.0, "log_scale": 0.0}
    >>> value, grads = vj.value_and_grad_estimate(objective)(params, jax.random.key(0), jnp.ones(3))
    >>> sorted(grads)
    ['loc', 'log_scale']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vijax.objectives.expectation import Terms, particle_mean
from vijax.objectives.programs import elbo_terms, importance_traces

__all__ = ["ELBO", "elbo"]


@dataclass(frozen=True)
class ELBO:
    """The ELBO objective ``(params, key, *args) -> Terms`` (see :func:`elbo`)."""

    model: Callable
    family: Callable
    num_particles: int = 1
    analytic_kl: bool = True

    def __call__(self, params, key, *args, **kwargs) -> Terms:
        def one(particle_key):
            model_trace, family_trace = importance_traces(
                self.model, self.family, params, particle_key, args, kwargs
            )
            return elbo_terms(model_trace, family_trace, analytic_kl=self.analytic_kl)

        if self.num_particles == 1:
            return one(key)
        return particle_mean(one, key, self.num_particles)


def elbo(model: Callable, family: Callable, num_particles: int = 1, *, analytic_kl: bool = True):
    """The ELBO of ``model`` under ``family``, averaged over ``num_particles`` draws.

    Args:
      model: a program ``model(*args)`` (or ``model(model_params, *args)``, see
        :class:`vijax.ModelAndFamilyParams`).
      family: a program ``family(params, *args)`` sampling every latent site of the model.
      num_particles: independent draws averaged (vectorized with ``vmap``).
      analytic_kl: use closed-form KL terms where NumPyro has them.

    Returns:
      An objective ``(params, key, *args) -> Terms`` to maximize. Equal arguments give equal
      (and equally hashed) objectives, so ``vj.fit`` reuses its compiled step.
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"elbo: num_particles must be a positive int, got {num_particles!r}")
    return ELBO(model, family, num_particles, analytic_kl)
