"""Path gradients (sticking the landing) and DReG: unbiased, and zero variance at the posterior."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

import vijax as vj
from tests.test_estimators import (
    NN_PARAMS,
    X_NN,
    _flat,
    assert_unbiased,
    mc_gradient,
    nn_exact_elbo,
    nn_family,
    nn_model,
)

N = X_NN.shape[0]
# The exact posterior of nn_model: N(Σx / (N + 1), 1 / (N + 1)).
POSTERIOR = {
    "loc": jnp.array(float(X_NN.sum()) / (N + 1)),
    "log_scale": jnp.array(-0.5 * np.log(N + 1.0)),
}
PATH_FAMILY = vj.with_estimators(nn_family, {"z": vj.path()})


def test_path_gradient_is_unbiased():
    objective = vj.elbo(nn_model, PATH_FAMILY)
    mean, se, _ = mc_gradient(objective, NN_PARAMS, X_NN, n=20_000)
    assert_unbiased(mean, se, _flat(jax.grad(nn_exact_elbo)(NN_PARAMS, X_NN)), label="path")


def test_path_gradient_has_zero_variance_at_the_posterior():
    _, _, path = mc_gradient(vj.elbo(nn_model, PATH_FAMILY), POSTERIOR, X_NN, n=2000)
    _, _, plain = mc_gradient(
        vj.elbo(nn_model, nn_family, analytic_kl=False), POSTERIOR, X_NN, n=2000
    )
    # Every draw of the path gradient is zero up to float32 rounding; the standard one is not.
    assert np.abs(path).max() < 1e-4
    assert plain.std(0).min() > 0.1


def theta_model(theta, x):
    z = vj.sample("z", dist.Normal(theta, 1.0))
    with vj.plate("data", x.shape[0]):
        vj.sample("x", dist.Normal(z, 1.0), obs=x)


def exact_iwae(params, x, num_particles, nodes=20):
    """IWAE bound of theta_model by Gauss–Hermite quadrature over the K noises."""
    eps, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / np.sqrt(2 * np.pi)
    grids = np.meshgrid(*([eps] * num_particles), indexing="ij")
    weights = np.prod(np.meshgrid(*([w] * num_particles), indexing="ij"), axis=0).ravel()
    eps_k = jnp.stack([g.ravel() for g in grids], axis=1)
    theta, phi = params.model, params.family
    m, s = phi["loc"], jnp.exp(phi["log_scale"])
    z = m + s * eps_k
    log_p = dist.Normal(theta, 1.0).log_prob(z) + jnp.sum(
        dist.Normal(z[..., None], 1.0).log_prob(x), axis=-1
    )
    log_w = log_p - dist.Normal(m, s).log_prob(z)
    return jnp.sum(
        jnp.asarray(weights) * (jax.nn.logsumexp(log_w, axis=1) - jnp.log(num_particles))
    )


def test_dreg_is_unbiased_for_model_and_family_parameters():
    params = vj.ModelAndFamilyParams(model=jnp.array(0.4), family=NN_PARAMS)
    objective = vj.iwae_dreg(theta_model, nn_family, 3)
    mean, se, _ = mc_gradient(objective, params, X_NN, n=40_000)
    exact = _flat(jax.grad(exact_iwae)(params, X_NN, 3))
    assert_unbiased(mean, se, exact, label="dreg")
    # and the value is the IWAE estimate (same keys, same particles)
    key = jax.random.key(7)
    np.testing.assert_allclose(
        objective(params, key, X_NN).value,
        vj.iwae(theta_model, nn_family, 3)(params, key, X_NN).value,
        rtol=1e-6,
    )


def test_dreg_family_gradient_vanishes_at_the_posterior_where_iwae_does_not():
    params = vj.ModelAndFamilyParams(model=jnp.array(0.0), family=POSTERIOR)
    _, _, dreg = mc_gradient(vj.iwae_dreg(theta_model, nn_family, 8), params, X_NN, n=2000)
    _, _, iwae = mc_gradient(vj.iwae(theta_model, nn_family, 8), params, X_NN, n=2000)
    family_columns = slice(1, 3)  # flattened as [model, family loc, family log_scale]
    assert np.abs(dreg[:, family_columns]).max() < 1e-4
    assert iwae[:, family_columns].std(0).min() > 0.01
    # the model gradient is the IWAE one, draw by draw
    np.testing.assert_allclose(dreg[:, 0], iwae[:, 0], rtol=1e-4, atol=1e-4)


def test_iwae_stl_is_biased_for_several_particles_and_silent_at_the_posterior():
    params = vj.ModelAndFamilyParams(model=jnp.array(0.4), family=NN_PARAMS)
    # K = 3: the family gradient misses Σ w̃ ∂W/∂φ, whose mean is not zero (Tucker et al.
    # 2019); the gap is measured in the same 4.5-SE units as the unbiasedness checks
    mean, se, _ = mc_gradient(vj.iwae_stl(theta_model, nn_family, 3), params, X_NN, n=40_000)
    exact = _flat(jax.grad(exact_iwae)(params, X_NN, 3))
    assert np.any(np.abs(mean[1:] - exact[1:]) > 6 * se[1:]), (mean, exact, se)
    assert abs(mean[0] - exact[0]) < 4.5 * se[0]  # the model gradient is IWAE's, unbiased
    # K = 1: the path-gradient ELBO, unbiased
    mean1, se1, _ = mc_gradient(vj.iwae_stl(theta_model, nn_family, 1), params, X_NN, n=20_000)
    assert_unbiased(mean1, se1, _flat(jax.grad(exact_iwae)(params, X_NN, 1)), label="stl K=1")
    # at the posterior every draw of the family gradient is zero, as with DReG
    at_posterior = vj.ModelAndFamilyParams(model=jnp.array(0.0), family=POSTERIOR)
    _, _, draws = mc_gradient(vj.iwae_stl(theta_model, nn_family, 8), at_posterior, X_NN, n=500)
    assert np.abs(draws[:, 1:3]).max() < 1e-4


def test_dreg_refuses_a_site_without_rsample():
    def family(params, x):
        vj.sample("z", dist.Bernoulli(logits=params))

    def model(x):
        z = vj.sample("z", dist.Bernoulli(0.5))
        vj.sample("x", dist.Normal(z, 1.0), obs=x)

    import pytest

    with pytest.raises(ValueError, match="site 'z': path"):
        vj.grad_estimate(vj.iwae_dreg(model, family, 4))(0.0, jax.random.key(0), 1.0)


# A two-site chain whose second site's distribution reads the first site's value:
#   model:  z1 ~ N(0, 1), z2 | z1 ~ N(z1, 1), x ~ N(z2, 1);
#   family: z1 ~ N(a, e^{s1}), z2 | z1 ~ N(b + c·z1, e^{s2}).
# The exact posterior is Gaussian and the family can represent it (c = Cov/Var), so the path
# gradient must vanish there draw by draw, which needs ∂ log q(z2 | z1)/∂z1 kept in the density.
X_CHAIN2 = jnp.array(1.3)


def chain2_model(x):
    z1 = vj.sample("z1", dist.Normal(0.0, 1.0))
    z2 = vj.sample("z2", dist.Normal(z1, 1.0))
    vj.sample("x", dist.Normal(z2, 1.0), obs=x)


def chain2_family(params, x):
    z1 = vj.sample("z1", dist.Normal(params["a"], jnp.exp(params["s1"])), estimator=vj.path())
    vj.sample(
        "z2",
        dist.Normal(params["b"] + params["c"] * z1, jnp.exp(params["s2"])),
        estimator=vj.path(),
    )


def chain2_posterior():
    # Joint prior of (z1, z2): Cov = [[1, 1], [1, 2]]; observation x = z2 + N(0, 1).
    prior = np.array([[1.0, 1.0], [1.0, 2.0]])
    precision = np.linalg.inv(prior) + np.array([[0.0, 0.0], [0.0, 1.0]])
    cov = np.linalg.inv(precision)
    mean = cov @ np.array([0.0, float(X_CHAIN2)])
    c = cov[0, 1] / cov[0, 0]
    return {
        "a": jnp.array(mean[0]),
        "s1": jnp.array(0.5 * np.log(cov[0, 0])),
        "b": jnp.array(mean[1] - c * mean[0]),
        "c": jnp.array(c),
        "s2": jnp.array(0.5 * np.log(cov[1, 1] - c * cov[0, 1])),
    }


def test_path_gradient_of_a_dependent_family_vanishes_at_the_posterior():
    _, _, draws = mc_gradient(
        vj.elbo(chain2_model, chain2_family), chain2_posterior(), X_CHAIN2, n=500
    )
    assert np.abs(draws).max() < 1e-4
