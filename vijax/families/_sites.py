r"""What the auto-families share: a model's latent sites and the unconstrained space they span.

A latent site ``s`` with support ``S_s`` is mapped to an unconstrained array ``u_s`` by NumPyro's
bijection ``T_s = biject_to(S_s)``, ``z_s = T_s(u_s)``. A family ``q(u)`` on the unconstrained
space is a density on the constrained values by the change of variables

    log q(z) = log q(u) − Σ_s log|det ∂T_s/∂u_s|,   u_s = T_s⁻¹(z_s),

(Kucukelbir et al. 2017, "Automatic Differentiation Variational Inference"). The joint families
lay the sites out in one vector ``u = (u_1, ..., u_S)`` in the model's order (:func:`ravel`).

A *prototype run* reads the sites: the model runs with each continuous latent set as NumPyro's
``init_to_uniform`` sets it, ``T_s(u_s)`` with ``u_s ~ Uniform(−2, 2)``, a value in the support
that needs no sampler, so improper priors (``ImproperUniform``) and distributions without one
are read like any other.

Initialization (:func:`initial_loc`) starts from the prior (NumPyro's ``init_to_median`` of 15
draws or ``init_to_sample``, both falling back to ``init_to_uniform`` for a site that cannot be
drawn from), from zeros, or from the mode of the unconstrained log joint

    ℓ(u) = log p(x, T(u)) + Σ_s log|det ∂T_s/∂u_s|

found with L-BFGS (optax); the Laplace approximation uses the Hessian of ``−ℓ`` at that mode
(:func:`negative_hessian`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as npd
import optax
from jax.scipy.special import ndtri
from numpyro.distributions import constraints
from numpyro.distributions.transforms import ReshapeTransform, biject_to
from numpyro.infer.initialization import init_to_median, init_to_sample, init_to_uniform

from vijax.core import arguments, block, log_density, seed, substitute, trace

INIT_LOCS = ("median", "sample", "zeros", "map")


@dataclass(frozen=True)
class LatentSite:
    """One latent site of a model, read from a prototype run.

    ``event_dim`` counts the event dimensions of the *unconstrained* value, whose shape is
    ``shape`` (plates and ``sample_shape`` included).
    """

    name: str
    support: constraints.Constraint
    event_dim: int
    frames: tuple  # CondIndepStackFrame(name, dim, size) of the site
    value: jax.Array  # the prototype value (constrained; see the module docstring)
    fn: npd.Distribution  # the model's distribution at the prototype
    shape: tuple = ()

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def transform(self):
        return biject_to(self.support)


def is_real(support) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def model_sites(model, key, args, kwargs, *, full_plates: bool, family: str = "mean_field_normal"):
    """Latent sites and plates ``{name: (size, subsample_size)}`` of ``model`` (blocked run).

    With ``full_plates`` the subsampled plates are substituted with all their indices, so each
    local latent has one row per element. The latents take prototype values (module docstring).
    """
    tr = _strategy_trace(model, init_to_uniform, key, args, kwargs)
    plates = {n: s["args"] for n, s in tr.items() if s["type"] == "plate"}
    if full_plates and any(sub not in (None, size) for size, sub in plates.values()):
        tr = _strategy_trace(model, init_to_uniform, key, args, kwargs, full_indices(plates))
    latents = []
    for name, site in tr.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        fn = site["fn"]
        if fn.support.is_discrete:
            raise ValueError(
                f"site {name!r}: {family} needs continuous latents, but "
                f"{type(fn).__name__} is discrete; write a family for it"
            )
        transform = biject_to(fn.support)
        shape = tuple(transform.inverse_shape(jnp.shape(site["value"])))
        event_dim = fn.event_dim + len(shape) - jnp.ndim(site["value"])
        latents.append(
            LatentSite(
                name,
                fn.support,
                event_dim,
                tuple(site["cond_indep_stack"]),
                site["value"],
                fn,
                shape,
            )
        )
    if not latents:
        raise ValueError(f"{family}: the model has no latent sample sites")
    return latents, plates


def _strategy_trace(model, strategy, key, args, kwargs, plate_indices=None):
    """A blocked trace of ``model`` whose latents take the values of a NumPyro init strategy.

    ``plate_indices`` (from :func:`full_indices`) substitutes the subsampled plates' indices.
    """
    program = substitute(model, data=plate_indices) if plate_indices else model
    with block(), _quiet_subsample_warning():
        return trace(substitute(seed(program, key), substitute_fn=strategy)).get_trace(
            *args, **kwargs
        )


def full_indices(plates) -> dict:
    """All indices of every subsampled plate (to substitute for a full-data run)."""
    return {n: jnp.arange(size) for n, (size, sub) in plates.items() if sub not in (None, size)}


@contextlib.contextmanager
def _quiet_subsample_warning():
    # NumPyro warns that the substituted indices outnumber subsample_size: intended here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="subsample_size does not match")
        yield


def refuse_subsampled(latents, plates, family: str) -> None:
    """Joint families need every element of a plate: refuse a subsampled one, naming it."""
    for site in latents:
        for frame in site.frames:
            size, subsample_size = plates[frame.name]
            if subsample_size not in (None, size):
                raise ValueError(
                    f"site {site.name!r} lies in plate {frame.name!r}, subsampled "
                    f"({subsample_size} of {size}): {family} couples all elements of a plate, "
                    "so it needs the full plate (use mean_field_normal or an amortized family "
                    "for subsampled local latents)"
                )


# ----------------------------------------------------------------------------------------------
# The unconstrained space
# ----------------------------------------------------------------------------------------------


def unconstrain(site: LatentSite, value):
    return value if is_real(site.support) else site.transform.inv(value)


def constrain(site: LatentSite, u):
    return u if is_real(site.support) else site.transform(u)


def ravel(latents, tree: dict) -> jax.Array:
    """Concatenate the per-site arrays of ``tree`` in the model's site order."""
    return jnp.concatenate([jnp.reshape(tree[s.name], (-1,)) for s in latents])


