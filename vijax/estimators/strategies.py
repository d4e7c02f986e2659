r"""Per-site gradient strategies: how the expectation over one random choice is differentiated.

An objective is an expectation ``L(φ) = E_{z ~ q_φ}[f(z, φ)]``. Each sampled site of the family
says how its part of ``∇_φ L`` is estimated:

- :func:`reparameterized` (pathwise; Kingma & Welling 2014; Rezende et al. 2014): write
  ``z = g_φ(ε)`` with ``ε`` parameter-free, so ``∇_φ L = E_ε[∇_φ f(g_φ(ε), φ)]``. Needs a
  distribution with ``rsample`` (``has_rsample``).
- :func:`path` (sticking the landing; Roeder et al. 2017): a reparameterized draw whose own
  density term ``log q_φ(z)`` is evaluated with the parameters held fixed, ``log q_{⊥φ}(z_φ)``.
  It drops the score term ``∇_φ log q_φ(z)|_z`` (zero mean), so the estimate is unbiased, and
  it is exactly zero when ``q`` equals the posterior.
- :func:`implicit` (implicit reparameterization; Figurnov et al. 2018): for Gamma, Beta and
  Dirichlet sites, whose samplers have no explicit ``z = g_φ(ε)``, the pathwise derivative is
  ``∂z/∂φ = −(∂F/∂φ) / q_φ(z)`` with ``F`` the CDF, which JAX's gamma sampler provides.
- :func:`vijax.estimators.mvd.mvd` (measure-valued derivatives; Mohamed et al. 2020): for
  Bernoulli, Categorical, Poisson, Geometric and Normal sites, each parameter's derivative is a
  constant times the difference of the objective at two coupled values of the site.
- :func:`score_function` (REINFORCE; Williams 1992): ``∇_φ L = E_z[∇_φ f(z, φ) + (f(z, φ) − b)
  ∇_φ log q_φ(z)]``, valid for any distribution, with a baseline ``b`` (see
  :mod:`vijax.estimators.baselines`) and Rao-Blackwellized over plates.

The default rule (:func:`default_strategy`) reparameterizes when the distribution supports it
and uses the score function otherwise. A strategy is chosen at the site
(``vj.sample("z", d, estimator=vj.score_function())``), from outside with
:func:`vijax.with_estimators`, or left to the default rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax

from vijax.estimators.accept_reject import AcceptReject, AcceptRejectSampler
from vijax.estimators.baselines import BASELINE_TYPES, NoBaseline
from vijax.estimators.mvd import MVD_FAMILIES, MeasureValued, base_distribution

__all__ = [
    "Detached",
    "Enumerate",
    "Implicit",
    "Path",
    "Reparameterized",
    "ScoreFunction",
    "default_strategy",
    "draw",
    "enumeration",
    "implicit",
    "path",
    "reparameterized",
    "score_function",
]


@dataclass(frozen=True)
class Reparameterized:
    """Pathwise gradient through the sample ``z = g_φ(ε)``."""

    uses_score = False
    name = "reparameterized"


@dataclass(frozen=True)
class Path:
    """Pathwise draw; the family's own density term uses stopped parameters (STL)."""

    uses_score = False
    name = "path"


@dataclass(frozen=True)
class Implicit:
    """Implicit reparameterization for Gamma-based distributions (Gamma, Beta, Dirichlet)."""

    uses_score = False
    name = "implicit"


#: distributions whose NumPyro samplers draw through ``jax.random.gamma`` (implicit gradients)
IMPLICIT_FAMILIES = ("Gamma", "Beta", "Dirichlet", "Chi2", "InverseGamma")


@dataclass(frozen=True)
class Detached:
    """A draw with no gradient path and no score term: biased on its own.

    Reweighted wake-sleep uses it: its wake-φ step differentiates ``log q_φ(z)`` at fixed
    samples by design. Not for use as a site's estimator.
    """

    uses_score = False
    name = "detached"


@dataclass(frozen=True)
class Enumerate:
    """Exact sum over a finite support: the rest of the objective at every value, same keys."""

    uses_score = False
    name = "enumeration"


@dataclass(frozen=True)
class ScoreFunction:
    """Score-function (REINFORCE) gradient ``(f − b) ∇ log q`` with a ``baseline``."""

    baseline: object = field(default_factory=NoBaseline)
    uses_score = True
    name = "score_function"


def reparameterized() -> Reparameterized:
    """The pathwise (reparameterization) strategy."""
    return Reparameterized()


def implicit() -> Implicit:
    """Implicit reparameterization (Gamma, Beta, Dirichlet and their relatives)."""
    return Implicit()


