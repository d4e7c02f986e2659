"""Running a family and scoring a model against it: the step every objective shares."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
from numpyro.distributions.kl import kl_divergence

from vijax.core import handlers, is_marginalized, site_axes
from vijax.estimators import site_strategy, stops_density_gradient, with_estimators
from vijax.estimators.strategies import Detached
from vijax.objectives.expectation import Terms

__all__ = [
    "ModelAndFamilyParams",
    "detached_densities",
    "elbo_terms",
    "importance_traces",
    "log_weight",
    "log_weight_terms",
]


class ModelAndFamilyParams(NamedTuple):
    """Parameters of a parametric model and of its family, trained together.

    When an objective's ``params`` is a ``ModelAndFamilyParams``, the model is called as
    ``model(params.model, *args)`` and the family as ``family(params.family, *args)``;
    otherwise the model is ``model(*args)`` and ``params`` belong to the family.
    """

    model: Any
    family: Any


def _split_params(params):
    if isinstance(params, ModelAndFamilyParams):
        return (params.model,), params.family
    return (), params


def importance_traces(model, family, params, key, args, kwargs):
    """Trace ``family`` (fresh draws) and ``model`` replayed on its values.

    Every latent site of the model must come from the family and every latent site of the
    family must be a site of the model; a mismatch (usually a typo) is a ``ValueError``.
    """
    model_params, family_params = _split_params(params)
    # One stream per particle: the family's n-th keyed message (a draw, a subsample) gets
    # fold_in(key, n), and the model, whose latents are replayed and take no key, continues
    # the count. A fold_in per message, not NumPyro's split per message: under vmap over
    # particles and runs the batched splits cost more than the draws.
    family_seed = handlers.fold_in_seed(rng_seed=key)
    with family_seed:
        family_trace = handlers.trace(family).get_trace(family_params, *args, **kwargs)
    family_trace = _with_path_densities(family, family_trace, family_params, key, args, kwargs)
    model_trace = handlers.trace(
        handlers.fold_in_seed(
            handlers.replay(model, family_trace), rng_seed=key, start=family_seed.count
        )
    ).get_trace(*model_params, *args, **kwargs)
    family_latents = {n for n, s in family_trace.items() if _is_latent(s)}
    model_latents = {n for n, s in model_trace.items() if _is_latent(s)}
    if family_latents - model_latents:
        extra = sorted(family_latents - model_latents)
        raise ValueError(
            f"family site(s) {extra} are not latent sites of the model "
            f"(model latents: {sorted(model_latents)})"
        )
    if model_latents - family_latents:
        missing = sorted(model_latents - family_latents)
        raise ValueError(f"model latent site(s) {missing} are not sampled by the family")
    return model_trace, family_trace


def _with_path_densities(family, family_trace, family_params, key, args, kwargs) -> dict:
    """Give path-strategy sites the distribution of ``q_{⊥φ}`` at the drawn values.

    Sticking the landing needs ``log q_{⊥φ}(z_φ)``: the family's density with its parameters
    held fixed but every value, earlier sites' values included, on its gradient path. Stopping
    a site's distribution object would also cut the path through the earlier values it reads
    (``q(z₂ | z₁)``'s location, say), biasing the gradient of dependent families; so the family
    is run again at the same values with stopped parameters, and each path site takes its
    distribution from that run (marked ``path_density``, so :meth:`Terms.from_trace` leaves it).
    """
    path_sites = [
        name
        for name, site in family_trace.items()
        if _is_latent(site) and stops_density_gradient(site_strategy(site))
    ]
    if not path_sites:
        return family_trace
    values = {name: site["value"] for name, site in family_trace.items() if _is_latent(site)}
    stopped = handlers.trace(
        handlers.fold_in_seed(handlers.substitute(family, data=values), rng_seed=key)
    ).get_trace(jax.lax.stop_gradient(family_params), *args, **kwargs)
    family_trace = dict(family_trace)
    for name in path_sites:
        family_trace[name] = {**family_trace[name], "fn": stopped[name]["fn"], "path_density": True}
    return family_trace


def _is_latent(site) -> bool:
    """A family or model latent (a family's marginalized sampler sites are not)."""
    return site["type"] == "sample" and not site["is_observed"] and not is_marginalized(site)


def log_weight_terms(model_trace, family_trace) -> Terms:
    """``log p(x, z) − log q(z)`` as :class:`Terms`, one term per site."""
    latents = [n for n, s in family_trace.items() if _is_latent(s)]
    return Terms.from_trace(model_trace) - Terms.from_trace(
        family_trace, sites=latents, family=True
    )


def log_weight(model, family, params, key, args, kwargs) -> Terms:
    """One particle's ``log p(x, z) − log q(z)``, ``z ~ family``: the multi-sample objectives'
    building block."""
    model_trace, family_trace = importance_traces(model, family, params, key, args, kwargs)
    return log_weight_terms(model_trace, family_trace)


def detached_densities(model, family, params, key, args, kwargs) -> tuple[Terms, Terms]:
    """``log p(x, z)`` and ``log q(z)`` for one particle ``z ~ family`` off the gradient path.

    The family runs with the detached strategy as its default (a site that names its own
    strategy keeps it), so ``z`` is a constant to the gradient and both terms differentiate
    through their densities' parameters only: the wake phases of reweighted wake-sleep and of
    variational importance sampling.
    """
    family = with_estimators(family, default=Detached())
    model_trace, family_trace = importance_traces(model, family, params, key, args, kwargs)
    latents = [n for n, s in family_trace.items() if _is_latent(s)]
    return Terms.from_trace(model_trace), Terms.from_trace(family_trace, sites=latents)


def _analytic_kl(q_site, p_site):
    try:
        return kl_divergence(q_site["fn"], p_site["fn"])
    except NotImplementedError:
        return None


def elbo_terms(model_trace, family_trace, *, analytic_kl: bool = True) -> Terms:
    """ELBO terms; a latent's ``log p − log q`` becomes ``−KL(q ‖ p)`` where closed form exists.

    The closed form is used when NumPyro registers ``kl_divergence`` for the pair of
    distributions (conditioned on the sampled parents); the KL is scaled like the site.
    """
    if not analytic_kl:
        return log_weight_terms(model_trace, family_trace)
    latents = [n for n, s in family_trace.items() if _is_latent(s)]
    closed = {}
    for name in latents:
        if stops_density_gradient(site_strategy(family_trace[name])):
            continue  # a path-gradient site keeps its Monte Carlo density term
        kl = _analytic_kl(family_trace[name], model_trace[name])
        if kl is not None and kl.shape == tuple(model_trace[name]["fn"].batch_shape):
            closed[name] = kl
    terms = Terms.from_trace(model_trace, sites=[n for n in model_trace if n not in closed])
    terms = terms - Terms.from_trace(
        family_trace, sites=[n for n in latents if n not in closed], family=True
    )
    for name, kl in closed.items():
        site = model_trace[name]
        scale = site.get("scale")
        scaled = kl if scale is None else scale * kl
        terms = terms - Terms.term(scaled, site_axes(site, scaled.ndim))
    return terms
