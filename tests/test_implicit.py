"""Implicit reparameterization: exact ELBO gradients, Gamma–Poisson and Beta–Bernoulli."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from jax.scipy.special import digamma, gammaln

import vijax as vj
from tests.test_estimators import _flat, assert_unbiased, mc_gradient

COUNTS = jnp.array([3.0, 1.0, 4.0, 1.0, 5.0])
FLIPS = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])


def gamma_poisson_model(x):
    rate = vj.sample("rate", dist.Gamma(2.0, 1.0))
    with vj.plate("data", x.shape[0]):
        vj.sample("x", dist.Poisson(rate), obs=x)


def gamma_family(params, x):
    vj.sample("rate", dist.Gamma(jnp.exp(params["log_a"]), jnp.exp(params["log_b"])))


def gamma_poisson_exact_elbo(params, x):
    """E_q[log p(λ) + Σ log Poisson(x_i | λ)] + H(q), q = Gamma(a, b), with E[λ] = a / b and
    E[log λ] = ψ(a) − log b."""
    a, b = jnp.exp(params["log_a"]), jnp.exp(params["log_b"])
    mean, mean_log = a / b, digamma(a) - jnp.log(b)
    prior = 2.0 * jnp.log(1.0) - gammaln(2.0) + (2.0 - 1) * mean_log - 1.0 * mean
    lik = jnp.sum(x * mean_log - mean - gammaln(x + 1))
    return prior + lik + dist.Gamma(a, b).entropy()


def beta_bernoulli_model(x):
    p = vj.sample("p", dist.Beta(1.0, 1.0))
    with vj.plate("data", x.shape[0]):
        vj.sample("x", dist.Bernoulli(p), obs=x)


def beta_family(params, x):
    vj.sample("p", dist.Beta(jnp.exp(params["log_a"]), jnp.exp(params["log_b"])))


def beta_bernoulli_exact_elbo(params, x):
    a, b = jnp.exp(params["log_a"]), jnp.exp(params["log_b"])
    mean_log_p, mean_log_1mp = digamma(a) - digamma(a + b), digamma(b) - digamma(a + b)
    lik = jnp.sum(x * mean_log_p + (1 - x) * mean_log_1mp)
    return lik + dist.Beta(a, b).entropy()  # the uniform prior's log-density is 0


PARAMS = {"log_a": jnp.array(0.7), "log_b": jnp.array(-0.2)}


@pytest.mark.parametrize(
    "model, family, exact, data",
    [
        (gamma_poisson_model, gamma_family, gamma_poisson_exact_elbo, COUNTS),
        (beta_bernoulli_model, beta_family, beta_bernoulli_exact_elbo, FLIPS),
    ],
    ids=["gamma-poisson", "beta-bernoulli"],
)
def test_implicit_reparameterization_gives_the_exact_gradient(model, family, exact, data):
    site = "rate" if model is gamma_poisson_model else "p"
    implicit_family = vj.with_estimators(family, {site: vj.implicit()})
    objective = vj.elbo(model, implicit_family, analytic_kl=False)
    mean, se, g = mc_gradient(objective, PARAMS, data, n=20_000)
    assert_unbiased(mean, se, _flat(jax.grad(exact)(PARAMS, data)), label=f"implicit {site}")
    # and it beats the score function's variance on the same objective
    score_family = vj.with_estimators(family, {site: vj.score_function()})
    _, _, g_score = mc_gradient(
        vj.elbo(model, score_family, analytic_kl=False), PARAMS, data, n=20_000
    )
    assert np.all(g.var(0) < g_score.var(0))


def test_implicit_refuses_a_normal_site():
    def family(params, x):
        vj.sample("rate", dist.LogNormal(params["log_a"], 1.0), estimator=vj.implicit())

    with pytest.raises(ValueError, match="site 'rate': implicit"):
        vj.grad_estimate(vj.elbo(gamma_poisson_model, family))(PARAMS, jax.random.key(0), COUNTS)


@pytest.mark.slow
def test_implicit_dirichlet_gives_the_exact_elbo_gradient():
    # imported here: test_accept_reject imports this module's models at its top
    from tests.test_accept_reject import (
        CATEGORIES,
        DIRICHLET_PARAMS,
        dirichlet_categorical_exact_elbo,
        dirichlet_categorical_model,
        dirichlet_family,
    )

    family = vj.with_estimators(dirichlet_family, {"probs": vj.implicit()})
    objective = vj.elbo(dirichlet_categorical_model, family, analytic_kl=False)
    mean, se, _ = mc_gradient(objective, DIRICHLET_PARAMS, CATEGORIES, n=20_000)
    exact = _flat(jax.grad(dirichlet_categorical_exact_elbo)(DIRICHLET_PARAMS, CATEGORIES))
    assert np.all(se < 0.05 * np.abs(exact)), "too noisy to test anything"
    assert_unbiased(mean, se, exact, label="implicit dirichlet")
