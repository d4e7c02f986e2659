r"""Autoregressive affine layers with a MADE conditioner: MAF and IAF.

Both use ``(t, s̃) = MADE(·, c)``, whose output ``i`` depends on the coordinates before ``i``
only (:mod:`vijax.flows.networks`), with the log-scale soft-clamped, ``s = 5 tanh(s̃/5)``, and
differ in which side MADE reads. ``x`` is the layer's
input (base side) and ``y`` its output (sample side).

**MAF** (Papamakarios et al. 2017, "Masked Autoregressive Flow for Density Estimation"): MADE
reads the output,

    y_i = x_i e^{s_i(y_{<i})} + t_i(y_{<i}),   log|det ∂y/∂x| = Σ_i s_i(y),

so the density direction ``x = (y − t(y)) e^{−s(y)}`` is one MADE pass and sampling takes ``d``
(each pass fixes one more coordinate; the derivative through the ``d`` passes is exact). The
fast path step needs ``∂y/∂x = H^{-1}`` with ``H = ∂x/∂y`` the Jacobian of the one-pass map, so

    g' = J^{-T}(g − ∇_x log|det J|) = Hᵀ g − ∇_y Σ_i s_i(y),

one VJP of ``y ↦ (x(y), Σ s(y))`` with cotangents ``(g, −1)``: no solve at all.

**IAF** (Kingma et al. 2016, "Improved Variational Inference with Inverse Autoregressive Flow"):
MADE reads the input,

    y = x e^{s(x)} + t(x),   log|det ∂y/∂x| = Σ_i s_i(x),

so sampling is one pass and the inverse takes ``d``. ``J = ∂y/∂x`` is lower triangular; the fast
path step forms it, and ``∇ Σ s`` with it, in one ``jax.jacfwd`` sweep of the forward pass (``d``
tangents, vectorized; the draw ``y`` is that sweep's primal, so MADE runs once) and solves
``Jᵀ g' = g − ∇ Σ s`` by back substitution (``jax.scipy.linalg.solve_triangular``). That is the
one layer here whose step costs ``O(d)`` conditioner tangents, the same as its inverse; it still
needs no inverse pass.

Example:
    >>> import jax, jax.numpy as jnp
    >>> layer = masked_autoregressive(3, hidden=(8,))
    >>> params = layer.init(jax.random.key(0))
    >>> y, log_det = layer.forward_and_log_det(params, jnp.ones(3))
    >>> y.shape, log_det.shape
    ((3,), ())
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from vijax.flows.bijector import check_context, check_hidden, check_sizes, soft_clamp
from vijax.flows.networks import made_apply, made_init

__all__ = [
    "InverseAutoregressive",
    "MaskedAutoregressive",
    "inverse_autoregressive",
    "masked_autoregressive",
]


def _check(layer, what: str) -> None:
    check_sizes(layer, what)
    object.__setattr__(layer, "hidden", check_hidden(layer.hidden, what))


def _shift_and_log_scale(layer, params, z, context):
    context = context if layer.context_dim else None
    out = made_apply(params, z, context, layer.dim, layer.hidden, 2)
    return out[0], soft_clamp(out[1])


@dataclass(frozen=True)
class MaskedAutoregressive:
    """A MAF layer (see the module docstring); build it with :func:`masked_autoregressive`."""

    dim: int
    hidden: tuple[int, ...] = (32, 32)
    context_dim: int = 0

    def __post_init__(self):
        _check(self, "masked_autoregressive")

    def init(self, key) -> dict:
        """MADE parameters; the last layer is zero, so the layer starts as the identity."""
        return made_init(key, self.dim, self.hidden, 2, self.context_dim)

    def _made(self, params, y, context):
        check_context("masked_autoregressive", self.context_dim, context)
        return _shift_and_log_scale(self, params, y, context)

    def forward_and_log_det(self, params, x, context=None):
        """``y_i = x_i e^{s_i(y_{<i})} + t_i(y_{<i})`` by ``d`` MADE passes, and ``Σ s(y)``."""

        def step(_, carry):
            y, _ = carry
            shift, log_scale = self._made(params, y, context)
            return x * jnp.exp(log_scale) + shift, log_scale

        y, log_scale = jax.lax.fori_loop(0, self.dim, step, (jnp.zeros_like(x), jnp.zeros_like(x)))
        return y, jnp.sum(log_scale)

    def inverse_and_log_det(self, params, y, context=None):
        """``x = (y − t(y)) e^{−s(y)}`` in one MADE pass, and ``−Σ s(y)``."""
        shift, log_scale = self._made(params, y, context)
        return (y - shift) * jnp.exp(-log_scale), -jnp.sum(log_scale)

    def forward_with_score(self, params, x, score, context=None):
        """The fast path gradient's step: ``Hᵀ g − ∇_y Σ s(y)``, one MADE VJP."""
        y, log_det = self.forward_and_log_det(params, x, context)

        def density_direction(y):
            shift, log_scale = self._made(params, y, context)
            return (y - shift) * jnp.exp(-log_scale), jnp.sum(log_scale)

        _, vjp = jax.vjp(density_direction, jax.lax.stop_gradient(y))
        (new_score,) = vjp((score, -jnp.ones_like(log_det)))
        return y, log_det, new_score


