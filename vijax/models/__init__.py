"""Models built from vijax programs (they may use every layer below them)."""

from vijax.models import diffusion, gp, vae
from vijax.models.logistic_regression import (
    log_predictive_density,
    logistic_regression,
    predictive_probability,
)

__all__ = [
    "diffusion",
    "gp",
    "log_predictive_density",
    "logistic_regression",
    "predictive_probability",
    "vae",
]
