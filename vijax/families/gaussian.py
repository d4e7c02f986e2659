r"""Joint Gaussian auto-families: full-rank, low-rank plus diagonal, and the Laplace approximation.

All the latent sites of a model, mapped to the unconstrained space by ``T_s = biject_to(S_s)``
and laid out in one vector ``u = (u_1, ..., u_S)`` (the model's site order), get one Gaussian

    u ~ N(μ, Σ),   z_s = T_s(u_s),
    log q(z) = log N(u; μ, Σ) − Σ_s log|det ∂T_s/∂u_s|

(Kucukelbir et al. 2017, ADVI's full-rank family). ``Σ = L Lᵀ`` with ``L`` lower triangular
(:func:`full_rank_normal`) or ``Σ = W Wᵀ + diag(d²)`` with ``W`` of rank ``r``
(:func:`low_rank_normal`; Rezende & Mohamed's and Ong et al. 2018's factor covariance).
:func:`laplace_approximation` sets ``μ`` to the mode and ``Σ`` to the inverse Hessian there.

**Sites keep the model's names.** Objectives match family and model sites by name, so the joint
Gaussian is written as a chain of site conditionals, each an ordinary sample site:

    q(u) = Π_s q(u_s | u_<s),

and each conditional is Gaussian. With the lower-triangular ``L`` it is read off the blocks:
``u = μ + L ε`` gives ``u_s | u_<s ~ N(μ_s + L_{s,<s} ε_<s, L_ss L_ssᵀ)`` with
``ε_<s = L_{<s,<s}⁻¹ (u_<s − μ_<s)`` (block forward substitution; ``O(D²)`` in all). With the
factor covariance, ``u = μ + W η + d ⊙ ξ`` and ``u_s | u_<s`` is ``N(μ_s + W_s m, W_s C W_sᵀ +
diag d_s²)`` where ``η | u_<s ~ N(m, C)``, ``C⁻¹ = I + Σ_{t<s} W_tᵀ diag(d_t⁻²) W_t``:
``O(D r² + S r³)``. Each conditional is pushed through its site's bijection, so each site
carries its own ``log|det ∂T_s/∂u_s|``; sampling the chain is ancestral sampling of the same
Gaussian (reparameterized), and a site's density at any value, e.g. ``vj.log_density(family,
values, params)``, is its conditional given the earlier sites' values.

**Plates.** A plated latent is one block of ``u`` (all its elements): the plate's elements are
jointly Gaussian, so the family's sites do not enter the model's plates (a plate declares
conditional independence). A *subsampled* plate would need the rows of ``Σ`` of the selected
elements jointly with the rest; the joint families refuse it with a ``ValueError`` naming the
site and plate (use :func:`vijax.mean_field_normal` or an amortized family for subsampled local
latents).

**Path gradients.** The ``vj.path()`` strategy evaluates a site's density with its
distribution held fixed. For a chain of two or more sites that also holds fixed the earlier
sites' values inside a later site's conditional mean. The terms it drops,
``∂_m log q(u_s | m) · ∂m/∂φ``, have mean zero given ``u_<s`` (a score), so the estimator stays
unbiased, but it loses sticking the landing's zero variance at the optimum (measured on a
two-site model at its exact posterior: single draws up to 4 in size instead of 0); with one
site (all latents in one vector) it keeps it.

Example:
    >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model():
    ...     vj.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    ...     vj.sample("s", dist.HalfNormal(1.0))
    >>> family = vj.full_rank_normal(model, init_loc="zeros", init_scale=0.5)
    >>> params = family.init(jax.random.key(0))
    >>> draws = vj.sample_posterior(family, params, jax.random.key(1), 100)
    >>> family.scale_tril(params).shape, draws["w"].shape, draws["s"].shape
    ((3, 3), (100, 2), (100,))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpyro.distributions as npd
from jax.scipy.linalg import solve_triangular

from vijax.core import sample
from vijax.families import _sites

__all__ = [
    "FullRankNormal",
    "LowRankNormal",
    "full_rank_normal",
    "laplace_approximation",
    "low_rank_normal",
]


def _joint_latents(model, params, args, kwargs, family: str) -> list:
    """The model's latent sites that ``params["loc"]`` names (model order); refuses subsampled
    plates."""
    latents, plates = _sites.model_sites(
        model, jax.random.key(0), args, kwargs, full_plates=False, family=family
    )
    latents = [s for s in latents if s.name in params["loc"]]
    _sites.refuse_subsampled(latents, plates, family)
    return latents


def _check_dimension(family: str, name: str, array, size: int, latents) -> None:
    if array.shape[0] != size:
        raise ValueError(
            f"{family}: params[{name!r}] has {array.shape[0]} rows but the latent sites "
            f"{[s.name for s in latents]} have {size} unconstrained dimensions"
        )


def _init_joint(family, name, key, args, kwargs):
    latents, loc, info, log_joint = _sites.initial_loc(
        family, name, key, args, kwargs, jacobian=True, joint=True
    )
    precision = None
    if family.init_scale == "laplace":
        precision = _sites.negative_hessian(log_joint, latents, loc)
        info.update(_sites.precision_info(precision))
    return latents, loc, info, precision


@dataclass(frozen=True)
class FullRankNormal:
    r"""A full-rank Gaussian on the unconstrained space of ``model``'s latents.

    Parameters: ``{"loc": {site: μ_s}, "log_diagonal": (D,), "off_diagonal": (D, D)}`` with

        L = tril(off_diagonal, −1) + diag(exp(log_diagonal)),   Σ = L Lᵀ,

    (the upper triangle of ``off_diagonal`` is unused), rows in the model's site order. See
    :func:`full_rank_normal` and the module docstring.
    """

    model: Callable
    init_scale: float | str = 0.1
    init_loc: str = "median"
    map_steps: int = 200

    def init(self, key, *args, **kwargs) -> dict:
        """Initial parameters (see :func:`full_rank_normal`), compiled and cached."""
        return _sites.run_init(self, "full_rank_normal", key, args, kwargs)

    def _init(self, key, args, kwargs):
        latents, loc, info, precision = _init_joint(self, "full_rank_normal", key, args, kwargs)
        size = sum(s.size for s in latents)
        dtype = jnp.result_type(float)
        if precision is None:
            tril = jnp.eye(size, dtype=dtype) * self.init_scale
        else:
            cholesky = jnp.linalg.cholesky(precision)
            covariance = jax.scipy.linalg.cho_solve((cholesky, True), jnp.eye(size, dtype=dtype))
            tril = jnp.linalg.cholesky(covariance)
        params = {
            "loc": loc,
            "log_diagonal": jnp.log(jnp.diagonal(tril)),
            "off_diagonal": jnp.tril(tril, -1),
        }
        return params, info

    def scale_tril(self, params) -> jax.Array:
        """``L`` (``Σ = L Lᵀ``), lower triangular with a positive diagonal."""
        return jnp.tril(params["off_diagonal"], -1) + jnp.diag(jnp.exp(params["log_diagonal"]))

    def covariance(self, params) -> jax.Array:
        """``Σ = L Lᵀ`` of the flat unconstrained vector (rows in the model's site order)."""
        tril = self.scale_tril(params)
        return tril @ tril.T

    def __call__(self, params, *args, **kwargs):
        """Sample every latent site that ``params["loc"]`` names, as a chain of conditionals."""
        latents = _joint_latents(self.model, params, args, kwargs, "full_rank_normal")
        tril = self.scale_tril(params)
        size = sum(s.size for s in latents)
        _check_dimension("full_rank_normal", "log_diagonal", tril, size, latents)
        loc = _sites.ravel(latents, params["loc"])
        values, noise, offset = {}, [], 0
        for index, site in enumerate(latents):
            rows = slice(offset, offset + site.size)
            mean = loc[rows]
            if offset:
                mean = mean + tril[rows, :offset] @ jnp.concatenate(noise)
            block = tril[rows, rows]
            base = npd.MultivariateNormal(mean, scale_tril=block)
            value = sample(site.name, _sites.joint_site_distribution(base, site))
            values[site.name] = value
            if index + 1 < len(latents):
                u = jnp.reshape(_sites.unconstrain(site, value), (-1,))
                noise.append(solve_triangular(block, u - mean, lower=True))
            offset += site.size
        return values

    def _unconstrained_marginals(self, params, *args, **kwargs) -> list:
        latents = _joint_latents(self.model, params, args, kwargs, "full_rank_normal")
        tril = self.scale_tril(params)
        scale = _sites.unravel(latents, jnp.sqrt(jnp.sum(tril**2, axis=1)))
        return [(s, params["loc"][s.name], scale[s.name]) for s in latents]

    def median(self, params, *args, **kwargs) -> dict:
        """The family's median of each latent, ``T_s(μ_s)``, in the constrained space."""
        return _sites.compiled(_sites.median_of, self, params, (), args, kwargs)

    def quantiles(self, params, q, *args, **kwargs) -> dict:
        """Marginal ``q``-quantiles of each latent in the constrained space (leading axis
        ``q``): ``T_s(μ_i + sqrt(Σ_ii) Φ⁻¹(q))``, exact for elementwise supports."""
        levels = _sites.quantile_levels(q)
        return _sites.compiled(_sites.quantiles_of, self, params, (levels,), args, kwargs)


def full_rank_normal(
    model: Callable,
    *,
    init_scale: float | str = 0.1,
    init_loc: str = "median",
    map_steps: int = 200,
) -> FullRankNormal:
    r"""A full-rank Gaussian auto-family for ``model`` (NumPyro's ``AutoMultivariateNormal``).

    ``u ~ N(μ, L Lᵀ)`` on all latents at once (see the module docstring for how it keeps the
    model's site names, handles plates and refuses subsampled ones).

    Args:
      model: a program ``model(*args)`` with continuous latent sites.
      init_scale: initial ``L = init_scale · I``, or ``"laplace"``: ``L = chol(H⁻¹)`` with
        ``H`` the Hessian of the negative unconstrained log joint at the mode (needs
        ``init_loc="map"``; a ``ValueError`` when ``H`` is not positive definite).
      init_loc: ``"median"`` (of 15 prior draws), ``"sample"``, ``"zeros"`` or ``"map"`` (the
        mode of ``log p(x, T(u)) + log|det ∂T/∂u|`` by L-BFGS from the prior median).
      map_steps: the most L-BFGS iterations of ``init_loc="map"``.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def model():
        ...     vj.sample("w", dist.MultivariateNormal(jnp.zeros(2), jnp.array([[1.0, 0.8],
        ...                                                                  [0.8, 1.0]])))
        >>> family = vj.full_rank_normal(model, init_loc="map", init_scale="laplace")
        >>> params = family.init(jax.random.key(0))
        >>> bool(jnp.allclose(family.covariance(params), jnp.array([[1.0, 0.8], [0.8, 1.0]]),
        ...                   atol=1e-4))
        True
    """
    _sites.check_init("full_rank_normal", init_loc, init_scale, map_steps)
    scale = init_scale if isinstance(init_scale, str) else float(init_scale)
    return FullRankNormal(model, scale, init_loc, map_steps)


def laplace_approximation(model: Callable, *, map_steps: int = 200) -> FullRankNormal:
    r"""The Laplace approximation of ``model``'s posterior on the unconstrained space.

        u* = argmax_u ℓ(u),   ℓ(u) = log p(x, T(u)) + Σ_s log|det ∂T_s/∂u_s|,
        q(u) = N(u*, H⁻¹),    H = −∇²ℓ(u*),

    pushed through the sites' bijections (NumPyro's ``AutoLaplaceApproximation``; MacKay 2003,
    ch. 27). It is a :class:`FullRankNormal` whose ``init`` runs the L-BFGS search for ``u*``
    (on the model's full plates) and takes ``L = chol(H⁻¹)``; ``init`` raises a
    ``ValueError`` when ``H`` is not positive definite (a saddle, a flat direction, or a search
    that did not converge). For a Gaussian posterior in ``u`` it is exact. Its parameters can
    be refined further with any objective.

    Example:
        >>> import jax, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def model():
        ...     vj.sample("rate", dist.Gamma(3.0, 2.0))
        >>> family = vj.laplace_approximation(model)
        >>> params = family.init(jax.random.key(0))
        >>> # mode of log Gamma(3, 2)(e^u) + u at e^u = 3/2, curvature 3 there: σ = 1/sqrt(3)
        >>> rate, scale = family.median(params)["rate"], family.scale_tril(params)[0, 0]
        >>> round(float(rate), 4), round(float(scale), 4)
        (1.5, 0.5774)
    """
    return full_rank_normal(model, init_scale="laplace", init_loc="map", map_steps=map_steps)


@dataclass(frozen=True)
class LowRankNormal:
    r"""A low-rank-plus-diagonal Gaussian on the unconstrained space of ``model``'s latents.

    Parameters: ``{"loc": {site: μ_s}, "cov_factor": (D, r), "log_diagonal": (D,)}`` with

        Σ = W Wᵀ + diag(d²),   W = cov_factor,   d = exp(log_diagonal),

    rows in the model's site order. See :func:`low_rank_normal` and the module docstring.
    """

    model: Callable
    rank: int
    init_scale: float | str = 0.1
    init_loc: str = "median"
    map_steps: int = 200

    def init(self, key, *args, **kwargs) -> dict:
        """Initial parameters (see :func:`low_rank_normal`), compiled and cached."""
        return _sites.run_init(self, "low_rank_normal", key, args, kwargs)

    def _init(self, key, args, kwargs):
        factor_key = jax.random.fold_in(key, 7)
        latents, loc, info, precision = _init_joint(self, "low_rank_normal", key, args, kwargs)
        size = sum(s.size for s in latents)
        if self.rank > size:
            raise ValueError(
                f"low_rank_normal: rank must be at most the {size} unconstrained dimensions of "
                f"the latent sites {[s.name for s in latents]}, got {self.rank}"
            )
        dtype = jnp.result_type(float)
        if precision is None:
            # W = 0 is a stationary point of the ELBO (its gradient in W vanishes there): start
            # from a small random W instead
            factor = 0.1 * self.init_scale * jax.random.normal(factor_key, (size, self.rank))
            factor = factor.astype(dtype) / jnp.sqrt(self.rank)
            log_diagonal = jnp.full((size,), jnp.log(self.init_scale), dtype)
        else:
            factor, log_diagonal = _probabilistic_pca(precision, self.rank)
        return {"loc": loc, "cov_factor": factor, "log_diagonal": log_diagonal}, info

    def covariance(self, params) -> jax.Array:
        """``Σ = W Wᵀ + diag(d²)`` of the flat unconstrained vector."""
        factor = params["cov_factor"]
        return factor @ factor.T + jnp.diag(jnp.exp(2.0 * params["log_diagonal"]))

    def __call__(self, params, *args, **kwargs):
        """Sample every latent site that ``params["loc"]`` names, as a chain of conditionals."""
        latents = _joint_latents(self.model, params, args, kwargs, "low_rank_normal")
        factor = params["cov_factor"]
        variance = jnp.exp(2.0 * params["log_diagonal"])
        size = sum(s.size for s in latents)
        _check_dimension("low_rank_normal", "cov_factor", factor, size, latents)
        loc = _sites.ravel(latents, params["loc"])
        rank = factor.shape[1]
        eye = jnp.eye(rank, dtype=factor.dtype)
        # the posterior of η given the sites so far: precision I + Σ W_tᵀ D_t⁻¹ W_t, and shift
        precision, shift = eye, jnp.zeros((rank,), factor.dtype)
        values, offset = {}, 0
        for index, site in enumerate(latents):
            rows = slice(offset, offset + site.size)
            factor_s, variance_s, loc_s = factor[rows], variance[rows], loc[rows]
            if offset:
                chol = jnp.linalg.cholesky(precision)
                chol_inv = solve_triangular(chol, eye, lower=True)  # C = chol_invᵀ chol_inv
                mean = loc_s + factor_s @ (chol_inv.T @ (chol_inv @ shift))
                factor_s = factor_s @ chol_inv.T
            else:
                mean = loc_s
            base = npd.LowRankMultivariateNormal(mean, factor_s, variance_s)
            value = sample(site.name, _sites.joint_site_distribution(base, site))
            values[site.name] = value
            if index + 1 < len(latents):
                u = jnp.reshape(_sites.unconstrain(site, value), (-1,))
                weighted = factor[rows] / variance_s[:, None]
                precision = precision + factor[rows].T @ weighted
                shift = shift + weighted.T @ (u - loc_s)
            offset += site.size
        return values

    def _unconstrained_marginals(self, params, *args, **kwargs) -> list:
        latents = _joint_latents(self.model, params, args, kwargs, "low_rank_normal")
        variance = jnp.sum(params["cov_factor"] ** 2, axis=1) + jnp.exp(
            2.0 * params["log_diagonal"]
        )
        scale = _sites.unravel(latents, jnp.sqrt(variance))
        return [(s, params["loc"][s.name], scale[s.name]) for s in latents]

    def median(self, params, *args, **kwargs) -> dict:
        """The family's median of each latent, ``T_s(μ_s)``, in the constrained space."""
        return _sites.compiled(_sites.median_of, self, params, (), args, kwargs)

    def quantiles(self, params, q, *args, **kwargs) -> dict:
        """Marginal ``q``-quantiles of each latent in the constrained space (leading axis
        ``q``), exact for elementwise supports."""
        levels = _sites.quantile_levels(q)
        return _sites.compiled(_sites.quantiles_of, self, params, (levels,), args, kwargs)


def _probabilistic_pca(precision, rank: int):
    r"""``(W, log d)`` with ``W Wᵀ + d² I`` the probabilistic-PCA fit of ``Σ = H⁻¹``.

    Tipping & Bishop (1999): with eigenpairs ``(λ_i, v_i)`` of ``Σ`` in decreasing order,
    ``d² = mean_{i>r} λ_i`` and ``W = V_r (Λ_r − d² I)^{1/2}``; at full rank
    ``d² = λ_min / 2``.
    """
    size = precision.shape[0]
    eigenvalues, vectors = jnp.linalg.eigh(precision)  # increasing in H: decreasing in Σ
    covariance_eigenvalues = 1.0 / eigenvalues
    if rank < size:
        noise = jnp.mean(covariance_eigenvalues[rank:])
    else:
        noise = 0.5 * covariance_eigenvalues[-1]
    top = covariance_eigenvalues[:rank]
    factor = vectors[:, :rank] * jnp.sqrt(jnp.maximum(top - noise, 0.0))
    return factor, jnp.full((size,), 0.5 * jnp.log(noise))


def low_rank_normal(
    model: Callable,
    rank: int,
    *,
    init_scale: float | str = 0.1,
    init_loc: str = "median",
    map_steps: int = 200,
) -> LowRankNormal:
    r"""A low-rank-plus-diagonal Gaussian auto-family (NumPyro's
    ``AutoLowRankMultivariateNormal``): ``u ~ N(μ, W Wᵀ + diag(d²))``, ``W ∈ R^{D×r}``.

    Any covariance is ``W Wᵀ + λ_min I`` with ``r = D − 1``, so from rank ``D − 1`` up the
    family contains every Gaussian. Density and sampling cost ``O(D r²)`` (module docstring).

    Args:
      model: a program ``model(*args)`` with continuous latent sites.
      rank: ``r``, between 1 and the number ``D`` of unconstrained dimensions (checked at
        ``init``).
      init_scale: initial ``d`` (``W`` starts small and random, since ``W = 0`` is a stationary
        point of the ELBO), or ``"laplace"``: the probabilistic-PCA fit of ``H⁻¹`` (needs
        ``init_loc="map"``).
      init_loc: as in :func:`full_rank_normal`.
      map_steps: the most L-BFGS iterations of ``init_loc="map"``.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def model():
        ...     vj.sample("w", dist.Normal(0.0, 1.0).expand([4]).to_event(1))
        >>> family = vj.low_rank_normal(model, rank=2)
        >>> params = family.init(jax.random.key(0))
        >>> params["cov_factor"].shape, family.covariance(params).shape
        ((4, 2), (4, 4))
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"low_rank_normal: rank must be a positive int, got {rank!r}")
    _sites.check_init("low_rank_normal", init_loc, init_scale, map_steps)
    scale = init_scale if isinstance(init_scale, str) else float(init_scale)
    return LowRankNormal(model, rank, scale, init_loc, map_steps)
