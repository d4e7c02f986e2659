r"""Covariance functions (kernels) as small frozen dataclasses.

A kernel is a value: ``kernel.init(D)`` gives its parameters (a dict of *unconstrained* arrays),
``kernel(params, X1, X2)`` the ``N1 × N2`` covariance matrix, ``kernel(params, X)`` the
symmetric ``N × N`` one (diagonal distances exactly zero), ``kernel.diag(params, X)`` its
diagonal in ``O(N)``. Positive parameters (variances, lengthscales, periods, ``α``) are stored
unconstrained and mapped through NumPyro's bijection for ``constraints.softplus_positive``
(``positive="softplus"``, the default) or ``constraints.positive`` (``positive="exp"``);
:meth:`constrained` returns the positive values. ``ard=True`` gives one lengthscale per input
dimension (automatic relevance determination).

With ``r² = Σ_d (x_d − x'_d)² / ℓ_d²`` (Rasmussen & Williams 2006, ch. 4):

=====================  ===================================================================
:class:`RBF`           ``σ² exp(−r²/2)``
:class:`Matern12`      ``σ² exp(−r)``
:class:`Matern32`      ``σ² (1 + √3 r) exp(−√3 r)``
:class:`Matern52`      ``σ² (1 + √5 r + 5r²/3) exp(−√5 r)``
:class:`RationalQuadratic`  ``σ² (1 + r²/(2α))^{−α}``
:class:`Periodic`      ``σ² exp(−2 Σ_d sin²(π (x_d − x'_d)/p) / ℓ_d²)`` (MacKay 1998)
:class:`Linear`        ``Σ_d σ_d² x_d x'_d``
:class:`White`         ``σ² 1[x = x']``
=====================  ===================================================================

``k1 + k2`` is a :class:`Sum`, ``k1 * k2`` a :class:`Product` (both PSD when the parts are);
their parameters are the tuple of the parts' parameters.

Squared distances use the matrix-product form ``‖a‖² + ‖b‖² − 2 a·b`` (one matrix product,
much cheaper to differentiate than the ``N1 × N2 × D`` differences), clipped at zero; the
periodic kernel uses the same trick through ``sin²(t/2) = (1 − cos a cos b − sin a sin b)/2``.

Example:
    >>> import jax.numpy as jnp
    >>> from vijax.models import gp
    >>> kernel = gp.RBF(ard=True) + gp.White()
    >>> params = kernel.init(2)
    >>> X = jnp.array([[0.0, 0.0], [1.0, 0.0]])
    >>> K = kernel(params, X)
    >>> [round(float(v), 4) for v in K[0]]  # RBF at r = 1 is exp(−1/2); white noise on the diagonal
    [2.0, 0.6065]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

__all__ = [
    "RBF",
    "Linear",
    "Matern12",
    "Matern32",
    "Matern52",
    "Periodic",
    "Product",
    "RationalQuadratic",
    "Sum",
    "White",
    "positive_transform",
]

#: the constraint behind each ``positive=`` choice
POSITIVE_CONSTRAINTS = {"softplus": constraints.softplus_positive, "exp": constraints.positive}


def positive_transform(positive: str):
    """NumPyro's bijection from ℝ onto ``(0, ∞)``: ``"softplus"`` or ``"exp"``."""
    if positive not in POSITIVE_CONSTRAINTS:
        raise ValueError(
            f"positive must be one of {sorted(POSITIVE_CONSTRAINTS)}, got {positive!r}"
        )
    return biject_to(POSITIVE_CONSTRAINTS[positive])


# ----------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------


def _check_inputs(kernel_name: str, X1, X2):
    """Both inputs 2-D with the same number of columns (named in the error)."""
    X1 = jnp.asarray(X1)
    if X1.ndim != 2:
        raise ValueError(f"{kernel_name}: X1 must have shape (N, D), got {X1.shape}")
    if X2 is None:
        return X1, None
    X2 = jnp.asarray(X2)
    if X2.ndim != 2 or X2.shape[1] != X1.shape[1]:
        raise ValueError(
            f"{kernel_name}: X2 must have shape (N2, {X1.shape[1]}) to match X1 {X1.shape}, "
            f"got {X2.shape}"
        )
    return X1, X2


