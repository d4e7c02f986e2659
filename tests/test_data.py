"""Tests of the embedded datasets and the seeded train / test split."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vijax.data import breast_cancer, breast_cancer_feature_names, digits, split


def test_breast_cancer_is_standardized_with_an_intercept_column():
    x, y = breast_cancer()
    assert x.shape == (569, 31) and x.dtype == jnp.float32
    assert y.shape == (569,) and y.dtype == jnp.float32
    features = np.asarray(x[:, :30], np.float64)
    # Standardized in float64, stored in float32 (relative error ~1e-7 per entry).
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(features.std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(x[:, 30]), 1.0)
    assert set(np.unique(np.asarray(y))) == {0.0, 1.0}
    assert int(y.sum()) == 357  # benign tumours in the Wisconsin data


def test_breast_cancer_feature_names_label_every_column():
    names = breast_cancer_feature_names()
    assert len(names) == 31 and len(set(names)) == 31
    assert names[0] == "mean radius" and names[-1] == "intercept"


def test_digits_are_8x8_images_in_the_unit_interval():
    images, labels = digits()
    assert images.shape == (1797, 8, 8) and images.dtype == jnp.float32
    assert labels.shape == (1797,) and labels.dtype == jnp.int32
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert set(np.unique(np.asarray(labels))) == set(range(10))


def test_split_partitions_the_rows_and_keeps_pairs_together():
    x = jnp.arange(569.0)[:, None] * jnp.ones((1, 3))
    y = jnp.arange(569)
    parts = split(x, y, 0.2, jax.random.key(0))
    assert parts.x_test.shape == (114, 3) and parts.x_train.shape == (455, 3)  # ⌈0.2 · 569⌉ = 114
    assert parts.y_test.shape == (114,) and parts.y_train.shape == (455,)
    rows = np.concatenate([np.asarray(parts.y_train), np.asarray(parts.y_test)])
    np.testing.assert_array_equal(np.sort(rows), np.arange(569))
    np.testing.assert_array_equal(np.asarray(parts.x_train[:, 0]), np.asarray(parts.y_train))
    np.testing.assert_array_equal(np.asarray(parts.x_test[:, 2]), np.asarray(parts.y_test))
    assert not np.array_equal(np.asarray(parts.y_train), np.arange(455))  # shuffled


def test_split_is_fixed_by_the_key():
    x, y = jnp.arange(50.0), jnp.arange(50)
    first = split(x, y, 0.3, jax.random.key(7))
    again = split(x, y, 0.3, jax.random.key(7))
    other = split(x, y, 0.3, jax.random.key(8))
    np.testing.assert_array_equal(np.asarray(first.y_test), np.asarray(again.y_test))
    assert not np.array_equal(np.asarray(first.y_test), np.asarray(other.y_test))


@pytest.mark.parametrize(
    ("x", "y", "test_fraction", "key", "argument"),
    [
        (jnp.ones((10, 2)), jnp.ones(9), 0.2, jax.random.key(0), "y"),
        (jnp.ones(()), jnp.ones(1), 0.2, jax.random.key(0), "x"),
        (jnp.ones((10, 2)), jnp.ones(10), 0.0, jax.random.key(0), "test_fraction"),
        (jnp.ones((10, 2)), jnp.ones(10), 1.0, jax.random.key(0), "test_fraction"),
        (jnp.ones((10, 2)), jnp.ones(10), -0.5, jax.random.key(0), "test_fraction"),
        (jnp.ones((10, 2)), jnp.ones(10), float("nan"), jax.random.key(0), "test_fraction"),
        (jnp.ones((10, 2)), jnp.ones(10), "0.2", jax.random.key(0), "test_fraction"),
        (jnp.ones((10, 2)), jnp.ones(10), 0.95, jax.random.key(0), "test_fraction"),  # 0 train
        (jnp.ones((10, 2)), jnp.ones(10), 0.2, 0, "key"),
        (jnp.ones((10, 2)), jnp.ones(10), 0.2, jax.random.split(jax.random.key(0), 2), "key"),
    ],
)
def test_split_rejects_bad_arguments_by_name(x, y, test_fraction, key, argument):
    with pytest.raises(ValueError, match=f"split: {argument}"):
        split(x, y, test_fraction, key)
