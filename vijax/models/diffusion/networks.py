r"""Noise-prediction networks ``ε̂(z_t, t)`` for variational diffusion models.

A denoiser is a pair ``init(key) -> params`` and ``apply(params, z, gamma_t, t) -> ε̂`` with
``z`` of shape ``(B, D)`` and ``gamma_t``, ``t`` of shape ``(B,)``. Parameters are plain pytrees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vijax.models.diffusion.schedules import alpha_sigma

__all__ = [
    "Denoiser",
    "categorical_denoiser",
    "gaussian_denoiser",
    "mlp_denoiser",
    "residual_denoiser",
]


class Denoiser(NamedTuple):
    """``init(key) -> params``; ``apply(params, z, gamma_t, t) -> ε̂`` (same shape as ``z``)."""

    init: Callable[[jax.Array], Any]
    apply: Callable[..., jax.Array]


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

    # (fan_in, fan_out, scale) of every dense layer, in order
    layers = [(dim + 2 * frequencies, hidden, 1.0)]
    layers += [(hidden, 2 * hidden, 1.0), (2 * hidden, hidden, 0.5)] * depth
    layers += [(hidden, dim, 0.0)]

    @jax.jit
    def init(key):
        # one normal draw carved into the weight matrices: one compiled program with one
        # random-bits generator, whatever the depth
        sizes = [fan_in * fan_out for fan_in, fan_out, _ in layers]
        noise = jnp.split(jax.random.normal(key, (sum(sizes),)), np.cumsum(sizes)[:-1])
        dense = [
            {
                "w": n.reshape(fan_in, fan_out) * (scale / np.sqrt(fan_in)),
                "b": jnp.zeros(fan_out),
            }
            for n, (fan_in, fan_out, scale) in zip(noise, layers)
        ]
        return {
            "input": dense[0],
            "blocks": [
                {"scale": jnp.ones(hidden), "first": dense[1 + 2 * i], "second": dense[2 + 2 * i]}
                for i in range(depth)
            ],
            "output": dense[-1],
        }

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


def categorical_denoiser(grid, log_probs) -> Denoiser:
    r"""The optimal denoiser for independent per-coordinate categorical data.

    Data ``x_d ∈ {g_1, …, g_K}`` (``grid``), independent with ``P(x_d = g_k) = π_{dk}``
    (``log_probs``: ``(D, K)``). With ``z_t = α_t x + σ_t ε`` the posterior over levels is

        P(x_d = g_k | z_t) ∝ π_{dk} exp(−(z_{t,d} − α_t g_k)² / (2 σ_t²)),

    ``x̂ = E[x | z_t]`` and ``ε̂ = E[ε | z_t] = (z_t − α_t x̂) / σ_t``. With it the VDM's ELBO
    equals the log-likelihood of that independent model (the reverse process is the exact
    time reversal; see :func:`gaussian_denoiser`); a trained correction on top of it
    (:func:`residual_denoiser`) can only gain by modelling the dependence between coordinates.

    Example:
        >>> grid = jnp.asarray([-1.0, 1.0])
        >>> net = categorical_denoiser(grid, jnp.log(jnp.full((1, 2), 0.5)))
        >>> gamma = jnp.full(1, -12.0)  # σ ≈ 0.0025: z = 0.9 is level 1 plus noise
        >>> eps = net.apply({}, jnp.asarray([[0.9]]), gamma, jnp.zeros(1))
        >>> alpha, sigma = alpha_sigma(gamma)
        >>> bool(jnp.allclose(eps, (0.9 - alpha * 1.0) / sigma))
        True
    """
    grid, log_probs = jnp.asarray(grid), jnp.asarray(log_probs)
    if grid.ndim != 1 or log_probs.ndim != 2 or log_probs.shape[1] != grid.shape[0]:
        raise ValueError(
            f"log_probs must have shape (dimension, len(grid)) = (D, {grid.shape[0]}), got "
            f"{log_probs.shape}"
        )

    def init(key):
        del key
        return {}

    def apply(params, z, gamma_t, t):
        del params, t
        alpha, sigma = alpha_sigma(gamma_t[:, None])
        scaled = (z / alpha)[..., None] - grid  # z/α − g_k; variance of z/α is e^{γ}
        logits = log_probs - 0.5 * jnp.exp(-gamma_t)[:, None, None] * scaled**2
        x_hat = jax.nn.softmax(logits, axis=-1) @ grid
        return (z - alpha * x_hat) / sigma

    return Denoiser(init, apply)


def residual_denoiser(base: Denoiser, correction: Denoiser) -> Denoiser:
    r"""``ε̂(z_t, t) = ε̂_base(z_t, t) + ε̂_correction(z_t, t)``.

    Parameters ``{"base": ..., "correction": ...}``. With a zero-initialized correction (as
    :func:`mlp_denoiser`'s output layer) training starts from the base denoiser, e.g. the
    exact one of a simpler model.

    Example:
        >>> net = residual_denoiser(gaussian_denoiser(0.0, 1.0), mlp_denoiser(1, 8, 1))
        >>> p = net.init(jax.random.key(0))
        >>> round(float(net.apply(p, jnp.ones((1, 1)), jnp.zeros(1), jnp.zeros(1))[0, 0]), 4)
        0.7071
    """

    def init(key):
        base_key, correction_key = jax.random.split(key)
        return {"base": base.init(base_key), "correction": correction.init(correction_key)}

    def apply(params, z, gamma_t, t):
        return base.apply(params["base"], z, gamma_t, t) + correction.apply(
            params["correction"], z, gamma_t, t
        )

    return Denoiser(init, apply)