def _check_ard(kernel_name: str, name: str, value, num_features: int) -> None:
    if jnp.ndim(value) == 1 and jnp.shape(value)[0] != num_features:
        raise ValueError(
            f"{kernel_name}: params[{name!r}] has {jnp.shape(value)[0]} entries (ARD) but the "
            f"inputs have {num_features} dimensions"
        )
    if jnp.ndim(value) > 1:
        raise ValueError(
            f"{kernel_name}: params[{name!r}] must be a scalar or a vector, got shape "
            f"{jnp.shape(value)}"
        )


def _raw(positive: str, value, shape) -> jax.Array:
    """The unconstrained value of an initial positive parameter (checked with NumPy)."""
    checked = np.broadcast_to(np.asarray(value, dtype=np.float64), shape)
    if not np.all(np.isfinite(checked) & (checked > 0)):
        raise ValueError(f"initial positive parameters must be finite and > 0, got {value!r}")
    return positive_transform(positive).inv(jnp.asarray(checked, dtype=jnp.result_type(float)))


def _squared_distance(X1, X2) -> jax.Array:
    """``‖x_i − x'_j‖²`` in matrix-product form (``X2=None``: symmetric, exact zero diagonal)."""
    sq1 = jnp.sum(X1**2, axis=-1)
    if X2 is None:
        d = sq1[:, None] + sq1[None, :] - 2.0 * X1 @ X1.T
        d = 0.5 * (d + d.T)
        d = d * (1.0 - jnp.eye(X1.shape[0], dtype=d.dtype))
    else:
        d = sq1[:, None] + jnp.sum(X2**2, axis=-1)[None, :] - 2.0 * X1 @ X2.T
    return jnp.maximum(d, 0.0)


def _safe_sqrt(x):
    """``√x`` with a finite gradient at 0 (the derivative is zero below ``1e-30``)."""
    return jnp.sqrt(jnp.maximum(x, 1e-30))


def _stationary(kernel, params, X1, X2, profile: Callable) -> jax.Array:
    """``σ² profile(r²)`` with ``r² = Σ_d (x_d − x'_d)² / ℓ_d²``."""
    name = type(kernel).__name__
    X1, X2 = _check_inputs(name, X1, X2)
    transform = positive_transform(kernel.positive)
    lengthscale = transform(params["lengthscale"])
    _check_ard(name, "lengthscale", lengthscale, X1.shape[1])
    r2 = _squared_distance(X1 / lengthscale, None if X2 is None else X2 / lengthscale)
    return transform(params["variance"]) * profile(r2, params, transform)


def _stationary_diag(kernel, params, X) -> jax.Array:
    X, _ = _check_inputs(type(kernel).__name__, X, None)
    variance = positive_transform(kernel.positive)(params["variance"])
    return jnp.broadcast_to(variance, (X.shape[0],)).astype(jnp.result_type(X, variance))


def _stationary_init(kernel, num_features: int, variance, lengthscale) -> dict:
    _check_num_features(kernel, num_features)
    shape = (num_features,) if kernel.ard else ()
    return {
        "variance": _raw(kernel.positive, variance, ()),
        "lengthscale": _raw(kernel.positive, lengthscale, shape),
    }


def _check_num_features(kernel, num_features) -> None:
    if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features < 1:
        raise ValueError(
            f"{type(kernel).__name__}.init: num_features must be a positive int, got "
            f"{num_features!r}"
        )


def _constrained(kernel, params) -> dict:
    transform = positive_transform(kernel.positive)
    return {name: transform(value) for name, value in params.items()}


class _Combinable:
    """``+`` and ``*`` build :class:`Sum` and :class:`Product` kernels."""

    def __add__(self, other):
        return Sum(_parts(self, Sum) + _parts(other, Sum))

    def __mul__(self, other):
        return Product(_parts(self, Product) + _parts(other, Product))


def _parts(kernel, kind) -> tuple:
    if not callable(getattr(kernel, "diag", None)):
        raise TypeError(f"can only combine kernels, got {kernel!r}")
    return kernel.kernels if isinstance(kernel, kind) else (kernel,)