def unravel(latents, flat) -> dict:
    """Inverse of :func:`ravel`."""
    out, offset = {}, 0
    for s in latents:
        out[s.name] = jnp.reshape(flat[offset : offset + s.size], s.shape)
        offset += s.size
    return out


def offsets(latents) -> list[int]:
    positions, offset = [], 0
    for s in latents:
        positions.append(offset)
        offset += s.size
    return positions


def joint_site_distribution(base: npd.Distribution, site: LatentSite) -> npd.Distribution:
    """A distribution on the flat unconstrained ``u_s`` (event ``(d,)``) as one on ``z_s``.

    ``u_s`` is reshaped to the site's shape and pushed through ``biject_to(support)``; the
    result has the site's full shape as its event shape (plates included: a joint family does
    not factorize over them).
    """
    parts = []
    if site.shape != (site.size,):
        parts.append(ReshapeTransform(site.shape, (site.size,)))
    if not is_real(site.support):
        parts.append(site.transform)
    return npd.TransformedDistribution(base, parts) if parts else base


def log_abs_det_jacobian(latents, u: dict) -> jax.Array:
    total = jnp.zeros(())
    for s in latents:
        if not is_real(s.support):
            z = s.transform(u[s.name])
            total = total + jnp.sum(s.transform.log_abs_det_jacobian(u[s.name], z))
    return total


def log_joint(model, latents, plates, args, kwargs, *, jacobian: bool):
    """``u ↦ log p(x, T(u)) (+ Σ log|det ∂T/∂u|)`` on the model's full plates."""
    full = full_indices(plates)
    program = substitute(model, data=full) if full else model

    def fn(u: dict) -> jax.Array:
        values = {s.name: constrain(s, u[s.name]) for s in latents}
        with block(), _quiet_subsample_warning():
            total, _ = log_density(program, values, *args, **kwargs)
        if jacobian:
            total = total + log_abs_det_jacobian(latents, u)
        return total

    return fn


# ----------------------------------------------------------------------------------------------
# Initialization
# ----------------------------------------------------------------------------------------------


def check_init(family: str, init_loc, init_scale, map_steps) -> None:
    """Validate the initialization arguments shared by the Gaussian auto-families."""
    if init_loc not in INIT_LOCS:
        raise ValueError(
            f"{family}: init_loc must be one of {'|'.join(INIT_LOCS)}, got {init_loc!r}"
        )
    if isinstance(init_scale, str):
        if init_scale != "laplace":
            raise ValueError(
                f"{family}: init_scale must be a positive float or 'laplace', got {init_scale!r}"
            )
        if init_loc != "map":
            raise ValueError(
                f"{family}: init_scale='laplace' needs init_loc='map' (the Hessian is taken at "
                f"the mode), got init_loc={init_loc!r}"
            )
    elif isinstance(init_scale, bool) or not (
        isinstance(init_scale, int | float) and init_scale > 0
    ):
        raise ValueError(f"{family}: init_scale must be positive, got {init_scale!r}")
    if isinstance(map_steps, bool) or not isinstance(map_steps, int) or map_steps < 1:
        raise ValueError(f"{family}: map_steps must be a positive int, got {map_steps!r}")


