r"""Accept-reject reparameterization (Naesseth et al. 2017).

Naesseth, Ruiz, Linderman & Blei (2017), "Reparameterization Gradients through
Acceptance-Rejection Sampling Algorithms" (AISTATS).

A rejection sampler for ``q_θ`` draws ``ε ~ s(ε)``, proposes ``z = h(ε, θ)`` and accepts with
probability ``a_θ(ε) = q_θ(h(ε, θ)) / (M_θ r_θ(h(ε, θ)))``, where ``r_θ(h(ε, θ)) = s(ε) /
|∂h/∂ε|`` is the proposal's density. A proposal is accepted with probability ``1/M_θ``, so the
*accepted* ``ε`` has density

    π(ε; θ) = M_θ s(ε) a_θ(ε) = q_θ(h(ε, θ)) |∂h/∂ε(ε, θ)|,

and ``z = h(ε, θ)`` with ``ε ~ π`` has density ``q_θ``. So ``E_{q_θ}[f(z)] = E_π[f(h(ε, θ))]`` and

    ∇_θ E_{q_θ}[f(z)] = E_π[∇_θ f(h(ε, θ))]                                      (g_rep)
                       + E_π[f(h(ε, θ)) ∇_θ log(q_θ(h(ε, θ)) |∂h/∂ε(ε, θ)|)]      (g_cor).

vijax writes this with its pieces: the site's value is ``z = h(⊥ε, θ)`` (gradient path to θ, the
accepted noise held fixed) and the site is a score-type site whose score log-density is

    ℓ(θ) = log q_θ(h(⊥ε, θ)) + log |∂h/∂ε(⊥ε, θ)|,

so the surrogate's term ``⊥(f − b)·(ℓ − ⊥ℓ)`` is ``g_cor`` with any baseline ``b`` of the catalog
(constant, running mean, leave-one-out, learned), Rao-Blackwellized over plates like a score
function. When the sampler rarely rejects, ``π ≈ s`` barely depends on θ and ``g_cor`` is small:
most of the gradient comes from the pathwise term.

Two strategies:

- :func:`accept_reject`: Gamma (and Chi2, InverseGamma), Beta and Dirichlet sites, through
  Marsaglia & Tsang's (2000) Gamma sampler with shape augmentation (``boost``); Beta and
  Dirichlet are normalized Gammas.
- :func:`accept_reject_sampler`: a user-written rejection sampler (proposal, noise, acceptance)
  for any univariate site.

Example:
    >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def family(log_a):
    ...     shape = jnp.exp(log_a)
    ...     return vj.sample("z", dist.Gamma(shape, 1.0), estimator=vj.accept_reject(boost=1))
    >>> def objective(log_a, key):  # E[z] = a = exp(log a): the gradient is a
    ...     return vj.seed(family, key)(log_a)
    >>> keys = jax.random.split(jax.random.key(0), 4000)
    >>> grads = jax.vmap(vj.grad_estimate(objective), (None, 0))(0.0, keys)
    >>> bool(abs(grads.mean() - 1.0) < 0.1)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpyro.distributions as npd
from jax.scipy.special import gammaln

from vijax.estimators.baselines import BASELINE_TYPES, NoBaseline

__all__ = [
    "AcceptReject",
    "AcceptRejectSampler",
    "accept_reject",
    "accept_reject_sampler",
    "rejection_sample",
]

#: wrappers looked through: they reshape a distribution or mask its density, not its draws
_WRAPPERS = ("Independent", "ExpandedDistribution", "MaskedDistribution")

#: distributions :func:`accept_reject` draws through Marsaglia–Tsang Gammas
GAMMA_FAMILIES = ("Gamma", "Chi2", "InverseGamma", "Beta", "Dirichlet")

DEFAULT_MAX_ROUNDS = 1000


# ----------------------------------------------------------------------------------------------
# The rejection loop
# ----------------------------------------------------------------------------------------------


def rejection_sample(
    key: jax.Array,
    shape: tuple[int, ...],
    noise: Callable,
    log_acceptance: Callable,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
) -> jax.Array:
    """Accepted noise of shape ``shape``: each element the first of its proposals accepted.

    Every round draws ``ε = noise(key, shape)`` and ``u ~ U(0, 1)`` for all elements and
    accepts ``ε_i`` where ``log u_i < log_acceptance(ε)_i``; elements keep their first
    accepted ``ε`` (a ``lax.while_loop`` runs until all are accepted). Elements still rejected
    after ``max_rounds`` rounds (an acceptance probability of zero, or NaN parameters) are NaN,
    so a bad input surfaces as a non-finite value rather than a hang.
    """

    def propose(round_key):
        noise_key, uniform_key = jax.random.split(round_key)
        eps = noise(noise_key, shape)
        u = jax.random.uniform(uniform_key, shape, dtype=jnp.result_type(eps))
        return eps, jnp.log(u) < log_acceptance(eps)

    key, first = jax.random.split(key)
    eps, accepted = propose(first)

    def cond(state):
        _, _, accepted, rounds = state
        return jnp.logical_not(jnp.all(accepted)) & (rounds < max_rounds)

    def body(state):
        key, eps, accepted, rounds = state
        key, round_key = jax.random.split(key)
        proposal, ok = propose(round_key)
        return key, jnp.where(accepted, eps, proposal), accepted | ok, rounds + 1

    _, eps, accepted, _ = jax.lax.while_loop(cond, body, (key, eps, accepted, 1))
    return jnp.where(accepted, eps, jnp.nan)


# ----------------------------------------------------------------------------------------------
# Marsaglia–Tsang Gammas
# ----------------------------------------------------------------------------------------------


def _marsaglia_tsang_log_acceptance(eps, shape):
    """``log a(ε)`` of Marsaglia & Tsang's sampler for ``Gamma(shape, 1)``, ``shape ≥ 1``.

    With ``d = shape − 1/3``, ``c = 1/√(9d)`` and ``v = (1 + cε)³``:
    ``log a = ε²/2 + d − d·v + d·log v`` (``−∞`` where ``v ≤ 0``).
    """
    d = shape - 1.0 / 3.0
    w = 1.0 + eps / jnp.sqrt(9.0 * d)
    valid = w > 0
    w = jnp.where(valid, w, 1.0)
    log_a = 0.5 * eps**2 + d - d * w**3 + 3.0 * d * jnp.log(w)
    return jnp.where(valid, log_a, -jnp.inf)


def _gamma_log_sample(key, concentration, boost, max_rounds):
    """``(log g, ℓ)`` with ``g ~ Gamma(concentration, 1)``, elementwise, gradients to the shape.

    ``g = g̃ · Π_{i=1..B'} u_i^{1/(α+i−1)}`` with ``g̃ = h(ε, α + B')`` the Marsaglia–Tsang
    proposal ``h(ε, a) = (a − 1/3)(1 + ε/√(9a − 3))³`` at the accepted ``ε``, and ``B' = B``
    boosts, one more where ``α + B < 1`` (the proposal needs shape ≥ 1). Only ``ε``'s
    density depends on the shape; the ``u``'s are plain uniforms. For ``a = α + B'`` and
    ``w = 1 + ε/√(9a − 3)``, ``ℓ = log Gamma(h; a, 1) + log |∂h/∂ε| = (a − ½) log d +
    d (3 log w − w³) − log Γ(a)`` with ``d = a − 1/3``.
    """
    alpha = concentration
    shape = jnp.shape(alpha)
    loop_key, boost_key = jax.random.split(key)
    extra = jax.lax.stop_gradient(alpha) + boost < 1.0
    a = alpha + boost + extra.astype(alpha.dtype)
    fixed_a = jax.lax.stop_gradient(a)
    eps = rejection_sample(
        loop_key,
        shape,
        lambda k, s: jax.random.normal(k, s, dtype=alpha.dtype),
        lambda e: _marsaglia_tsang_log_acceptance(e, fixed_a),
        max_rounds,
    )
    eps = jax.lax.stop_gradient(eps)
    d = a - 1.0 / 3.0
    w = 1.0 + eps / jnp.sqrt(9.0 * d)
    log_w = jnp.log(w)
    log_g = jnp.log(d) + 3.0 * log_w
    score_log_prob = (a - 0.5) * jnp.log(d) + d * (3.0 * log_w - w**3) - gammaln(a)
    # shape augmentation: Gamma(α + 1) · U^{1/α} ~ Gamma(α), applied B' times
    tiny = jnp.finfo(alpha.dtype).tiny
    u = jax.random.uniform(boost_key, (boost + 1, *shape), alpha.dtype, minval=tiny)
    for i in range(boost + 1):
        used = jnp.ones(shape, bool) if i < boost else extra
        log_g = log_g + jnp.where(used, jnp.log(u[i]) / (alpha + i), 0.0)
    return log_g, score_log_prob


def _gamma_leaf(fn, key, shape, boost, max_rounds):
    """``(value, ℓ)`` for a Gamma, Beta or Dirichlet (no wrappers) of batch shape ``shape``."""
    if isinstance(fn, npd.Gamma):  # Chi2 is a Gamma
        dtype = jnp.result_type(float, fn.concentration, fn.rate)
        alpha = jnp.broadcast_to(jnp.asarray(fn.concentration, dtype), shape)
        log_g, score = _gamma_log_sample(key, alpha, boost, max_rounds)
        tiny = jnp.finfo(dtype).tiny
        return jnp.maximum(jnp.exp(log_g) / fn.rate, tiny), score
    if isinstance(fn, npd.Beta):
        dtype = jnp.result_type(float, fn.concentration1, fn.concentration0)
        alpha = jnp.stack(
            [
                jnp.broadcast_to(jnp.asarray(fn.concentration1, dtype), shape),
                jnp.broadcast_to(jnp.asarray(fn.concentration0, dtype), shape),
            ]
        )
        log_g, score = _gamma_log_sample(key, alpha, boost, max_rounds)
        value = jax.nn.sigmoid(log_g[0] - log_g[1])  # g₁ / (g₁ + g₀)
        finfo = jnp.finfo(dtype)
        return jnp.clip(value, finfo.tiny, 1.0 - finfo.eps), score[0] + score[1]
    if isinstance(fn, npd.Dirichlet):
        dtype = jnp.result_type(float, fn.concentration)
        alpha = jnp.broadcast_to(jnp.asarray(fn.concentration, dtype), (*shape, fn.event_shape[-1]))
        log_g, score = _gamma_log_sample(key, alpha, boost, max_rounds)
        value = jax.nn.softmax(log_g, axis=-1)  # g_j / Σ_k g_k
        finfo = jnp.finfo(dtype)
        return jnp.clip(value, finfo.tiny, 1.0 - finfo.eps), jnp.sum(score, axis=-1)
    raise TypeError(type(fn).__name__)  # callers check the leaf first


# ----------------------------------------------------------------------------------------------
# Looking through wrappers
# ----------------------------------------------------------------------------------------------


def _looks_through(fn, transformed: bool) -> bool:
    if type(fn).__name__ in _WRAPPERS:
        return True
    return transformed and isinstance(fn, npd.TransformedDistribution)


def _leaf(fn, transformed: bool):
    while _looks_through(fn, transformed):
        fn = fn.base_dist
    return fn


def _draw_through(fn, key, shape, leaf_draw, transformed: bool):
    """``(value, ℓ)`` for ``fn`` with batch shape ``shape`` (its sample shape included).

    Expanded and masked distributions draw their base at the larger shape (a mask hides a
    density term, not the draw, so ``ℓ`` is not masked); ``Independent`` and transformed
    distributions draw their base with the dimensions they turn into event dimensions, over
    which ``ℓ`` is summed, and a transformed distribution pushes the draw through its
    transforms (pathwise).
    """
    if not _looks_through(fn, transformed):
        return leaf_draw(fn, key, shape)
    base = fn.base_dist
    extra = len(fn.event_shape) - len(base.event_shape)
    base_batch = tuple(base.batch_shape)
    base_shape = (*shape, *base_batch[len(base_batch) - extra :]) if extra > 0 else shape
    value, score = _draw_through(base, key, base_shape, leaf_draw, transformed)
    if extra > 0:
        score = jnp.sum(score, axis=tuple(range(-extra, 0)))
    if isinstance(fn, npd.TransformedDistribution):
        for transform in fn.transforms:
            value = transform(value)
    return value, score


def _site_draw(strategy, msg: dict) -> None:
    """The ``draw(msg)`` hook shared by both strategies (see :func:`vijax.estimators.draw`)."""
    kwargs = msg.get("kwargs") or {}
    key = kwargs.get("rng_key")
    if key is None:
        raise ValueError(
            f"site {msg['name']!r}: {strategy.name} needs a random key (run the program "
            "under vj.seed)"
        )
    value, score = strategy.sample_and_score_log_prob(
        key, msg["fn"], tuple(kwargs.get("sample_shape", ())), site=msg["name"]
    )
    msg["value"], msg["intermediates"] = value, []
    if strategy.correction:
        msg["score_log_prob"] = score


def _check_common(what: str, baseline, correction, max_rounds):
    if baseline is None:
        baseline = NoBaseline()
    if not isinstance(baseline, BASELINE_TYPES):
        raise ValueError(f"{what}: baseline must be a vijax baseline, got {baseline!r}")
    if not isinstance(correction, bool):
        raise ValueError(f"{what}: correction must be True or False, got {correction!r}")
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise ValueError(f"{what}: max_rounds must be a positive int, got {max_rounds!r}")
    return baseline


# ----------------------------------------------------------------------------------------------
# accept_reject: Gamma, Beta, Dirichlet
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AcceptReject:
    """Accept-reject reparameterization of Gamma-based sites (see :func:`accept_reject`)."""

    boost: int = 1
    baseline: Any = field(default_factory=NoBaseline)
    correction: bool = True
    max_rounds: int = DEFAULT_MAX_ROUNDS
    name = "accept_reject"

    @property
    def uses_score(self) -> bool:
        """A score-type site (the correction term), unless the correction is dropped."""
        return self.correction

    def sample_and_score_log_prob(self, key, fn, sample_shape=(), *, site: str = "<site>"):
        """``(z, ℓ)``: a draw of ``fn`` with its gradient path, and the score log-density.

        ``z`` has shape ``sample_shape + fn.shape()``; ``ℓ`` (shape ``sample_shape +
        fn.batch_shape``) is ``Σ log π(ε; θ)`` over the accepted Marsaglia–Tsang noises.
        """
        leaf = _leaf(fn, transformed=True)
        if not isinstance(leaf, npd.Gamma | npd.Beta | npd.Dirichlet):
            inner = "" if leaf is fn else f" (drawn as {type(leaf).__name__})"
            raise ValueError(
                f"site {site!r}: accept_reject is for {list(GAMMA_FAMILIES)} (possibly "
                f"reshaped, masked or transformed), not {type(fn).__name__}{inner}; write "
                "the sampler with vj.accept_reject_sampler(...)"
            )
        shape = (*sample_shape, *fn.batch_shape)

        def leaf_draw(leaf, key, shape):
            return _gamma_leaf(leaf, key, shape, self.boost, self.max_rounds)

        return _draw_through(fn, key, shape, leaf_draw, transformed=True)

    def draw(self, msg: dict) -> None:
        """Set the site's value and (with the correction) its score log-density."""
        _site_draw(self, msg)