# ----------------------------------------------------------------------------------------------
# Stationary kernels
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RBF(_Combinable):
    """Squared exponential ``σ² exp(−r²/2)``; params ``{"variance", "lengthscale"}``."""

    ard: bool = False
    positive: str = "softplus"

    def init(self, num_features: int, *, variance=1.0, lengthscale=1.0) -> dict:
        """Unconstrained parameters at the given positive values."""
        return _stationary_init(self, num_features, variance, lengthscale)

    def __call__(self, params, X1, X2=None) -> jax.Array:
        return _stationary(self, params, X1, X2, lambda r2, p, t: jnp.exp(-0.5 * r2))

    def diag(self, params, X) -> jax.Array:
        """``k(x_i, x_i) = σ²`` for each row."""
        return _stationary_diag(self, params, X)

    def constrained(self, params) -> dict:
        """The positive parameter values."""
        return _constrained(self, params)


@dataclass(frozen=True)
class Matern12(_Combinable):
    """Matérn ν = 1/2 (exponential) ``σ² exp(−r)``; params ``{"variance", "lengthscale"}``."""

    ard: bool = False
    positive: str = "softplus"

    def init(self, num_features: int, *, variance=1.0, lengthscale=1.0) -> dict:
        """Unconstrained parameters at the given positive values."""
        return _stationary_init(self, num_features, variance, lengthscale)

    def __call__(self, params, X1, X2=None) -> jax.Array:
        return _stationary(self, params, X1, X2, lambda r2, p, t: jnp.exp(-_safe_sqrt(r2)))

    def diag(self, params, X) -> jax.Array:
        """``k(x_i, x_i) = σ²`` for each row."""
        return _stationary_diag(self, params, X)

    def constrained(self, params) -> dict:
        """The positive parameter values."""
        return _constrained(self, params)


def _matern32(r2, params, transform):
    r = math.sqrt(3.0) * _safe_sqrt(r2)
    return (1.0 + r) * jnp.exp(-r)


def _matern52(r2, params, transform):
    r = math.sqrt(5.0) * _safe_sqrt(r2)
    return (1.0 + r + r**2 / 3.0) * jnp.exp(-r)


@dataclass(frozen=True)
class Matern32(_Combinable):
    """Matérn ν = 3/2 ``σ² (1 + √3 r) exp(−√3 r)``; params ``{"variance", "lengthscale"}``."""

    ard: bool = False
    positive: str = "softplus"

    def init(self, num_features: int, *, variance=1.0, lengthscale=1.0) -> dict:
        """Unconstrained parameters at the given positive values."""
        return _stationary_init(self, num_features, variance, lengthscale)

    def __call__(self, params, X1, X2=None) -> jax.Array:
        return _stationary(self, params, X1, X2, _matern32)

    def diag(self, params, X) -> jax.Array:
        """``k(x_i, x_i) = σ²`` for each row."""
        return _stationary_diag(self, params, X)

    def constrained(self, params) -> dict:
        """The positive parameter values."""
        return _constrained(self, params)


@dataclass(frozen=True)
class Matern52(_Combinable):
    """Matérn ν = 5/2 ``σ² (1 + √5 r + 5r²/3) exp(−√5 r)``; params ``{"variance",
    "lengthscale"}``."""

    ard: bool = False
    positive: str = "softplus"

    def init(self, num_features: int, *, variance=1.0, lengthscale=1.0) -> dict:
        """Unconstrained parameters at the given positive values."""
        return _stationary_init(self, num_features, variance, lengthscale)

    def __call__(self, params, X1, X2=None) -> jax.Array:
        return _stationary(self, params, X1, X2, _matern52)

    def diag(self, params, X) -> jax.Array:
        """``k(x_i, x_i) = σ²`` for each row."""
        return _stationary_diag(self, params, X)

    def constrained(self, params) -> dict:
        """The positive parameter values."""
        return _constrained(self, params)


def _rational_quadratic(r2, params, transform):
    alpha = transform(params["alpha"])
    return jnp.exp(-alpha * jnp.log1p(r2 / (2.0 * alpha)))