def prior_loc(model, latents, plates, how: str, key, args, kwargs) -> dict:
    """``u`` per site: zeros, or from a run of ``model`` under NumPyro's ``init_to_median``
    (15 draws, the median taken in the unconstrained space) or ``init_to_sample`` (one draw).

    Each site is drawn given the values its parents took in the same run; a site that cannot
    be drawn from (``ImproperUniform``) gets ``init_to_uniform``'s value.
    """
    if how == "zeros":
        return {s.name: jnp.zeros(s.shape, jnp.result_type(float)) for s in latents}
    strategy = init_to_median(num_samples=15) if how == "median" else init_to_sample
    tr = _strategy_trace(model, strategy, key, args, kwargs, full_indices(plates))
    return {s.name: jnp.broadcast_to(unconstrain(s, tr[s.name]["value"]), s.shape) for s in latents}


def maximize(fn, start: dict, latents, num_steps: int):
    """Maximize ``fn(u)`` from ``start`` with L-BFGS; ``(u, info)``.

    Stops after ``num_steps`` iterations or when the gradient norm falls below
    ``1e-6 (1 + |fn|)``.
    """

    def objective(flat):
        return -fn(unravel(latents, flat))

    # the zoom line search (strong Wolfe conditions) uses gradients as well as values, so it
    # keeps making progress where float32 values no longer resolve a decrease (a backtracking
    # search compiles faster but stalls about 1e-4 away from the mode)
    optimizer = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry):
        flat, state, count, _, _ = carry
        value, grad = value_and_grad(flat, state=state)
        updates, state = optimizer.update(
            grad, state, flat, value=value, grad=grad, value_fn=objective
        )
        return optax.apply_updates(flat, updates), state, count + 1, value, optax.tree.norm(grad)

    def keep_going(carry):
        _, _, count, value, grad_norm = carry
        converged = grad_norm <= 1e-6 * (1.0 + jnp.abs(value))
        return (count < num_steps) & ~converged & jnp.isfinite(value)

    flat0 = ravel(latents, start)
    zero, inf = jnp.zeros((), flat0.dtype), jnp.asarray(jnp.inf, flat0.dtype)
    carry = (flat0, optimizer.init(flat0), 0, zero, inf)
    flat, *_ = jax.lax.while_loop(keep_going, step, carry)
    value, grad = jax.value_and_grad(objective)(flat)
    info = {"map_log_joint": -value, "map_grad_norm": optax.tree.norm(grad)}
    return unravel(latents, flat), info


def negative_hessian(fn, latents, u: dict) -> jax.Array:
    """``−∇² fn`` at ``u`` over the flat unconstrained vector (a ``D × D`` matrix)."""
    flat = ravel(latents, u)
    return -jax.hessian(lambda v: fn(unravel(latents, v)))(flat)


def initial_loc(family, name: str, key, args, kwargs, *, jacobian: bool, joint: bool):
    """``(latents, loc, info, log_joint_fn)`` for an auto-family's ``init``.

    ``family`` carries ``model``, ``init_loc`` and ``map_steps``; ``name`` is its name in
    errors. A ``joint`` family refuses subsampled plates; a factorized one reads the full plates.
    ``log_joint_fn`` includes the log-Jacobian when ``jacobian``.
    """
    proto_key, loc_key = jax.random.split(key)
    model = family.model
    latents, plates = model_sites(
        model, proto_key, args, kwargs, full_plates=not joint, family=name
    )
    if joint:
        refuse_subsampled(latents, plates, name)
    fn = log_joint(model, latents, plates, args, kwargs, jacobian=jacobian)
    start = "median" if family.init_loc == "map" else family.init_loc
    loc = prior_loc(model, latents, plates, start, loc_key, args, kwargs)
    info = {}
    if family.init_loc == "map":
        loc, info = maximize(fn, loc, latents, family.map_steps)
    return latents, loc, info, fn


def precision_info(precision) -> dict:
    """What :func:`run_init` checks of a Hessian: its smallest eigenvalue and where it lives."""
    eigenvalues, vectors = jnp.linalg.eigh(precision)
    return {
        "hessian_min_eigenvalue": eigenvalues[0],
        "hessian_worst_index": jnp.argmax(jnp.abs(vectors[:, 0])),
    }


