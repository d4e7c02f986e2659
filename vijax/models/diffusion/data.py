"""Data for diffusion models: a 2-D Gaussian mixture and scikit-learn's digits on 17 levels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vijax.data import digits

__all__ = ["digit_levels", "gaussian_mixture_2d", "independent_pixel_bits_per_dim"]


def gaussian_mixture_2d(
    key: jax.Array, num_samples: int, num_components: int = 8, radius: float = 1.5, std=0.15
) -> jax.Array:
    """``num_samples`` points from an equal mixture of ``N(r (cos θ_k, sin θ_k), std² I)``.

    Example:
        >>> gaussian_mixture_2d(jax.random.key(0), 10).shape
        (10, 2)
    """
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    component_key, noise_key = jax.random.split(key)
    k = jax.random.randint(component_key, (num_samples,), 0, num_components)
    angle = 2 * jnp.pi * k / num_components
    centers = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return centers + std * jax.random.normal(noise_key, (num_samples, 2))


def digit_levels() -> tuple[jax.Array, jax.Array]:
    """scikit-learn's digits as 64-vectors on the 17 levels ``linspace(-1, 1, 17)``, and labels.

    The pixel counts ``k ∈ {0..16}`` map to ``x = k/8 − 1``.

    Example:
        >>> x, y = digit_levels()
        >>> x.shape, float(x.min()), float(x.max())
        ((1797, 64), -1.0, 1.0)
    """
    images, labels = digits()
    counts = jnp.round(images.reshape(len(images), -1) * 16.0)
    return counts / 8.0 - 1.0, labels


def independent_pixel_bits_per_dim(x_train, x_test, levels: int = 17, pseudocount=1.0) -> float:
    """Bits/dim on ``x_test`` of independent per-pixel categoricals fit on ``x_train``.

    The baseline a diffusion model should beat (Laplace-smoothed with ``pseudocount``).

    Example:
        >>> x, _ = digit_levels()
        >>> 2.0 < independent_pixel_bits_per_dim(x[:1000], x[1000:]) < 3.0
        True
    """

    def index(x):
        return np.clip(np.round((np.asarray(x) + 1.0) * (levels - 1) / 2.0), 0, levels - 1)

    train, test = index(x_train).astype(int), index(x_test).astype(int)
    counts = np.stack([(train == k).sum(0) for k in range(levels)], -1) + pseudocount
    probs = counts / counts.sum(-1, keepdims=True)
    logp = np.log2(np.take_along_axis(probs[None], test[..., None], -1)[..., 0])
    return float(-logp.mean())