@dataclass(frozen=True)
class RationalQuadratic(_Combinable):
    """Rational quadratic ``σ² (1 + r²/(2α))^{−α}`` (a scale mixture of RBFs; → RBF as α → ∞).

    Params ``{"variance", "lengthscale", "alpha"}``.
    """

    ard: bool = False
    positive: str = "softplus"

    def init(self, num_features: int, *, variance=1.0, lengthscale=1.0, alpha=1.0) -> dict:
        """Unconstrained parameters at the given positive values."""
        params = _stationary_init(self, num_features, variance, lengthscale)
        return {**params, "alpha": _raw(self.positive, alpha, ())}

    def __call__(self, params, X1, X2=None) -> jax.Array:
        return _stationary(self, params, X1, X2, _rational_quadratic)

    def diag(self, params, X) -> jax.Array:
        """``k(x_i, x_i) = σ²`` for each row."""
        return _stationary_diag(self, params, X)

    def constrained(self, params) -> dict:
        """The positive parameter values."""
        return _constrained(self, params)


@dataclass(frozen=True)
class Periodic(_Combinable):
    r"""Periodic ``σ² exp(−2 Σ_d sin²(π (x_d − x'_d) / p) / ℓ_d²)`` (MacKay 1998; R&W eq. 4.31).

    Params ``{"variance", "lengthscale", "period"}`` (one period shared by all dimensions).
    Computed without pairwise differences: with ``a = 2πx/p``, ``b = 2πx'/p``,
    ``2 sin²((a − b)/2) = 1 − cos a cos b − sin a sin b``.
    """

    ard: bool = False
    positive: str = "softplus"

    def init(self, num_features: int, *, variance=1.0, lengthscale=1.0, period=1.0) -> dict:
        """Unconstrained parameters at the given positive values."""
        params = _stationary_init(self, num_features, variance, lengthscale)
        return {**params, "period": _raw(self.positive, period, ())}

    def __call__(self, params, X1, X2=None) -> jax.Array:
        X1, X2 = _check_inputs("Periodic", X1, X2)
        transform = positive_transform(self.positive)
        lengthscale = transform(params["lengthscale"])
        _check_ard("Periodic", "lengthscale", lengthscale, X1.shape[1])
        frequency = 2.0 * jnp.pi / transform(params["period"])
        inverse_l2 = jnp.broadcast_to(1.0 / lengthscale**2, (X1.shape[1],))

        def features(X):
            angle = frequency * X
            return jnp.cos(angle) * jnp.sqrt(inverse_l2), jnp.sin(angle) * jnp.sqrt(inverse_l2)

        cos1, sin1 = features(X1)
        cos2, sin2 = (cos1, sin1) if X2 is None else features(X2)
        # Σ_d 2 sin²(·)/ℓ_d² = Σ_d 1/ℓ_d² − (cos·cos + sin·sin)
        exponent = jnp.maximum(jnp.sum(inverse_l2) - cos1 @ cos2.T - sin1 @ sin2.T, 0.0)
        if X2 is None:
            exponent = exponent * (1.0 - jnp.eye(X1.shape[0], dtype=exponent.dtype))
        return transform(params["variance"]) * jnp.exp(-exponent)

    def diag(self, params, X) -> jax.Array:
        """``k(x_i, x_i) = σ²`` for each row."""
        return _stationary_diag(self, params, X)

    def constrained(self, params) -> dict:
        """The positive parameter values."""
        return _constrained(self, params)


# ----------------------------------------------------------------------------------------------
# Non-stationary kernels
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Linear(_Combinable):
    """Linear (Bayesian linear regression) ``Σ_d σ_d² x_d x'_d``; params ``{"variance"}``.

    With ``ard=True`` there is one variance per input dimension.
    """

    ard: bool = False
    positive: str = "softplus"

    def init(self, num_features: int, *, variance=1.0) -> dict:
        """Unconstrained parameters at the given positive values."""
        _check_num_features(self, num_features)
        shape = (num_features,) if self.ard else ()
        return {"variance": _raw(self.positive, variance, shape)}

    def _scaled(self, params, X):
        variance = positive_transform(self.positive)(params["variance"])
        _check_ard("Linear", "variance", variance, X.shape[1])
        return X * jnp.sqrt(variance)

    def __call__(self, params, X1, X2=None) -> jax.Array:
        X1, X2 = _check_inputs("Linear", X1, X2)
        A = self._scaled(params, X1)
        return A @ (A if X2 is None else self._scaled(params, X2)).T

    def diag(self, params, X) -> jax.Array:
        """``k(x_i, x_i) = Σ_d σ_d² x_{id}²``."""
        X, _ = _check_inputs("Linear", X, None)
        return jnp.sum(self._scaled(params, X) ** 2, axis=-1)

    def constrained(self, params) -> dict:
        """The positive parameter values."""
        return _constrained(self, params)


