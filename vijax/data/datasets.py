r"""Small datasets shipped inside scikit-learn (no download), ready for the built-in experiments.

- :func:`breast_cancer`: the Wisconsin diagnostic breast-cancer data, 569 tumours × 30 features,
  each feature standardized, ``x̃_ij = (x_ij − x̄_j) / s_j`` (``s_j`` the population standard
  deviation), with a column of ones appended last so that a linear model ``x̃ᵀw`` has an
  intercept ``w_30``. Label ``1`` is benign, ``0`` malignant.
- :func:`digits`: 1,797 handwritten digits as 8 × 8 images with pixel intensities in ``[0, 1]``.
- :func:`split`: a seeded random train / test split.

Standardization uses all 569 rows, test rows included; that is the usual convention for this
dataset in tutorials (the scaling carries no label information), but a careful benchmark would
standardize with training statistics only.

Example:
    >>> import jax
    >>> from vijax.data import breast_cancer, split
    >>> x, y = breast_cancer()
    >>> x.shape, y.shape
    ((569, 31), (569,))
    >>> parts = split(x, y, 0.2, jax.random.key(0))
    >>> parts.x_train.shape, parts.x_test.shape
    ((455, 31), (114, 31))
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits

__all__ = ["Split", "breast_cancer", "breast_cancer_feature_names", "digits", "split"]

#: The name of the constant column that :func:`breast_cancer` appends.
INTERCEPT = "intercept"


def breast_cancer() -> tuple[jax.Array, jax.Array]:
    """Standardized breast-cancer features with an intercept column, and 0/1 labels.

    Returns:
      ``(x, y)``: ``x`` of shape ``(569, 31)``, float32, columns ``0..29`` standardized to mean
      0 and standard deviation 1 and column ``30`` all ones; ``y`` of shape ``(569,)``, float32,
      ``1.0`` for benign and ``0.0`` for malignant. Column names are
      :func:`breast_cancer_feature_names`.
    """
    features, labels = load_breast_cancer(return_X_y=True)
    standardized = (features - features.mean(axis=0)) / features.std(axis=0)
    with_intercept = np.hstack([standardized, np.ones((features.shape[0], 1))])
    return jnp.asarray(with_intercept, jnp.float32), jnp.asarray(labels, jnp.float32)


def breast_cancer_feature_names() -> tuple[str, ...]:
    """The 31 column names of :func:`breast_cancer`'s ``x``: scikit-learn's, then ``intercept``."""
    return (*(str(name) for name in load_breast_cancer().feature_names), INTERCEPT)


def digits() -> tuple[jax.Array, jax.Array]:
    """Handwritten digits: 8 × 8 images scaled to ``[0, 1]``, and their classes.

    Returns:
      ``(images, labels)``: ``images`` of shape ``(1797, 8, 8)``, float32, the 4-bit pixel
      counts ``0..16`` divided by 16; ``labels`` of shape ``(1797,)``, int32, in ``0..9``.
      Flatten with ``images.reshape(len(images), -1)`` for a model that wants 64-vectors.
    """
    data = load_digits()
    images = np.asarray(data.images, np.float64) / 16.0
    return jnp.asarray(images, jnp.float32), jnp.asarray(data.target, jnp.int32)


class Split(NamedTuple):
    """A train / test split, in the order of scikit-learn's ``train_test_split``."""

    x_train: jax.Array
    x_test: jax.Array
    y_train: jax.Array
    y_test: jax.Array


def _is_key(key) -> bool:
    """A typed key (``jax.random.key``) or a raw ``uint32[2]`` key (``jax.random.PRNGKey``)."""
    dtype = getattr(key, "dtype", None)
    if dtype is None:
        return False
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return jnp.ndim(key) == 0
    return dtype == jnp.uint32 and jnp.shape(key) == (2,)


def split(x, y, test_fraction: float, key: jax.Array) -> Split:
    """Shuffle the rows of ``x`` and ``y`` together and hold out ``test_fraction`` of them.

    The test set has ``⌈test_fraction · N⌉`` rows (scikit-learn's rounding), the training set
    the rest; the same ``key`` always gives the same split.

    Args:
      x: an array whose leading axis indexes the ``N`` examples.
      y: an array with the same leading length ``N``.
      test_fraction: the fraction of rows held out, in ``(0, 1)``; both parts must be non-empty.
      key: a ``jax.random.key`` that fixes the shuffle.

    Returns:
      A :class:`Split` ``(x_train, x_test, y_train, y_test)``.

    Raises:
      ValueError: naming ``x``, ``y``, ``test_fraction`` or ``key`` when it is unusable.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim == 0:
        raise ValueError("split: x must have a leading axis of examples, got a scalar")
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"split: y must have the same leading length as x ({x.shape[0]}), "
            f"got shape {tuple(y.shape)}"
        )
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, int | float | np.floating)
        or not 0.0 < test_fraction < 1.0
    ):
        raise ValueError(f"split: test_fraction must be a number in (0, 1), got {test_fraction!r}")
    num_examples = x.shape[0]
    num_test = math.ceil(test_fraction * num_examples)
    if not 0 < num_test < num_examples:
        raise ValueError(
            f"split: test_fraction={test_fraction!r} of {num_examples} rows leaves "
            f"{num_test} test and {num_examples - num_test} training rows; both must be non-empty"
        )
    if not _is_key(key):
        raise ValueError(f"split: key must be a jax.random.key(...), got {key!r}")
    order = jax.random.permutation(key, num_examples)
    test, train = order[:num_test], order[num_test:]
    return Split(x[train], x[test], y[train], y[test])
