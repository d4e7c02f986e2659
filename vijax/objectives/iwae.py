r"""The importance-weighted bound (IWAE), written as a program.

    L_K(φ) = E_{z_1..z_K ~ q_φ}[log (1/K) Σ_k p(x, z_k) / q_φ(z_k)]

(Burda et al. 2016, "Importance Weighted Autoencoders"). ``L_1`` is the ELBO,
``L_K ≤ L_{K+1} ≤ log p(x)``. Particles are vectorized with ``vmap``. With score-function sites
and the leave-one-out baseline the estimator is VIMCO (Mnih & Rezende 2016).

Example:
    >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model():
    ...     z = vj.sample("z", dist.Normal(0.0, 1.0))
    ...     vj.sample("x", dist.Normal(z, 1.0), obs=0.5)
    >>> def family(params):
    ...     vj.sample("z", dist.Normal(params, 1.0))
    >>> value = vj.iwae(model, family, num_particles=16)(0.0, jax.random.key(0)).value
"""

from __future__ import annotations

from collections.abc import Callable

from vijax.estimators import leave_one_out, path, score_function, with_estimators
from vijax.objectives.renyi import Renyi

__all__ = ["iwae", "iwae_stl", "vimco"]


def iwae(model: Callable, family: Callable, num_particles: int):
    """The importance-weighted bound with ``num_particles`` particles (an objective to maximize)."""
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"iwae: num_particles must be a positive int, got {num_particles!r}")
    return Renyi(model, family, num_particles, 0.0)  # α = 0: the same power mean, β = 1


def vimco(model: Callable, family: Callable, num_particles: int):
    """VIMCO (Mnih & Rezende 2016): the IWAE bound with every family site on the score function
    and the leave-one-out baseline

        A_k = L(W) − L(W_1, ..., W_{k−1}, mean_{j≠k} W_j, W_{k+1}, ..., W_K),

    the multi-sample objective's own control variate. For discrete (or any) latents; needs
    ``num_particles >= 2``. It is ``vj.iwae`` on
    ``vj.with_estimators(family, default=vj.score_function(vj.leave_one_out()))``.
    """
    if not isinstance(num_particles, int) or num_particles < 2:
        raise ValueError(f"vimco: num_particles must be an int >= 2, got {num_particles!r}")
    strategy = score_function(baseline=leave_one_out())
    return iwae(model, with_estimators(family, default=strategy), num_particles)


def iwae_stl(model: Callable, family: Callable, num_particles: int):
    r"""IWAE with sticking-the-landing path gradients (Roeder et al. 2017): ``vj.iwae`` with
    every family site on :func:`vijax.path`, so the family's density term carries no score.

    For the family parameters this estimates Σ_k w̃_k ∂W_k/∂z_k · ∂z_k/∂φ (the total derivative
    through the draws only), which is **biased for K > 1**: the dropped score term
    ``Σ_k w̃_k ∂W_k/∂φ`` has mean zero only for K = 1 (Tucker et al. 2019, "Doubly Reparameterized
    Gradient Estimators for Monte Carlo Objectives"). Its variance vanishes where q is the
    exact posterior, which is why it is used; :func:`vijax.iwae_dreg` is the unbiased
    estimator with the same property (it weights the path term by w̃_k² instead of w̃_k).
    With K = 1 it is the (unbiased) path-gradient ELBO; model parameters keep the IWAE
    gradient.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def model():
        ...     z = vj.sample("z", dist.Normal(0.0, 1.0))
        ...     vj.sample("x", dist.Normal(z, 1.0), obs=0.5)
        >>> def family(params):
        ...     vj.sample("z", dist.Normal(params["loc"], params["scale"]))
        >>> posterior = {"loc": jnp.array(0.25), "scale": jnp.sqrt(0.5)}
        >>> grads = vj.grad_estimate(vj.iwae_stl(model, family, 8))(posterior, jax.random.key(0))
        >>> bool(jnp.abs(grads["loc"]) < 1e-5)  # zero at the posterior, draw by draw
        True
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"iwae_stl: num_particles must be a positive int, got {num_particles!r}")
    return iwae(model, with_estimators(family, default=path()), num_particles)
