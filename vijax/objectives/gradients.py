"""Gradient surgery used by objective-level estimators (DReG, reweighted wake-sleep)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["scale_gradient"]


@jax.custom_vjp
def scale_gradient(x, factor):
    """The identity on ``x`` whose cotangent is multiplied by ``factor`` (held fixed).

    The output carries ``0 · factor`` so that under ``vmap`` over particles (``factor``
    batched, ``x`` shared) each particle gets its own copy, and so its own cotangent.

    Example:
        >>> import jax
        >>> float(jax.grad(lambda x: scale_gradient(x, 3.0) ** 2)(1.0))
        6.0
    """
    return x + 0.0 * factor  # depends on factor: batched with it (zeros_like would not be)


def _scale_gradient_fwd(x, factor):
    return scale_gradient(x, factor), factor


def _scale_gradient_bwd(factor, cotangent):
    return jnp.asarray(cotangent * factor), jnp.zeros_like(factor)


scale_gradient.defvjp(_scale_gradient_fwd, _scale_gradient_bwd)
