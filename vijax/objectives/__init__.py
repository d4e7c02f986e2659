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
from vijax.objectives.hierarchical import (
    FamilyAndReverseParams,
    HierarchicalBound,
    Marginal,
    diwhvi,
    hierarchical_log_weight,
    hvi,
    iwhvi,
    marginal,
    sivi,
)
from vijax.objectives.iwae import iwae, iwae_stl, vimco
from vijax.objectives.per_datum import (
    PerDatumIWAE,
    PerDatumIWAEDReG,
    per_datum_iwae,
    per_datum_iwae_dreg,
    per_datum_log_weight,
    per_datum_log_weights,
)
from vijax.objectives.programs import (
    ModelAndFamilyParams,
    detached_densities,
    elbo_terms,
    importance_traces,
    log_weight,
    log_weight_terms,
)
from vijax.objectives.renyi import Renyi, cubo, renyi
from vijax.objectives.rws import RWS, rws
from vijax.objectives.vis import VIS, vis

__all__ = [
    "ELBO",
    "RWS",
    "VIS",
    "DReGIWAE",
    "FamilyAndReverseParams",
    "GradientEstimator",
    "HierarchicalBound",
    "Marginal",
    "ModelAndFamilyParams",
    "PerDatumIWAE",
    "PerDatumIWAEDReG",
    "Renyi",
    "Terms",
    "cubo",
    "detached_densities",
    "diwhvi",
    "elbo",
    "elbo_terms",
    "grad_estimate",
    "gradient_estimator",
    "hierarchical_log_weight",
    "hvi",
    "importance_traces",
    "iwae",
    "iwae_dreg",
    "iwae_stl",
    "iwhvi",
    "log_weight",
    "log_weight_terms",
    "marginal",
    "particle_log_mean_exp",
    "particle_mean",
    "per_datum_iwae",
    "per_datum_iwae_dreg",
    "per_datum_log_weight",
    "per_datum_log_weights",
    "renyi",
    "rws",
    "sivi",
    "value_and_grad_estimate",
    "vimco",
    "vis",
]
