r"""Hierarchical bounds with approximate marginalization: HVI, IWHVI, DIWHVI and SIVI.

A *hierarchical* family draws auxiliary latents ``λ`` besides the latents ``z`` it shares with
the model, ``q(z, λ) = q(λ) q(z | λ)``. Its marginal ``q(z) = ∫ q(z, λ) dλ``, which the ELBO
needs, is rarely tractable. A :class:`Marginal` replaces ``log q(z)`` by an inner importance
sampler with a *reverse* family ``r(λ | z)`` (Sobolev & Vetrov 2019, "Importance Weighted
Hierarchical Variational Inference"):

    log q̂_K(z) = log 1/(K+1) Σ_{k=0}^{K} q(z, λ_k) / r(λ_k | z),
    λ_0 = the auxiliary value that generated z (a draw of q(λ | z)),   λ_{1..K} ~ r(· | z).

``1 / q̂_K(z)`` is unbiased for ``1 / q(z)`` (exchangeability of the ``K + 1`` terms), so
``E[log q̂_K(z)] ≥ log q(z)``, non-increasing in ``K``, equal to ``log q(z)`` when ``r`` is the
exact conditional ``q(λ | z)`` and in the limit ``K → ∞``. The bounds built on it are

    L_K     = E[log p(x, z) − log q̂_K(z)]                      ≤ ELBO(q) ≤ log p(x),
    L_{M,K} = E[log 1/M Σ_{m=1}^{M} p(x, z_m) / q̂_K(z_m)]       ≤ log p(x),

with ``L_K`` non-decreasing in ``K``. ``K = 0`` is the auxiliary-variable (hierarchical) ELBO
``E[log p(x, z) + log r(λ | z) − log q(z, λ)]`` (Agakov & Barber 2004; Salimans et al. 2015;
Ranganath, Tran & Blei 2016, "Hierarchical Variational Models"): :func:`hvi`. ``K ≥ 1`` is
:func:`iwhvi`, the outer importance-weighted ``L_{M,K}`` is :func:`diwhvi` (Sobolev & Vetrov
2019; a program in Becker et al. 2024, "Probabilistic Programming with Programmable Variational
Inference"), and ``r(λ | z) = q(λ)``, the family's own mixing distribution, is semi-implicit VI
(Yin & Zhou 2018): :func:`sivi`.

Gradients go through :func:`vijax.gradient_estimator` like every objective's: the outer draws
``(z, λ_0)`` and the inner draws ``λ_{1..K}`` are fresh sites with their own strategies
(reparameterized sites pathwise; score-function or enumerated auxiliary sites by their
estimators), so the gradient is unbiased for ``∇ L`` in the family's, the reverse's and the
model's parameters. The inner draws form a particle block (vectorized with ``vmap``); with
:func:`diwhvi` it nests inside the outer particle block.

Parameters: with a reverse program, a marginal's parameters are
:class:`FamilyAndReverseParams` ``(family, reverse)``; for SIVI (``reverse=None``) they are
the family's. Model parameters wrap them as usual:
``vj.ModelAndFamilyParams(model=θ, family=vj.FamilyAndReverseParams(family=φ, reverse=ψ))``.

Example:
    >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model():
    ...     z = vj.sample("z", dist.Normal(0.0, 1.0))
    ...     vj.sample("x", dist.Normal(z, 1.0), obs=0.5)
    >>> def family(phi):  # q(z) = ∫ N(λ; φ, 1) N(z; λ, 1) dλ = N(φ, 2)
    ...     lam = vj.sample("lam", dist.Normal(phi, 1.0))
    ...     vj.sample("z", dist.Normal(lam, 1.0))
    >>> def reverse(psi, latents):  # r(λ | z)
    ...     vj.sample("lam", dist.Normal(psi * latents["z"], 1.0))
    >>> objective = vj.iwhvi(model, family, aux=("lam",), reverse=reverse, num_inner=4)
    >>> params = vj.FamilyAndReverseParams(family=0.0, reverse=0.5)
    >>> value, grads = vj.value_and_grad_estimate(objective)(params, jax.random.key(0))
    >>> grads.reverse.shape
    ()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from numpyro.primitives import Messenger

from vijax.core import ESTIMATOR_KEY, handlers
from vijax.estimators import (
    Implicit,
    Reparameterized,
    ScoreFunction,
    site_strategy,
    stops_density_gradient,
)
from vijax.objectives.expectation import Terms, particle_log_mean_exp, particle_mean
from vijax.objectives.programs import ModelAndFamilyParams

__all__ = [
    "FamilyAndReverseParams",
    "HierarchicalBound",
    "Marginal",
    "diwhvi",
    "hierarchical_log_weight",
    "hvi",
    "iwhvi",
    "marginal",
    "sivi",
]


class FamilyAndReverseParams(NamedTuple):
    """Parameters of a hierarchical family and of its reverse family ``r(λ | z)``.

    The family is called as ``family(params.family, *args)`` and the reverse as
    ``reverse(params.reverse, latents, *args)``.
    """

    family: Any
    reverse: Any


def _latents(trace: dict) -> list[str]:
    return [n for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]]


#: strategies the inner draws λ_{1..K} may use: they share their names with the family's
#: auxiliary sites, so strategies that re-evaluate the objective at a named site's other values
#: (enumeration, measure-valued) would conflate the two
_INNER_STRATEGIES = (Reparameterized, Implicit, ScoreFunction)


class _inner_strategies(Messenger):
    """SIVI's inner draws: keep a pathwise or score-function strategy, else the score function.

    The inner draws ``λ_{1..K}`` are the family's own auxiliary sites drawn again; an outer
    ``λ_0`` that is enumerated (or measure-valued) keeps its strategy, its inner copies form a
    particle block and take the score function.
    """

    def process_message(self, msg) -> None:
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        if not isinstance(site_strategy(msg), _INNER_STRATEGIES):
            msg["infer"] = {**(msg.get("infer") or {}), ESTIMATOR_KEY: ScoreFunction()}


@dataclass(frozen=True)
class Marginal:
    """A family with auxiliary latents whose density is estimated by an inner sampler.

    See :func:`marginal`. :meth:`trace` draws ``(z, λ_0)`` from the family;
    :meth:`log_density` returns ``log q̂_K(z)`` at a trace's values.
    """

    family: Callable
    aux: tuple[str, ...]
    reverse: Callable | None = None
    num_inner: int = 0

    def _split(self, params):
        """``(family params, reverse params)``: the family's own for SIVI."""
        if self.reverse is None:
            return params, params
        if not isinstance(params, FamilyAndReverseParams):
            raise ValueError(
                "params: a marginal with a reverse family takes "
                "vj.FamilyAndReverseParams(family=..., reverse=...), got "
                f"{type(params).__name__}"
            )
        return params.family, params.reverse

    def trace(self, params, key, *args, **kwargs) -> dict:
        """Trace the family with fresh draws (its auxiliary sites included)."""
        family_params, _ = self._split(params)
        family_trace = handlers.trace(handlers.seed(self.family, key)).get_trace(
            family_params, *args, **kwargs
        )
        latents = _latents(family_trace)
        unknown = sorted(set(self.aux) - set(latents))
        if unknown:
            raise ValueError(
                f"aux: unknown site(s) {unknown}; the family's latent sites are {latents}"
            )
        if not set(latents) - set(self.aux):
            raise ValueError(f"aux: every latent site of the family is auxiliary ({latents})")
        return family_trace

    def log_density(self, params, key, family_trace: dict, *args, **kwargs) -> Terms:
        r"""``log q̂_K(z)`` at the values of ``family_trace`` (from :meth:`trace`).

        ``K = 0``: ``log q(z, λ_0) − log r(λ_0 | z)`` as :class:`Terms`, one term per site
        (path-gradient sites of the family with their parameters held fixed). ``K ≥ 1``: the
        coupled particle block ``log 1/(K+1) Σ_k exp(W_k)``,
        ``W_k = log q(z, λ_k) − log r(λ_k | z)``, so that the estimators see the inner
        particles (it stays a block when negated: a leave-one-out baseline on the inner draws
        is then VIMCO's for it).
        """
        family_params, reverse_params = self._split(params)
        latents = _latents(family_trace)
        shared = {n: family_trace[n]["value"] for n in latents if n not in self.aux}
        if self.num_inner > 0:
            for name in latents:
                self._check_inner_strategy(family_trace[name], "family")

        # k = 0: the auxiliary value that generated z
        if self.reverse is None:  # q(z, λ) / q(λ) = q(z | λ): the family's non-auxiliary terms
            first = Terms.from_trace(family_trace, sites=list(shared), family=self.num_inner == 0)
        else:
            reverse_trace = handlers.trace(
                handlers.seed(handlers.replay(self.reverse, family_trace), key)
            ).get_trace(reverse_params, shared, *args, **kwargs)
            self._check_reverse(reverse_trace)
            first = Terms.from_trace(
                family_trace, sites=latents, family=self.num_inner == 0
            ) - Terms.from_trace(reverse_trace, sites=self.aux)
        if self.num_inner == 0:
            return first
        first_weight = first.value

        def particle(particle_key, is_first):
            # Particle 0 carries λ_0. Its own draw from r is unused, so r sees its parameters
            # held fixed there: that draw adds no gradient, no score and no measure-valued term.
            def hold(tree):
                stop = jax.lax.stop_gradient
                return jax.tree.map(lambda x: jnp.where(is_first, stop(x), x), tree)

            weight = self._inner_weight(
                hold(family_params),
                hold(reverse_params),
                hold(shared),
                family_trace,
                particle_key,
                args,
                kwargs,
            )
            return jnp.where(is_first, first_weight, weight)

        num = self.num_inner + 1
        is_first = jnp.arange(num) == 0
        block = particle_log_mean_exp(particle, jax.random.fold_in(key, 1), num, is_first)
        return block

    def _inner_weight(self, family_params, reverse_params, shared, family_trace, key, args, kwargs):
        """``W = log q(z, λ) − log r(λ | z)`` at a fresh ``λ ~ r(· | z)``."""
        reverse_key, family_key = jax.random.split(key)
        if self.reverse is None:  # SIVI: λ ~ q(λ), W = log q(z | λ)
            joint = handlers.trace(
                handlers.seed(
                    _inner_strategies(handlers.substitute(self.family, shared)), family_key
                )
            ).get_trace(family_params, *args, **kwargs)
            return Terms.from_trace(joint, sites=list(shared)).value
        reverse_trace = handlers.trace(handlers.seed(self.reverse, reverse_key)).get_trace(
            reverse_params, shared, *args, **kwargs
        )
        self._check_reverse(reverse_trace)
        for name in self.aux:
            self._check_inner_strategy(reverse_trace[name], "reverse")
        joint = handlers.trace(
            handlers.seed(
                handlers.replay(self.family, {**family_trace, **reverse_trace}), family_key
            )
        ).get_trace(family_params, *args, **kwargs)
        log_q = Terms.from_trace(joint, sites=_latents(joint))
        return (log_q - Terms.from_trace(reverse_trace, sites=self.aux)).value

    def _check_reverse(self, reverse_trace: dict) -> None:
        sampled = _latents(reverse_trace)
        missing = sorted(set(self.aux) - set(sampled))
        if missing:
            raise ValueError(
                f"reverse: does not sample the auxiliary site(s) {missing} (it samples {sampled})"
            )
        extra = sorted(set(sampled) - set(self.aux))
        if extra:
            raise ValueError(
                f"reverse: samples site(s) {extra} that are not auxiliary sites {list(self.aux)}"
            )

    def _check_inner_strategy(self, site: dict, program: str) -> None:
        strategy = site_strategy(site)
        if stops_density_gradient(strategy):
            raise ValueError(
                f"site {site['name']!r} of the {program}: the path (sticking-the-landing) "
                "strategy is biased inside an inner importance sampler (num_inner >= 1); use "
                "vj.reparameterized()"
            )
        if program == "reverse" and not isinstance(strategy, _INNER_STRATEGIES):
            raise ValueError(
                f"site {site['name']!r} of the reverse: {strategy.name} is not supported for "
                "the inner draws (they share their names with the family's auxiliary sites); "
                "use vj.reparameterized(), vj.implicit() or vj.score_function()"
            )


