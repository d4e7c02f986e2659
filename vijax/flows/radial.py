r"""The radial layer (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows").

    f(x) = x + β h(r) (x − x₀),   r = ‖x − x₀‖,   h(r) = 1 / (α + r),

with ``α > 0`` and ``β ≥ −α`` (invertibility), enforced by ``α = softplus(α̃)`` and
``β = −α + softplus(β̃)``. The Jacobian is ``J = a I + c x̂ x̂ᵀ`` with ``x̂ = (x − x₀)/r``,
``a = 1 + βh`` and ``c = βh'(r) r = −βh² r``, so ``a + c = 1 + βαh²`` and

    log|det J| = (d − 1) log(1 + βh) + log(1 + βαh²),
    ∇_x log|det J| = [−(d − 1) βh² / (1 + βh) − 2βαh³ / (1 + βαh²)] x̂,
    J^{-T} v = J^{-1} v = v / a − c / (a (a + c)) · x̂ (x̂ᵀv)          (Sherman–Morrison).

The inverse is in closed form: ``‖y − x₀‖ = r (1 + β/(α + r))`` is the quadratic
``r² + (α + β − r') r − α r' = 0`` in ``r``, whose positive root gives
``x = x₀ + (y − x₀)/(1 + βh(r))``.

A conditional radial layer adds a linear function of the context to ``(x₀, α̃, β̃)``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> layer = radial(3)
    >>> params = layer.init(jax.random.key(0))
    >>> y, log_det = layer.forward_and_log_det(params, jnp.array([0.5, -1.0, 2.0]))
    >>> x, inverse_log_det = layer.inverse_and_log_det(params, y)
    >>> bool(jnp.allclose(x, jnp.array([0.5, -1.0, 2.0]), atol=1e-5))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from vijax.flows.bijector import check_sizes, context_weights, safe_norm, with_context

__all__ = ["Radial", "radial"]


@dataclass(frozen=True)
class Radial:
    """A radial layer on ``R^dim`` (see the module docstring); build it with :func:`radial`."""

    dim: int
    context_dim: int = 0

    def __post_init__(self):
        check_sizes(self, "radial")

    def init(self, key) -> dict:
        """``x₀ ~ N(0, I)``, ``α = softplus(0)``, ``β`` near 0; context weights start at zero."""
        key_center, key_beta = jax.random.split(key)
        params = {
            "center": jax.random.normal(key_center, (self.dim,)),
            "alpha": jnp.zeros(()),
            # softplus(β̃) ≈ α: β starts near zero
            "beta": jnp.log(jnp.expm1(jax.nn.softplus(0.0)))
            + 0.1 * jax.random.normal(key_beta, ()),
        }
        if self.context_dim:
            params["context"] = context_weights(params, self.context_dim)
        return params

    def coefficients(self, params, context=None):
        """``(x₀, α, β)`` with ``α > 0``, ``β ≥ −α``."""
        params = with_context("radial", params, self.context_dim, context)
        center, alpha, beta = params["center"], params["alpha"], params["beta"]
        alpha = jax.nn.softplus(alpha)
        return center, alpha, -alpha + jax.nn.softplus(beta)

    def _log_det(self, alpha, beta, h):
        return (self.dim - 1) * jnp.log1p(beta * h) + jnp.log1p(beta * alpha * h * h)

    def forward_and_log_det(self, params, x, context=None):
        """``y = x + β (x − x₀)/(α + r)`` and its log-determinant."""
        center, alpha, beta = self.coefficients(params, context)
        diff = x - center
        h = 1.0 / (alpha + safe_norm(diff))
        return x + beta * h * diff, self._log_det(alpha, beta, h)

    def inverse_and_log_det(self, params, y, context=None):
        """Closed-form inverse through the positive root of a quadratic in ``r``."""
        center, alpha, beta = self.coefficients(params, context)
        diff = y - center
        r_out = safe_norm(diff)
        half_b = 0.5 * (alpha + beta - r_out)
        root = jnp.sqrt(half_b * half_b + alpha * r_out)
        # the positive root of r² + 2 half_b r − α r' = 0, without cancellation
        r = jnp.where(half_b > 0, alpha * r_out / (half_b + root), root - half_b)
        h = 1.0 / (alpha + r)
        return center + diff / (1.0 + beta * h), -self._log_det(alpha, beta, h)

    def forward_with_score(self, params, x, score, context=None):
        """The fast path gradient's step by Sherman–Morrison (module docstring)."""
        center, alpha, beta = self.coefficients(params, context)
        diff = x - center
        r = safe_norm(diff)
        unit = diff / r
        h = 1.0 / (alpha + r)
        a = 1.0 + beta * h
        a_plus_c = 1.0 + beta * alpha * h * h
        c = a_plus_c - a
        d_log_det = -(self.dim - 1) * beta * h * h / a - 2.0 * beta * alpha * h**3 / a_plus_c
        v = score - d_log_det * unit
        new_score = v / a - (c / (a * a_plus_c)) * unit * (unit @ v)
        return x + beta * h * diff, self._log_det(alpha, beta, h), new_score


def radial(dim: int, *, context_dim: int = 0) -> Radial:
    """A radial layer ``f(x) = x + β (x − x₀)/(α + ‖x − x₀‖)`` (Rezende & Mohamed 2015).

    Args:
      dim: the dimension of ``x``.
      context_dim: the length of the context vector of a conditional layer (0: unconditional).
    """
    return Radial(dim, context_dim)
