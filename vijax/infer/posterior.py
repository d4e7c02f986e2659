"""Posterior draws from a fitted family, and the model's predictive distribution.

Both return site-keyed arrays with a leading axis of ``num_samples``. Draws are made in batches
of ``batch_size`` with ``lax.map`` over ``vmap``-ed batches, so memory stays bounded however many
samples are asked for.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from vijax.core import handlers

__all__ = ["predictive", "sample_posterior"]


def _batched(draw_one: Callable, key, num_samples: int, batch_size: int | None):
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if batch_size is not None and (
        not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    keys = jax.random.split(key, num_samples)
    if batch_size is None or batch_size >= num_samples:
        return jax.vmap(draw_one)(keys)
    if num_samples % batch_size:
        raise ValueError(f"batch_size {batch_size} must divide num_samples {num_samples}")
    out = jax.lax.map(jax.vmap(draw_one), keys.reshape(-1, batch_size, *keys.shape[1:]))
    return jax.tree.map(lambda x: x.reshape(num_samples, *x.shape[2:]), out)


def _sites(tr, *, include_observed: bool = False) -> dict:
    return {
        name: site["value"]
        for name, site in tr.items()
        if (site["type"] == "sample" and (include_observed or not site["is_observed"]))
        or site["type"] == "deterministic"
    }


def sample_posterior(
    family: Callable, params, key, num_samples: int, *args, batch_size: int | None = None, **kwargs
) -> dict:
    """``num_samples`` draws of every latent (and deterministic) site of ``family(params, *args)``.

    Example:
        >>> import jax, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def family(params):
        ...     vj.sample("z", dist.Normal(params, 1.0))
        >>> vj.sample_posterior(family, 0.0, jax.random.key(0), 100)["z"].shape
        (100,)
    """

    def draw_one(k):
        tr = handlers.trace(handlers.seed(family, k)).get_trace(params, *args, **kwargs)
        return _sites(tr)

    return _batched(draw_one, key, num_samples, batch_size)


def predictive(
    model: Callable,
    family: Callable,
    params,
    key,
    num_samples: int,
    *args,
    batch_size: int | None = None,
    **kwargs,
) -> dict:
    """Draws from ``model(*args)`` with its latents from the fitted family.

    For each posterior draw of the latents, the model runs with them substituted; its other
    unobserved sites (e.g. an observation site called with ``y=None``) are sampled. Returns
    every unobserved sample site and deterministic site of the model.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def model(y=None):
        ...     z = vj.sample("z", dist.Normal(0.0, 1.0))
        ...     vj.sample("y", dist.Normal(z, 1.0), obs=y)
        >>> def family(params, y=None):
        ...     vj.sample("z", dist.Normal(params, 0.1))
        >>> out = vj.predictive(model, family, 2.0, jax.random.key(0), 50)
        >>> sorted(out), out["y"].shape
        (['y', 'z'], (50,))
    """

    def draw_one(k):
        family_key, model_key = jax.random.split(k)
        family_trace = handlers.trace(handlers.seed(family, family_key)).get_trace(
            params, *args, **kwargs
        )
        latents = {
            n: s["value"]
            for n, s in family_trace.items()
            if s["type"] == "sample" and not s["is_observed"]
        }
        # the family's plate indices too: with a subsampled plate the model must use the rows
        # whose local latents the family drew (as the objectives do, by replaying the family)
        plates = {n: s for n, s in family_trace.items() if s["type"] == "plate"}
        substituted = handlers.replay(handlers.substitute(model, data=latents), trace=plates)
        tr = handlers.trace(handlers.seed(substituted, model_key)).get_trace(*args, **kwargs)
        return _sites(tr)

    return _batched(draw_one, key, num_samples, batch_size)
