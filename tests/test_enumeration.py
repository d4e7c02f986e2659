"""Exact enumeration: zero-variance, exact gradients on discrete latents (enumerated truth)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import vijax as vj
from tests.test_estimators import (
    BERN_PARAMS,
    X_B,
    _flat,
    assert_unbiased,
    bern_exact_elbo,
    bern_family,
    bern_model,
    mc_gradient,
)


def test_enumerated_bernoulli_gives_the_exact_gradient_with_zero_variance():
    family = vj.with_estimators(bern_family, {"z": vj.enumeration()})
    mean, _, draws = mc_gradient(vj.elbo(bern_model, family), BERN_PARAMS, X_B, n=64)
    exact = _flat(jax.grad(bern_exact_elbo)(BERN_PARAMS, X_B))
    np.testing.assert_allclose(mean, exact, rtol=1e-5)
    assert draws.std(0).max() < 1e-6
    value, _ = vj.value_and_grad_estimate(vj.elbo(bern_model, family))(
        BERN_PARAMS, jax.random.key(0), X_B
    )
    np.testing.assert_allclose(value, bern_exact_elbo(BERN_PARAMS, X_B), rtol=1e-5)


# A chain of two discrete latents: z1 ~ Bern(0.4), z2 | z1 ~ Cat(P[z1]), x ~ N(M[z2], 1).
P = jnp.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]])
M = jnp.array([-1.0, 0.5, 2.0])
X_CHAIN = jnp.array(0.8)


def chain_model(x):
    z1 = vj.sample("z1", dist.Bernoulli(0.4))
    z2 = vj.sample("z2", dist.Categorical(P[z1.astype(jnp.int32)]))
    vj.sample("x", dist.Normal(M[z2], 1.0), obs=x)


def chain_family(params, x):
    z1 = vj.sample("z1", dist.Bernoulli(logits=params["a"]))
    vj.sample("z2", dist.Categorical(logits=params["b"][z1.astype(jnp.int32)]))


CHAIN_PARAMS = {"a": jnp.array(0.3), "b": jnp.array([[0.2, -0.1, 0.4], [-0.3, 0.5, 0.0]])}


def chain_exact_elbo(params, x):
    total = 0.0
    for z1, z2 in itertools.product((0, 1), (0, 1, 2)):
        log_q = dist.Bernoulli(logits=params["a"]).log_prob(z1) + dist.Categorical(
            logits=params["b"][z1]
        ).log_prob(z2)
        log_p = (
            dist.Bernoulli(0.4).log_prob(z1)
            + dist.Categorical(P[z1]).log_prob(z2)
            + dist.Normal(M[z2], 1.0).log_prob(x)
        )
        total = total + jnp.exp(log_q) * (log_p - log_q)
    return total


def test_a_chain_of_two_enumerated_sites_is_exact():
    family = vj.with_estimators(chain_family, default=vj.enumeration())
    mean, _, draws = mc_gradient(vj.elbo(chain_model, family), CHAIN_PARAMS, X_CHAIN, n=16)
    np.testing.assert_allclose(
        mean, _flat(jax.grad(chain_exact_elbo)(CHAIN_PARAMS, X_CHAIN)), rtol=1e-4, atol=1e-6
    )
    assert draws.std(0).max() < 1e-5


def test_enumeration_mixed_with_a_score_function_site_is_unbiased():
    family = vj.with_estimators(
        chain_family, {"z1": vj.enumeration(), "z2": vj.score_function(vj.running_mean())}
    )
    mean, se, _ = mc_gradient(vj.elbo(chain_model, family), CHAIN_PARAMS, X_CHAIN, n=40_000)
    exact = _flat(jax.grad(chain_exact_elbo)(CHAIN_PARAMS, X_CHAIN))
    assert_unbiased(mean, se, exact, label="enum z1 + score z2")


def test_enumeration_refuses_continuous_and_plated_sites():
    def normal_family(params, x):
        vj.sample("z", dist.Normal(params["logit"], 1.0), estimator=vj.enumeration())

    def normal_model(x):
        z = vj.sample("z", dist.Normal(0.0, 1.0))
        vj.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match="site 'z': enumeration"):
        vj.grad_estimate(vj.elbo(normal_model, normal_family))(BERN_PARAMS, jax.random.key(0), X_B)

    def plated_model(x):
        with vj.plate("data", 3):
            z = vj.sample("z", dist.Bernoulli(0.5))
            vj.sample("x", dist.Normal(z, 1.0), obs=x)

    def plated_family(params, x):
        with vj.plate("data", 3):
            vj.sample("z", dist.Bernoulli(logits=params), estimator=vj.enumeration())

    with pytest.raises(ValueError, match="site 'z': enumeration of batched or plated"):
        vj.grad_estimate(vj.elbo(plated_model, plated_family))(
            jnp.zeros(3), jax.random.key(0), jnp.zeros(3)
        )
