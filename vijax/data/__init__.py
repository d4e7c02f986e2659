"""Datasets: small embedded ones (scikit-learn, no download), real-format readers (IDX) and the
image datasets of the VAE experiments (digits, Fashion-MNIST), with splits, binarization and
on-device minibatches."""

from vijax.data.datasets import (
    Split,
    breast_cancer,
    breast_cancer_feature_names,
    digits,
    split,
)
from vijax.data.idx import read_idx, write_idx
from vijax.data.images import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    DynamicBinarization,
    ImageData,
    binarize,
    check_images,
    dynamic_binarization,
    fashion_mnist,
    load_images,
    minibatches,
)

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "DynamicBinarization",
    "ImageData",
    "Split",
    "binarize",
    "breast_cancer",
    "breast_cancer_feature_names",
    "check_images",
    "digits",
    "dynamic_binarization",
    "fashion_mnist",
    "load_images",
    "minibatches",
    "read_idx",
    "split",
    "write_idx",
]
