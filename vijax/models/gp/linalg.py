r"""Linear algebra shared by the GP code: a Cholesky factor that names its jitter, input checks.

Kernel matrices are positive semi-definite in exact arithmetic but often numerically singular
(inducing inputs close together, long lengthscales, float32), so a small ``jitter`` is added to
the diagonal before factorizing, ``K + εI = L Lᵀ``. When the factorization still fails on
concrete arrays, :func:`cholesky` raises :class:`CholeskyError` naming the matrix and the jitter
it tried; inside ``jit`` it cannot raise, the factor is NaN, and :func:`vijax.fit` stops with a
``NonFiniteError`` at that step.

Example:
    >>> import jax.numpy as jnp
    >>> from vijax.models.gp.linalg import cholesky
    >>> try:
    ...     cholesky(jnp.ones((2, 2)), 0.0, "K_zz")
    ... except ValueError as error:
    ...     print(str(error)[:65])
    Cholesky factorization of K_zz (2 × 2) failed with jitter 0 added
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CholeskyError",
    "check_finite",
    "cholesky",
    "cholesky_error",
    "is_concrete",
    "raise_if_failed",
]


class CholeskyError(ValueError):
    """A kernel matrix could not be factorized even with the jitter added to its diagonal."""


def is_concrete(x) -> bool:
    """Whether ``x`` holds values now (not a tracer inside ``jit``/``grad``/``vmap``)."""
    return not isinstance(x, jax.core.Tracer)


def cholesky(matrix: jax.Array, jitter: float, what: str) -> jax.Array:
    """Lower Cholesky factor ``L`` of ``matrix + jitter·I``.

    Raises:
      CholeskyError: on concrete arrays, when the factor is not finite; the message names
        ``what`` and the jitter tried.
    """
    n = matrix.shape[-1]
    factor = jnp.linalg.cholesky(matrix + jitter * jnp.eye(n, dtype=matrix.dtype))
    if is_concrete(factor):
        raise_if_failed(np.all(np.isfinite(np.asarray(factor))), what, n, jitter)
    return factor


def cholesky_error(what: str, n: int, jitter: float) -> CholeskyError:
    """The error for a failed factorization of the ``n × n`` matrix ``what``."""
    return CholeskyError(
        f"Cholesky factorization of {what} ({n} × {n}) failed with jitter {jitter:g} added "
        "to its diagonal: the matrix is not numerically positive definite; increase the "
        "jitter, use float64 (jax.enable_x64), or move coincident inputs apart"
    )


def raise_if_failed(ok, what: str, n: int, jitter: float) -> None:
    """Raise :func:`cholesky_error` when the concrete flag ``ok`` (factor finite) is false.

    Compiled functions return such a flag, since they cannot raise themselves.
    """
    if is_concrete(ok) and not bool(np.asarray(ok)):
        raise cholesky_error(what, n, jitter)


def check_finite(where: str, name: str, x) -> None:
    """Refuse NaN / infinite values in a concrete ``x``, naming the argument."""
    if is_concrete(x) and not bool(np.all(np.isfinite(np.asarray(x)))):
        raise ValueError(f"{where}: {name} contains NaN or infinite values")
