r"""Factorized auto-families: a mean-field Normal and a point mass (MAP) on a model's latents.

:func:`mean_field_normal` reads the model's latent sites, their supports and plates, and builds

    q_φ(z) = Π_sites T_s#N(u_s; μ_s, diag σ_s²),   T_s = biject_to(support_s),

a factorized Normal on the unconstrained space pushed through each site's bijection (NumPyro's
``biject_to``; Kucukelbir et al. 2017, "Automatic Differentiation Variational Inference"), so
positive, bounded and simplex sites get densities on their own support (the log-Jacobian is
part of ``log q``). Sites inside plates are sampled inside the same plates; with a subsampled
plate the family uses the rows of its local parameters that the plate selects, and the model is
replayed on the same indices.

:func:`delta` is the point mass ``δ(z − T(u))`` at one value per site (NumPyro's ``AutoDelta``):
its ELBO is ``log p(x, z)`` and its fit is the MAP estimate in the constrained space.

Example:
    >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model(x):
    ...     scale = vj.sample("scale", dist.HalfNormal(1.0))
    ...     with vj.plate("data", x.shape[0]):
    ...         vj.sample("x", dist.Normal(0.0, scale), obs=x)
    >>> family = vj.mean_field_normal(model)
    >>> params = family.init(jax.random.key(0), jnp.ones(5))
    >>> sorted(params), sorted(params["loc"])
    (['loc', 'log_scale'], ['scale'])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpyro.distributions as npd

from vijax.core import plate, sample
from vijax.families import _sites
from vijax.families._sites import is_real as _is_real

__all__ = ["Delta", "MeanFieldNormal", "delta", "mean_field_normal"]


def _model_sites(model, key, args, kwargs, full_plates: bool, family: str = "mean_field_normal"):
    """Latent sites and plates of ``model`` (see :func:`vijax.families._sites.model_sites`)."""
    return _sites.model_sites(model, key, args, kwargs, full_plates=full_plates, family=family)


def _sample_factorized(model, params: dict, args, kwargs, family: str, site_distribution):
    """Sample every latent site that ``params["loc"]`` names, in the model's plates.

    ``site_distribution(site, rows)`` builds a site's distribution from ``rows``, the site's
    parameters (``{key: array}``) restricted to the elements its subsampled plates selected.
    """
    latents, plate_args = _model_sites(
        model, jax.random.key(0), args, kwargs, full_plates=False, family=family
    )
    plates, values = {}, {}
    for site in latents:
        if site.name not in params["loc"]:
            # latent only in this call (``y=None`` for ``vj.predictive``): the model samples
            # it; objectives refuse a model latent that the family does not sample
            continue
        rows = {key: params[key][site.name] for key in params}
        with contextlib.ExitStack() as stack:
            for frame in site.frames:
                size, subsample_size = plate_args[frame.name]
                if frame.name not in plates:
                    plates[frame.name] = plate(frame.name, size, subsample_size, frame.dim)
                indices = stack.enter_context(plates[frame.name])
                if subsample_size not in (None, size):
                    axis = frame.dim - site.event_dim
                    rows = {k: jnp.take(v, indices, axis=axis) for k, v in rows.items()}
            values[site.name] = sample(site.name, site_distribution(site, rows))
    return values


def _full_latents(model, params, args, kwargs, family):
    latents, _ = _model_sites(
        model, jax.random.key(0), args, kwargs, full_plates=True, family=family
    )
    return [s for s in latents if s.name in params["loc"]]


@dataclass(frozen=True)
class MeanFieldNormal:
    """A mean-field Normal family on the unconstrained space of ``model``'s latents.

    Parameters are ``{"loc": {site: u}, "log_scale": {site: log σ}}`` in the unconstrained space.
    Call it as ``family(params, *args)`` with the model's arguments. See
    :func:`mean_field_normal`.
    """

    model: Callable
    init_scale: float | str = 0.1
    init_loc: str = "median"
    map_steps: int = 200

    def init(self, key, *args, **kwargs) -> dict:
        """Initial parameters (see :func:`mean_field_normal`). One compiled program, cached on
        the family and the arguments' shapes (non-array arguments are static)."""
        return _sites.run_init(self, "mean_field_normal", key, args, kwargs)

    def _init(self, key, args, kwargs):
        latents, loc, info, log_joint = _sites.initial_loc(
            self, "mean_field_normal", key, args, kwargs, jacobian=True, joint=False
        )
        if self.init_scale == "laplace":
            precision = _sites.negative_hessian(log_joint, latents, loc)
            info.update(_sites.precision_info(precision))
            log_scale = _sites.unravel(latents, -0.5 * jnp.log(jnp.diagonal(precision)))
        else:
            log_scale = {
                name: jnp.full(jnp.shape(u), jnp.log(self.init_scale), u.dtype)
                for name, u in loc.items()
            }
        return {"loc": loc, "log_scale": log_scale}, info

    def __call__(self, params, *args, **kwargs):
        """Sample every latent site that ``params`` has parameters for (see the class)."""

        def site_distribution(site, rows):
            base = npd.Normal(rows["loc"], jnp.exp(rows["log_scale"])).to_event(site.event_dim)
            if _is_real(site.support):
                return base
            return npd.TransformedDistribution(base, site.transform)

        return _sample_factorized(
            self.model, params, args, kwargs, "mean_field_normal", site_distribution
        )

    def _unconstrained_marginals(self, params, *args, **kwargs) -> list:
        """``[(site, loc, scale)]``: the marginal Normal of each unconstrained coordinate."""
        latents = _full_latents(self.model, params, args, kwargs, "mean_field_normal")
        return [(s, params["loc"][s.name], jnp.exp(params["log_scale"][s.name])) for s in latents]

    def median(self, params, *args, **kwargs) -> dict:
        """The family's median of each latent, ``T_s(μ_s)``, in the constrained space."""
        return _sites.compiled(_sites.median_of, self, params, (), args, kwargs)

    def quantiles(self, params, q, *args, **kwargs) -> dict:
        """Marginal ``q``-quantiles of each latent in the constrained space (leading axis ``q``).

        ``T_s(μ_s + σ_s Φ⁻¹(q))``, exact for the elementwise supports (real, positive,
        intervals); for multivariate ones see :func:`vijax.families._sites.constrained_quantiles`.
        """
        levels = _sites.quantile_levels(q)
        return _sites.compiled(_sites.quantiles_of, self, params, (levels,), args, kwargs)