@dataclass(frozen=True)
class White(_Combinable):
    """White noise ``σ² 1[x = x']``; params ``{"variance"}``.

    Equality is of input values: ``k(X)`` is ``σ² I`` (for distinct rows), and a cross-covariance
    ``k(X1, X2)`` is ``σ²`` exactly where a row of ``X1`` equals a row of ``X2`` (the same point
    of the white-noise process).
    """

    positive: str = "softplus"

    def init(self, num_features: int, *, variance=1.0) -> dict:
        """Unconstrained parameters at the given positive values."""
        _check_num_features(self, num_features)
        return {"variance": _raw(self.positive, variance, ())}

    def __call__(self, params, X1, X2=None) -> jax.Array:
        X1, X2 = _check_inputs("White", X1, X2)
        variance = positive_transform(self.positive)(params["variance"])
        if X2 is None:
            same = jnp.all(X1[:, None, :] == X1[None, :, :], axis=-1)
        else:
            same = jnp.all(X1[:, None, :] == X2[None, :, :], axis=-1)
        return variance * same.astype(jnp.result_type(X1, variance))

    def diag(self, params, X) -> jax.Array:
        """``k(x_i, x_i) = σ²`` for each row."""
        return _stationary_diag(self, params, X)

    def constrained(self, params) -> dict:
        """The positive parameter values."""
        return _constrained(self, params)


# ----------------------------------------------------------------------------------------------
# Combinations
# ----------------------------------------------------------------------------------------------


def _check_parts(kind: str, kernels: tuple, params) -> None:
    if not isinstance(params, tuple | list) or len(params) != len(kernels):
        raise ValueError(
            f"{kind}: params must be a tuple with one entry per kernel ({len(kernels)}), got "
            f"{type(params).__name__} {params!r}"
        )


@dataclass(frozen=True)
class Sum(_Combinable):
    """``Σ_j k_j(x, x')``; params: the tuple of the parts' params."""

    kernels: tuple

    def init(self, num_features: int) -> tuple:
        """Each part's default parameters."""
        return tuple(k.init(num_features) for k in self.kernels)

    def __call__(self, params, X1, X2=None) -> jax.Array:
        _check_parts("Sum", self.kernels, params)
        return sum(k(p, X1, X2) for k, p in zip(self.kernels, params))

    def diag(self, params, X) -> jax.Array:
        """The sum of the parts' diagonals."""
        _check_parts("Sum", self.kernels, params)
        return sum(k.diag(p, X) for k, p in zip(self.kernels, params))

    def constrained(self, params) -> tuple:
        """Each part's positive parameter values."""
        return tuple(k.constrained(p) for k, p in zip(self.kernels, params))


@dataclass(frozen=True)
class Product(_Combinable):
    """``Π_j k_j(x, x')`` (PSD by the Schur product theorem); params: the parts' params."""

    kernels: tuple

    def init(self, num_features: int) -> tuple:
        """Each part's default parameters."""
        return tuple(k.init(num_features) for k in self.kernels)

    def __call__(self, params, X1, X2=None) -> jax.Array:
        _check_parts("Product", self.kernels, params)
        result = None
        for k, p in zip(self.kernels, params):
            value = k(p, X1, X2)
            result = value if result is None else result * value
        return result

    def diag(self, params, X) -> jax.Array:
        """The product of the parts' diagonals."""
        _check_parts("Product", self.kernels, params)
        result = None
        for k, p in zip(self.kernels, params):
            value = k.diag(p, X)
            result = value if result is None else result * value
        return result

    def constrained(self, params) -> tuple:
        """Each part's positive parameter values."""
        return tuple(k.constrained(p) for k, p in zip(self.kernels, params))
