r"""Bayesian logistic regression.

For inputs ``x_i ∈ ℝ^D`` (include a column of ones for an intercept) and labels ``y_i ∈ {0, 1}``:

    w ~ N(0, I_D),
    y_i | w ~ Bernoulli(σ(x_iᵀ w)),   i = 1..N,   σ(t) = 1 / (1 + e^{−t}),

so the joint log-density is

    log p(y, w | x) = Σ_d log N(w_d; 0, 1) + Σ_i [y_i log σ(x_iᵀw) + (1 − y_i) log σ(−x_iᵀw)].

The posterior ``p(w | x, y)`` has no closed form; a variational family ``q(w)`` approximates it
and the posterior predictive of a new input is the average over its draws ``w_s ~ q``:

    p(y* = 1 | x*, data) ≈ (1/S) Σ_s σ(x*ᵀ w_s).

Example:
    >>> import jax, jax.numpy as jnp
    >>> import vijax as vj
    >>> from vijax.models import logistic_regression
    >>> x = jnp.array([[1.0, 0.5], [1.0, -2.0], [1.0, 1.5]])
    >>> y = jnp.array([1.0, 0.0, 1.0])
    >>> log_joint, terms = vj.log_density(logistic_regression, {"w": jnp.zeros(2)}, x, y)
    >>> sorted(terms), round(float(terms["y"]), 4)  # 3 · log σ(0) = 3 · log ½
    (['w', 'y'], -2.0794)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from vijax.core import plate, sample

__all__ = ["log_predictive_density", "logistic_regression", "predictive_probability"]


def logistic_regression(x: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The Bayesian logistic regression program (see the module docstring for the math).

    Sites: ``"w"``, the ``D`` weights as one site (event shape ``(D,)``), and ``"y"``, the
    ``N`` labels inside the plate ``"data"``, observed when ``y`` is given.

    Args:
      x: inputs of shape ``(N, D)``.
      y: labels of shape ``(N,)`` in ``{0, 1}``, or ``None`` to sample them (prediction).

    Returns:
      The labels (``y`` itself when observed).
    """
    if jnp.ndim(x) != 2:
        raise ValueError(f"logistic_regression: x must have shape (N, D), got {jnp.shape(x)}")
    num_data, num_features = jnp.shape(x)
    if y is not None and jnp.shape(y) != (num_data,):
        raise ValueError(
            f"logistic_regression: y must have shape ({num_data},) to match x, got {jnp.shape(y)}"
        )
    weights = sample("w", dist.Normal(0.0, 1.0).expand([num_features]).to_event(1))
    with plate("data", num_data):
        return sample("y", dist.Bernoulli(logits=x @ weights), obs=y)


def predictive_probability(x: jax.Array, weight_draws: jax.Array) -> jax.Array:
    """``p(y = 1 | x_i, data) ≈ (1/S) Σ_s σ(x_iᵀ w_s)`` for each row of ``x``.

    Args:
      x: inputs of shape ``(N, D)``.
      weight_draws: posterior draws of ``w``, shape ``(S, D)``.

    Returns:
      Probabilities of shape ``(N,)``.
    """
    return jnp.mean(jax.nn.sigmoid(x @ weight_draws.T), axis=1)


def log_predictive_density(x: jax.Array, y: jax.Array, weight_draws: jax.Array) -> jax.Array:
    """The mean log posterior predictive density of held-out labels, per example:

        (1/N) Σ_i log (1/S) Σ_s p(y_i | x_i, w_s).

    The inner average is over draws (computed with ``logsumexp``), the outer over examples, so
    ``log 2 ≈ 0.693`` is a coin flip and ``0`` is certainty on every label.

    Args:
      x: inputs of shape ``(N, D)``.
      y: labels of shape ``(N,)``.
      weight_draws: posterior draws of ``w``, shape ``(S, D)``.
    """
    log_likelihood = dist.Bernoulli(logits=x @ weight_draws.T).log_prob(y[:, None])  # (N, S)
    num_draws = weight_draws.shape[0]
    return jnp.mean(jax.nn.logsumexp(log_likelihood, axis=1) - jnp.log(num_draws))
