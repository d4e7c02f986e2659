"""Inference drivers: the fit loop (one device, a device mesh, populations of runs),
checkpoints, posterior draws and predictive distributions."""

from vijax.infer.checkpoint import (
    Checkpoint,
    CheckpointedFit,
    fit_population_with_checkpoints,
    fit_with_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from vijax.infer.fit import FitResult, FitState, NonFiniteError, fit
from vijax.infer.population import fit_population
from vijax.infer.posterior import predictive, sample_posterior

__all__ = [
    "Checkpoint",
    "CheckpointedFit",
    "FitResult",
    "FitState",
    "NonFiniteError",
    "fit",
    "fit_population",
    "fit_population_with_checkpoints",
    "fit_with_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "predictive",
    "sample_posterior",
    "save_checkpoint",
]
