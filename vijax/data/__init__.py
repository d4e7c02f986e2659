"""Small embedded datasets (from scikit-learn, no download) and a seeded train / test split."""

from vijax.data.datasets import (
    Split,
    breast_cancer,
    breast_cancer_feature_names,
    digits,
    split,
)

__all__ = ["Split", "breast_cancer", "breast_cancer_feature_names", "digits", "split"]
