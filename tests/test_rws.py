"""Reweighted wake-sleep: wake-θ and wake-φ against exact enumeration on a Bernoulli latent."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import pytest

import vijax as vj
from tests.test_estimators import MU, assert_unbiased, mc_gradient

K = 3
X = jnp.array(0.4)


def model(theta, x):
    z = vj.sample("z", dist.Bernoulli(logits=theta))
    vj.sample("x", dist.Normal(MU[z.astype(jnp.int32)], 1.0), obs=x)


def family(phi, x):
    vj.sample("z", dist.Bernoulli(logits=phi))


def log_p(theta, z, x):
    return dist.Bernoulli(logits=theta).log_prob(z) + dist.Normal(MU[z], 1.0).log_prob(x)


def log_q(phi, z):
    return dist.Bernoulli(logits=phi).log_prob(z)


def exact_wake_gradients(theta, phi, x):
    """E over K draws of Σ_k w̃_k (∇_θ log p_θ(x, z_k), ∇_φ log q_φ(z_k)), by enumeration."""
    total_theta, total_phi = 0.0, 0.0
    for zs in itertools.product((0, 1), repeat=K):
        prob = jnp.prod(jnp.array([jnp.exp(log_q(phi, z)) for z in zs]))
        log_w = jnp.array([log_p(theta, z, x) - log_q(phi, z) for z in zs])
        normalized = jax.nn.softmax(log_w)
        for z, w in zip(zs, normalized):
            total_theta = total_theta + prob * w * jax.grad(log_p)(theta, z, x)
            total_phi = total_phi + prob * w * jax.grad(log_q)(phi, z)
    return jnp.array([total_theta, total_phi])


@pytest.mark.slow
def test_rws_gives_wake_theta_and_wake_phi():
    theta, phi = jnp.array(-0.3), jnp.array(0.5)
    params = vj.ModelAndFamilyParams(model=theta, family=phi)
    mean, se, _ = mc_gradient(vj.rws(model, family, K), params, X, n=40_000)
    assert_unbiased(mean, se, exact_wake_gradients(theta, phi, X), label="rws")


@pytest.mark.slow
def test_wake_phi_moves_q_toward_the_posterior():
    # With many particles wake-φ estimates ∇_φ E_{p(z|x)}[log q_φ(z)]: zero at q = p(z | x).
    theta = jnp.array(-0.3)
    log_joint = jnp.array([log_p(theta, z, X) for z in (0, 1)])
    posterior_logit = log_joint[1] - log_joint[0]
    params = vj.ModelAndFamilyParams(model=theta, family=posterior_logit)
    mean, se, _ = mc_gradient(vj.rws(model, family, 64), params, X, n=4000)
    assert abs(mean[1]) < 4.5 * se[1] + 1e-6
    below = vj.ModelAndFamilyParams(model=theta, family=posterior_logit - 1.0)
    mean, _, _ = mc_gradient(vj.rws(model, family, 64), below, X, n=4000)
    assert mean[1] > 0.05  # pushes the logit up toward the posterior's


def test_rws_needs_two_particles():
    with pytest.raises(ValueError, match="num_particles"):
        vj.rws(model, family, 1)