def accept_reject(
    boost: int = 1,
    baseline=None,
    *,
    correction: bool = True,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
) -> AcceptReject:
    r"""Accept-reject reparameterization for Gamma, Beta and Dirichlet sites.

    A ``Gamma(α, β)`` draw is ``z = h(ε, α + B) · Π_{i=1..B} u_i^{1/(α+i−1)} / β`` with
    Marsaglia & Tsang's (2000) proposal ``h(ε, a) = (a − 1/3)(1 + ε/√(9a − 3))³``,
    ``ε ~ N(0, 1)`` accepted by their test, and ``u_i ~ U(0, 1)`` (shape augmentation: if
    ``g ~ Gamma(α + 1)`` and ``u ~ U(0, 1)`` then ``g u^{1/α} ~ Gamma(α)``). The gradient is
    pathwise through ``z`` plus the correction ``f · ∇ log π(ε; α + B)`` for the accepted
    ``ε`` (module docstring; Naesseth et al. 2017). Boosting makes the proposal's shape
    ``α + B`` large, where ``π`` is close to ``N(0, 1)`` and the correction small.

    ``Beta(a, b) = g_a / (g_a + g_b)`` and ``Dirichlet(α)_j = g_j / Σ_k g_k`` with independent
    Gammas (one ``ε`` each); Chi2 is a Gamma and InverseGamma a transformed Gamma. Independent,
    expanded, masked and transformed wrappers, ``sample_shape`` and plates are handled.

    Args:
      boost: the number ``B ≥ 0`` of shape-augmentation steps. The Marsaglia–Tsang proposal
        needs shape ≥ 1, so an element with ``α + B < 1`` takes one boost more.
      baseline: a baseline for the correction term (``vj.constant``, ``vj.running_mean``,
        ``vj.leave_one_out``, ``vj.learned``); ``None`` for none.
      correction: ``False`` drops the correction term, leaving the pathwise term alone, which
        is **biased**: for studying the estimator only.
      max_rounds: proposal rounds before an element is given up as NaN (a NaN shape).

    Raises:
      ValueError: bad arguments (naming them); at a site whose distribution is not
        Gamma-based (naming the site).
    """
    if isinstance(boost, bool) or not isinstance(boost, int) or boost < 0:
        raise ValueError(f"accept_reject: boost must be an int >= 0, got {boost!r}")
    baseline = _check_common("accept_reject", baseline, correction, max_rounds)
    return AcceptReject(boost, baseline, correction, max_rounds)


