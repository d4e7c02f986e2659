r"""Gauss–Hermite quadrature as a gradient strategy for one-dimensional Gaussian sites.

Many objectives contain expectations over a scalar Gaussian, ``E_{f ~ N(μ, σ²)}[g(f)]``: the
SVGP's per-datum expected log-likelihood is the standard case. Monte Carlo estimates them with
noise; Gauss–Hermite quadrature computes them to high accuracy and deterministically,

    E_{f ~ N(μ, σ²)}[g(f)] ≈ Σ_k w_k g(μ + σ x_k),      k = 1..K,            (GH)

with the probabilists' nodes ``x_k`` and weights ``w_k`` (``Σ w_k = 1``; exact for polynomials
of degree ``< 2K``). Its gradient in ``(μ, σ)`` is the pathwise gradient at the nodes.

**The design: a strategy marks the site, a transformation evaluates the objective at the
nodes.** A site chosen with ``estimator=gauss_hermite(K)`` (at the site, or from outside with
:func:`vijax.with_estimators`) says "integrate me by K-point quadrature". The objective is
wrapped once, ``quadrature(vj.elbo(model, family))``; the wrapped objective

1. finds the marked sites with an abstract trace under its own gradient estimator
   (``jax.eval_shape`` under ``block``: estimators outside see nothing of it, nothing is
   computed; the result is cached per objective and argument shapes);
2. evaluates the objective at every node ``k`` with the same key, each marked site's value
   set to ``μ + σ x_k`` (all elements of the site at once) by the strategy's ``draw`` when an
   estimator draws it, or by a handler in plain evaluation, and
3. returns ``Σ_k w_k · objective_k`` built with :func:`vijax.particle_mean` over the nodes, so
   the value stays :class:`vijax.Terms` and every other site's strategy (reparameterized,
   score function with Rao-Blackwellization, measure-valued) keeps working inside.

Setting *all* elements of a site to node ``k`` at once is exact per-element quadrature because a
marked site's batch axes must lie in ``vj.plate`` s: the plate declares its elements
conditionally independent, so each term of the objective depends on at most one element (the
same rule as enumeration in :func:`vijax.gradient_estimator`); a marked site with batch axes
outside a plate is refused. Several marked sites use the product grid of their rules.

**Marginals (local reparameterization).** In a sparse GP the family draws ``u ~ q(u)`` and then
``f_i | u ~ p(f_i | u)``, the model's own conditional, so the two programs' ``f`` density terms
cancel *pointwise* (with ``vj.elbo``'s analytic KL they are exactly zero) and the objective
depends on ``f`` only through per-datum terms of its value. Such a term's expectation needs only
the marginal ``q(f_i) = ∫ p(f_i | u) q(u) du = N(μ_i, σ_i²)``, so the site may declare it,
``vj.sample("f", p_f_given_u, infer={"marginal": q_f})``, and both :func:`gauss_hermite` and
:func:`local_reparameterized` integrate over the marginal instead of the conditional (Kingma,
Salimans & Welling 2015's local reparameterization trick; quadrature over the marginal is
Hensman et al. 2015's SVGP bound, deterministic for a fixed minibatch). The declaration is the
family author's promise that the site's conditional is the same in model and family.
Without a declared marginal the site's own Normal distribution is used: any scalar Normal
latent inside plates can be integrated this way.

Without the wrapper a marked site is refused when a gradient estimator draws it (so quadrature
is never silently replaced by something else); plain evaluation (``vj.sample_posterior``)
samples it as usual.

Hooks that would make this simpler (``vijax.estimators`` is not changed here): a strategy
attribute ``local_support(msg) -> (values[K, *site_shape], log_weights[K])`` honoured by
:func:`vijax.gradient_estimator`'s per-element enumeration (today it reads ``Enumerate`` and the
distribution's ``enumerate_support``, shared by all elements) would make Gauss–Hermite plain
enumeration over per-element nodes with weights ``w_k`` instead of ``q(v)``, with no wrapper and
no discovery trace; and a strategy protocol instead of the closed list of types in
``check_strategy`` (the strategies here subclass :class:`vijax.estimators.Reparameterized` to
pass it; their gradients are pathwise, so that is also what they are).

Example:
    >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
    >>> import vijax as vj
    >>> from vijax.models import gp
    >>> def model(y):
    ...     with vj.plate("data", y.shape[0]):
    ...         z = vj.sample("z", dist.Normal(0.0, 1.0))
    ...         vj.sample("y", dist.Poisson(jnp.exp(z)), obs=y)
    >>> def family(params, y):
    ...     with vj.plate("data", y.shape[0]):
    ...         vj.sample("z", dist.Normal(params, 0.5), estimator=gp.gauss_hermite(30))
    >>> objective = gp.quadrature(vj.elbo(model, family))
    >>> y = jnp.array([0.0, 3.0])
    >>> value, grad = vj.value_and_grad_estimate(objective)(jnp.zeros(2), jax.random.key(0), y)
    >>> # E[y z − e^z − log y!] = y μ − e^{μ + σ²/2} − log y! in closed form
    >>> kl = dist.kl_divergence(dist.Normal(0.0, 0.5), dist.Normal(0.0, 1.0))
    >>> exact = jnp.sum(-jnp.exp(0.125) - jax.scipy.special.gammaln(y + 1) - kl)
    >>> bool(jnp.allclose(value, exact, rtol=1e-5))
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.primitives import Messenger

from vijax.core import ESTIMATOR_KEY
from vijax.core.handlers import block
from vijax.estimators import LeaveOneOut, Reparameterized, ScoreFunction
from vijax.models.gp.likelihoods import gauss_hermite_rule
from vijax.objectives import Terms, particle_mean, value_and_grad_estimate

__all__ = [
    "MARGINAL_KEY",
    "GaussHermite",
    "LocalReparameterized",
    "Quadrature",
    "gauss_hermite",
    "local_reparameterized",
    "quadrature",
]

#: the ``infer`` key under which a site declares its marginal (see the module docstring)
MARGINAL_KEY = "marginal"

#: the largest product grid :func:`quadrature` evaluates
MAX_POINTS = 4096


def _strategy(msg):
    return (msg.get("infer") or {}).get(ESTIMATOR_KEY)


def _target(msg, strategy_name: str) -> tuple[jax.Array, jax.Array, bool]:
    """``(μ, σ, declared)``: the Normal a site is integrated over, broadcast to its shape."""
    name, fn = msg["name"], msg["fn"]
    declared = MARGINAL_KEY in (msg.get("infer") or {})
    target = msg["infer"][MARGINAL_KEY] if declared else fn
    base = target
    while isinstance(base, dist.ExpandedDistribution):
        base = base.base_dist
    if not isinstance(base, dist.Normal) or target.event_shape != ():
        what = "its declared marginal is" if declared else "it is"
        raise ValueError(
            f"site {name!r}: {strategy_name} integrates scalar Normal sites elementwise, but "
            f"{what} {type(target).__name__} with event shape {tuple(target.event_shape)}"
        )
    shape = tuple(msg["kwargs"].get("sample_shape", ())) + tuple(fn.batch_shape)
    try:
        loc = jnp.broadcast_to(base.loc, shape)
        scale = jnp.broadcast_to(base.scale, shape)
    except ValueError:
        raise ValueError(
            f"site {name!r}: the declared marginal has batch shape {tuple(target.batch_shape)}, "
            f"which does not broadcast to the site's shape {shape}"
        ) from None
    return loc, scale, declared


def _check_plated(msg, strategy_name: str, shape) -> None:
    """Every non-trivial batch axis of the site must be a plate axis (named in the error)."""
    plated = {frame.dim for frame in msg.get("cond_indep_stack", ())}
    loose = [i - len(shape) for i, n in enumerate(shape) if n > 1 and i - len(shape) not in plated]
    if loose:
        raise ValueError(
            f"site {msg['name']!r}: {strategy_name} evaluates all elements of the site at one "
            f"node at a time, which needs each batch axis inside a vj.plate (conditionally "
            f"independent elements); axes {loose} of shape {tuple(shape)} are not"
        )


@dataclass(frozen=True)
class GaussHermite(Reparameterized):
    """Integrate a scalar Normal site by ``num_points``-point Gauss–Hermite quadrature.

    A :class:`vijax.estimators.Reparameterized` strategy for the estimators' checks (the
    gradient is pathwise at the nodes); the nodes are set by :func:`quadrature`.
    """

    num_points: int = 20
    name = "gauss_hermite"

    def draw(self, msg) -> None:
        """Set the site to this evaluation's node (inside :func:`quadrature`), else refuse."""
        if _CONTEXTS:
            _set_value(msg, self)
            return
        raise ValueError(
            f"site {msg['name']!r}: the gauss_hermite strategy is evaluated by quadrature; wrap "
            "the objective as vijax.models.gp.quadrature(objective) (SVGP.elbo() does), or "
            "choose vijax.models.gp.local_reparameterized() for Monte Carlo"
        )