def mean_field_normal(
    model: Callable,
    *,
    init_scale: float | str = 0.1,
    init_loc: str = "median",
    map_steps: int = 200,
) -> MeanFieldNormal:
    r"""A mean-field Normal auto-family for ``model`` (see the module docstring).

    For a Gaussian posterior with precision ``Λ`` the KL-optimal mean-field family has
    ``σ_i² = 1 / Λ_ii ≤ Σ_ii``: it underestimates marginal variances whenever the posterior is
    correlated (Bishop 2006, §10.1.2).

    Args:
      model: a program ``model(*args)`` with continuous latent sites.
      init_scale: initial standard deviation ``σ`` in the unconstrained space, or
        ``"laplace"``: ``σ_i = 1/sqrt(H_ii)`` from the Hessian ``H`` of the negative log joint
        at the mode (needs ``init_loc="map"``; costs a ``D × D`` Hessian).
      init_loc: ``"median"`` (of 15 prior draws), ``"sample"`` (one prior draw), ``"zeros"``,
        or ``"map"``: the mode of the unconstrained log joint
        ``log p(x, T(u)) + log|det ∂T/∂u|``, found with L-BFGS (optax) from the prior median
        on the model's full plates (pass the full data to ``init``).
      map_steps: the most L-BFGS iterations of ``init_loc="map"``.

    Example:
        >>> import jax, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def model():
        ...     vj.sample("rate", dist.Gamma(3.0, 2.0))
        >>> family = vj.mean_field_normal(model, init_loc="map", init_scale="laplace")
        >>> params = family.init(jax.random.key(0))
        >>> # mode of log Gamma(3, 2)(e^u) + u is at e^u = 3/2; the curvature there is 3
        >>> rate, log_scale = family.median(params)["rate"], params["log_scale"]["rate"]
        >>> round(float(rate), 4), round(float(log_scale), 4)  # σ = 1/sqrt(3)
        (1.5, -0.5493)
    """
    _sites.check_init("mean_field_normal", init_loc, init_scale, map_steps)
    scale = init_scale if isinstance(init_scale, str) else float(init_scale)
    return MeanFieldNormal(model, scale, init_loc, map_steps)


