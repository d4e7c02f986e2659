r"""A normalizing-flow auto-family on the unconstrained space of a model's latents.

:func:`auto_flow` reads the model's latent sites, maps each to the unconstrained space by
``T_s = biject_to(S_s)`` and lays them out in one vector ``u = (u_1, ..., u_S)`` (the model's
site order, as :func:`vijax.full_rank_normal`). A flow ``f_θ`` (any kind of
:func:`vijax.flows.make_flow`) over that vector, followed by an elementwise affine map, gives

    ε ~ N(0, I_D),   x = f_θ(ε),   u = μ + σ ⊙ x,   z_s = T_s(u_s),

    log q(z) = log N(ε; 0, I) − log|det ∂f_θ/∂ε| − Σ_i log σ_i − Σ_s log|det ∂T_s/∂u_s|

(Kucukelbir et al. 2017 for the unconstrained space; Rezende & Mohamed 2015, Kingma et al.
2016 for flows as families; NumPyro's ``AutoIAFNormal`` / ``AutoBNAFNormal`` are the same
construction with a fixed flow). ``μ`` starts from the prior median, zeros, one prior draw or
the MAP point, ``σ`` from ``init_scale``.

**Sites keep the model's names.** Conditionals ``q(u_s | u_<s)`` of a flow have no closed form,
so each site is a point mass at its value, ``Delta(z_s, log_density=ℓ_s)``, whose log density
carries the site's share of ``log q(z)``: the first site carries the flow's ``log q(u)``, every
site its own ``−log|det ∂T_s/∂u_s|``. The sum of the sites' terms is ``log q(z)`` at the draw,
so ``vj.elbo(model, family)`` and ``vj.iwae`` work unchanged; re-scoring the family at other
values (``vj.log_density(family, values, params)``) is not available (it would need the inverse
pass and the joint of all sites).

**Gradients.** ``estimator=None`` differentiates ``log q`` along the draw (the standard
reparameterization gradient); the draw is then the flow's plain forward pass
(:meth:`Flow.forward`), with no score carried. ``estimator=vj.path()`` gives the fast path
gradient (Vaitl et al. 2024): the flow's forward pass carries the score ``g = ∇_u log q(u)``
(:meth:`Flow.transport`), and the family's density term is
``log q_{⊥θ}(u_θ) = ⊥log q + ⊥g · (u_θ − ⊥u_θ)`` (``⊥``: stop gradient), whose derivative is
``g · ∂u/∂θ``, with no inverse pass; the log-Jacobians of ``T`` depend on ``θ`` only through
``u`` and keep their gradient. Pass the strategy here, not to the
objective: a ``path`` strategy applied by the objective to the point-mass sites would hold
their whole log density fixed.

**Plates.** A plated latent is one block of ``u``; subsampled plates are refused with a
``ValueError`` naming the site and plate, as for the other joint families.

**Summaries by sampling.** A flow has no closed-form marginals: :meth:`AutoFlow.median` and
:meth:`AutoFlow.quantiles` are Monte Carlo estimates from ``num_summary_samples`` draws with a
fixed key (error ``O(n^{-1/2})``), the marginal quantiles of each constrained coordinate.

Example:
    >>> import jax, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model():
    ...     vj.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    ...     vj.sample("s", dist.HalfNormal(1.0))
    >>> family = vj.auto_flow(model, kind="iaf", length=2, hidden=(8,))
    >>> params = family.init(jax.random.key(0))
    >>> draws = vj.sample_posterior(family, params, jax.random.key(1), 100)
    >>> draws["w"].shape, draws["s"].shape, bool((draws["s"] > 0).all())
    ((100, 2), (100,), True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as npd

from vijax.core import sample
from vijax.estimators.strategies import Path, Reparameterized
from vijax.families import _sites
from vijax.flows.family import FLOW_KINDS, make_flow
from vijax.flows.flow import Flow

__all__ = ["AutoFlow", "auto_flow"]

_NAME = "auto_flow"


def _latents(model, args, kwargs) -> list:
    """The model's latent sites (model order); refuses subsampled plates."""
    latents, plates = _sites.model_sites(
        model, jax.random.key(0), args, kwargs, full_plates=False, family=_NAME
    )
    _sites.refuse_subsampled(latents, plates, _NAME)
    return latents


