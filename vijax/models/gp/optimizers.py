r"""Natural gradients for the Gaussian inducing distribution, as an optax transformation.

For ``q(u) = N(m, S)`` with natural parameters ``θ = (S⁻¹m, −½S⁻¹)`` and expectation parameters
``η = (m, S + m mᵀ)``, the Fisher information is ``∂η/∂θ``, so the natural gradient in ``θ`` is
the ordinary gradient in ``η`` (Hensman et al. 2012; Salimbeni, Eleftheriadis & Hensman 2018,
"Natural Gradients in Practice"):

    θ_{t+1} = θ_t + γ ∇_η L(η_t).

For a Gaussian likelihood ``L`` is linear in ``η`` up to ``−KL``, whose ``η``-gradient is
``θ_prior − θ``, so ``γ = 1`` jumps to the optimal ``q(u)`` in one step (where the SVGP bound
equals Titsias's collapsed bound); non-Gaussian likelihoods need ``γ < 1`` (Salimbeni et al. use
a ramp from ``1e-4`` to ``0.1``).

``∇_η L`` comes from the gradient vijax estimates for the stored parameters ``φ = (m, raw)``
(``raw``: the lower-triangular ``L``, ``S = L Lᵀ``, diagonal through softplus) by the chain rule
through the inverse map: ``∇_η L = (∂φ/∂η)ᵀ ∇_φ L``, one ``vjp`` of ``η ↦ φ`` (a Cholesky
factorization). So natural gradients need nothing from the objective: they compose with
:func:`vijax.fit`, minibatches, quadrature or Monte Carlo, and any optax optimizer for the
hyperparameters (:func:`natural_gradients`).

**PSD guard.** A step whose new precision ``−2θ₂`` is not positive definite (Cholesky fails)
is retried with ``γ/2``, up to ``max_halvings`` times, and skipped (no change to ``q``) if none
succeeds; the state counts halvings and skipped steps.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import vijax as vj
    >>> from vijax.models import gp
    >>> X = jnp.linspace(-2.0, 2.0, 30)[:, None]
    >>> y = jnp.cos(X[:, 0])
    >>> svgp = gp.svgp(gp.RBF(), gp.Gaussian(), num_inducing=6)
    >>> params = svgp.init(jax.random.key(0), X, y)
    >>> optimizer = gp.natural_gradients(1.0)  # hyperparameters frozen
    >>> result = vj.fit(svgp.elbo(), params, optimizer, jax.random.key(1), X, y,
    ...                 num_steps=1, progress=False)
    >>> elbo = jax.jit(lambda p: svgp.elbo()(p, jax.random.key(2), X, y).value)
    >>> bool(abs(elbo(result.params) - svgp.collapsed_elbo(params, X, y)) < 1e-3)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.scipy.linalg import solve_triangular

from vijax.models.gp.sparse import inducing_raw_scale, inducing_scale_tril

__all__ = [
    "NaturalGradientState",
    "SVGPOptimizerState",
    "natural_gradient",
    "natural_gradients",
]


class NaturalGradientState(NamedTuple):
    """Steps taken, step-size halvings made by the PSD guard, and steps it skipped."""

    count: jax.Array
    halvings: jax.Array
    skipped: jax.Array


class SVGPOptimizerState(NamedTuple):
    """The natural-gradient state of ``q(u)`` and the optimizer state of the hyperparameters."""

    inducing: NaturalGradientState
    hyperparameters: optax.OptState


def _symmetric(matrix):
    return 0.5 * (matrix + matrix.T)


def _flip(matrix):
    """``J A J`` with ``J`` the reversal permutation (lower ↔ upper triangular)."""
    return matrix[::-1, ::-1]


def _natural_step(mean, raw, grad_mean, grad_raw, step_size, max_halvings):
    """``(mean, raw, halvings, ok)`` after one natural-gradient step of size ``≤ step_size``.

    With ``S = L Lᵀ`` and ``Ḡ`` the gradient in ``L`` (from the one in ``raw``, whose diagonal
    is ``softplus⁻¹(L_ii)``), the gradient in ``S`` is ``G = sym(L⁻ᵀ Φ(Lᵀ Ḡ) L⁻¹)`` with
    ``Φ`` the lower triangle with a halved diagonal (Murray 2016), so that
    ``∇_η₂ L = G`` and ``∇_η₁ L = ∇_m L − 2 G m``. The new precision is
    ``P = S⁻¹ − 2γ G``; its covariance factor comes from one Cholesky factorization of the
    reversed ``J P J = L̃ L̃ᵀ``: ``S_new = P⁻¹ = L_S L_Sᵀ`` with ``L_S = J L̃⁻ᵀ J``. Three
    factorizations and triangular solves per step, the fewest that this needs.
    """
    scale_tril = inducing_scale_tril(raw)
    identity = jnp.eye(mean.shape[0], dtype=mean.dtype)
    inverse = solve_triangular(scale_tril, identity, lower=True)  # L⁻¹
    # gradient in L: the strictly lower part as is; the diagonal through softplus' derivative
    grad_tril = jnp.tril(grad_raw, -1) + jnp.diag(
        jnp.diagonal(grad_raw) / jax.nn.sigmoid(jnp.diagonal(raw))
    )
    inner = scale_tril.T @ grad_tril
    phi = jnp.tril(inner) - 0.5 * jnp.diag(jnp.diagonal(inner))
    grad_eta_second = _symmetric(inverse.T @ phi @ inverse)
    grad_eta_mean = grad_mean - 2.0 * grad_eta_second @ mean
    precision = inverse.T @ inverse
    theta_mean = precision @ mean

    def attempt(gamma):
        new_precision = _symmetric(precision - 2.0 * gamma * grad_eta_second)
        reversed_factor = jnp.linalg.cholesky(_flip(new_precision))
        new_scale_tril = _flip(solve_triangular(reversed_factor, identity, lower=True).T)
        new_mean = new_scale_tril @ (new_scale_tril.T @ (theta_mean + gamma * grad_eta_mean))
        new_raw = inducing_raw_scale(new_scale_tril)
        ok = jnp.all(jnp.isfinite(new_raw)) & jnp.all(jnp.isfinite(new_mean))
        return new_mean, new_raw, ok

    def cond(carry):
        halvings, _, _, ok = carry
        return jnp.logical_not(ok) & (halvings < max_halvings)

    def body(carry):
        halvings, gamma, _, _ = carry
        gamma = 0.5 * gamma
        new_mean, new_raw, ok = attempt(gamma)
        return halvings + 1, gamma, (new_mean, new_raw), ok

    gamma = jnp.asarray(step_size, mean.dtype)
    first_mean, first_raw, ok = attempt(gamma)
    halvings, _, (new_mean, new_raw), ok = jax.lax.while_loop(
        cond, body, (jnp.zeros((), jnp.int32), gamma, (first_mean, first_raw), ok)
    )
    new_mean = jnp.where(ok, new_mean, mean)
    new_raw = jnp.where(ok, new_raw, raw)
    return new_mean, new_raw, halvings, ok


def natural_gradient(
    step_size: float | Callable = 1.0, *, max_halvings: int = 10
) -> optax.GradientTransformation:
    r"""Natural-gradient ascent for ``q(u)`` parameters ``{"mean": (M,), "scale": (M, M)}``.

    An optax transformation: like every optax optimizer it receives the *negated* gradient of
    the objective (what :func:`vijax.fit` passes) and returns the parameter update
    ``φ(θ + γ ∇_η L) − φ``; ``step_size`` is ``γ`` or an optax schedule of the step count.

    Args:
      step_size: ``γ`` (``1`` is exact for a Gaussian likelihood) or a schedule.
      max_halvings: PSD-guard retries with ``γ/2`` before the step is skipped.
    """
    if not isinstance(max_halvings, int) or max_halvings < 0:
        raise ValueError(
            f"natural_gradient: max_halvings must be a non-negative int, got {max_halvings!r}"
        )
    if not callable(step_size) and not float(step_size) > 0:
        raise ValueError(f"natural_gradient: step_size must be positive, got {step_size!r}")

    def init(params):
        _check_inducing(params)
        zero = jnp.zeros((), jnp.int32)
        return NaturalGradientState(zero, zero, zero)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("natural_gradient needs params: call update(updates, state, params)")
        _check_inducing(params)
        gamma = step_size(state.count) if callable(step_size) else step_size
        new_mean, new_raw, halvings, ok = _natural_step(
            params["mean"],
            params["scale"],
            -updates["mean"],
            -updates["scale"],
            gamma,
            max_halvings,
        )
        new_updates = {"mean": new_mean - params["mean"], "scale": new_raw - params["scale"]}
        new_state = NaturalGradientState(
            state.count + 1,
            state.halvings + halvings,
            state.skipped + jnp.logical_not(ok).astype(jnp.int32),
        )
        return new_updates, new_state

    return optax.GradientTransformation(init, update)


def _check_inducing(params) -> None:
    if not isinstance(params, dict) or set(params) != {"mean", "scale"}:
        keys = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(
            "natural_gradient acts on q(u) parameters {'mean', 'scale'} (params['inducing'] "
            f"of an SVGP), got {keys}"
        )


def natural_gradients(
    step_size: float | Callable = 1.0,
    hyperparameters: optax.GradientTransformation | None = None,
    *,
    max_halvings: int = 10,
) -> optax.GradientTransformation:
    r"""An optimizer for SVGP parameters: natural gradients on ``params["inducing"]``, and
    ``hyperparameters`` (e.g. ``optax.adam(1e-2)``) on ``params["hyperparameters"]`` (kernel,
    inducing inputs, likelihood); ``None`` keeps them fixed.

    Both parts use the same gradient evaluation each step (Salimbeni et al. 2018 alternate two
    evaluations; one is half the cost and works as well in practice).
    """
    natural = natural_gradient(step_size, max_halvings=max_halvings)
    others = optax.set_to_zero() if hyperparameters is None else hyperparameters

    def check(params):
        if not isinstance(params, dict) or set(params) != {"hyperparameters", "inducing"}:
            keys = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(
                "natural_gradients acts on SVGP parameters {'hyperparameters', 'inducing'}, "
                f"got {keys}"
            )

    def init(params):
        check(params)
        return SVGPOptimizerState(
            natural.init(params["inducing"]), others.init(params["hyperparameters"])
        )

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("natural_gradients needs params: call update(updates, state, params)")
        check(params)
        inducing, inducing_state = natural.update(
            updates["inducing"], state.inducing, params["inducing"]
        )
        hyper, hyper_state = others.update(
            updates["hyperparameters"], state.hyperparameters, params["hyperparameters"]
        )
        return (
            {"hyperparameters": hyper, "inducing": inducing},
            SVGPOptimizerState(inducing_state, hyper_state),
        )

    return optax.GradientTransformation(init, update)
