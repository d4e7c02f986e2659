"""vijax: programmable variational inference in JAX.

Write a model and a variational family as programs, pick an objective (or write one), choose per
site how its expectation is differentiated, and fit with a compiled loop::

    import vijax as vj
    family = vj.mean_field_normal(model)
    result = vj.fit(vj.elbo(model, family), family.init(key, x), optax.adam(1e-2), key, x,
                    num_steps=5000)

Layers (imports point down only): ``core`` → ``estimators`` → ``objectives`` → ``families`` →
``infer`` → ``models``.
"""

from vijax.core import (
    as_numpyro_distribution,
    block,
    condition,
    deterministic,
    factor,
    log_density,
    mask,
    plate,
    replay,
    sample,
    scale,
    seed,
    substitute,
    trace,
)
from vijax.estimators import (
    accept_reject,
    accept_reject_sampler,
    constant,
    enumeration,
    implicit,
    learned,
    leave_one_out,
    mvd,
    no_baseline,
    path,
    reparameterized,
    running_mean,
    score_function,
    with_estimators,
)
from vijax.families import mean_field_normal
from vijax.infer import FitResult, FitState, NonFiniteError, fit, predictive, sample_posterior
from vijax.objectives import (
    FamilyAndReverseParams,
    GradientEstimator,
    ModelAndFamilyParams,
    Terms,
    cubo,
    diwhvi,
    elbo,
    grad_estimate,
    gradient_estimator,
    hvi,
    iwae,
    iwae_dreg,
    iwhvi,
    marginal,
    particle_log_mean_exp,
    particle_mean,
    renyi,
    rws,
    sivi,
    value_and_grad_estimate,
    vimco,
    vis,
)

__version__ = "0.1.0"

__all__ = [
    "FamilyAndReverseParams",
    "FitResult",
    "FitState",
    "GradientEstimator",
    "ModelAndFamilyParams",
    "NonFiniteError",
    "Terms",
    "accept_reject",
    "accept_reject_sampler",
    "as_numpyro_distribution",
    "block",
    "condition",
    "constant",
    "cubo",
    "deterministic",
    "diwhvi",
    "elbo",
    "enumeration",
    "factor",
    "fit",
    "grad_estimate",
    "gradient_estimator",
    "hvi",
    "implicit",
    "iwae",
    "iwae_dreg",
    "iwhvi",
    "learned",
    "leave_one_out",
    "log_density",
    "marginal",
    "mask",
    "mean_field_normal",
    "mvd",
    "no_baseline",
    "particle_log_mean_exp",
    "particle_mean",
    "path",
    "plate",
    "predictive",
    "renyi",
    "reparameterized",
    "replay",
    "running_mean",
    "rws",
    "sample",
    "sample_posterior",
    "scale",
    "score_function",
    "seed",
    "sivi",
    "substitute",
    "trace",
    "value_and_grad_estimate",
    "vimco",
    "vis",
    "with_estimators",
]