@dataclass(frozen=True)
class LocalReparameterized(Reparameterized):
    """A pathwise draw ``f = μ + σ ε`` from the site's declared marginal (else its own Normal)."""

    name = "local_reparameterized"

    def draw(self, msg) -> None:
        """Set the site's value to a reparameterized draw from its marginal."""
        loc, scale, declared = _target(msg, self.name)
        if declared:
            _check_plated(msg, self.name, loc.shape)
        key = msg["kwargs"].get("rng_key")
        if key is None:
            raise ValueError(f"site {msg['name']!r}: {self.name} needs a seeded program")
        noise = jax.random.normal(key, loc.shape, jnp.result_type(loc))
        msg["value"], msg["intermediates"] = loc + scale * noise, []


def gauss_hermite(num_points: int = 20) -> GaussHermite:
    """The Gauss–Hermite strategy with ``num_points`` nodes (see the module docstring).

    Example:
        >>> from vijax.models import gp
        >>> gp.gauss_hermite(10).num_points
        10
    """
    if not isinstance(num_points, int) or isinstance(num_points, bool) or num_points < 1:
        raise ValueError(f"gauss_hermite: num_points must be a positive int, got {num_points!r}")
    return GaussHermite(num_points)


def local_reparameterized() -> LocalReparameterized:
    """Monte Carlo from the site's declared marginal (Kingma, Salimans & Welling 2015).

    Example:
        >>> from vijax.models import gp
        >>> gp.local_reparameterized().name
        'local_reparameterized'
    """
    return LocalReparameterized()


