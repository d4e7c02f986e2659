r"""The layer interface of vijax flows, and the step that carries the score through a layer.

A *layer* is a frozen dataclass of static hyperparameters (hashable, so objectives that hold a
flow stay hashable and ``vj.fit`` reuses its compilation) whose methods take the parameters
explicitly, acting on one event ``x ∈ R^d`` (and a context vector ``c`` for conditional layers):

- ``init(key) -> params``: a plain pytree, usable with optax;
- ``forward_and_log_det(params, x, context) -> (y, log|det ∂y/∂x|)``;
- ``inverse_and_log_det(params, y, context) -> (x, log|det ∂x/∂y|)``;
- ``forward_with_score(params, x, score, context) -> (y, log|det J|, score_y)``.

The last one is the step of the *fast path gradient* (Vaitl et al. 2024, "Fast and Unified Path
Gradient Estimators for Normalizing Flows"). If ``q_y`` is the pushforward of ``q_x`` by
``y = f(x)``, then ``log q_y(f(x)) = log q_x(x) − log|det J(x)|`` with ``J = ∂f/∂x``, and
differentiating both sides in ``x``,

    ∇_y log q_y(y) = J(x)^{-T} (∇_x log q_x(x) − ∇_x log|det J(x)|).

Each layer implements this with the structure of its Jacobian: Sherman–Morrison for planar and
radial layers, a diagonal block and one conditioner VJP for coupling layers, one MADE VJP for
MAF, a triangular solve for IAF. :func:`dense_forward_with_score` does the same with the dense
Jacobian (``jax.jacfwd`` and a linear solve): the reference the tests hold every layer to, and
a fallback for layers of your own.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from vijax.flows import planar
    >>> layer = planar(2)
    >>> params = layer.init(jax.random.key(0))
    >>> x, score = jnp.array([0.3, -0.5]), jnp.array([-0.3, 0.5])
    >>> fast = layer.forward_with_score(params, x, score)
    >>> dense = dense_forward_with_score(layer, params, x, score)
    >>> bool(jnp.allclose(fast[2], dense[2], atol=1e-5))
    True
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp

__all__ = ["Layer", "dense_forward_with_score"]


class Layer(Protocol):
    """What a flow layer provides (see the module docstring)."""

    dim: int

    def init(self, key) -> Any: ...

    def forward_and_log_det(self, params, x, context=None) -> tuple[jax.Array, jax.Array]: ...

    def inverse_and_log_det(self, params, y, context=None) -> tuple[jax.Array, jax.Array]: ...

    def forward_with_score(
        self, params, x, score, context=None
    ) -> tuple[jax.Array, jax.Array, jax.Array]: ...


def dense_forward_with_score(layer, params, x, score, context=None):
    r"""``(y, log|det J|, J^{-T}(score − ∇ log|det J|))`` with the dense Jacobian ``J``.

    ``J = jax.jacfwd(forward)(x)`` costs ``d`` forward-mode passes and the solve ``O(d³)``: a
    reference and a fallback, not the fast path.
    """

    def forward(x):
        return layer.forward_and_log_det(params, x, context)[0]

    def log_det(x):
        return layer.forward_and_log_det(params, x, context)[1]

    y, ld = layer.forward_and_log_det(params, x, context)
    jacobian = jax.jacfwd(forward)(x)
    grad_log_det = jax.grad(log_det)(x)
    return y, ld, jnp.linalg.solve(jacobian.T, score - grad_log_det)


# ----------------------------------------------------------------------------------------------
# Shared helpers (private)
# ----------------------------------------------------------------------------------------------


def check_positive_int(value, what: str, name: str) -> int:
    """``value`` as a positive int, else a ``ValueError`` naming ``what: name``."""
    if isinstance(value, bool) or not isinstance(value, int | jnp.integer) or value < 1:
        raise ValueError(f"{what}: {name} must be a positive int, got {value!r}")
    return int(value)


def check_non_negative_int(value, what: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | jnp.integer) or value < 0:
        raise ValueError(f"{what}: {name} must be a non-negative int, got {value!r}")
    return int(value)


def check_hidden(hidden, what: str) -> tuple[int, ...]:
    """Hidden layer widths as a non-empty tuple of positive ints."""
    try:
        widths = tuple(hidden)
    except TypeError:
        raise ValueError(
            f"{what}: hidden must be a sequence of positive ints, got {hidden!r}"
        ) from None
    if not widths:
        raise ValueError(f"{what}: hidden must name at least one hidden layer, got {hidden!r}")
    return tuple(check_positive_int(w, what, "hidden") for w in widths)


def check_context(what: str, context_dim: int, context) -> None:
    """Refuse a missing or misshaped context (names ``context``).

    A layer without a context (``context_dim = 0``) ignores one, so that unconditional layers
    (permutations, affine layers) can sit in a conditional flow.
    """
    if not context_dim:
        return
    if context is None:
        raise ValueError(f"{what}: context_dim={context_dim} but no context was given")
    if jnp.shape(context)[-1:] != (context_dim,):
        raise ValueError(
            f"{what}: context must have last dimension context_dim={context_dim}, "
            f"got shape {jnp.shape(context)}"
        )


def check_sizes(layer, what: str) -> None:
    """Refuse a layer's ``dim`` that is not a positive int or ``context_dim`` that is negative."""
    check_positive_int(layer.dim, what, "dim")
    check_non_negative_int(layer.context_dim, what, "context_dim")


