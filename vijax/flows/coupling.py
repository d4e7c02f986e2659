r"""Coupling layers: affine (RealNVP; Dinh et al. 2017) and rational-quadratic spline (Durkan et al.
2019, "Neural Spline Flows").

With a binary mask ``m`` (``True``: kept), the layer transforms the other coordinates
elementwise with parameters computed from the kept ones (and the context ``c``):

    y_m = x_m,   y_f = B_θ(x_f),   θ = conditioner([x_m, c]),   log|det J| = Σ_f log B'_θ(x_f),

where ``B_θ`` is ``distrax.ScalarAffine`` (``B(x) = x e^s + t``, the log-scale soft-clamped to
``s = 5 tanh(s̃/5)`` so that a large step cannot overflow it) or
``distrax.RationalQuadraticSpline`` (monotone rational-quadratic splines on ``[−bound, bound]``,
the identity outside), and the layer itself is ``distrax.MaskedCoupling``. The conditioner is,
by default, a plain-JAX MLP whose last layer starts at zero, so the layer starts as the identity.

**Custom conditioners.** ``conditioner=`` takes a flax ``nnx.Module`` (the layer's parameters
are its state from ``nnx.split``; it is applied as ``nnx.merge(graphdef, state)(inputs)``), a
flax ``linen.Module`` (parameters ``module.init(key, inputs)``, applied with ``module.apply``)
or a pure pair ``(init(key) -> params, apply(params, inputs) -> outputs)``. The network maps
the masked input ``where(m, x, 0)``, followed by the context for a conditional layer (length
``dim + context_dim``), to ``dim · num_params`` outputs (``num_params``: 2 for the affine layer,
``3·num_bins + 1`` for the spline), read as ``θ`` of shape ``(dim, num_params)`` (row ``i``:
coordinate ``i``). A custom network's last layer is not zeroed, so such a layer need not start
as the identity. The layer holds the module's graph definition, not a live module, and stays
hashable (the network is compared by identity).

**Fast path gradient step.** Order the coordinates as (kept, free). The Jacobian is block
lower triangular, ``J = [[I, 0], [∂y_f/∂x_m, D]]`` with ``D = diag B'(x_f)``, so with
``v = g − ∇ log|det J|`` the solve ``J^T g' = v`` is

    g'_f = (g_f − ∂_f log|det J|) / D,
    g'_m = g_m − ∂_{x_m} [log|det J| + y_f · g'_f]        (one VJP through the conditioner),

where ``∂_f log|det J| = d log B'(x_f)/dx_f``. One evaluation of ``B`` gives the draw, ``D`` and
that derivative (a forward-mode sweep in ``x``) and the pull-back to ``θ`` (a VJP of the same
evaluation). No inverse and no Jacobian are formed: the cost is one conditioner VJP per layer.

Example:
    >>> import jax, jax.numpy as jnp
    >>> layer = affine_coupling(4, mask=(True, True, False, False), hidden=(8,))
    >>> params = layer.init(jax.random.key(0))
    >>> y, log_det = layer.forward_and_log_det(params, jnp.arange(4.0))
    >>> bool(jnp.allclose(y, jnp.arange(4.0))), float(log_det)  # the identity at init
    (True, 0.0)

    A flax ``nnx`` conditioner (input ``dim + context_dim = 4``, output ``dim · 2 = 8``):

    >>> from flax import nnx
    >>> net = nnx.Sequential(
    ...     nnx.Linear(4, 16, rngs=nnx.Rngs(0)), nnx.tanh, nnx.Linear(16, 8, rngs=nnx.Rngs(1))
    ... )
    >>> layer = affine_coupling(4, conditioner=net)
    >>> params = layer.init(jax.random.key(0))  # the module's state
    >>> y, log_det = layer.forward_and_log_det(params, jnp.arange(4.0))
    >>> x, _ = layer.inverse_and_log_det(params, y)
    >>> bool(jnp.allclose(x, jnp.arange(4.0), atol=1e-5))
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from vijax.flows.bijector import (
    check_context,
    check_hidden,
    check_positive_int,
    check_sizes,
    soft_clamp,
)
from vijax.flows.networks import Conditioner, conditioner_network, mlp_apply, mlp_init

__all__ = [
    "AffineTransformer",
    "Coupling",
    "SplineTransformer",
    "affine_coupling",
    "alternating_mask",
    "spline_coupling",
]


def alternating_mask(dim: int, parity: int = 0) -> tuple[bool, ...]:
    """``(True, False, True, ...)`` (``parity=0``) or its complement (``parity=1``)."""
    return tuple(bool((i + parity) % 2 == 0) for i in range(dim))


def _check_mask(mask, dim: int, what: str) -> tuple[bool, ...]:
    try:
        mask = tuple(bool(m) for m in np.asarray(mask).reshape(-1))
    except (TypeError, ValueError):
        raise ValueError(f"{what}: mask must be a sequence of booleans, got {mask!r}") from None
    if len(mask) != dim:
        raise ValueError(f"{what}: mask must have length dim={dim}, got {len(mask)}")
    if dim > 1 and (all(mask) or not any(mask)):
        raise ValueError(f"{what}: mask must keep some coordinates and transform others")
    if dim == 1 and all(mask):
        raise ValueError(f"{what}: mask of a 1-dimensional layer must transform the coordinate")
    return mask


@dataclass(frozen=True)
class AffineTransformer:
    """``B_θ(x) = x e^s + t``, ``θ = (t, s̃)``, ``s = 5 tanh(s̃/5)`` (``distrax.ScalarAffine``)."""

    num_params = 2

    def bijector(self, theta):
        return distrax.ScalarAffine(shift=theta[:, 0], log_scale=soft_clamp(theta[:, 1]))


@dataclass(frozen=True)
class SplineTransformer:
    """A monotone rational-quadratic spline on ``[−bound, bound]`` with ``num_bins`` bins, the
    identity outside (``distrax.RationalQuadraticSpline``, ``3·num_bins + 1`` parameters)."""

    num_bins: int = 8
    bound: float = 5.0

    def __post_init__(self):
        check_positive_int(self.num_bins, "spline_coupling", "num_bins")
        if not 0 < self.bound < float("inf"):
            raise ValueError(
                f"spline_coupling: bound must be a positive finite number, got {self.bound!r}"
            )

    @property
    def num_params(self) -> int:
        return 3 * self.num_bins + 1

    def bijector(self, theta):
        return distrax.RationalQuadraticSpline(
            theta, -self.bound, self.bound, boundary_slopes="identity"
        )


@dataclass(frozen=True)
class Coupling:
    """A masked coupling layer with an elementwise ``transformer`` (see the module docstring);
    build it with :func:`affine_coupling` or :func:`spline_coupling`.

    ``conditioner``: ``None`` (the plain MLP of widths ``hidden``) or a custom network (an
    ``nnx.Module``, a ``linen.Module``, an ``(init, apply)`` pair, adapted on construction to a
    :class:`~vijax.flows.networks.Conditioner`, compared by identity).
    """

    dim: int
    mask: tuple[bool, ...]
    transformer: AffineTransformer | SplineTransformer
    hidden: tuple[int, ...] = (32, 32)
    context_dim: int = 0
    conditioner: Conditioner | Any = None

    def __post_init__(self):
        what = self._what()
        check_sizes(self, what)
        object.__setattr__(self, "mask", _check_mask(self.mask, self.dim, what))
        object.__setattr__(self, "hidden", check_hidden(self.hidden, what))
        if self.conditioner is not None:
            network = conditioner_network(self.conditioner, what, self.dim + self.context_dim)
            object.__setattr__(self, "conditioner", network)

    def _what(self) -> str:
        return (
            "affine_coupling"
            if isinstance(self.transformer, AffineTransformer)
            else "spline_coupling"
        )

    def init(self, key):
        """The conditioner's parameters: by default the MLP's, whose last layer is zero, so the
        layer starts as the identity; else the custom network's (its output size is checked)."""
        num_params = self.transformer.num_params
        if self.conditioner is None:
            sizes = (self.dim + self.context_dim, *self.hidden, self.dim * num_params)
            return mlp_init(key, sizes)
        params = self.conditioner.init(key)
        inputs = jnp.zeros((self.dim + self.context_dim,))
        self._check_output(jax.eval_shape(self.conditioner.apply, params, inputs))
        return params

    def _check_output(self, output) -> None:
        expected = (self.dim * self.transformer.num_params,)
        shape = getattr(output, "shape", None)
        if shape != expected:
            got = shape if shape is not None else type(output).__name__
            raise ValueError(
                f"{self._what()}: conditioner must map inputs of shape "
                f"({self.dim + self.context_dim},) (dim + context_dim) to outputs of shape "
                f"{expected} (dim * num_params = {self.dim} * {self.transformer.num_params}), "
                f"got {got}"
            )

    def _mask_array(self):
        return np.asarray(self.mask, dtype=bool)

    def _conditioner(self, params, context):
        check_context(self._what(), self.context_dim, context)
        context = context if self.context_dim else None
        num_params = self.transformer.num_params

        def conditioner(masked):
            inputs = masked if context is None else jnp.concatenate([masked, context])
            if self.conditioner is None:
                return mlp_apply(params, inputs).reshape(self.dim, num_params)
            output = self.conditioner.apply(params, inputs)
            self._check_output(output)
            return output.reshape(self.dim, num_params)

        return conditioner

    def _bijector(self, params, context):
        return distrax.MaskedCoupling(
            self._mask_array(), self._conditioner(params, context), self.transformer.bijector
        )

    def forward_and_log_det(self, params, x, context=None):
        """``y = where(mask, x, B_θ(x))``, ``Σ_free log B'_θ(x)`` (``distrax.MaskedCoupling``)."""
        return self._bijector(params, context).forward_and_log_det(x)

    def inverse_and_log_det(self, params, y, context=None):
        """The exact inverse (the kept coordinates give ``θ``, then ``B_θ^{-1}``)."""
        return self._bijector(params, context).inverse_and_log_det(y)

    def forward_with_score(self, params, x, score, context=None):
        """The fast path gradient's step: a diagonal solve and one conditioner VJP."""
        keep = self._mask_array()
        free = ~keep
        theta, conditioner_vjp = jax.vjp(
            self._conditioner(params, context), jnp.where(keep, x, 0.0)
        )

        def elementwise(theta):
            # values (y, log B'(x)) and, by a forward-mode sweep in x, the diagonal
            # D = B'(x) and d log B'(x)/dx, from one evaluation of B
            return jax.jvp(
                lambda x: self.transformer.bijector(theta).forward_and_log_det(x),
                (x,),
                (jnp.ones_like(x),),
            )

        (y_all, log_d), theta_vjp, (slope, d_log_d) = jax.vjp(elementwise, theta, has_aux=True)
        new_free = (score - d_log_d) / slope
        (theta_cotangent,) = theta_vjp(
            (jnp.where(free, new_free, 0.0), jnp.where(free, 1.0, 0.0).astype(log_d.dtype))
        )
        (masked_cotangent,) = conditioner_vjp(theta_cotangent)
        new_score = jnp.where(free, new_free, score - masked_cotangent)
        y = jnp.where(keep, x, y_all)
        return y, jnp.sum(jnp.where(free, log_d, 0.0)), new_score