@dataclass(frozen=True)
class Delta:
    """A point mass at ``T_s(u_s)`` for each latent site of ``model`` (see :func:`delta`).

    Parameters are ``{"loc": {site: u}}`` in the unconstrained space.
    """

    model: Callable
    init_loc: str = "median"
    map_steps: int = 200

    def init(self, key, *args, **kwargs) -> dict:
        """Initial parameters (see :func:`delta`), compiled and cached like the others'."""
        return _sites.run_init(self, "delta", key, args, kwargs)

    def _init(self, key, args, kwargs):
        _, loc, info, _ = _sites.initial_loc(
            self, "delta", key, args, kwargs, jacobian=False, joint=False
        )
        return {"loc": loc}, info

    def __call__(self, params, *args, **kwargs):
        """Draw every latent site at its point (a reparameterized, zero-variance draw)."""

        def site_distribution(site, rows):
            value = _sites.constrain(site, rows["loc"])
            return npd.Delta(value, event_dim=site.fn.event_dim)

        return _sample_factorized(self.model, params, args, kwargs, "delta", site_distribution)

    def _unconstrained_marginals(self, params, *args, **kwargs) -> list:
        latents = _full_latents(self.model, params, args, kwargs, "delta")
        return [(s, params["loc"][s.name], jnp.zeros_like(params["loc"][s.name])) for s in latents]

    def median(self, params, *args, **kwargs) -> dict:
        """The point of each latent, in the constrained space."""
        return _sites.compiled(_sites.median_of, self, params, (), args, kwargs)

    def quantiles(self, params, q, *args, **kwargs) -> dict:
        """Every quantile of a point mass is its point (leading axis ``q``)."""
        levels = _sites.quantile_levels(q)
        return _sites.compiled(_sites.quantiles_of, self, params, (levels,), args, kwargs)


def delta(model: Callable, *, init_loc: str = "median", map_steps: int = 200) -> Delta:
    r"""A point-mass (MAP) auto-family for ``model``: ``q(z) = Π_s δ(z_s − T_s(u_s))``.

    The point mass has no density; by convention ``log q = 0`` at its point, so the ELBO is
    ``log p(x, z)`` and maximizing it gives the MAP estimate in the *constrained* space (as
    NumPyro's ``AutoDelta``). Its plates work as :func:`mean_field_normal`'s (subsampled ones
    included).

    Args:
      model: a program ``model(*args)`` with continuous latent sites.
      init_loc: ``"median"``, ``"sample"``, ``"zeros"`` or ``"map"`` (L-BFGS on
        ``log p(x, T(u))``, the constrained MAP, on the model's full plates).
      map_steps: the most L-BFGS iterations of ``init_loc="map"``.

    Example:
        >>> import jax, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def model():
        ...     vj.sample("rate", dist.Gamma(3.0, 2.0))
        >>> family = vj.delta(model, init_loc="map")
        >>> round(float(family.median(family.init(jax.random.key(0)))["rate"]), 4)  # (3 − 1) / 2
        1.0
    """
    _sites.check_init("delta", init_loc, 1.0, map_steps)
    return Delta(model, init_loc, map_steps)