def enumeration() -> Enumerate:
    """Exact enumeration of a finite-support site (Bernoulli, Categorical, ...).

    The objective is evaluated at every value of the site with the same random numbers for
    every other draw, and the values are summed with weights ``q_φ(v)``: zero variance from
    this site, at the cost of one evaluation per value (the product of the supports for
    several enumerated sites). A site inside a plate is enumerated per datum: every element
    takes each value at once and each datum's terms are weighted by its own ``q_φ(v_i)``, so
    the cost is one evaluation per value, never the product space (valid where the plate's
    terms stay separate; a later site that pools the plate is refused). Refused inside a
    particle block (each particle would need the others' values jointly; use :func:`mvd` or
    the score function there) and for continuous sites, naming the site.
    """
    return Enumerate()


def path() -> Path:
    """The path-gradient (sticking-the-landing) strategy for reparameterizable sites."""
    return Path()


def score_function(baseline=None) -> ScoreFunction:
    """The score-function (REINFORCE) strategy with an optional ``baseline``.

    Args:
      baseline: ``None`` (no baseline), ``vj.constant(c)``, ``vj.running_mean(decay)``,
        ``vj.leave_one_out()`` or ``vj.learned(fn)``.
    """
    if baseline is None:
        baseline = NoBaseline()
    if not isinstance(baseline, BASELINE_TYPES):
        raise ValueError(f"score_function: baseline must be a vijax baseline, got {baseline!r}")
    return ScoreFunction(baseline)


STRATEGY_TYPES = (
    Reparameterized,
    Path,
    Implicit,
    Enumerate,
    ScoreFunction,
    Detached,
    MeasureValued,
    AcceptReject,
    AcceptRejectSampler,
)


def default_strategy(fn):
    """Reparameterize when ``fn`` has ``rsample``, else use the score function."""
    return Reparameterized() if fn.has_rsample else ScoreFunction()


def check_strategy(strategy, site: str) -> None:
    """Raise a ``ValueError`` naming ``site`` when ``strategy`` is not a vijax strategy."""
    if not isinstance(strategy, STRATEGY_TYPES):
        raise ValueError(
            f"site {site!r}: estimator must be a vijax strategy such as vj.reparameterized() "
            f"or vj.score_function(), got {strategy!r}"
        )


def stops_density_gradient(strategy) -> bool:
    """Whether the family's density term of a site uses stopped parameters (path gradients)."""
    return isinstance(strategy, Path)


def draw(msg: dict, strategy) -> None:
    """Draw the value of a fresh sample site according to ``strategy`` (sets ``msg``'s value).

    Reparameterized draws keep the gradient path ``φ → z``; score-function draws stop it, so
    that ``z`` enters the objective as a constant and its gradient comes from the score term.
    """
    fn, name = msg["fn"], msg["name"]
    check_strategy(strategy, name)
    custom = getattr(strategy, "draw", None)
    if custom is not None:
        # a strategy with its own sampler sets msg["value"] (and, for a score-type strategy,
        # msg["score_log_prob"]: the log-density its score term differentiates, batch-shaped)
        custom(msg)
        return
    if isinstance(strategy, Reparameterized | Path) and not fn.has_rsample:
        raise ValueError(
            f"site {name!r}: {strategy.name} asked of {type(fn).__name__}, which has no "
            "rsample; use vj.score_function() (or leave the estimator to the default rule)"
        )
    if isinstance(strategy, Enumerate) and not fn.has_enumerate_support:
        raise ValueError(
            f"site {name!r}: enumeration asked of {type(fn).__name__}, which has no finite support"
        )
    if isinstance(strategy, Implicit):
        base = base_distribution(fn)
        if type(base).__name__ not in IMPLICIT_FAMILIES:
            raise ValueError(
                f"site {name!r}: implicit reparameterization is for {list(IMPLICIT_FAMILIES)}, "
                f"not {type(base).__name__}"
            )
    value, intermediates = fn(*msg["args"], sample_intermediates=True, **msg["kwargs"])
    if isinstance(strategy, MeasureValued):
        kind = type(base_distribution(fn)).__name__
        if kind not in MVD_FAMILIES:
            raise ValueError(
                f"site {name!r}: measure-valued derivatives are implemented for "
                f"{list(MVD_FAMILIES)}, not {kind}"
            )
    if strategy.uses_score or isinstance(strategy, Detached | Enumerate | MeasureValued):
        value, intermediates = jax.lax.stop_gradient(value), []
    msg["value"], msg["intermediates"] = value, intermediates
