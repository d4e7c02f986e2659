r"""The planar layer (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows").

    f(x) = x + û h(wᵀx + b),   h = tanh,

with ``u, w ∈ R^d``, ``b ∈ R``. It is invertible iff ``wᵀû ≥ −1``; the raw ``u`` is mapped to

    û = u + (m(wᵀu) − wᵀu) w / ‖w‖²,   m(s) = −1 + softplus(s),

so that ``wᵀû = m(wᵀu) > −1`` (the paper's Appendix A). With ``a = wᵀx + b`` and
``c = wᵀû`` the Jacobian ``J = I + h'(a) û wᵀ`` is a rank-one update of the identity:

    log|det J| = log(1 + h'(a) c),          ∇_x log|det J| = h''(a) c / (1 + h'(a) c) · w,
    J^{-T} v = v − h'(a) (ûᵀv) / (1 + h'(a) c) · w        (Sherman–Morrison),

which is the fast path gradient's step (:mod:`vijax.flows.bijector`): ``O(d)``, no inverse.

The inverse has no closed form, but it is a scalar problem: ``wᵀy + b = a + c tanh(a)`` is
increasing in ``a`` and ``|a − (wᵀy + b)| < |c|``, so a bracketed Newton solve finds ``a`` and
``x = y − û tanh(a)`` (:func:`vijax.flows.bijector.solve_increasing`; its derivative is the
implicit one).

A conditional planar layer adds a linear function of the context to ``(u, w, b)``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> layer = planar(2)
    >>> params = layer.init(jax.random.key(0))
    >>> y, log_det = layer.forward_and_log_det(params, jnp.array([0.5, -1.0]))
    >>> x, _ = layer.inverse_and_log_det(params, y)
    >>> bool(jnp.allclose(x, jnp.array([0.5, -1.0]), atol=1e-5))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from vijax.flows.bijector import check_sizes, context_weights, solve_increasing, with_context

__all__ = ["Planar", "planar"]


@dataclass(frozen=True)
class Planar:
    """A planar layer on ``R^dim`` (see the module docstring); build it with :func:`planar`."""

    dim: int
    context_dim: int = 0
    init_scale: float = 0.1

    def __post_init__(self):
        check_sizes(self, "planar")
        if not self.init_scale > 0:
            raise ValueError(f"planar: init_scale must be positive, got {self.init_scale!r}")

    def init(self, key) -> dict:
        """``u, w ~ N(0, init_scale²)``, ``b = 0``; context weights start at zero."""
        key_u, key_w = jax.random.split(key)
        params = {
            "u": self.init_scale * jax.random.normal(key_u, (self.dim,)),
            "w": self.init_scale * jax.random.normal(key_w, (self.dim,)),
            "b": jnp.zeros(()),
        }
        if self.context_dim:
            params["context"] = context_weights(params, self.context_dim)
        return params

    def coefficients(self, params, context=None):
        """``(û, w, b)``: the constrained coefficients (``wᵀû > −1``)."""
        params = with_context("planar", params, self.context_dim, context)
        u, w, b = params["u"], params["w"], params["b"]
        wu = w @ u
        ww = w @ w
        ww = jnp.where(ww > 0, ww, 1.0)
        u_hat = u + (jax.nn.softplus(wu) - 1.0 - wu) * w / ww
        return u_hat, w, b

    def forward_and_log_det(self, params, x, context=None):
        """``y = x + û tanh(wᵀx + b)`` and ``log(1 + h'(a) wᵀû)``."""
        u, w, b = self.coefficients(params, context)
        t = jnp.tanh(w @ x + b)
        return x + u * t, jnp.log1p((1.0 - t * t) * (w @ u))

    def inverse_and_log_det(self, params, y, context=None):
        """``x`` with ``f(x) = y`` by a bracketed scalar Newton solve, and ``−log|det J(x)|``."""
        u, w, b = self.coefficients(params, context)
        c = w @ u
        target = w @ y + b

        def fn(a, c):
            return a + c * jnp.tanh(a)

        def derivative(a, c):
            t = jnp.tanh(a)
            return 1.0 + c * (1.0 - t * t)

        spread = jnp.abs(c) + 1e-6
        a = solve_increasing(fn, derivative, c, target, target - spread, target + spread)
        t = jnp.tanh(a)
        return y - u * t, -jnp.log1p((1.0 - t * t) * c)

    def forward_with_score(self, params, x, score, context=None):
        """The fast path gradient's step by Sherman–Morrison (module docstring)."""
        u, w, b = self.coefficients(params, context)
        t = jnp.tanh(w @ x + b)
        h1 = 1.0 - t * t  # h'
        h2 = -2.0 * t * h1  # h''
        c = w @ u
        denominator = 1.0 + h1 * c
        v = score - (h2 * c / denominator) * w
        new_score = v - (h1 * (u @ v) / denominator) * w
        return x + u * t, jnp.log1p(h1 * c), new_score


def planar(dim: int, *, context_dim: int = 0, init_scale: float = 0.1) -> Planar:
    """A planar layer ``f(x) = x + û tanh(wᵀx + b)`` on ``R^dim`` (Rezende & Mohamed 2015).

    Args:
      dim: the dimension of ``x``.
      context_dim: the length of the context vector of a conditional layer (0: unconditional).
      init_scale: the standard deviation of the initial ``u`` and ``w``.
    """
    return Planar(dim, context_dim, init_scale)