class _Context:
    """What ``gauss_hermite`` sites do in one traced evaluation (trace time only).

    ``nodes=None``: discovery, record each site (name → strategy) and give it a placeholder
    value; otherwise ``nodes`` maps each site to this evaluation's node ``x_k``.
    """

    def __init__(self, nodes: dict | None = None):
        self.nodes = nodes
        self.found: dict[str, GaussHermite] = {}


#: the contexts of the quadrature evaluations being traced, innermost last (like NumPyro's
#: handler stack, it only lives while a program is traced)
_CONTEXTS: list[_Context] = []


def _set_value(msg, strategy: GaussHermite) -> None:
    """Set a ``gauss_hermite`` site to ``μ + σ x_k`` (or record it, in discovery)."""
    context, name = _CONTEXTS[-1], msg["name"]
    loc, scale, _ = _target(msg, strategy.name)
    _check_plated(msg, strategy.name, loc.shape)
    if context.nodes is None:
        known = context.found.setdefault(name, strategy)
        if known != strategy:
            raise ValueError(f"site {name!r} is drawn with {known} and {strategy}; use one rule")
        value = loc
    elif name not in context.nodes:
        raise ValueError(
            f"site {name!r} is marked gauss_hermite but was not reached when the objective was "
            "first traced; quadrature needs the same sites in every run"
        )
    else:
        value = loc + scale * context.nodes[name].astype(jnp.result_type(loc))
    msg["value"], msg["intermediates"] = value, []


class _AtNodes(Messenger):
    """Set fresh ``gauss_hermite`` sites from the innermost context.

    Sites that a gradient estimator draws first (inside its particle blocks) are set by
    :meth:`GaussHermite.draw` from the same context; this handler covers plain evaluation.
    """

    def process_message(self, msg) -> None:
        if msg["type"] != "sample" or msg["is_observed"] or msg["value"] is not None:
            return
        strategy = _strategy(msg)
        if isinstance(strategy, ScoreFunction) and isinstance(strategy.baseline, LeaveOneOut):
            raise NotImplementedError(
                f"site {msg['name']!r}: a leave-one-out baseline inside a quadrature objective "
                "would treat the quadrature nodes as independent particles; use another baseline"
            )
        if isinstance(strategy, GaussHermite):
            _set_value(msg, strategy)


