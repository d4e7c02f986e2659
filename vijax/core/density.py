"""Log-densities of traces and programs.

A trace records, per sample site, the value ``x``, the distribution ``p``, the plate context and
the scale ``s`` (``size / subsample_size`` of subsampled plates, times any ``scale`` handler).
The site's log-density term is ``s · log p(x)`` (masked entries contribute zero), and the joint
log-density of a program is the sum of its terms:

    log p(x_1, ..., x_n) = Σ_i s_i · Σ_{elements} log p_i(x_i | x_<i).

Every array keeps its plate axes; :func:`site_axes` names them, which is what the estimators use
to align a site's score with the terms that share its plate index.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from numpyro.primitives import Messenger

from vijax.core import fast_density, handlers

__all__ = ["check_site_shape", "log_density", "site_axes", "site_log_prob"]


def site_axes(site: dict, ndim: int) -> tuple[str | None, ...]:
    """Names of the ``ndim`` rightmost batch axes of a site's log-density (``None`` = no plate)."""
    by_dim = {frame.dim: frame.name for frame in site.get("cond_indep_stack", ())}
    return tuple(by_dim.get(i - ndim) for i in range(ndim))


#: a site key set on sites whose value is an enumerated support point (it broadcasts along the
#: site's plates, as in Pyro's parallel enumeration)
ENUMERATED = "enumerated_value"


def check_site_shape(site: dict) -> None:
    """Refuse a value whose shape disagrees with its distribution (names the site).

    A latent value must have the distribution's shape (with its plates and ``sample_shape``)
    exactly. An observation may broadcast *to* the distribution's shape (a scalar shared by a
    plate) or the distribution may broadcast to it (NumPyro's unplated observations), but
    broadcasting both ways, e.g. ``(N, 1)`` against ``(N,)``, silently builds an ``N × N``
    log-density; that, and shapes that do not broadcast at all, is a ``ValueError``.
    """
    value_shape = tuple(jnp.shape(site["value"]))
    fn_shape = tuple((site.get("kwargs") or {}).get("sample_shape", ())) + tuple(site["fn"].shape())
    event_shape = tuple(site["fn"].event_shape)
    what = "observation" if site.get("is_observed") else "value"
    try:
        joint = jnp.broadcast_shapes(value_shape, fn_shape)
    except ValueError:
        joint = None
    event_ok = not event_shape or value_shape[len(value_shape) - len(event_shape) :] == event_shape
    # a latent's value must have the distribution's shape exactly (a broadcast one would score
    # fewer or more terms than the distribution has); observations may broadcast one way
    # (an enumerated value, one per support point with size-1 plate axes, broadcasts too)
    latent_ok = (
        site.get("is_observed", True)
        or value_shape == fn_shape
        or (site.get(ENUMERATED) and joint == fn_shape)
    )
    if joint is None or joint not in (value_shape, fn_shape) or not event_ok or not latent_ok:
        raise ValueError(
            f"site {site['name']!r}: {what} has shape {value_shape} but the distribution has "
            f"batch shape {tuple(site['fn'].batch_shape)} and event shape {event_shape} "
            f"(with its plates: {fn_shape})"
        )


#: a site key holding a dict shared by the site's message and its trace copies: the site's
#: unscaled log-density, computed once (the objective's term and the score-function record
#: read the same array, so the program holds one log-density and one backward pass for it)
LOG_PROB_CACHE = "log_prob_cache"


def site_log_prob(site: dict, *, scaled: bool = True) -> jax.Array:
    """The elementwise log-density of a sample site (batch shape), times its scale."""
    fn, value = site["fn"], site["value"]
    cache = site.get(LOG_PROB_CACHE)
    key = (id(fn), id(value))
    if cache is not None and key in cache:
        log_prob = cache[key][0]
    else:
        check_site_shape(site)
        intermediates = site.get("intermediates")
        if intermediates:
            log_prob = fn.log_prob(value, intermediates)
        else:
            log_prob = fast_density.log_prob(fn, value)
        if cache is not None:  # keep fn and value alive so their ids stay theirs
            cache[key] = (log_prob, fn, value)
    scale = site.get("scale")
    if scaled and scale is not None:
        log_prob = scale * log_prob
    return log_prob


class _FreshDraws(Messenger):
    """Collect the names of sample sites that no handler gave a value (they would be drawn)."""

    def __enter__(self):
        self.names: list[str] = []
        super().__enter__()
        return self

    def process_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and msg["value"] is None:
            self.names.append(msg["name"])


def log_density(
    program, values: dict[str, Any], *args, **kwargs
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Joint log-density of ``program`` at the latent ``values``, and its per-site terms.

    Args:
      program: a program (model or family); its observed sites use their ``obs``.
      values: a value for every latent (unobserved) sample site, keyed by name.
      *args, **kwargs: the program's arguments.

    Returns:
      ``(log_joint, terms)`` where ``terms[name]`` is the site's summed, scaled log-density.

    Raises:
      ValueError: a name in ``values`` is not a site, a latent site has no value, or a value's
        shape disagrees with its distribution.

    Example:
        >>> import jax.numpy as jnp, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def model():
        ...     z = vj.sample("z", dist.Normal(0.0, 1.0))
        ...     vj.sample("x", dist.Normal(z, 1.0), obs=1.0)
        >>> lp, terms = log_density(model, {"z": 0.0})
        >>> round(float(lp), 4), sorted(terms)
        (-2.3379, ['x', 'z'])
    """
    substituted = handlers.substitute(program, data=dict(values))
    with _FreshDraws() as fresh:
        tr = handlers.trace(handlers.seed(substituted, jax.random.key(0))).get_trace(
            *args, **kwargs
        )
    if fresh.names:
        raise ValueError(f"log_density: latent site(s) {fresh.names} have no value in `values`")
    terms = {
        name: jnp.sum(site_log_prob(site)) for name, site in tr.items() if site["type"] == "sample"
    }
    total = sum(terms.values(), start=jnp.zeros(()))
    return total, terms