def run_init(family, name: str, key, args, kwargs):
    """Run ``family._init`` compiled (cached on the family and shapes) and check its info.

    The checks need concrete values: under an outer ``jit`` they are skipped (a Laplace scale
    of a Hessian that is not positive definite is then NaN).
    """
    arrays, static = arguments.split((args, kwargs))
    params, info = _jitted_init(family, static, key, arrays)
    try:
        info = jax.tree.map(np.asarray, info)
    except jax.errors.TracerArrayConversionError:
        return params
    if "map_log_joint" in info and not np.isfinite(info["map_log_joint"]):
        raise ValueError(
            f"{name}: the MAP search (init_loc='map') reached a non-finite log joint "
            f"({float(info['map_log_joint'])}); check the model and its data"
        )
    if "hessian_min_eigenvalue" in info:
        smallest = float(info["hessian_min_eigenvalue"])
        if not smallest > 0:
            latents, _ = model_sites(
                family.model, jax.random.key(0), args, kwargs, full_plates=False, family=name
            )
            index = int(info["hessian_worst_index"])
            site = next(
                s.name
                for s, start in zip(latents, offsets(latents))
                if start <= index < start + s.size
            )
            raise ValueError(
                f"{name}: the Hessian of the negative log joint at the mode is not positive "
                f"definite (smallest eigenvalue {smallest:.3g}, direction mostly along site "
                f"{site!r}): the mode is not a strict maximum, or the MAP search did not "
                "converge (raise map_steps), so the Laplace approximation does not exist"
            )
    if "map_grad_norm" in info:
        scale = 1.0 + abs(float(info["map_log_joint"]))
        if float(info["map_grad_norm"]) > 1e-3 * scale:
            warnings.warn(
                f"{name}: the MAP search stopped with gradient norm "
                f"{float(info['map_grad_norm']):.3g}; raise map_steps for a closer mode",
                RuntimeWarning,
                stacklevel=3,
            )
    return params


@functools.partial(jax.jit, static_argnums=(0, 1))
def _jitted_init(family, static, key, arrays):
    args, kwargs = arguments.merge(arrays, static)
    return family._init(key, args, kwargs)


def compiled(summary, family, params, leading: tuple, args, kwargs):
    """``summary(family, params, *leading, *args, **kwargs)`` as one compiled program, cached
    on the summary, the family and the arguments' shapes (called eagerly, a summary would
    compile each of its small operations on its own)."""
    arrays, static = arguments.split((args, kwargs))
    return _compiled(summary, family, static, params, leading, arrays)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _compiled(summary, family, static, params, leading, arrays):
    args, kwargs = arguments.merge(arrays, static)
    return summary(family, params, *leading, *args, **kwargs)


def median_of(family, params, *args, **kwargs) -> dict:
    """``T_s(μ_s)`` per site from the family's unconstrained marginals ``(site, μ, σ)``."""
    return {
        s.name: constrain(s, loc)
        for s, loc, _ in family._unconstrained_marginals(params, *args, **kwargs)
    }


def quantiles_of(family, params, levels, *args, **kwargs) -> dict:
    """Marginal quantiles per site from the family's unconstrained Normal marginals."""
    return {
        s.name: constrained_quantiles(s, normal_quantile(loc, scale), levels)
        for s, loc, scale in family._unconstrained_marginals(params, *args, **kwargs)
    }


# ----------------------------------------------------------------------------------------------
# Quantiles
# ----------------------------------------------------------------------------------------------


def quantile_levels(q) -> jax.Array:
    """``q`` as an array of levels in (0, 1) (a ``ValueError`` when a known level is not)."""
    q = jnp.asarray(q, dtype=jnp.result_type(float))
    try:
        known = np.asarray(q)
    except jax.errors.TracerArrayConversionError:
        return q
    if not np.all((known > 0) & (known < 1)):
        raise ValueError(f"quantiles: q must lie in (0, 1), got {known.tolist()}")
    return q


def _elementwise(site: LatentSite) -> bool:
    transform = site.transform
    return transform.domain.event_dim == 0 and transform.codomain.event_dim == 0


def constrained_quantiles(site: LatentSite, unconstrained_quantile, q) -> jax.Array:
    r"""The ``q``-quantiles of ``z_s = T_s(u_s)`` from those of ``u_s`` (leading axis ``q``).

    ``unconstrained_quantile(level)`` returns the marginal quantiles of ``u_s`` at ``level``
    (shape ``level.shape + site.shape``). A monotone elementwise ``T_s`` maps quantiles to
    quantiles, increasing ones directly and decreasing ones with ``q ↔ 1 − q``: the result is
    ``min(T(u_q), T(u_{1−q}))`` below the median and the ``max`` above. For a multivariate
    ``T_s`` (simplex, ordered, ...) it is ``T_s`` of the vector of marginal quantiles, the
    convention of :meth:`median` (not the marginal quantile of each coordinate).
    """
    lower = constrain(site, unconstrained_quantile(q))
    if is_real(site.support) or not _elementwise(site):
        return lower
    upper = constrain(site, unconstrained_quantile(1.0 - q))
    below = jnp.reshape(q < 0.5, q.shape + (1,) * len(site.shape))
    return jnp.where(below, jnp.minimum(lower, upper), jnp.maximum(lower, upper))


def normal_quantile(loc, scale):
    """``level ↦ loc + scale Φ⁻¹(level)`` with ``level`` as leading axes."""

    def quantile(level):
        z = jnp.reshape(ndtri(level), level.shape + (1,) * jnp.ndim(loc))
        return loc + scale * z

    return quantile