def affine_coupling(
    dim: int, mask=None, *, hidden=(32, 32), context_dim: int = 0, conditioner=None
) -> Coupling:
    """An affine coupling layer ``y_f = x_f e^{s(x_m, c)} + t(x_m, c)`` (Dinh et al. 2017).

    Args:
      dim: the dimension of ``x``.
      mask: booleans of length ``dim``, ``True`` for the kept coordinates (default: every other
        coordinate, starting with the first).
      hidden: the widths of the conditioner MLP's hidden layers.
      context_dim: the length of the context vector of a conditional layer (0: unconditional).
      conditioner: ``None`` (the default MLP of widths ``hidden``, last layer zero) or a
        custom network from ``dim + context_dim`` inputs (the masked ``x``, then the context) to
        ``2 * dim`` outputs (``θ = (t, s̃)`` per coordinate, interleaved: output ``2i`` is
        ``t_i``, ``2i + 1`` is ``s̃_i``): a flax ``nnx.Module`` (parameters: its state from
        ``nnx.split``, taken when the layer is built; the key of ``init`` is unused, so give
        each layer its own module), a flax ``linen.Module`` (parameters ``module.init(key,
        zeros(dim + context_dim))``) or a pure pair ``(init(key) -> params, apply(params,
        inputs) -> outputs)``. ``hidden`` is unused with a custom network.

    Raises:
      ValueError: naming ``conditioner``, for an unsupported network, or (at ``init``) one whose
        output is not of shape ``(2 * dim,)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> rngs = nnx.Rngs(0)
        >>> net = nnx.Sequential(nnx.Linear(2, 8, rngs=rngs), nnx.tanh, nnx.Linear(8, 4, rngs=rngs))
        >>> layer = affine_coupling(2, conditioner=net)
        >>> params = layer.init(jax.random.key(0))
        >>> layer.forward_and_log_det(params, jnp.ones(2))[0].shape
        (2,)
    """
    mask = alternating_mask(dim) if mask is None and isinstance(dim, int) else mask
    return Coupling(dim, mask, AffineTransformer(), hidden, context_dim, conditioner)