# ----------------------------------------------------------------------------------------------
# accept_reject_sampler: a user-written rejection sampler
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AcceptRejectSampler:
    """Accept-reject reparameterization through a user's sampler (:func:`accept_reject_sampler`)."""

    proposal: Callable
    noise: Callable
    log_acceptance: Callable | None = None
    noise_log_prob: Callable | None = None
    log_bound: Any = None
    baseline: Any = field(default_factory=NoBaseline)
    correction: bool = True
    max_rounds: int = DEFAULT_MAX_ROUNDS
    name = "accept_reject_sampler"

    @property
    def uses_score(self) -> bool:
        """A score-type site (the correction term), unless the correction is dropped."""
        return self.correction

    def _log_acceptance(self, eps, fn):
        if self.log_acceptance is not None:
            return self.log_acceptance(eps, fn)
        z, dz = jax.jvp(lambda e: self.proposal(e, fn), (eps,), (jnp.ones_like(eps),))
        log_bound = self.log_bound(fn) if callable(self.log_bound) else self.log_bound
        inside = fn.support(z)  # q_θ(h) = 0 outside the support, whatever log_prob says there
        z = jnp.where(inside, z, fn.support.feasible_like(z))  # no warnings, no NaNs
        log_a = fn.log_prob(z) + jnp.log(jnp.abs(dz)) - self.noise_log_prob(eps) - log_bound
        return jnp.where(inside, log_a, -jnp.inf)

    def sample_and_score_log_prob(self, key, fn, sample_shape=(), *, site: str = "<site>"):
        """``(z, ℓ)`` with ``z = h(⊥ε, θ)`` and ``ℓ = log q_θ(z) + log |∂h/∂ε(⊥ε, θ)|``.

        ``θ`` are the parameters of ``fn`` (looked through Independent / Expanded / Masked
        wrappers); ``ℓ`` has shape ``sample_shape + fn.batch_shape``.
        """
        leaf = _leaf(fn, transformed=False)
        if tuple(leaf.event_shape):
            raise ValueError(
                f"site {site!r}: accept_reject_sampler draws univariate distributions "
                f"elementwise, but {type(leaf).__name__} has event shape "
                f"{tuple(leaf.event_shape)}"
            )
        shape = (*sample_shape, *fn.batch_shape)

        def leaf_draw(leaf, key, shape):
            fixed = jax.tree.map(jax.lax.stop_gradient, leaf)
            eps = rejection_sample(
                key,
                shape,
                self.noise,
                lambda e: self._log_acceptance(e, fixed),
                self.max_rounds,
            )
            eps = jax.lax.stop_gradient(eps)
            z, dz = jax.jvp(lambda e: self.proposal(e, leaf), (eps,), (jnp.ones_like(eps),))
            z = jnp.broadcast_to(z, shape)
            score = leaf.log_prob(z) + jnp.log(jnp.abs(dz))
            return z, jnp.broadcast_to(score, shape)

        return _draw_through(fn, key, shape, leaf_draw, transformed=False)

    def draw(self, msg: dict) -> None:
        """Set the site's value and (with the correction) its score log-density."""
        _site_draw(self, msg)