def _signature(tree) -> tuple:
    """Structure, shapes and dtypes of ``tree`` (Python leaves as they are): a cache key."""
    leaves, treedef = jax.tree.flatten(tree)
    described = []
    for leaf in leaves:
        if isinstance(leaf, jax.Array | np.ndarray | np.generic):
            described.append((jnp.shape(leaf), jnp.result_type(leaf)))
        else:
            described.append(leaf)
    return (treedef, *described)


#: sites found per (objective, signature of its arguments): discovery traces once per shape
_FOUND: dict = {}


def _discover(objective, params, key, args, kwargs) -> dict:
    """The ``gauss_hermite`` sites of ``objective`` (name → strategy), from an abstract trace.

    The trace runs the objective under its own gradient estimator, hidden from every handler
    outside (``block``), so that estimators outside see nothing of it; nothing is computed.
    """
    try:
        cache_key = (objective, _signature((params, key, args, kwargs)))
        hash(cache_key)
    except TypeError:  # unhashable objective or arguments: discover every time
        cache_key = None
    if cache_key is not None and cache_key in _FOUND:
        return _FOUND[cache_key]
    context = _Context()
    estimate = value_and_grad_estimate(objective)
    _CONTEXTS.append(context)
    try:
        with block(), _AtNodes():
            jax.eval_shape(lambda: estimate(params, key, *args, **kwargs))
    finally:
        _CONTEXTS.pop()
    if cache_key is not None:
        _FOUND[cache_key] = context.found
    return context.found


@dataclass(frozen=True)
class Quadrature:
    """An objective whose ``gauss_hermite`` sites are integrated by quadrature (see
    :func:`quadrature`)."""

    objective: Callable
    max_points: int = MAX_POINTS

    def __call__(self, params, key, *args, **kwargs):
        def run():
            return self.objective(params, key, *args, **kwargs)

        found = _discover(self.objective, params, key, args, kwargs)
        if not found:
            return run()
        names = sorted(found)
        rules = [gauss_hermite_rule(found[n].num_points) for n in names]
        size = 1
        for nodes, _ in rules:
            size *= nodes.shape[0]
        if size > self.max_points:
            raise ValueError(
                f"quadrature over sites {names} needs {size} evaluations (the product of their "
                f"rules), more than max_points={self.max_points}"
            )
        node_grids = jnp.meshgrid(*[nodes for nodes, _ in rules], indexing="ij")
        weight_grids = jnp.meshgrid(*[weights for _, weights in rules], indexing="ij")
        nodes = {n: g.reshape(-1) for n, g in zip(names, node_grids)}
        weights = jnp.prod(jnp.stack([g.reshape(-1) for g in weight_grids]), axis=0)

        def at_node(_particle_key, node, weight):
            # every node sees the same key: the same minibatch and the same other draws
            _CONTEXTS.append(_Context(node))
            try:
                with _AtNodes():
                    value = Terms.of(run())
            finally:
                _CONTEXTS.pop()
            return value * (size * weight)

        return particle_mean(at_node, key, size, nodes, weights)


def quadrature(objective: Callable, *, max_points: int = MAX_POINTS) -> Quadrature:
    r"""``objective`` with every site marked :func:`gauss_hermite` integrated by quadrature.

    The result is an objective ``(params, key, *args) -> Terms`` for :func:`vijax.fit` and
    :func:`vijax.gradient_estimator`; with no marked site it is ``objective`` itself.

    Args:
      objective: any objective (``vj.elbo(...)``, ``vj.iwae(...)``, your own).
      max_points: refuse product grids with more evaluations than this.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
        >>> import vijax as vj
        >>> from vijax.models import gp
        >>> def family(mu):
        ...     return vj.sample("z", dist.Normal(mu, 2.0), estimator=gp.gauss_hermite(5))
        >>> def objective(mu, key):  # E[z⁴] = μ⁴ + 6μ²σ² + 3σ⁴
        ...     return vj.seed(family, key)(mu) ** 4
        >>> round(float(gp.quadrature(objective)(1.0, jax.random.key(0)).value), 4)
        73.0
    """
    if not isinstance(max_points, int) or max_points < 1:
        raise ValueError(f"quadrature: max_points must be a positive int, got {max_points!r}")
    return Quadrature(objective, max_points)