@dataclass(frozen=True)
class AutoFlow:
    r"""A flow over the unconstrained latents of ``model`` (see :func:`auto_flow`).

    Parameters: ``{"loc": {site: μ_s}, "log_scale": (D,), "flow": θ}``; ``u = μ + e^{log σ} ⊙
    f_θ(ε)``. Call it as ``family(params, *args)`` with the model's arguments.
    """

    model: Callable
    kind: str = "iaf"
    length: int = 4
    options: tuple = ()
    estimator: Any = None
    init_scale: float = 0.1
    init_loc: str = "median"
    map_steps: int = 200
    num_summary_samples: int = 4096

    def flow(self, dim: int) -> Flow:
        """The flow over the ``dim`` unconstrained coordinates."""
        if self.kind in ("affine_coupling", "spline") and dim < 2:
            raise ValueError(
                f"{_NAME}: kind={self.kind!r} needs at least 2 unconstrained dimensions, the "
                f"model has {dim}; use kind='iaf', 'maf', 'planar' or 'radial'"
            )
        return make_flow(self.kind, dim, self.length, **dict(self.options))

    def init(self, key, *args, **kwargs) -> dict:
        """Initial parameters, compiled and cached on the family and the arguments' shapes."""
        return _sites.run_init(self, _NAME, key, args, kwargs)

    def _init(self, key, args, kwargs):
        init_key, flow_key = jax.random.split(key)
        latents, loc, info, _ = _sites.initial_loc(
            self, _NAME, init_key, args, kwargs, jacobian=True, joint=True
        )
        size = sum(s.size for s in latents)
        dtype = jnp.result_type(float)
        params = {
            "loc": loc,
            "log_scale": jnp.full((size,), jnp.log(self.init_scale), dtype),
            "flow": self.flow(size).init(flow_key),
        }
        return params, info

    def _unconstrained(self, params, latents, eps, *, with_score=False):
        """``(u, log q(u), ∇_u log q(u))`` for base draws ``eps`` (any leading axes).

        The score is carried through the flow (:meth:`Flow.transport`) only when
        ``with_score``; otherwise it is ``None`` and the flow runs its plain forward pass
        (:meth:`Flow.forward`): the standard estimator never reads the score, and carrying it
        costs each layer its Jacobian step (for IAF a ``jacfwd`` sweep and a triangular solve).
        """
        size = sum(s.size for s in latents)
        if params["log_scale"].shape != (size,):
            raise ValueError(
                f"{_NAME}: params['log_scale'] has shape {params['log_scale'].shape} but the "
                f"latent sites {[s.name for s in latents]} have {size} unconstrained dimensions"
            )
        flow = self.flow(size)
        if with_score:
            x, log_q, score = flow.transport(params["flow"], eps)
        else:
            (x, log_q), score = flow.forward(params["flow"], eps), None
        scale = jnp.exp(params["log_scale"])
        u = _sites.ravel(latents, params["loc"]) + scale * x
        return u, log_q - jnp.sum(params["log_scale"]), None if score is None else score / scale

    def __call__(self, params, *args, **kwargs):
        """Draw ``u`` from the flow and sample every latent site at ``T_s(u_s)``."""
        latents = _latents(self.model, args, kwargs)
        key = numpyro.prng_key()
        if key is None:
            raise ValueError(f"{_NAME}: drawing needs a random key; run it under vj.seed")
        size = sum(s.size for s in latents)
        eps = jax.random.normal(key, (size,), jnp.result_type(float))
        path = isinstance(self.estimator, Path)
        u, log_q, score = self._unconstrained(params, latents, eps, with_score=path)
        if path:
            stop = jax.lax.stop_gradient
            log_q = stop(log_q) + jnp.dot(stop(score), u - stop(u))
        values = {}
        for index, (site, u_s) in enumerate(zip(latents, _unravel(latents, u))):
            z_s = _sites.constrain(site, u_s)
            term = -_site_log_det(site, u_s, z_s)
            if index == 0:
                term = term + log_q
            values[site.name] = sample(
                site.name, npd.Delta(z_s, log_density=term, event_dim=jnp.ndim(z_s))
            )
        return values

    def _draws(self, params, key, num_samples, *args, **kwargs) -> dict:
        """``num_samples`` draws of every site in the constrained space (leading axis)."""
        latents = _latents(self.model, args, kwargs)
        size = sum(s.size for s in latents)
        eps = jax.random.normal(key, (num_samples, size), jnp.result_type(float))
        u, _, _ = self._unconstrained(params, latents, eps)
        out = {}
        for site, u_s in zip(latents, _unravel(latents, u, lead=(num_samples,))):
            out[site.name] = _sites.constrain(site, u_s)
        return out

    def median(self, params, *args, **kwargs) -> dict:
        """Monte Carlo marginal median of each latent in the constrained space (see the
        module docstring: ``num_summary_samples`` draws, fixed key)."""
        return self.quantiles(params, 0.5, *args, **kwargs)

    def quantiles(self, params, q, *args, **kwargs) -> dict:
        """Monte Carlo marginal ``q``-quantiles of each constrained coordinate (leading axis
        ``q`` when ``q`` is an array; ``num_summary_samples`` draws, fixed key)."""
        levels = _sites.quantile_levels(q)
        return _sites.compiled(_quantiles_of, self, params, (levels,), args, kwargs)


