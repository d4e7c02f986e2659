r"""Noise-prediction networks ``ε̂(z_t, t)`` for variational diffusion models.

A denoiser is a pair ``init(key) -> params`` and ``apply(params, z, gamma_t, t) -> ε̂`` with
``z`` of shape ``(B, D)`` and ``gamma_t``, ``t`` of shape ``(B,)``. Parameters are plain pytrees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vijax.models.diffusion.schedules import alpha_sigma

__all__ = ["Denoiser", "gaussian_denoiser", "mlp_denoiser"]


class Denoiser(NamedTuple):
    """``init(key) -> params``; ``apply(params, z, gamma_t, t) -> ε̂`` (same shape as ``z``)."""

    init: Callable[[jax.Array], Any]
    apply: Callable[..., jax.Array]


def _dense(key, fan_in, fan_out, scale=1.0):
    weight = jax.random.normal(key, (fan_in, fan_out)) * scale / jnp.sqrt(fan_in)
    return {"w": weight, "b": jnp.zeros(fan_out)}


def mlp_denoiser(dim: int, hidden: int = 256, depth: int = 3, frequencies: int = 8) -> Denoiser:
    r"""A residual MLP ``ε̂(z_t, t)`` with a sinusoidal time embedding.

    Input ``[z_t, sin(2^k π t), cos(2^k π t)]_{k < frequencies}``; ``depth`` residual blocks
    ``h ← h + W₂ swish(W₁ LN(h))``; a zero-initialized output layer (``ε̂ = 0`` at the start).

    Example:
        >>> net = mlp_denoiser(2, hidden=16, depth=1)
        >>> p = net.init(jax.random.key(0))
        >>> net.apply(p, jnp.ones((5, 2)), jnp.zeros(5), jnp.full(5, 0.5)).shape
        (5, 2)
    """
    for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth)):
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")

    def init(key):
        keys = jax.random.split(key, 2 * depth + 2)
        params = {
            "input": _dense(keys[0], dim + 2 * frequencies, hidden),
            "blocks": [
                {
                    "scale": jnp.ones(hidden),
                    "first": _dense(keys[1 + 2 * i], hidden, 2 * hidden),
                    "second": _dense(keys[2 + 2 * i], 2 * hidden, hidden, 0.5),
                }
                for i in range(depth)
            ],
            "output": _dense(keys[-1], hidden, dim, 0.0),
        }
        return params

    def apply(params, z, gamma_t, t):
        del gamma_t
        angles = jnp.pi * t[:, None] * 2.0 ** jnp.arange(frequencies)
        h = jnp.concatenate([z, jnp.sin(angles), jnp.cos(angles)], axis=-1)
        h = h @ params["input"]["w"] + params["input"]["b"]
        for block in params["blocks"]:
            u = h - h.mean(-1, keepdims=True)
            u = u * jax.lax.rsqrt((u**2).mean(-1, keepdims=True) + 1e-5) * block["scale"]
            u = jax.nn.swish(u @ block["first"]["w"] + block["first"]["b"])
            h = h + u @ block["second"]["w"] + block["second"]["b"]
        return h @ params["output"]["w"] + params["output"]["b"]

    return Denoiser(init, apply)


def gaussian_denoiser(mean, std) -> Denoiser:
    r"""The optimal denoiser for data ``x ~ N(μ, s² I)``: ``ε̂(z_t) = E[ε | z_t]``.

    With ``z_t = α_t x + σ_t ε``, ``z_t ~ N(α_t μ, α_t² s² + σ_t²)`` and
    ``Cov(ε, z_t) = σ_t``, so ``E[ε | z_t] = σ_t (z_t − α_t μ) / (α_t² s² + σ_t²)``.

    Example:
        >>> net = gaussian_denoiser(0.0, 1.0)
        >>> round(float(net.apply({}, jnp.ones((1, 1)), jnp.zeros(1), jnp.zeros(1))[0, 0]), 4)
        0.7071
    """
    mean, std = jnp.asarray(mean), jnp.asarray(std)

    def init(key):
        del key
        return {}

    def apply(params, z, gamma_t, t):
        del params, t
        alpha, sigma = alpha_sigma(gamma_t[:, None])
        return sigma * (z - alpha * mean) / (alpha**2 * std**2 + sigma**2)

    return Denoiser(init, apply)
