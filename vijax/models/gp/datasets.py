r"""Small GP data sets that need no download, split and standardized with training statistics.

========================  =========  =====  ====  =================================================
name                      task       N      D     source
========================  =========  =====  ====  =================================================
``"diabetes"``            Gaussian   442    10    scikit-learn's diabetes progression data
``"breast-cancer"``       Bernoulli  569    30    scikit-learn's Wisconsin breast-cancer data
``"sine"``                Gaussian   200    1     ``y = sin 2x + x/3 + ε``, ``ε ~ N(0, 0.2²)``
``"counts"``              Poisson    200    1     ``y ~ Poisson(exp(1 + sin 2x))``
========================  =========  =====  ====  =================================================

Inputs are standardized column by column with the *training* rows' mean and standard
deviation (``x̃ = (x − x̄_train) / s_train``), and so are real-valued targets; the synthetic
inputs are drawn uniformly on ``[−3, 3]`` from a fixed seed and left as they are.

Example:
    >>> import jax
    >>> from vijax.models.gp.datasets import load
    >>> data = load("diabetes", jax.random.key(0))
    >>> data.x_train.shape, data.x_test.shape, data.likelihood
    ((353, 10), (89, 10), 'gaussian')
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["DATASETS", "GPData", "load"]

#: data set name → likelihood name
DATASETS = {
    "diabetes": "gaussian",
    "breast-cancer": "bernoulli",
    "sine": "gaussian",
    "counts": "poisson",
}

_SYNTHETIC_SEED = 20240606
_SYNTHETIC_SIZE = 200


class GPData(NamedTuple):
    """A train / test split, the likelihood it calls for, and the target scaling undone by
    ``y * y_scale + y_shift`` (1 and 0 when targets are not standardized)."""

    name: str
    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    likelihood: str
    y_shift: float
    y_scale: float


def _raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "diabetes":
        from sklearn.datasets import load_diabetes

        return load_diabetes(return_X_y=True)
    if name == "breast-cancer":
        from sklearn.datasets import load_breast_cancer

        return load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(_SYNTHETIC_SEED)
    x = rng.uniform(-3.0, 3.0, size=(_SYNTHETIC_SIZE, 1))
    if name == "sine":
        y = np.sin(2.0 * x[:, 0]) + x[:, 0] / 3.0 + 0.2 * rng.normal(size=_SYNTHETIC_SIZE)
        return x, y
    return x, rng.poisson(np.exp(1.0 + np.sin(2.0 * x[:, 0]))).astype(np.float64)


def load(name: str, key: jax.Array, test_fraction: float = 0.2) -> GPData:
    """Load data set ``name`` (see the table), shuffled by ``key``, ``⌈test_fraction · N⌉``
    rows held out.

    Raises:
      ValueError: unknown ``name`` or ``test_fraction`` outside ``(0, 1)``.
    """
    if name not in DATASETS:
        raise ValueError(f"load: unknown data set {name!r}; choose from {sorted(DATASETS)}")
    if not (isinstance(test_fraction, float | int) and 0.0 < test_fraction < 1.0):
        raise ValueError(f"load: test_fraction must be in (0, 1), got {test_fraction!r}")
    x, y = _raw(name)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    num_test = math.ceil(test_fraction * x.shape[0])
    order = np.asarray(jax.random.permutation(key, x.shape[0]))
    test, train = order[:num_test], order[num_test:]
    x_train, x_test, y_train, y_test = x[train], x[test], y[train], y[test]
    if name in ("diabetes", "breast-cancer"):
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    shift, scale = 0.0, 1.0
    if DATASETS[name] == "gaussian" and name == "diabetes":
        shift, scale = float(y_train.mean()), float(y_train.std())
        y_train, y_test = (y_train - shift) / scale, (y_test - shift) / scale
    dtype = jnp.result_type(float)
    return GPData(
        name,
        jnp.asarray(x_train, dtype),
        jnp.asarray(y_train, dtype),
        jnp.asarray(x_test, dtype),
        jnp.asarray(y_test, dtype),
        DATASETS[name],
        shift,
        scale,
    )
