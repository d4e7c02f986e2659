r"""Rényi (variational Rényi) bounds and the χ² upper bound (CUBO), written as programs.

Li & Turner (2016), "Rényi Divergence Variational Inference": for ``α ≠ 1``,

    L_α = 1/(1 − α) · log E_q[(p(x, z) / q(z))^{1−α}],

with ``L_α → ELBO`` as ``α → 1``, ``L_0 = log p(x)``, and ``L_α`` decreasing in ``α``: a lower
bound for ``α > 0``, an upper bound for ``α < 0``. With ``K`` particles vijax optimizes the
expectation of the ``K``-sample estimate

    L_{α,K} = E[1/(1 − α) · log (1/K) Σ_k w_k^{1−α}],   w_k = p(x, z_k) / q(z_k),

(``α = 0`` is the IWAE bound) and its gradient estimate is unbiased for ``∇ L_{α,K}``, for every
strategy; with the score function and the leave-one-out baseline it is VIMCO's for this bound.

Dieng et al. (2017), "Variational Inference via χ Upper Bound Minimization": the χ^n upper
bound ``CUBO_n = (1/n) log E_q[w^n] ≥ log p(x)`` (``n = 1 − α``, ``α < 0``); :func:`cubo`
returns ``−CUBO_{n,K}`` so that ``vj.fit``, which maximizes, minimizes the bound.

Example:
    >>> import jax, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model():
    ...     z = vj.sample("z", dist.Normal(0.0, 1.0))
    ...     vj.sample("x", dist.Normal(z, 1.0), obs=0.5)
    >>> def family(params):
    ...     vj.sample("z", dist.Normal(params, 1.0))
    >>> value = vj.renyi(model, family, 16, alpha=0.5)(0.0, jax.random.key(0)).value
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vijax.objectives.elbo import ELBO
from vijax.objectives.expectation import Terms, particle_log_mean_exp
from vijax.objectives.programs import log_weight

__all__ = ["Renyi", "cubo", "renyi"]


@dataclass(frozen=True)
class Renyi:
    """The ``K``-particle Rényi objective ``sign · L_{α,K}`` (see :func:`renyi`)."""

    model: Callable
    family: Callable
    num_particles: int
    alpha: float
    sign: float = 1.0

    def __call__(self, params, key, *args, **kwargs) -> Terms:
        def one(particle_key):
            return log_weight(self.model, self.family, params, particle_key, args, kwargs)

        bound = particle_log_mean_exp(one, key, self.num_particles, power=1.0 - self.alpha)
        return bound if self.sign == 1.0 else self.sign * bound


def _check(name, num_particles, alpha):
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"{name}: num_particles must be a positive int, got {num_particles!r}")
    if not isinstance(alpha, int | float):
        raise ValueError(f"{name}: alpha must be a number, got {alpha!r}")


def renyi(model: Callable, family: Callable, num_particles: int, alpha: float):
    """The ``K``-sample Rényi bound ``L_{α,K}`` to maximize (``α = 1`` gives the ELBO).

    For ``α < 0`` the bound is an upper bound: maximizing it is rarely what you want; use
    :func:`cubo` to minimize it.
    """
    _check("renyi", num_particles, alpha)
    if alpha == 1:
        return ELBO(model, family, num_particles, analytic_kl=False)
    return Renyi(model, family, num_particles, float(alpha))


def cubo(model: Callable, family: Callable, num_particles: int, n: float = 2.0):
    """``−CUBO_{n,K}``: maximizing it minimizes the χ^n upper bound (``n > 1``)."""
    if not n > 1:
        raise ValueError(f"cubo: n must be > 1, got {n!r}")
    _check("cubo", num_particles, 1.0 - n)
    return Renyi(model, family, num_particles, 1.0 - float(n), sign=-1.0)