def spline_coupling(
    dim: int,
    mask=None,
    *,
    hidden=(32, 32),
    context_dim: int = 0,
    num_bins: int = 8,
    bound: float = 5.0,
    conditioner=None,
) -> Coupling:
    """A rational-quadratic spline coupling layer (Durkan et al. 2019).

    Args:
      dim: the dimension of ``x``.
      mask: booleans of length ``dim``, ``True`` for the kept coordinates (default: every other
        coordinate, starting with the first).
      hidden: the widths of the conditioner MLP's hidden layers.
      context_dim: the length of the context vector of a conditional layer (0: unconditional).
      num_bins: the number of spline bins on ``[−bound, bound]``.
      bound: the spline acts on ``[−bound, bound]`` and is the identity outside.
      conditioner: ``None`` (the default MLP) or a custom network from ``dim + context_dim``
        inputs to ``dim * (3 * num_bins + 1)`` outputs (row ``i`` of their ``(dim, 3 *
        num_bins + 1)`` reshape: coordinate ``i``'s bin widths, heights and knot slopes, as
        ``distrax.RationalQuadraticSpline`` reads them); the same kinds as
        :func:`affine_coupling`'s ``conditioner``.

    Raises:
      ValueError: naming ``conditioner``, for an unsupported network, or (at ``init``) one whose
        output is not of shape ``(dim * (3 * num_bins + 1),)``.
    """
    transformer = SplineTransformer(num_bins, bound)
    mask = alternating_mask(dim) if mask is None and isinstance(dim, int) else mask
    return Coupling(dim, mask, transformer, hidden, context_dim, conditioner)
