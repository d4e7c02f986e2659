"""Posterior draws from a fitted family, and the model's predictive distribution.

Both return site-keyed arrays with a leading axis of ``num_samples``. Draws are made in batches
of ``batch_size`` with ``lax.map`` over ``vmap``-ed batches, so memory stays bounded however many
samples are asked for. Each is one compiled program, cached on the program, the sizes and the
arguments' shapes (array arguments are traced, other Python values are static).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable

import jax

from vijax.core import arguments, handlers, is_marginalized

__all__ = ["predictive", "sample_posterior"]


def _check_sizes(num_samples, batch_size) -> tuple[int, int | None]:
    def positive_int(value, name):
        try:
            if isinstance(value, bool):
                raise TypeError
            value = operator.index(value)
        except TypeError:
            raise ValueError(f"{name} must be a positive int, got {value!r}") from None
        if value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
        return value

    num_samples = positive_int(num_samples, "num_samples")
    if batch_size is not None:
        batch_size = positive_int(batch_size, "batch_size")
        if batch_size < num_samples and num_samples % batch_size:
            raise ValueError(f"batch_size {batch_size} must divide num_samples {num_samples}")
    return num_samples, batch_size


def _batched(draw_one: Callable, key, num_samples: int, batch_size: int | None):
    keys = jax.random.split(key, num_samples)
    if batch_size is None or batch_size >= num_samples:
        return jax.vmap(draw_one)(keys)
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

    num_samples, batch_size = _check_sizes(num_samples, batch_size)
    arrays, static = arguments.split((args, kwargs))
    return _sample_posterior(family, num_samples, batch_size, static, params, key, arrays)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _sample_posterior(family, num_samples, batch_size, static, params, key, arrays):
    args, kwargs = arguments.merge(arrays, static)

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

    num_samples, batch_size = _check_sizes(num_samples, batch_size)
    arrays, static = arguments.split((args, kwargs))
    return _predictive(model, family, num_samples, batch_size, static, params, key, arrays)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _predictive(model, family, num_samples, batch_size, static, params, key, arrays):
    args, kwargs = arguments.merge(arrays, static)

    def draw_one(k):
        family_key, model_key = jax.random.split(k)
        family_trace = handlers.trace(handlers.seed(family, family_key)).get_trace(
            params, *args, **kwargs
        )
        latents = {
            n: s["value"]
            for n, s in family_trace.items()
            if s["type"] == "sample" and not s["is_observed"] and not is_marginalized(s)
        }
        # the family's plate indices too: with a subsampled plate the model must use the rows
        # whose local latents the family drew (as the objectives do, by replaying the family)
        plates = {n: s for n, s in family_trace.items() if s["type"] == "plate"}
        substituted = handlers.replay(handlers.substitute(model, data=latents), trace=plates)
        tr = handlers.trace(handlers.seed(substituted, model_key)).get_trace(*args, **kwargs)
        return _sites(tr)

    return _batched(draw_one, key, num_samples, batch_size)
