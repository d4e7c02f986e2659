r"""Auto-families: variational families built from a model's latent sites.

:func:`mean_field_normal` reads the model's latent sites, their supports and plates, and builds

    q_φ(z) = Π_sites T_s#N(u_s; μ_s, diag σ_s²),   T_s = biject_to(support_s),

a factorized Normal on the unconstrained space pushed through each site's bijection (NumPyro's
``biject_to``), so positive, bounded and simplex sites get densities on their own support (the
log-Jacobian is part of ``log q``). Sites inside plates are sampled inside the same plates; with
a subsampled plate the family uses the rows of its local parameters that the plate selects, and
the model is replayed on the same indices.

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
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpyro.distributions as npd
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from vijax.core import arguments, block, plate, sample, seed, substitute, trace

__all__ = ["MeanFieldNormal", "mean_field_normal"]


@dataclass(frozen=True)
class _LatentSite:
    name: str
    support: constraints.Constraint
    event_dim: int  # of the unconstrained value
    frames: tuple  # CondIndepStackFrame(name, dim, size) of the site
    value: jax.Array  # a prototype value (constrained)
    fn: npd.Distribution  # the model's distribution at the prototype


def _is_real(support) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def _model_sites(model, key, args, kwargs, full_plates: bool):
    """Latent sites and plates of ``model`` from one private (blocked) run."""
    with block():
        tr = trace(seed(model, key)).get_trace(*args, **kwargs)
    plates = {n: s["args"] for n, s in tr.items() if s["type"] == "plate"}
    if full_plates and any(sub not in (None, size) for size, sub in plates.values()):
        full = {n: jnp.arange(size) for n, (size, sub) in plates.items() if sub not in (None, size)}
        with block(), warnings.catch_warnings():
            # NumPyro warns that the substituted indices outnumber subsample_size: intended.
            warnings.filterwarnings("ignore", message="subsample_size does not match")
            tr = trace(seed(substitute(model, data=full), key)).get_trace(*args, **kwargs)
    latents = []
    for name, site in tr.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        fn = site["fn"]
        if fn.support.is_discrete:
            raise ValueError(
                f"site {name!r}: mean_field_normal needs continuous latents, but "
                f"{type(fn).__name__} is discrete; write a family for it"
            )
        unconstrained = biject_to(fn.support).inv(site["value"])
        event_dim = fn.event_dim + jnp.ndim(unconstrained) - jnp.ndim(site["value"])
        latents.append(
            _LatentSite(
                name, fn.support, event_dim, tuple(site["cond_indep_stack"]), site["value"], fn
            )
        )
    if not latents:
        raise ValueError("mean_field_normal: the model has no latent sample sites")
    return latents, plates


@dataclass(frozen=True)
class MeanFieldNormal:
    """A mean-field Normal family on the unconstrained space of ``model``'s latents.

    Parameters are ``{"loc": {site: u}, "log_scale": {site: log σ}}`` in the unconstrained space.
    Call it as ``family(params, *args)`` with the model's arguments.
    """

    model: Callable
    init_scale: float = 0.1
    init_loc: str = "median"

    def init(self, key, *args, **kwargs) -> dict:
        """Initial parameters: ``loc`` from the prior (``"median"`` of 15 draws, one ``"sample"``)
        or ``"zeros"``; ``σ = init_scale``. One compiled program, cached on the family and the
        arguments' shapes (non-array arguments are static)."""
        arrays, static = arguments.split((args, kwargs))
        return _init(self, static, key, arrays)

    def _init(self, key, args, kwargs) -> dict:
        proto_key, loc_key = jax.random.split(key)
        latents, _ = _model_sites(self.model, proto_key, args, kwargs, full_plates=True)
        loc, log_scale = {}, {}
        for index, site in enumerate(latents):
            transform = biject_to(site.support)
            if self.init_loc == "zeros":
                u = jnp.zeros_like(transform.inv(site.value))
            elif self.init_loc == "sample":
                u = transform.inv(site.value)
            else:
                draws = site.fn.sample(jax.random.fold_in(loc_key, index), (15,))
                # broadcast over the site's sample_shape, which ``fn`` does not carry
                u = jnp.broadcast_to(
                    jnp.median(transform.inv(draws), axis=0), jnp.shape(transform.inv(site.value))
                )
            loc[site.name] = u
            log_scale[site.name] = jnp.full(jnp.shape(u), jnp.log(self.init_scale), u.dtype)
        return {"loc": loc, "log_scale": log_scale}

    def __call__(self, params, *args, **kwargs):
        """Sample every latent site that ``params`` has parameters for (see the class)."""
        latents, plate_args = _model_sites(
            self.model, jax.random.key(0), args, kwargs, full_plates=False
        )
        plates = {}
        values = {}
        for site in latents:
            if site.name not in params["loc"]:
                # latent only in this call (``y=None`` for ``vj.predictive``): the model samples
                # it; objectives refuse a model latent that the family does not sample
                continue
            loc, log_scale = params["loc"][site.name], params["log_scale"][site.name]
            with contextlib.ExitStack() as stack:
                for frame in site.frames:
                    if frame.name not in plates:
                        size, subsample_size = plate_args[frame.name]
                        plates[frame.name] = plate(frame.name, size, subsample_size, frame.dim)
                    indices = stack.enter_context(plates[frame.name])
                    size, subsample_size = plate_args[frame.name]
                    if subsample_size not in (None, size):
                        axis = frame.dim - site.event_dim
                        loc = jnp.take(loc, indices, axis=axis)
                        log_scale = jnp.take(log_scale, indices, axis=axis)
                base = npd.Normal(loc, jnp.exp(log_scale)).to_event(site.event_dim)
                if not _is_real(site.support):
                    base = npd.TransformedDistribution(base, biject_to(site.support))
                values[site.name] = sample(site.name, base)
        return values

    def median(self, params, *args, **kwargs) -> dict:
        """The family's median of each latent, in the constrained space."""
        latents, _ = _model_sites(self.model, jax.random.key(0), args, kwargs, full_plates=True)
        return {
            s.name: biject_to(s.support)(params["loc"][s.name])
            for s in latents
            if s.name in params["loc"]
        }


def mean_field_normal(model: Callable, *, init_scale: float = 0.1, init_loc: str = "median"):
    """A mean-field Normal auto-family for ``model`` (see the module docstring).

    Args:
      model: a program ``model(*args)`` with continuous latent sites.
      init_scale: initial standard deviation ``σ`` in the unconstrained space.
      init_loc: ``"median"`` (of 15 prior draws), ``"sample"`` (one prior draw) or ``"zeros"``.
    """
    if init_loc not in ("median", "sample", "zeros"):
        raise ValueError(
            f"mean_field_normal: init_loc must be median|sample|zeros, got {init_loc!r}"
        )
    if not init_scale > 0:
        raise ValueError(f"mean_field_normal: init_scale must be positive, got {init_scale!r}")
    return MeanFieldNormal(model, float(init_scale), init_loc)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init(family: MeanFieldNormal, static, key, arrays) -> dict:
    args, kwargs = arguments.merge(arrays, static)
    return family._init(key, args, kwargs)
