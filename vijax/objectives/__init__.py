"""Objectives as programs and the expectation API that differentiates them."""

from vijax.objectives.dreg import DReGIWAE, iwae_dreg
from vijax.objectives.elbo import ELBO, elbo
from vijax.objectives.expectation import (
    GradientEstimator,
    Terms,
    grad_estimate,
    gradient_estimator,
    particle_log_mean_exp,
    particle_mean,
    value_and_grad_estimate,
)
from vijax.objectives.iwae import iwae, vimco
from vijax.objectives.programs import (
    ModelAndFamilyParams,
    elbo_terms,
    importance_traces,
    log_weight,
    log_weight_terms,
)
from vijax.objectives.renyi import Renyi, cubo, renyi
from vijax.objectives.rws import RWS, rws

__all__ = [
    "ELBO",
    "RWS",
    "DReGIWAE",
    "GradientEstimator",
    "ModelAndFamilyParams",
    "Renyi",
    "Terms",
    "cubo",
    "elbo",
    "elbo_terms",
    "grad_estimate",
    "gradient_estimator",
    "importance_traces",
    "iwae",
    "iwae_dreg",
    "log_weight",
    "log_weight_terms",
    "particle_log_mean_exp",
    "particle_mean",
    "renyi",
    "rws",
    "value_and_grad_estimate",
    "vimco",
]