def _check_aux(name: str, aux) -> tuple[str, ...]:
    if isinstance(aux, str):
        aux = (aux,)
    if (
        not isinstance(aux, Sequence)
        or not aux
        or not all(isinstance(a, str) for a in aux)
        or len(set(aux)) != len(aux)
    ):
        raise ValueError(
            f"{name}: aux must be a non-empty tuple of distinct site names, got {aux!r}"
        )
    return tuple(aux)


def _check_count(name: str, argument: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: {argument} must be an int >= {minimum}, got {value!r}")


def marginal(
    family: Callable,
    aux: Sequence[str],
    reverse: Callable | None = None,
    num_inner: int = 0,
) -> Marginal:
    r"""``family`` with its auxiliary sites ``aux`` marginalized by an inner importance sampler.

        log q̂_K(z) = log 1/(K+1) Σ_{k=0}^{K} q(z, λ_k) / r(λ_k | z),   λ_{1..K} ~ r(· | z),

    ``λ_0`` being the auxiliary value that generated ``z`` (Sobolev & Vetrov 2019).
    ``E[log q̂_K(z)] ≥ log q(z)``, with equality for ``r = q(λ | z)`` or ``K → ∞``.

    Args:
      family: a program ``family(params, *args)`` sampling the auxiliary sites and the model's
        latent sites.
      aux: names of the family's auxiliary sites (not latent sites of the model).
      reverse: a program ``reverse(params, latents, *args)`` sampling exactly the sites ``aux``
        given ``latents``, the dict of the family's other latent values; ``None`` uses the
        family itself run with those values fixed (the mixing distribution ``q(λ)`` when the
        auxiliary sites come first: semi-implicit VI).
      num_inner: ``K``, the inner draws from ``r``.

    Example:
        >>> import jax, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def family(phi):
        ...     lam = vj.sample("lam", dist.Normal(phi, 1.0))
        ...     vj.sample("z", dist.Normal(lam, 1.0))
        >>> m = vj.marginal(family, aux=("lam",), num_inner=8)
        >>> trace = m.trace(0.0, jax.random.key(0))
        >>> log_q = m.log_density(0.0, jax.random.key(1), trace).value  # ≈ log N(z; 0, 2)
    """
    aux = _check_aux("marginal", aux)
    if reverse is not None and not callable(reverse):
        raise ValueError(f"marginal: reverse must be a program or None, got {reverse!r}")
    _check_count("marginal", "num_inner", num_inner, 0)
    return Marginal(family, aux, reverse, num_inner)


def hierarchical_log_weight(model, marginal: Marginal, params, key, args, kwargs) -> Terms:
    """One particle's ``log p(x, z) − log q̂_K(z)`` with ``(z, λ_0)`` drawn from the family.

    Every latent site of the model must be a non-auxiliary site of the family and vice versa
    (a ``ValueError`` names the ones that are not).
    """
    if isinstance(params, ModelAndFamilyParams):
        model_params, marginal_params = (params.model,), params.family
    else:
        model_params, marginal_params = (), params
    family_key, model_key, inner_key = key, jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
    family_trace = marginal.trace(marginal_params, family_key, *args, **kwargs)
    model_trace = handlers.trace(
        handlers.seed(handlers.replay(model, family_trace), model_key)
    ).get_trace(*model_params, *args, **kwargs)
    model_latents = set(_latents(model_trace))
    shared = set(_latents(family_trace)) - set(marginal.aux)
    clash = sorted(model_latents & set(marginal.aux))
    if clash:
        raise ValueError(
            f"aux: site(s) {clash} are latent sites of the model; auxiliary sites belong to the "
            "family only"
        )
    if shared - model_latents:
        raise ValueError(
            f"family site(s) {sorted(shared - model_latents)} are neither latent sites of the "
            f"model (model latents: {sorted(model_latents)}) nor auxiliary (aux)"
        )
    if model_latents - shared:
        missing = sorted(model_latents - shared)
        raise ValueError(f"model latent site(s) {missing} are not sampled by the family")
    log_q = marginal.log_density(marginal_params, inner_key, family_trace, *args, **kwargs)
    return Terms.from_trace(model_trace) - log_q


@dataclass(frozen=True)
class HierarchicalBound:
    """``L_K`` averaged over ``num_particles`` draws, or ``L_{M,K}`` when importance weighted.

    ``importance_weighted=False``: ``1/M Σ_m [log p(x, z_m) − log q̂_K(z_m)]`` (a particle
    plate); ``True``: ``log 1/M Σ_m p(x, z_m) / q̂_K(z_m)`` (see the module docstring).
    """

    model: Callable
    marginal: Marginal
    num_particles: int = 1
    importance_weighted: bool = False

    def __call__(self, params, key, *args, **kwargs) -> Terms:
        def one(particle_key):
            return hierarchical_log_weight(
                self.model, self.marginal, params, particle_key, args, kwargs
            )

        if self.importance_weighted:
            return particle_log_mean_exp(one, key, self.num_particles)
        if self.num_particles == 1:
            return one(key)
        return particle_mean(one, key, self.num_particles)


def hvi(
    model: Callable,
    family: Callable,
    *,
    aux: Sequence[str],
    reverse: Callable | None,
    num_particles: int = 1,
) -> HierarchicalBound:
    r"""The auxiliary-variable ELBO of a hierarchical family (HVI; Ranganath et al. 2016):

        L_0 = E_{q(z, λ)}[log p(x, z) + log r(λ | z) − log q(z, λ)] ≤ ELBO(q) ≤ log p(x),

    with ``r(λ | z)`` the reverse family, trained with the family (the gap to the ELBO is
    ``E_q[KL(q(λ | z) ‖ r(λ | z))]``). Averaged over ``num_particles`` draws. Arguments as
    in :func:`marginal`.
    """
    _check_count("hvi", "num_particles", num_particles, 1)
    return HierarchicalBound(model, marginal(family, aux, reverse, 0), num_particles)


def iwhvi(
    model: Callable,
    family: Callable,
    *,
    aux: Sequence[str],
    reverse: Callable | None,
    num_inner: int,
    num_particles: int = 1,
) -> HierarchicalBound:
    r"""The importance-weighted hierarchical bound (IWHVI; Sobolev & Vetrov 2019):

        L_K = E[log p(x, z) − log 1/(K+1) Σ_{k=0}^{K} q(z, λ_k) / r(λ_k | z)],

    ``(z, λ_0) ~ q``, ``λ_{1..K} ~ r(· | z)``. ``L_0`` is :func:`hvi`; ``L_K`` increases with
    ``K`` to the ELBO of the marginal ``q(z)``. Averaged over ``num_particles`` draws.
    """
    _check_count("iwhvi", "num_inner", num_inner, 0)
    _check_count("iwhvi", "num_particles", num_particles, 1)
    return HierarchicalBound(model, marginal(family, aux, reverse, num_inner), num_particles)


def diwhvi(
    model: Callable,
    family: Callable,
    *,
    aux: Sequence[str],
    reverse: Callable | None,
    num_particles: int,
    num_inner: int,
) -> HierarchicalBound:
    r"""The doubly importance-weighted hierarchical bound (DIWHVI):

        L_{M,K} = E[log 1/M Σ_{m=1}^{M} p(x, z_m) / q̂_K(z_m)] ≤ log p(x),

    an IWAE bound over ``M = num_particles`` outer draws, each with its own inner estimate
    ``q̂_K`` (``E[1/q̂_K(z)] = 1/q(z)``, so this is an IWAE bound on an extended space; Sobolev &
    Vetrov 2019; Becker et al. 2024). ``M = 1`` is :func:`iwhvi`.
    """
    _check_count("diwhvi", "num_particles", num_particles, 1)
    _check_count("diwhvi", "num_inner", num_inner, 0)
    bound = marginal(family, aux, reverse, num_inner)
    return HierarchicalBound(model, bound, num_particles, importance_weighted=True)


def sivi(
    model: Callable,
    family: Callable,
    *,
    aux: Sequence[str],
    num_inner: int,
    num_particles: int = 1,
) -> HierarchicalBound:
    r"""Semi-implicit VI (Yin & Zhou 2018): IWHVI with ``r(λ | z) = q(λ)``, the mixing law.

        L_K = E[log p(x, z) − log 1/(K+1) Σ_{k=0}^{K} q(z | λ_k)],
        λ_0 ~ q(λ), z ~ q(z | λ_0), λ_{1..K} ~ q(λ) (fresh draws of the family's own sites),

    Yin & Zhou's surrogate lower bound ``L̲_K``, increasing in ``K`` to the ELBO of ``q(z)``.
    The family's auxiliary sites must be drawn before the others for ``r`` to be ``q(λ)`` (if
    not, ``r`` is the family's conditional of ``λ`` given the other latents, still a valid
    bound). Inner draws of an enumerated auxiliary site use the score function. Parameters are
    the family's.
    """
    _check_count("sivi", "num_inner", num_inner, 0)
    _check_count("sivi", "num_particles", num_particles, 1)
    return HierarchicalBound(model, marginal(family, aux, None, num_inner), num_particles)
