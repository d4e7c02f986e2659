r"""Image datasets for the VAE experiments: Fashion-MNIST from IDX files, digits, binarization,
train / validation / test splits, input checks and an on-device minibatch iterator.

- :func:`fashion_mnist`: Zalando's Fashion-MNIST (Xiao et al. 2017), 70,000 grey 28 × 28
  images of clothes in 10 classes, read from the four IDX files that the Debian package
  ``dataset-fashion-mnist`` installs in ``/usr/share/datasets/fashion-mnist/`` (or any folder
  with those files); pixels scaled to ``[0, 1]``.
- :func:`load_images`: ``"digits"`` (scikit-learn's 8 × 8 digits, no download) or
  ``"fashion-mnist"``, split into train / validation / test with a fixed key.
- Binarization, for a Bernoulli likelihood on grey images: *static* (:func:`binarize`, once,
  with a fixed key: ``x̃_ij ~ Bernoulli(x_ij)``; Larochelle & Murray 2011) or *dynamic*
  (:func:`dynamic_binarization`, a fresh draw at every training step; Salakhutdinov & Murray
  2008, Burda et al. 2016). Dynamic binarization maximizes ``E_{x̃ ~ Bern(x)}[L(x̃)]``, and
  the fit loop's step key drives it, so a resumed run draws what an uninterrupted one would.
- :func:`check_images`: a ``ValueError`` naming the argument for NaN / infinite pixels, a
  wrong image shape, or pixels outside ``[0, 1]`` (a Bernoulli likelihood needs them there).
- :func:`minibatches`: shuffled minibatches gathered on the device (no host copies), for
  loops outside :func:`vijax.fit` (which batches its ``data=`` itself, the same way).

Example:
    >>> import jax
    >>> from vijax.data import load_images
    >>> data = load_images("digits", key=jax.random.key(0))
    >>> data.image_shape, data.x_train.shape[0] + data.x_valid.shape[0] + data.x_test.shape[0]
    ((8, 8), 1797)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vijax.data.datasets import digits, split
from vijax.data.idx import read_idx

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "DynamicBinarization",
    "ImageData",
    "binarize",
    "check_images",
    "dynamic_binarization",
    "fashion_mnist",
    "load_images",
    "minibatches",
]

#: Where the Debian package ``dataset-fashion-mnist`` installs the IDX files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: The datasets :func:`load_images` knows.
DATASETS = ("digits", "fashion-mnist")
INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"


def _find(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist(
    split: str = "train", data_dir: str | os.PathLike | None = None
) -> tuple[jax.Array, jax.Array]:
    """Fashion-MNIST images and labels from IDX files (``.gz`` or uncompressed).

    Args:
      split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
      data_dir: the folder with ``train-images-idx3-ubyte.gz`` and its three siblings;
        default ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).

    Returns:
      ``(images, labels)``: float32 ``(N, 28, 28)`` in ``[0, 1]`` (bytes divided by 255) and
      int32 ``(N,)`` in ``0..9`` (names in :data:`FASHION_MNIST_CLASSES`).

    Raises:
      FileNotFoundError: the files are missing; the message says how to install them.
      ValueError: a bad ``split``, or files whose shapes are not Fashion-MNIST's.
    """
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"fashion_mnist: split must be 'train' or 'test', got {split!r}")
    folder = Path(data_dir if data_dir is not None else FASHION_MNIST_DIR)
    image_stem, label_stem = FASHION_MNIST_FILES[split]
    paths = [_find(folder, stem) for stem in (image_stem, label_stem)]
    if None in paths:
        missing = [f"{stem}.gz" for stem, p in zip((image_stem, label_stem), paths) if p is None]
        raise FileNotFoundError(
            f"fashion_mnist: {', '.join(missing)} not found in {str(folder)!r}. Install the "
            f"dataset with `{INSTALL_HINT}` (Debian/Ubuntu), or pass data_dir (--data-dir) "
            "naming a folder with the four Fashion-MNIST IDX files"
        )
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(
            f"fashion_mnist: {str(paths[0])!r} holds {images.dtype} of shape {images.shape}, "
            "not uint8 images of 28 × 28"
        )
    if labels.shape != images.shape[:1] or labels.max(initial=0) > 9:
        raise ValueError(
            f"fashion_mnist: {str(paths[1])!r} holds labels of shape {labels.shape} for "
            f"{images.shape[0]} images (or a label above 9)"
        )
    scaled = images.astype(np.float32) / np.float32(255.0)
    return jnp.asarray(scaled), jnp.asarray(labels, jnp.int32)


class ImageData(NamedTuple):
    """Images and labels split into train, validation and test sets."""

    name: str
    image_shape: tuple[int, ...]
    x_train: jax.Array
    y_train: jax.Array
    x_valid: jax.Array
    y_valid: jax.Array
    x_test: jax.Array
    y_test: jax.Array


def load_images(
    name: str = "digits",
    *,
    key: jax.Array,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    data_dir: str | os.PathLike | None = None,
) -> ImageData:
    """A dataset of grey images in ``[0, 1]``, split into train / validation / test.

    Args:
      name: ``"digits"`` (1,797 images of 8 × 8; ``test_fraction`` of them held out for test)
        or ``"fashion-mnist"`` (28 × 28; its own 10,000 test images).
      key: fixes the shuffles (keep it fixed to compare runs on the same test set).
      validation_fraction: the fraction of the non-test images held out for validation.
      test_fraction: (digits only) the fraction held out for test.
      data_dir: (Fashion-MNIST only) the folder with its IDX files.

    Returns:
      An :class:`ImageData`.
    """
    if name not in DATASETS:
        raise ValueError(f"load_images: name must be one of {list(DATASETS)}, got {name!r}")
    test_key, valid_key = jax.random.split(key)
    if name == "digits":
        images, labels = digits()
        rest = split(images, labels, test_fraction, test_key)
        x_rest, y_rest, x_test, y_test = rest.x_train, rest.y_train, rest.x_test, rest.y_test
    else:
        x_rest, y_rest = fashion_mnist("train", data_dir)
        x_test, y_test = fashion_mnist("test", data_dir)
    parts = split(x_rest, y_rest, validation_fraction, valid_key)
    return ImageData(
        name,
        tuple(x_rest.shape[1:]),
        parts.x_train,
        parts.y_train,
        parts.x_test,
        parts.y_test,
        x_test,
        y_test,
    )


def check_images(
    x: Any,
    *,
    name: str = "x",
    image_shape: tuple[int, ...] | None = None,
    unit_interval: bool = True,
) -> jax.Array:
    """Refuse unusable images with a ``ValueError`` that names the argument ``name``.

    Checks, in order: a leading axis of examples; the image shape (``image_shape``, when
    given); no NaN or infinite pixel; with ``unit_interval``, every pixel in ``[0, 1]`` (what
    Bernoulli and continuous-Bernoulli likelihoods need).

    Returns:
      ``x`` as a float32 array.
    """
    array = jnp.asarray(x)
    if array.ndim < 2:
        raise ValueError(
            f"{name}: expected a batch of images with shape (N, ...), got shape {array.shape}"
        )
    if image_shape is not None and tuple(array.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"{name}: expected images of shape {tuple(image_shape)} (so {name} of shape "
            f"(N, {', '.join(map(str, image_shape))})), got {tuple(array.shape[1:])} "
            f"(shape {array.shape})"
        )
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(jnp.float32)
    finite = bool(jnp.all(jnp.isfinite(array)))
    if not finite:
        count = int(jnp.sum(~jnp.isfinite(array)))
        raise ValueError(f"{name}: {count} pixel(s) are NaN or infinite")
    if unit_interval:
        low, high = float(jnp.min(array)), float(jnp.max(array))
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{name}: pixels must lie in [0, 1] for a Bernoulli or continuous-Bernoulli "
                f"likelihood, got values in [{low:g}, {high:g}] (divide 8-bit images by 255)"
            )
    return array.astype(jnp.float32)


def binarize(x: jax.Array, key: jax.Array) -> jax.Array:
    """One Bernoulli draw per pixel, ``x̃ ~ Bernoulli(x)``, as float32 zeros and ones.

    With a fixed ``key`` this is *static* binarization (the same binary dataset every epoch).
    """
    x = jnp.asarray(x)
    return jax.random.bernoulli(key, x).astype(jnp.float32)


@dataclass(frozen=True)
class DynamicBinarization:
    """``objective`` evaluated on freshly binarized images (see :func:`dynamic_binarization`)."""

    objective: Callable
    position: int = 0

    def __call__(self, params, key, *args, **kwargs):
        binarize_key, objective_key = jax.random.split(key)
        if self.position >= len(args):
            raise ValueError(
                f"dynamic_binarization: position {self.position} but the objective got "
                f"{len(args)} argument(s)"
            )
        args = list(args)
        args[self.position] = binarize(args[self.position], binarize_key)
        return self.objective(params, objective_key, *args, **kwargs)


def dynamic_binarization(objective: Callable, position: int = 0) -> DynamicBinarization:
    r"""Dynamic binarization: the objective on ``x̃ ~ Bernoulli(x)``, a fresh draw per call.

        L̃(φ; x) = E_{x̃ ~ Bern(x)}[L(φ; x̃)],

    whose gradient the wrapped objective's estimator gives unbiasedly (the draw does not
    depend on ``φ``). The key of each call is split into one for the draw and one for the
    objective, so it is reproducible under :func:`vijax.fit` (step ``t`` uses ``fold_in(key,
    t)``).

    Args:
      objective: ``objective(params, key, *args)``.
      position: which of ``args`` holds the grey images (``0``: the first data argument).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> seen = dynamic_binarization(lambda params, key, x: x)(None, jax.random.key(0),
        ...                                                        jnp.full((2, 3), 0.5))
        >>> sorted(set(seen.ravel().tolist())) <= [0.0, 1.0]
        True
    """
    if not callable(objective):
        raise ValueError(f"dynamic_binarization: objective must be callable, got {objective!r}")
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise ValueError(
            f"dynamic_binarization: position must be a non-negative int, got {position!r}"
        )
    return DynamicBinarization(objective, position)


def minibatches(
    arrays: tuple, batch_size: int, key: jax.Array | None = None, *, drop_remainder: bool = True
) -> Iterator[tuple[jax.Array, ...]]:
    """One epoch of minibatches of ``arrays`` (same leading length), gathered on the device.

    The permutation is drawn on the device from ``key`` (``None``: the data's order) and each
    batch is a ``jnp.take`` of it, so nothing is copied through the host.

    Args:
      arrays: a tuple of arrays with a common leading axis of length ``N``.
      batch_size: rows per batch.
      key: a ``jax.random.key`` for the shuffle, or ``None`` for no shuffle.
      drop_remainder: drop the last ``N mod batch_size`` rows (all batches the same shape, so
        a jitted consumer compiles once); else yield a smaller last batch.

    Yields:
      Tuples of arrays of ``batch_size`` rows.

    Example:
        >>> import jax.numpy as jnp
        >>> [b[0].tolist() for b in minibatches((jnp.arange(5),), 2)]
        [[0, 1], [2, 3]]
    """
    arrays = tuple(jnp.asarray(a) for a in arrays)
    if not arrays:
        raise ValueError("minibatches: arrays must hold at least one array")
    lengths = {a.shape[0] if a.ndim else None for a in arrays}
    if len(lengths) != 1 or None in lengths:
        raise ValueError(f"minibatches: arrays must share a leading length, got {sorted(lengths)}")
    (num,) = lengths
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"minibatches: batch_size must be a positive int, got {batch_size!r}")
    order = jnp.arange(num) if key is None else jax.random.permutation(key, num)
    count = num // batch_size if drop_remainder else math.ceil(num / batch_size)
    for index in range(count):
        rows = order[index * batch_size : (index + 1) * batch_size]
        yield tuple(jnp.take(a, rows, axis=0) for a in arrays)
