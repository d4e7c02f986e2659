"""Inference drivers: the fit loop, posterior draws and predictive distributions."""

from vijax.infer.fit import FitResult, FitState, NonFiniteError, fit
from vijax.infer.posterior import predictive, sample_posterior

__all__ = ["FitResult", "FitState", "NonFiniteError", "fit", "predictive", "sample_posterior"]
