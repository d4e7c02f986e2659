r"""Linear layers: elementwise affine, lower-triangular affine, and a permutation.

- :func:`affine`: ``y = x ⊙ e^s + t`` (``distrax.ScalarAffine``), ``log|det J| = Σ s``,
  ``J^{-T} g = g ⊙ e^{−s}``. On its own over a standard-normal base it is the mean-field Gaussian
  family ``N(t, diag e^{2s})``.
- :func:`triangular_affine`: ``y = L x + t`` with ``L`` lower triangular, ``L_ii = e^{s_i}``
  (``distrax.TriangularLinear``), ``log|det J| = Σ s``, ``J^{-T} g = L^{-T} g`` by back
  substitution. Alone it is the full-rank Gaussian family ``N(t, L Lᵀ)``.
- :func:`permutation`: ``y = x[π]`` (default: reversed), volume preserving, and
  ``J^{-T} g = g[π]`` (a permutation matrix is orthogonal). Placed between coupling or
  autoregressive layers so that every coordinate gets transformed and conditioned on.

None of them takes a context (they ignore one).

Example:
    >>> import jax, jax.numpy as jnp
    >>> layer = triangular_affine(2)
    >>> params = layer.init(jax.random.key(0))
    >>> y, log_det = layer.forward_and_log_det(params, jnp.array([1.0, 2.0]))
    >>> y.tolist(), float(log_det)  # the identity at init
    ([1.0, 2.0], 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import distrax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from vijax.flows.bijector import check_positive_int

__all__ = [
    "Affine",
    "Permutation",
    "TriangularAffine",
    "affine",
    "permutation",
    "triangular_affine",
]


@dataclass(frozen=True)
class Affine:
    """``y = x ⊙ e^s + t`` on ``R^dim`` (build it with :func:`affine`)."""

    dim: int

    def __post_init__(self):
        check_positive_int(self.dim, "affine", "dim")

    def init(self, key) -> dict:
        """``t = 0``, ``s = 0``: the identity."""
        return {"shift": jnp.zeros((self.dim,)), "log_scale": jnp.zeros((self.dim,))}

    def _bijector(self, params, context):
        return distrax.ScalarAffine(shift=params["shift"], log_scale=params["log_scale"])

    def forward_and_log_det(self, params, x, context=None):
        y, log_det = self._bijector(params, context).forward_and_log_det(x)
        return y, jnp.sum(log_det)

    def inverse_and_log_det(self, params, y, context=None):
        x, log_det = self._bijector(params, context).inverse_and_log_det(y)
        return x, jnp.sum(log_det)

    def forward_with_score(self, params, x, score, context=None):
        """``g' = g ⊙ e^{−s}`` (the log-determinant does not depend on ``x``)."""
        y, log_det = self.forward_and_log_det(params, x, context)
        return y, log_det, score * jnp.exp(-params["log_scale"])


@dataclass(frozen=True)
class TriangularAffine:
    """``y = L x + t``, ``L`` lower triangular, ``L_ii = e^{s_i}`` (:func:`triangular_affine`)."""

    dim: int

    def __post_init__(self):
        check_positive_int(self.dim, "triangular_affine", "dim")

    def init(self, key) -> dict:
        """``t = 0``, ``s = 0``, zero off-diagonal: the identity."""
        d = self.dim
        return {
            "shift": jnp.zeros((d,)),
            "log_diagonal": jnp.zeros((d,)),
            "lower": jnp.zeros((d, d)),
        }

    def matrix(self, params):
        """``L = strictly_lower(lower) + diag(e^{log_diagonal})``."""
        return jnp.tril(params["lower"], -1) + jnp.diag(jnp.exp(params["log_diagonal"]))

    def _linear(self, params, context):
        return distrax.TriangularLinear(self.matrix(params), is_lower=True)

    def forward_and_log_det(self, params, x, context=None):
        y, log_det = self._linear(params, context).forward_and_log_det(x)
        return y + params["shift"], log_det

    def inverse_and_log_det(self, params, y, context=None):
        return self._linear(params, context).inverse_and_log_det(y - params["shift"])

    def forward_with_score(self, params, x, score, context=None):
        """``g' = L^{-T} g`` by back substitution."""
        y, log_det = self.forward_and_log_det(params, x, context)
        new_score = solve_triangular(self.matrix(params), score, trans=1, lower=True)
        return y, log_det, new_score


@dataclass(frozen=True)
class Permutation:
    """``y = x[order]`` (see :func:`permutation`)."""

    dim: int
    order: tuple[int, ...]

    def __post_init__(self):
        check_positive_int(self.dim, "permutation", "dim")
        order = tuple(int(i) for i in self.order)
        if sorted(order) != list(range(self.dim)):
            raise ValueError(
                f"permutation: order must be a permutation of range({self.dim}), got {self.order!r}"
            )
        object.__setattr__(self, "order", order)

    def init(self, key) -> dict:
        """No parameters."""
        return {}

    def forward_and_log_det(self, params, x, context=None):
        return x[np.asarray(self.order)], jnp.zeros((), x.dtype)

    def inverse_and_log_det(self, params, y, context=None):
        return y[np.argsort(self.order)], jnp.zeros((), y.dtype)

    def forward_with_score(self, params, x, score, context=None):
        """``g' = g[order]``: the Jacobian is a permutation matrix, ``P^{-T} = P``."""
        y, log_det = self.forward_and_log_det(params, x, context)
        return y, log_det, score[np.asarray(self.order)]


def affine(dim: int) -> Affine:
    """An elementwise affine layer ``y = x ⊙ e^s + t`` on ``R^dim`` (starts as the identity)."""
    return Affine(dim)


def triangular_affine(dim: int) -> TriangularAffine:
    """A lower-triangular affine layer ``y = L x + t`` on ``R^dim`` (starts as the identity)."""
    return TriangularAffine(dim)


def permutation(dim: int, order=None) -> Permutation:
    """The permutation ``y = x[order]`` on ``R^dim`` (default: reversed coordinates)."""
    if order is None and isinstance(dim, int) and not isinstance(dim, bool):
        order = tuple(range(dim - 1, -1, -1))
    return Permutation(dim, tuple(order) if order is not None else ())
