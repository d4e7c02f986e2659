"""Image data for the VAEs: splits, binarization, on-device minibatches, Fashion-MNIST splits."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vijax.data import (
    FASHION_MNIST_DIR,
    binarize,
    digits,
    dynamic_binarization,
    load_images,
    minibatches,
)


def test_digits_split_into_train_validation_and_test_sets():
    data = load_images("digits", key=jax.random.key(0))
    assert data.image_shape == (8, 8)
    sizes = [data.x_train.shape[0], data.x_valid.shape[0], data.x_test.shape[0]]
    assert sizes == [1293, 144, 360]  # ⌈0.2 · 1797⌉ test, ⌈0.1 · 1437⌉ validation
    labels = np.concatenate([np.asarray(y) for y in (data.y_train, data.y_valid, data.y_test)])
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(np.asarray(digits()[1])))
    again = load_images("digits", key=jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(again.x_test), np.asarray(data.x_test))
    with pytest.raises(ValueError, match="name must be one of"):
        load_images("mnist", key=jax.random.key(0))


def test_static_and_dynamic_binarization():
    grey = jnp.full((2000, 4), 0.3)
    fixed = binarize(grey, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(fixed), np.asarray(binarize(grey, jax.random.key(1))))
    assert set(np.unique(np.asarray(fixed))) == {0.0, 1.0}
    assert abs(float(fixed.mean()) - 0.3) < 4.5 * np.sqrt(0.21 / fixed.size)

    def objective(params, key, x):
        return x

    wrapped = dynamic_binarization(objective)
    first = wrapped(None, jax.random.key(2), grey)
    second = wrapped(None, jax.random.key(3), grey)
    assert not np.array_equal(np.asarray(first), np.asarray(second))  # a fresh draw per key
    np.testing.assert_array_equal(
        np.asarray(first), np.asarray(wrapped(None, jax.random.key(2), grey))
    )
    with pytest.raises(ValueError, match="position must be a non-negative int"):
        dynamic_binarization(objective, position=-1)


def test_minibatches_visit_every_row_once_per_epoch_on_the_device():
    x, y = jnp.arange(10.0), jnp.arange(10) * 2
    batches = list(minibatches((x, y), 3, jax.random.key(0)))
    assert len(batches) == 3 and all(b[0].shape == (3,) for b in batches)
    seen = np.concatenate([np.asarray(b[0]) for b in batches])
    assert len(set(seen.tolist())) == 9  # drop_remainder: 9 of 10 rows, none twice
    for bx, by in batches:
        np.testing.assert_array_equal(np.asarray(by), 2 * np.asarray(bx))
        assert isinstance(bx, jax.Array)
    every = list(minibatches((x,), 3, jax.random.key(0), drop_remainder=False))
    assert [len(b[0]) for b in every] == [3, 3, 3, 1]
    with pytest.raises(ValueError, match="share a leading length"):
        list(minibatches((x, y[:5]), 2))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        list(minibatches((x,), 0))


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (apt-get install -y dataset-fashion-mnist)",
)
def test_fashion_mnist_splits_keep_the_published_test_set():
    data = load_images("fashion-mnist", key=jax.random.key(0))
    assert data.image_shape == (28, 28)
    assert data.x_train.shape[0] == 54000 and data.x_valid.shape[0] == 6000
    assert data.x_test.shape[0] == 10000 and int(data.y_test[0]) == 9