@dataclass(frozen=True)
class InverseAutoregressive:
    """An IAF layer (see the module docstring); build it with :func:`inverse_autoregressive`."""

    dim: int
    hidden: tuple[int, ...] = (32, 32)
    context_dim: int = 0

    def __post_init__(self):
        _check(self, "inverse_autoregressive")

    def init(self, key) -> dict:
        """MADE parameters; the last layer is zero, so the layer starts as the identity."""
        return made_init(key, self.dim, self.hidden, 2, self.context_dim)

    def _made(self, params, x, context):
        check_context("inverse_autoregressive", self.context_dim, context)
        return _shift_and_log_scale(self, params, x, context)

    def _forward(self, params, x, context):
        shift, log_scale = self._made(params, x, context)
        return x * jnp.exp(log_scale) + shift, jnp.sum(log_scale)

    def forward_and_log_det(self, params, x, context=None):
        """``y = x e^{s(x)} + t(x)`` in one MADE pass, and ``Σ s(x)``."""
        return self._forward(params, x, context)

    def inverse_and_log_det(self, params, y, context=None):
        """``x_i = (y_i − t_i(x_{<i})) e^{−s_i(x_{<i})}`` by ``d`` MADE passes, and ``−Σ s(x)``."""

        def step(_, carry):
            x, _ = carry
            shift, log_scale = self._made(params, x, context)
            return (y - shift) * jnp.exp(-log_scale), log_scale

        x, log_scale = jax.lax.fori_loop(0, self.dim, step, (jnp.zeros_like(y), jnp.zeros_like(y)))
        return x, -jnp.sum(log_scale)

    def forward_with_score(self, params, x, score, context=None):
        """The fast path gradient's step: ``J^{-T}(g − ∇ Σ s)`` by a triangular solve."""

        # one MADE pass whose forward-mode sweep gives J and ∇ Σ s together (the primal
        # outputs ride along as aux, so the pass is not repeated for y)
        def forward(x):
            out = self._forward(params, x, context)
            return out, out

        (jacobian, grad_log_det), (y, log_det) = jax.jacfwd(forward, has_aux=True)(x)
        new_score = jax.scipy.linalg.solve_triangular(
            jacobian, score - grad_log_det, trans=1, lower=True
        )
        return y, log_det, new_score


def masked_autoregressive(
    dim: int, *, hidden=(32, 32), context_dim: int = 0
) -> MaskedAutoregressive:
    """A MAF layer ``y_i = x_i e^{s_i(y_{<i})} + t_i(y_{<i})`` (Papamakarios et al. 2017).

    Args:
      dim: the dimension of ``x``.
      hidden: the widths of MADE's hidden layers (at least one).
      context_dim: the length of the context vector of a conditional layer (0: unconditional).
    """
    return MaskedAutoregressive(dim, hidden, context_dim)


def inverse_autoregressive(
    dim: int, *, hidden=(32, 32), context_dim: int = 0
) -> InverseAutoregressive:
    """An IAF layer ``y = x e^{s(x)} + t(x)`` (Kingma et al. 2016).

    Args:
      dim: the dimension of ``x``.
      hidden: the widths of MADE's hidden layers (at least one).
      context_dim: the length of the context vector of a conditional layer (0: unconditional).
    """
    return InverseAutoregressive(dim, hidden, context_dim)