def accept_reject_sampler(
    proposal: Callable,
    noise: Callable,
    *,
    log_acceptance: Callable | None = None,
    noise_log_prob: Callable | None = None,
    log_bound: Any = None,
    baseline=None,
    correction: bool = True,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
) -> AcceptRejectSampler:
    r"""Accept-reject reparameterization through a rejection sampler that you write.

    The site's distribution ``q_θ`` (any univariate NumPyro distribution, possibly under
    Independent / Expanded / Masked wrappers and plates) is the target; you give the
    proposal ``z = h(ε, θ)``, its noise ``ε ~ s`` and the acceptance probability, either
    directly (``log_acceptance``) or as ``a_θ(ε) = q_θ(h) |∂h/∂ε| / (M_θ s(ε))`` from
    ``noise_log_prob = log s`` and ``log_bound = log M_θ`` (a number or a function of the
    distribution). Each element is drawn by its own rejection loop (:func:`rejection_sample`);
    the estimate is pathwise through ``h(⊥ε, θ)`` plus the correction with score log-density
    ``ℓ = log q_θ(h(⊥ε, θ)) + log |∂h/∂ε(⊥ε, θ)|`` (module docstring), the derivative
    ``∂h/∂ε`` taken by forward-mode autodiff (``h`` must act elementwise on ``ε``).

    Args:
      proposal: ``h(eps, fn) -> z``: ``fn`` is the site's distribution with its wrappers taken
        off (read ``θ`` from its attributes, e.g. ``fn.loc``); ``z`` has ``eps``'s shape.
      noise: ``noise(key, shape) -> eps``, a draw from ``s`` (free of ``θ``).
      log_acceptance: ``log_acceptance(eps, fn) -> log a_θ(ε) ≤ 0``, elementwise.
      noise_log_prob: ``log s(eps)`` elementwise (with ``log_bound``, instead of
        ``log_acceptance``).
      log_bound: ``log M_θ``: a number or ``log_bound(fn)``; ``q_θ ≤ M_θ r_θ`` must hold.
      baseline: a baseline for the correction term, as for :func:`vijax.score_function`.
      correction: ``False`` drops the correction term (biased; for study only).
      max_rounds: proposal rounds before a never-accepted element is set to NaN.

    The correction term is ``∫ f ∇_θ π`` under the integral sign: it needs ``π(ε; θ)``
    differentiable in ``θ`` with a support that does not move with ``θ`` (or on whose moving
    edge ``π`` vanishes, as in Marsaglia–Tsang). Acceptance probabilities smooth in ``θ`` do
    this; a hard truncation of the proposal (accept iff ``h(ε, θ) ∈ A``) moves the support of
    ``π`` and leaves out a boundary term, so its estimates are biased.

    Example (a Normal(μ, σ) truncated to ``z > 0`` with an exponential proposal, Robert 1995:
    ``z = σε``, ``ε ~ Exponential(1)``; ``q_θ/r_θ ∝ exp(−(z − μ)²/2σ² + z/σ)`` peaks at
    ``z = μ + σ``, so ``a_θ = exp(−((z − μ)/σ − 1)²/2)``):
        >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def proposal(eps, fn):
        ...     return fn.base_dist.scale * eps
        >>> def log_acceptance(eps, fn):
        ...     normal = fn.base_dist
        ...     return -0.5 * ((proposal(eps, fn) - normal.loc) / normal.scale - 1.0) ** 2
        >>> strategy = vj.accept_reject_sampler(
        ...     proposal, jax.random.exponential, log_acceptance=log_acceptance)
        >>> def objective(loc, key):
        ...     d = dist.TruncatedNormal(loc, 1.0, low=0.0)
        ...     return vj.seed(lambda: vj.sample("z", d, estimator=strategy), key)()
        >>> keys = jax.random.split(jax.random.key(0), 4000)
        >>> grads = jax.vmap(vj.grad_estimate(objective), (None, 0))(0.0, keys)
        >>> exact = jax.grad(lambda m: dist.TruncatedNormal(m, 1.0, low=0.0).mean)(0.0)
        >>> bool(abs(grads.mean() - exact) < 0.05)
        True

    Raises:
      ValueError: bad arguments (naming them); at a site whose distribution is multivariate
        (naming the site).
    """
    what = "accept_reject_sampler"
    if not callable(proposal):
        raise ValueError(f"{what}: proposal must be callable h(eps, fn), got {proposal!r}")
    if not callable(noise):
        raise ValueError(f"{what}: noise must be callable noise(key, shape), got {noise!r}")
    if log_acceptance is not None:
        if noise_log_prob is not None or log_bound is not None:
            raise ValueError(
                f"{what}: give log_acceptance, or noise_log_prob with log_bound, not both"
            )
        if not callable(log_acceptance):
            raise ValueError(f"{what}: log_acceptance must be callable, got {log_acceptance!r}")
    elif noise_log_prob is None or log_bound is None:
        raise ValueError(
            f"{what}: give log_acceptance(eps, fn), or both noise_log_prob(eps) and log_bound"
        )
    elif not callable(noise_log_prob):
        raise ValueError(f"{what}: noise_log_prob must be callable, got {noise_log_prob!r}")
    if log_bound is not None and not callable(log_bound):
        try:
            log_bound = float(log_bound)
        except (TypeError, ValueError):
            raise ValueError(
                f"{what}: log_bound must be a number or a function of the distribution, "
                f"got {log_bound!r}"
            ) from None
    baseline = _check_common(what, baseline, correction, max_rounds)
    return AcceptRejectSampler(
        proposal, noise, log_acceptance, noise_log_prob, log_bound, baseline, correction, max_rounds
    )
