"""Data for diffusion models: 2-D Gaussian mixture, two moons, scikit-learn's 17-level digits
and Fashion-MNIST on its 256 grey levels (the longer option; :func:`fashion_mnist_levels` reads
it with :func:`vijax.data.fashion_mnist`).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import make_moons

from vijax.data import digits, fashion_mnist

__all__ = [
    "digit_levels",
    "fashion_mnist_levels",
    "gaussian_mixture_2d",
    "independent_pixel_bits_per_dim",
    "level_frequencies",
    "two_moons",
]

# make_moons' points have mean (0.5, 0.25) and standard deviations (0.87, 0.50) (noise 0.05)
_MOONS_CENTER = np.asarray([0.5, 0.25])
_MOONS_SCALE = np.asarray([0.87, 0.5])


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


def two_moons(num_samples: int, *, noise: float = 0.05, seed: int = 0) -> jax.Array:
    r"""``num_samples`` points of scikit-learn's two moons, standardized, from a fixed ``seed``.

    ``sklearn.datasets.make_moons(num_samples, noise=noise, random_state=seed)`` draws points on
    the upper half of the unit circle and on the lower half of the unit circle centred at
    ``(1, 0.5)``, each plus ``N(0, noise² I)``; they are mapped by the fixed affine map
    ``x ↦ (x − (0.5, 0.25)) / (0.87, 0.50)`` so each coordinate has mean ≈ 0 and
    standard deviation ≈ 1 (a VDM's ``z_1 ≈ N(0, I)`` then needs no data-dependent scaling).
    The same ``(num_samples, noise, seed)`` always gives the same points.

    Raises:
      ValueError: ``num_samples < 1`` or ``noise < 0``.

    Example:
        >>> x = two_moons(2000, seed=0)
        >>> x.shape, bool(abs(float(x.mean())) < 0.05), bool(abs(float(x.std()) - 1) < 0.05)
        ((2000, 2), True, True)
    """
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    if not float(noise) >= 0.0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    points, _ = make_moons(int(num_samples), noise=float(noise), random_state=int(seed))
    return jnp.asarray((points - _MOONS_CENTER) / _MOONS_SCALE, jnp.result_type(float))


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


def fashion_mnist_levels(
    split: str = "train", data_dir: str | os.PathLike | None = None
) -> tuple[jax.Array, jax.Array]:
    """Fashion-MNIST as 784-vectors on the 256 levels ``linspace(-1, 1, 256)``, and labels.

    The bytes ``k ∈ {0..255}`` (read by :func:`vijax.data.fashion_mnist` from ``data_dir``,
    default ``/usr/share/datasets/fashion-mnist``) map to ``x = 2k/255 − 1``; ``split`` is
    ``"train"`` (60,000 images) or ``"test"`` (10,000).

    Raises:
      FileNotFoundError: the IDX files are missing (the message says how to install them).
    """
    images, labels = fashion_mnist(split, data_dir)
    counts = jnp.round(images.reshape(len(images), -1) * 255.0)
    return counts * (2.0 / 255.0) - 1.0, labels


def level_frequencies(x, levels: int = 17, pseudocount: float = 1.0) -> np.ndarray:
    r"""Per-coordinate level frequencies ``π_{dk} = (n_{dk} + c) / (N + K c)`` of ``x``.

    ``x``: ``(N, D)`` on ``linspace(−1, 1, levels)``; ``n_{dk}`` counts the rows with
    ``x_d`` at level ``k``; ``c = pseudocount`` (Laplace smoothing). Returns ``(D, levels)``,
    rows summing to one: the independent-pixel model of :func:`independent_pixel_bits_per_dim`.

    Example:
        >>> level_frequencies(jnp.asarray([[-1.0], [1.0]]), levels=3, pseudocount=0.0).tolist()
        [[0.5, 0.0, 0.5]]
    """
    index = np.clip(np.round((np.asarray(x) + 1.0) * (levels - 1) / 2.0), 0, levels - 1)
    index = index.astype(np.int64).reshape(-1, np.shape(x)[-1])
    dim = index.shape[-1]
    # one bincount over (coordinate, level) pairs: fast for 256 levels too
    flat = (index + levels * np.arange(dim)).ravel()
    counts = np.bincount(flat, minlength=dim * levels).reshape(dim, levels) + pseudocount
    return counts / counts.sum(-1, keepdims=True)


def independent_pixel_bits_per_dim(x_train, x_test, levels: int = 17, pseudocount=1.0) -> float:
    """Bits/dim on ``x_test`` of independent per-pixel categoricals fit on ``x_train``.

    The baseline a diffusion model should beat (Laplace-smoothed with ``pseudocount``).

    Example:
        >>> x, _ = digit_levels()
        >>> 2.0 < independent_pixel_bits_per_dim(x[:1000], x[1000:]) < 3.0
        True
    """

    probs = level_frequencies(x_train, levels, pseudocount)
    test = np.clip(np.round((np.asarray(x_test) + 1.0) * (levels - 1) / 2.0), 0, levels - 1)
    test = test.astype(int)
    logp = np.log2(np.take_along_axis(probs[None], test[..., None], -1)[..., 0])
    return float(-logp.mean())
