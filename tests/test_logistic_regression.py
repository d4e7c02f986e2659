"""Tests of the Bayesian logistic regression model and its predictive helpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit, logsumexp
from scipy.stats import norm

import vijax as vj
from vijax.models import log_predictive_density, logistic_regression, predictive_probability

X = np.array([[1.0, 0.5, -1.0], [1.0, -2.0, 0.3], [1.0, 1.5, 2.0], [1.0, 0.0, -0.7]])
Y = np.array([1.0, 0.0, 1.0, 0.0])


def test_log_joint_matches_the_formula():
    w = np.array([0.3, -1.2, 0.8])
    log_joint, terms = vj.log_density(logistic_regression, {"w": jnp.asarray(w)}, X, Y)
    logits = X @ w
    log_prior = norm.logpdf(w).sum()
    log_likelihood = np.sum(Y * np.log(expit(logits)) + (1 - Y) * np.log(expit(-logits)))
    np.testing.assert_allclose(float(terms["w"]), log_prior, rtol=1e-6)
    np.testing.assert_allclose(float(terms["y"]), log_likelihood, rtol=1e-6)
    np.testing.assert_allclose(float(log_joint), log_prior + log_likelihood, rtol=1e-6)


def test_sites_and_plates():
    tr = vj.trace(vj.seed(logistic_regression, jax.random.key(0))).get_trace(X)
    assert tr["w"]["fn"].event_shape == (3,) and not tr["w"]["is_observed"]
    assert tr["y"]["value"].shape == (4,) and not tr["y"]["is_observed"]
    assert [frame.name for frame in tr["y"]["cond_indep_stack"]] == ["data"]


def test_predictive_helpers_average_over_draws():
    draws = np.random.default_rng(0).normal(size=(50, 3))
    probability = expit(X @ draws.T)  # (N, S)
    np.testing.assert_allclose(
        np.asarray(predictive_probability(X, draws)), probability.mean(axis=1), rtol=1e-5
    )
    likelihood = np.where(Y[:, None] == 1.0, probability, 1.0 - probability)
    expected = np.mean(logsumexp(np.log(likelihood), axis=1) - np.log(50))
    np.testing.assert_allclose(float(log_predictive_density(X, Y, draws)), expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("x", "y", "argument"),
    [(X[0], None, "x must have shape"), (X, Y[:3], "y must have shape"), (X, Y[:, None], "y")],
)
def test_bad_shapes_name_the_argument(x, y, argument):
    with pytest.raises(ValueError, match=argument):
        vj.seed(logistic_regression, jax.random.key(0))(x, y)
