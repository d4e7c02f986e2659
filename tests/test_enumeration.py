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
    MU,
    X_B,
    _flat,
    assert_unbiased,
    bern_exact_elbo,
    bern_family,
    bern_model,
    mc_gradient,
)


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_chain_of_two_enumerated_sites_is_exact():
    family = vj.with_estimators(chain_family, default=vj.enumeration())
    mean, _, draws = mc_gradient(vj.elbo(chain_model, family), CHAIN_PARAMS, X_CHAIN, n=16)
    np.testing.assert_allclose(
        mean, _flat(jax.grad(chain_exact_elbo)(CHAIN_PARAMS, X_CHAIN)), rtol=1e-4, atol=1e-6
    )
    assert draws.std(0).max() < 1e-5


@pytest.mark.slow
def test_enumeration_mixed_with_a_score_function_site_is_unbiased():
    family = vj.with_estimators(
        chain_family, {"z1": vj.enumeration(), "z2": vj.score_function(vj.running_mean())}
    )
    mean, se, _ = mc_gradient(vj.elbo(chain_model, family), CHAIN_PARAMS, X_CHAIN, n=40_000)
    exact = _flat(jax.grad(chain_exact_elbo)(CHAIN_PARAMS, X_CHAIN))
    assert_unbiased(mean, se, exact, label="enum z1 + score z2")


def test_enumeration_refuses_continuous_sites_and_the_product_space():
    def normal_family(params, x):
        vj.sample("z", dist.Normal(params["logit"], 1.0), estimator=vj.enumeration())

    def normal_model(x):
        z = vj.sample("z", dist.Normal(0.0, 1.0))
        vj.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match="site 'z': enumeration"):
        vj.grad_estimate(vj.elbo(normal_model, normal_family))(BERN_PARAMS, jax.random.key(0), X_B)

    def batched_model(x):
        z = vj.sample("z", dist.Bernoulli(0.5).expand([3]))
        vj.sample("x", dist.Normal(z, 1.0), obs=x)

    def batched_family(params, x):  # batch axis outside any plate: its product space is 2³
        vj.sample("z", dist.Bernoulli(logits=params), estimator=vj.enumeration())

    with pytest.raises(ValueError, match="site 'z': enumeration sums each element"):
        vj.grad_estimate(vj.elbo(batched_model, batched_family))(
            jnp.zeros(3), jax.random.key(0), jnp.zeros(3)
        )

    def pooled_model(x):
        with vj.plate("data", 3):
            z = vj.sample("z", dist.Bernoulli(0.5))
        w = vj.sample("w", dist.Normal(0.0, 1.0))
        with vj.plate("data", 3):
            vj.sample("x", dist.Normal(w + z, 1.0), obs=x)

    def pooled_family(params, x):  # w, drawn after the plate, reads every z_i
        with vj.plate("data", 3):
            z = vj.sample("z", dist.Bernoulli(logits=params), estimator=vj.enumeration())
        vj.sample("w", dist.Normal(z.mean(), 1.0))

    with pytest.raises(ValueError, match="site 'z': enumeration sums each element"):
        vj.grad_estimate(vj.elbo(pooled_model, pooled_family))(
            jnp.zeros(3), jax.random.key(0), jnp.zeros(3)
        )


# --------------------------------------------------------------------------------------------
# Per-datum enumeration inside plates (never the product space)
# --------------------------------------------------------------------------------------------

X_PLATE = jnp.linspace(-1.5, 2.5, 50)


def plate_model(x):
    with vj.plate("data", x.shape[0]):
        z = vj.sample("z", dist.Bernoulli(0.3))
        vj.sample("x", dist.Normal(MU[z.astype(jnp.int32)], 1.0), obs=x)


def plate_family(params, x):
    with vj.plate("data", x.shape[0]):
        vj.sample("z", dist.Bernoulli(logits=params["logits"]), estimator=vj.enumeration())


def plate_exact_elbo(params, x):
    q1 = jax.nn.sigmoid(params["logits"])
    total = 0.0
    for z, q in ((0, 1 - q1), (1, q1)):
        log_p = dist.Bernoulli(0.3).log_prob(z) + dist.Normal(MU[z], 1.0).log_prob(x)
        # log σ(±l) by hand: NumPyro 0.22's BernoulliLogits.log_prob has a wrong gradient at
        # exactly l = 0 (max(l, 0)'s tie), and logits[0] = sin 0 = 0 here.
        log_q = jax.nn.log_sigmoid(params["logits"] if z else -params["logits"])
        total = total + jnp.sum(q * (log_p - log_q))
    return total


