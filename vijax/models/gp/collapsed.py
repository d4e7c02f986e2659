r"""Gaussian-likelihood references: Titsias's collapsed bound, the exact marginal likelihood and
the optimal inducing distribution.

With ``y_i = f(x_i) + ε_i``, ``ε_i ~ N(0, σ²)``, ``Q_nn = K_nz K_zz⁻¹ K_zn``, Titsias (2009,
"Variational Learning of Inducing Variables in Sparse Gaussian Processes") showed that the SVGP
bound maximized over ``q(u)`` is

    L_c = log N(y; 0, Q_nn + σ² I) − tr(K_nn − Q_nn) / (2σ²) ≤ log N(y; 0, K_nn + σ² I),

equal to the exact log marginal likelihood when ``Z = X``. Computed in ``O(N M²)`` through
``A = L⁻¹ K_zn / σ`` (``K_zz = L Lᵀ``), ``B = I + A Aᵀ = L_B L_Bᵀ``, ``c = L_B⁻¹ A y / σ``:

    L_c = −(N/2) log 2πσ² − Σ log diag L_B − ‖y‖²/(2σ²) + ‖c‖²/2
          − Σ_i k_ii / (2σ²) + ‖A‖²_F / 2.

The maximizing ``q(v)`` of the whitened ``v = L⁻¹ u`` is ``N(L_B⁻ᵀ c, B⁻¹)``; unwhitened,
``q(u) = N(L L_B⁻ᵀ c, L B⁻¹ Lᵀ)``.

Example:
    >>> import jax.numpy as jnp
    >>> from vijax.models import gp
    >>> X = jnp.linspace(0.0, 1.0, 5)[:, None]
    >>> y = jnp.sin(X[:, 0])
    >>> kernel = gp.RBF()
    >>> params = kernel.init(1)
    >>> bound = gp.collapsed_elbo(kernel, params, X, 0.1, X, y)
    >>> exact = gp.exact_log_marginal_likelihood(kernel, params, 0.1, X, y)
    >>> bool(abs(bound - exact) < 1e-3 * abs(exact))
    True
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

from vijax.models.gp.linalg import check_finite, cholesky, raise_if_failed

__all__ = ["collapsed_elbo", "exact_log_marginal_likelihood", "optimal_inducing_distribution"]


def _check(where: str, X, y, Z=None):
    X, y = jnp.asarray(X), jnp.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"{where}: X must have shape (N, D), got {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"{where}: y must have shape ({X.shape[0]},) to match X, got {y.shape}")
    if Z is not None:
        Z = jnp.asarray(Z)
        if Z.ndim != 2 or Z.shape[1] != X.shape[1]:
            raise ValueError(
                f"{where}: inducing_inputs must have shape (M, {X.shape[1]}) to match X "
                f"{X.shape}, got {Z.shape}"
            )
    check_finite(where, "X", X)
    check_finite(where, "y", y)
    return X, y, Z


def _whitened_factors(kernel, kernel_params, Z, noise_variance, X, y, jitter):
    chol_zz = cholesky(kernel(kernel_params, Z), jitter, "K_zz")
    sigma = jnp.sqrt(noise_variance)
    A = solve_triangular(chol_zz, kernel(kernel_params, Z, X), lower=True) / sigma
    B = jnp.eye(A.shape[0], dtype=A.dtype) + A @ A.T
    chol_b = cholesky(B, 0.0, "I + A Aᵀ")
    c = solve_triangular(chol_b, A @ y, lower=True) / sigma
    return chol_zz, A, chol_b, c


def _finite(x) -> jax.Array:
    return jnp.all(jnp.isfinite(x))


@functools.partial(jax.jit, static_argnames=("kernel", "jitter"))
def _collapsed_elbo(kernel, kernel_params, Z, noise_variance, X, y, *, jitter):
    chol_zz, A, chol_b, c = _whitened_factors(
        kernel, kernel_params, Z, noise_variance, X, y, jitter
    )
    num_data = X.shape[0]
    bound = (
        -0.5 * num_data * jnp.log(2.0 * math.pi * noise_variance)
        - jnp.sum(jnp.log(jnp.diagonal(chol_b)))
        - 0.5 * jnp.sum(y**2) / noise_variance
        + 0.5 * jnp.sum(c**2)
        - 0.5 * jnp.sum(kernel.diag(kernel_params, X)) / noise_variance
        + 0.5 * jnp.sum(A**2)
    )
    return bound, _finite(chol_zz)


def collapsed_elbo(
    kernel, kernel_params, inducing_inputs, noise_variance, X, y, *, jitter: float = 1e-6
) -> jax.Array:
    r"""Titsias's collapsed bound ``L_c`` (module docstring) for a Gaussian likelihood.

    Args:
      kernel: a GP kernel; kernel_params: its (unconstrained) parameters.
      inducing_inputs: ``Z``, shape ``(M, D)``.
      noise_variance: ``σ²`` (constrained, positive).
      X: inputs ``(N, D)``; y: targets ``(N,)``.
      jitter: added to the diagonal of ``K_zz``.

    Raises:
      ValueError: shapes that do not match, or values that are not finite (naming them).
      CholeskyError: ``K_zz + jitter·I`` cannot be factorized (naming the jitter).
    """
    X, y, Z = _check("collapsed_elbo", X, y, inducing_inputs)
    bound, ok = _collapsed_elbo(kernel, kernel_params, Z, noise_variance, X, y, jitter=jitter)
    raise_if_failed(ok, "K_zz", Z.shape[0], jitter)
    return bound


@functools.partial(jax.jit, static_argnames=("kernel", "jitter"))
def _exact_log_marginal_likelihood(kernel, kernel_params, noise_variance, X, y, *, jitter):
    num_data = X.shape[0]
    covariance = kernel(kernel_params, X) + noise_variance * jnp.eye(num_data, dtype=X.dtype)
    factor = cholesky(covariance, jitter, "K_xx + σ² I")
    alpha = solve_triangular(factor, y, lower=True)
    value = (
        -0.5 * jnp.sum(alpha**2)
        - jnp.sum(jnp.log(jnp.diagonal(factor)))
        - 0.5 * num_data * math.log(2.0 * math.pi)
    )
    return value, _finite(factor)


def exact_log_marginal_likelihood(
    kernel, kernel_params, noise_variance, X, y, *, jitter: float = 1e-6
) -> jax.Array:
    r"""``log N(y; 0, K_xx + σ² I)``, by one ``N × N`` Cholesky factorization (small ``N``).

    ``jitter`` is added to the diagonal as well, so that ``Z = X`` in :func:`collapsed_elbo`
    compares like with like.

    Raises:
      CholeskyError: ``K_xx + (σ² + jitter) I`` cannot be factorized (naming the jitter).
    """
    X, y, _ = _check("exact_log_marginal_likelihood", X, y)
    value, ok = _exact_log_marginal_likelihood(
        kernel, kernel_params, noise_variance, X, y, jitter=jitter
    )
    raise_if_failed(ok, "K_xx + σ² I", X.shape[0], jitter)
    return value


@functools.partial(jax.jit, static_argnames=("kernel", "jitter", "whiten"))
def _optimal_inducing_distribution(
    kernel, kernel_params, Z, noise_variance, X, y, *, jitter, whiten
):
    chol_zz, _, chol_b, c = _whitened_factors(
        kernel, kernel_params, Z, noise_variance, X, y, jitter
    )
    mean = solve_triangular(chol_b.T, c, lower=False)
    covariance = cho_solve((chol_b, True), jnp.eye(chol_b.shape[0], dtype=chol_b.dtype))
    if not whiten:
        mean = chol_zz @ mean
        covariance = chol_zz @ covariance @ chol_zz.T
    covariance = 0.5 * (covariance + covariance.T)
    return mean, jnp.linalg.cholesky(covariance), _finite(chol_zz)


def optimal_inducing_distribution(
    kernel,
    kernel_params,
    inducing_inputs,
    noise_variance,
    X,
    y,
    *,
    jitter: float = 1e-6,
    whiten: bool = True,
) -> tuple[jax.Array, jax.Array]:
    r"""``(m, L)`` of the optimal ``q = N(m, L Lᵀ)`` for a Gaussian likelihood (module docstring);
    over the whitened ``v`` when ``whiten`` is true, over ``u`` otherwise."""
    X, y, Z = _check("optimal_inducing_distribution", X, y, inducing_inputs)
    mean, scale_tril, ok = _optimal_inducing_distribution(
        kernel, kernel_params, Z, noise_variance, X, y, jitter=jitter, whiten=bool(whiten)
    )
    raise_if_failed(ok, "K_zz", Z.shape[0], jitter)
    return mean, scale_tril