def _quantiles_of(family, params, levels, *args, **kwargs) -> dict:
    draws = family._draws(params, jax.random.key(0), family.num_summary_samples, *args, **kwargs)
    return {name: jnp.quantile(value, levels, axis=0) for name, value in draws.items()}


def _unravel(latents, flat, lead=()):
    parts, offset = [], 0
    for s in latents:
        parts.append(jnp.reshape(flat[..., offset : offset + s.size], lead + s.shape))
        offset += s.size
    return parts


def _site_log_det(site, u_s, z_s):
    if _sites.is_real(site.support):
        return jnp.zeros((), u_s.dtype)
    return jnp.sum(site.transform.log_abs_det_jacobian(u_s, z_s))


def _check_number(name: str, value, *, integer: bool) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        what = "a positive int" if integer else "a positive float"
        raise ValueError(f"{_NAME}: {name} must be {what}, got {value!r}")


def auto_flow(
    model: Callable,
    *,
    kind: str = "iaf",
    length: int = 4,
    estimator=None,
    init_scale: float = 0.1,
    init_loc: str = "median",
    map_steps: int = 200,
    num_summary_samples: int = 4096,
    **options,
) -> AutoFlow:
    r"""A normalizing-flow auto-family for ``model`` (see the module docstring for the math).

    Args:
      model: a program ``model(*args)`` with continuous latent sites (no subsampled plates).
      kind: the flow, one of :data:`vijax.flows.FLOW_KINDS` (``"iaf"``, ``"maf"``,
        ``"affine_coupling"``, ``"spline"``, ``"planar"``, ``"radial"``, ...).
      length: the number of flow layers.
      estimator: ``None`` (reparameterized) or ``vj.path()`` (the fast path gradient).
      init_scale: the initial ``σ`` of the affine map after the flow.
      init_loc: ``"median"``, ``"sample"``, ``"zeros"`` or ``"map"`` for ``μ`` (as
        :func:`vijax.full_rank_normal`).
      map_steps: the most L-BFGS iterations of ``init_loc="map"``.
      num_summary_samples: draws behind :meth:`AutoFlow.median` / :meth:`AutoFlow.quantiles`.
      options: passed to :func:`vijax.flows.make_flow` (``hidden``, ``num_bins``, ``bound``).

    Raises:
      ValueError: an invalid argument, naming it.

    Example:
        >>> import jax, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def model():
        ...     vj.sample("p", dist.Beta(2.0, 2.0))
        >>> family = vj.auto_flow(model, kind="planar", length=2, estimator=vj.path())
        >>> params = family.init(jax.random.key(0))
        >>> sorted(params), 0.0 < float(family.median(params)["p"]) < 1.0
        (['flow', 'loc', 'log_scale'], True)
    """
    if kind not in FLOW_KINDS:
        raise ValueError(f"{_NAME}: kind must be one of {list(FLOW_KINDS)}, got {kind!r}")
    _check_number("length", length, integer=True)
    _check_number("num_summary_samples", num_summary_samples, integer=True)
    if estimator is not None and not isinstance(estimator, Path | Reparameterized):
        raise ValueError(
            f"{_NAME}: estimator must be None, vj.reparameterized() or vj.path(), got {estimator!r}"
        )
    if isinstance(init_scale, str):
        raise ValueError(f"{_NAME}: init_scale must be a positive float, got {init_scale!r}")
    _sites.check_init(_NAME, init_loc, init_scale, map_steps)
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    try:
        make_flow(kind, 2, length, **options)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{_NAME}: invalid flow options {sorted(options)}: {error}") from error
    return AutoFlow(
        model,
        kind,
        length,
        tuple(sorted(options.items())),
        estimator,
        float(init_scale),
        init_loc,
        map_steps,
        num_summary_samples,
    )