def context_weights(params: dict, context_dim: int) -> dict:
    """Zero weights ``W_θ`` of shape ``(context_dim, *θ.shape)`` for each parameter ``θ``."""
    return {name: jnp.zeros((context_dim, *jnp.shape(value))) for name, value in params.items()}


def with_context(what: str, params: dict, context_dim: int, context) -> dict:
    """A conditional layer's parameters at context ``c``: ``θ(c) = θ + c W_θ`` for each ``θ``.

    ``params["context"]`` holds the ``W_θ`` (:func:`context_weights`); the context is checked
    (:func:`check_context`). An unconditional layer's parameters come back as they are.
    """
    check_context(what, context_dim, context)
    if not context_dim:
        return params
    weights = params["context"]
    return {
        name: value + context @ weights[name] for name, value in params.items() if name != "context"
    }


#: log-scales of affine layers are soft-clamped, ``s = S tanh(s̃ / S)``, so that one step of a
#: fit cannot blow a scale up to overflow (``e^{±S}`` per layer is still a wide range)
LOG_SCALE_BOUND = 5.0


def soft_clamp(raw, bound: float = LOG_SCALE_BOUND):
    """``bound · tanh(raw / bound)``: the identity near zero, within ``(−bound, bound)``."""
    return bound * jnp.tanh(raw / bound)


def safe_norm(v):
    """``‖v‖`` whose gradient is finite at ``v = 0`` (it is clamped at the smallest normal)."""
    squared = jnp.sum(v * v)
    tiny = jnp.finfo(squared.dtype).tiny
    return jnp.sqrt(jnp.maximum(squared, tiny))


def solve_increasing(fn, derivative, args, target, lower, upper, iterations: int = 60):
    """The root of the increasing scalar equation ``fn(a, args) = target`` in ``[lower, upper]``.

    Safeguarded Newton: a Newton step when it stays inside the bracket, else bisection; the
    bracket shrinks every step. The iterations see stopped arguments; the returned root is one
    more Newton step from the converged point with the live ones, whose derivative is the
    implicit-function one, ``∂a/∂θ = (∂target/∂θ − ∂fn/∂θ) / ∂fn/∂a``.
    """
    stop = jax.lax.stop_gradient
    fixed = jax.tree.map(stop, args)
    target_s = stop(target)

    def body(_, carry):
        a, lo, hi = carry
        value = fn(a, fixed) - target_s
        lo = jnp.where(value < 0, a, lo)
        hi = jnp.where(value < 0, hi, a)
        newton = a - value / derivative(a, fixed)
        inside = (newton > lo) & (newton < hi)
        return jnp.where(inside, newton, 0.5 * (lo + hi)), lo, hi

    lower, upper = stop(lower), stop(upper)
    root, _, _ = jax.lax.fori_loop(0, iterations, body, (0.5 * (lower + upper), lower, upper))
    root = stop(root)
    return root - (fn(root, args) - target) / derivative(root, args)