@pytest.mark.slow
def test_enumeration_in_a_plate_is_per_datum_exact_and_zero_variance():
    # 50 data: the product space has 2⁵⁰ points; per-datum enumeration runs the model twice.
    params = {"logits": jnp.sin(jnp.arange(50.0))}
    mean, _, draws = mc_gradient(vj.elbo(plate_model, plate_family), params, X_PLATE, n=16)
    exact = _flat(jax.grad(plate_exact_elbo)(params, X_PLATE))
    np.testing.assert_allclose(mean, exact, rtol=1e-4, atol=1e-5)
    assert draws.std(0).max() < 1e-5
    value, _ = vj.value_and_grad_estimate(vj.elbo(plate_model, plate_family))(
        params, jax.random.key(1), X_PLATE
    )
    np.testing.assert_allclose(value, plate_exact_elbo(params, X_PLATE), rtol=1e-5)


X_MIX = jnp.array([0.3, 1.4, -0.5, 2.2])
MIX_M = jnp.array([-0.7, 0.9])


def mix_model(x):
    w = vj.sample("w", dist.Normal(0.0, 1.0))
    with vj.plate("data", x.shape[0]):
        z = vj.sample("z", dist.Bernoulli(0.5))
        u = vj.sample("u", dist.Normal(w, 1.0))
        vj.sample("x", dist.Normal(u + z, 1.0), obs=x)


def mix_family(params, x):
    """w (score function, before the plate); per datum z_i (enumerated), then u_i | z_i."""
    vj.sample("w", dist.Normal(params["b"], 1.0), estimator=vj.score_function())
    with vj.plate("data", x.shape[0]):
        z = vj.sample("z", dist.Bernoulli(logits=params["logits"]), estimator=vj.enumeration())
        m = params["m"][z.astype(jnp.int32)]
        vj.sample("u", dist.Normal(m, 1.0), estimator=vj.score_function())


MIX_PARAMS = {"b": jnp.array(0.4), "logits": jnp.array([0.3, -0.8, 1.1, 0.0]), "m": MIX_M}


def mix_exact_elbo(params, x):
    """Closed form: Gaussian expectations given z, then the exact sum over each z_i."""
    b, m = params["b"], params["m"]
    half_log2pi = 0.5 * jnp.log(2 * jnp.pi)
    global_part = (-half_log2pi - 0.5 * (b**2 + 1)) - (-half_log2pi - 0.5)
    q1 = jax.nn.sigmoid(params["logits"])
    total = global_part
    for z, q in ((0, 1 - q1), (1, q1)):
        mz = m[z]
        log_q_z = jax.nn.log_sigmoid(params["logits"] if z else -params["logits"])
        e_u_w = -half_log2pi - 0.5 * ((mz - b) ** 2 + 2.0)  # E log N(u; w, 1)
        e_x = -half_log2pi - 0.5 * ((x - mz - z) ** 2 + 1.0)  # E log N(x; u + z, 1)
        e_q_u = -half_log2pi - 0.5  # E log N(u; m_z, 1)
        total = total + jnp.sum(q * (jnp.log(0.5) - log_q_z + e_u_w + e_x - e_q_u))
    return total


@pytest.mark.slow
def test_plate_enumeration_with_score_sites_before_and_after_is_unbiased():
    # w's signal must be the enumerated objective; u_i's score is weighted by q(z_i) per datum.
    objective = vj.elbo(mix_model, mix_family, analytic_kl=False)
    mean, se, _ = mc_gradient(objective, MIX_PARAMS, X_MIX, n=40_000)
    exact = _flat(jax.grad(mix_exact_elbo)(MIX_PARAMS, X_MIX))
    assert_unbiased(mean, se, exact, label="plate enum + score before/after")


def test_a_global_enumerated_site_before_a_particle_block_weights_every_run():
    # c ~ Bern(σ(φ)) enumerated, then a coupled block log (1/2) Σ_k exp(W_k) with W_k = 2c:
    # the objective is σ(φ)·2 exactly (the block is 2c whatever K), so its gradient is 2σ'(φ).
    def objective(phi, key):
        c = vj.seed(
            lambda: vj.sample("c", dist.Bernoulli(logits=phi), estimator=vj.enumeration()), key
        )()
        return vj.particle_log_mean_exp(lambda k: 2.0 * c, key, 2)

    value, grad = vj.value_and_grad_estimate(objective)(0.3, jax.random.key(0))
    p = jax.nn.sigmoid(0.3)
    np.testing.assert_allclose(value, 2 * p, rtol=1e-6)
    np.testing.assert_allclose(grad, 2 * p * (1 - p), rtol=1e-6)
