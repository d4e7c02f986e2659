"""Measure-valued derivatives against exact gradients (closed forms, enumeration, truncated sums).

Statistical checks follow ``tests/test_estimators.py``: fixed seeds, ``|mean − exact| < 4.5 SE``
per coordinate (a two-sided tail of 7e-6 each; about 40 coordinates here, so a false-failure
budget below 3e-4 for fresh seeds, and the seeds are fixed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import vijax as vj
from tests.test_enumeration import (
    CHAIN_PARAMS,
    X_CHAIN,
    chain_exact_elbo,
    chain_family,
    chain_model,
)
from tests.test_estimators import (
    BERN_PARAMS,
    MU,
    NN_PARAMS,
    X_B,
    X_NN,
    _flat,
    assert_unbiased,
    bern_exact_elbo,
    bern_exact_iwae,
    bern_family,
    bern_model,
    mc_gradient,
    nn_exact_elbo,
    nn_family,
    nn_model,
)

MVD = {"z": vj.mvd()}


def test_bernoulli_mvd_is_unbiased_and_beats_the_score_function():
    family = vj.with_estimators(bern_family, MVD)
    mean, se, draws = mc_gradient(vj.elbo(bern_model, family), BERN_PARAMS, X_B, n=20_000)
    exact = _flat(jax.grad(bern_exact_elbo)(BERN_PARAMS, X_B))
    assert_unbiased(mean, se, exact, label="mvd bernoulli")
    score = vj.with_estimators(bern_family, {"z": vj.score_function()})
    _, _, score_draws = mc_gradient(vj.elbo(bern_model, score), BERN_PARAMS, X_B, n=20_000)
    # f(1) − f(0) is exact for a Bernoulli; only the direct −∇log q term is noisy.
    # Measured variance ratio ≈ 30 (fixed seeds); asserted with a wide margin.
    assert score_draws.var() > 5 * draws.var()


@pytest.mark.slow
def test_mvd_on_a_chain_of_discrete_sites_is_unbiased():
    # z1 ~ Bernoulli, z2 | z1 ~ Categorical: both measure-valued, every other draw shared.
    family = vj.with_estimators(chain_family, {"z1": vj.mvd(), "z2": vj.mvd()})
    mean, se, _ = mc_gradient(vj.elbo(chain_model, family), CHAIN_PARAMS, X_CHAIN, n=40_000)
    exact = _flat(jax.grad(chain_exact_elbo)(CHAIN_PARAMS, X_CHAIN))
    assert_unbiased(mean, se, exact, label="mvd chain")


# Count latents, exact by truncated sums (the tails beyond 80 are below 1e-30 here).
COUNTS = jnp.arange(80)


def poisson_model(x):
    z = vj.sample("z", dist.Poisson(3.0))
    vj.sample("x", dist.Normal(jnp.sqrt(z + 1.0), 0.5), obs=x)


def poisson_family(params, x):
    vj.sample("z", dist.Poisson(jnp.exp(params["log_rate"])), estimator=vj.mvd())


def geometric_model(x):
    z = vj.sample("z", dist.Geometric(probs=0.3))
    vj.sample("x", dist.Normal(jnp.sqrt(z + 1.0), 0.5), obs=x)


def geometric_family(params, x):
    vj.sample("z", dist.Geometric(logits=params["logit"]), estimator=vj.mvd())


def _truncated_elbo(model_prior, family_dist, x):
    z = COUNTS.astype(jnp.float32)
    q = family_dist
    log_p = model_prior.log_prob(z) + dist.Normal(jnp.sqrt(z + 1.0), 0.5).log_prob(x)
    return jnp.sum(jnp.exp(q.log_prob(z)) * (log_p - q.log_prob(z)))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["poisson", "geometric"])
def test_count_mvd_is_unbiased(kind):
    x = jnp.array(1.7)
    if kind == "poisson":
        params, model, family = {"log_rate": jnp.array(0.6)}, poisson_model, poisson_family

        def exact(params):
            q = dist.Poisson(jnp.exp(params["log_rate"]))
            return _truncated_elbo(dist.Poisson(3.0), q, x)
    else:
        params, model, family = {"logit": jnp.array(-0.4)}, geometric_model, geometric_family

        def exact(params):
            q = dist.Geometric(logits=params["logit"])
            return _truncated_elbo(dist.Geometric(probs=0.3), q, x)

    mean, se, _ = mc_gradient(vj.elbo(model, family), params, x, n=40_000)
    assert_unbiased(mean, se, _flat(jax.grad(exact)(params)), label=f"mvd {kind}")


def test_normal_mvd_location_and_scale_are_unbiased():
    family = vj.with_estimators(nn_family, MVD)
    objective = vj.elbo(nn_model, family, analytic_kl=False)
    mean, se, _ = mc_gradient(objective, NN_PARAMS, X_NN, n=40_000)
    exact = _flat(jax.grad(nn_exact_elbo)(NN_PARAMS, X_NN))
    assert_unbiased(mean, se, exact, label="mvd normal")


X_VEC = jnp.array([0.7, -0.2, 1.3])
VEC_PARAMS = {"loc": jnp.array([0.3, -0.1, 0.5]), "log_scale": jnp.array([-0.4, 0.1, -0.2])}


def vec_exact_elbo(params, x):
    """z_j ~ N(0, 1), x_j ~ N(z_j, 1), q = Π_j N(m_j, s_j²): closed form."""
    m, s = params["loc"], jnp.exp(params["log_scale"])
    log2pi = jnp.log(2 * jnp.pi)
    prior = jnp.sum(-0.5 * log2pi - 0.5 * (m**2 + s**2))
    lik = jnp.sum(-0.5 * log2pi - 0.5 * ((x - m) ** 2 + s**2))
    return prior + lik + jnp.sum(0.5 * jnp.log(2 * jnp.pi * jnp.e * s**2))


def vec_model_plated(x):
    with vj.plate("dim", 3):
        z = vj.sample("z", dist.Normal(0.0, 1.0))
        vj.sample("x", dist.Normal(z, 1.0), obs=x)


def vec_family_plated(params, x):
    with vj.plate("dim", 3):
        vj.sample("z", dist.Normal(params["loc"], jnp.exp(params["log_scale"])), estimator=vj.mvd())


def vec_model_event(x):
    z = vj.sample("z", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    vj.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def vec_family_event(params, x):
    fn = dist.Normal(params["loc"], jnp.exp(params["log_scale"])).to_event(1)
    vj.sample("z", fn, estimator=vj.mvd())


@pytest.mark.parametrize("layout", ["plated", "event"])
def test_vector_normal_mvd_per_element(layout):
    # In a plate the three elements are perturbed together (3 re-evaluations); as an event
    # they are perturbed one at a time (9 re-evaluations). Both are unbiased.
    model, family = {
        "plated": (vec_model_plated, vec_family_plated),
        "event": (vec_model_event, vec_family_event),
    }[layout]
    objective = vj.elbo(model, family, analytic_kl=False)
    mean, se, _ = mc_gradient(objective, VEC_PARAMS, X_VEC, n=40_000)
    exact = _flat(jax.grad(vec_exact_elbo)(VEC_PARAMS, X_VEC))
    assert_unbiased(mean, se, exact, label=f"mvd vector normal ({layout})")


@pytest.mark.slow
def test_mvd_inside_an_importance_weighted_bound_is_unbiased():
    # The IWAE value couples the particles: particle k's coupled value is re-scored with only
    # its own log-weight replaced.
    family = vj.with_estimators(bern_family, MVD)
    mean, se, _ = mc_gradient(vj.iwae(bern_model, family, 3), BERN_PARAMS, X_B, n=40_000)
    exact = _flat(jax.grad(bern_exact_iwae)(BERN_PARAMS, X_B, 3))
    assert_unbiased(mean, se, exact, label="mvd iwae")


def test_mvd_refuses_unsupported_distributions():
    def family(params, x):
        vj.sample("z", dist.Gamma(jnp.exp(params["log_rate"]), 1.0), estimator=vj.mvd())

    def model(x):
        z = vj.sample("z", dist.Gamma(2.0, 1.0))
        vj.sample("x", dist.Poisson(z), obs=x)

    with pytest.raises(ValueError, match="site 'z': measure-valued derivatives are implemented"):
        vj.grad_estimate(vj.elbo(model, family))(
            {"log_rate": jnp.array(0.0)}, jax.random.key(0), jnp.array(2.0)
        )


def test_mvd_is_exact_on_a_deterministic_signal():
    # With f(z) = z² and z ~ N(μ, σ), ∂μ E f = 2μ and ∂σ E f = 2σ; MVD gives them unbiasedly.
    def objective(params, key):
        z = vj.seed(
            lambda: vj.sample("z", dist.Normal(params[0], params[1]), estimator=vj.mvd()), key
        )()
        return z**2

    params = jnp.array([0.8, 1.3])
    grads = jax.jit(jax.vmap(vj.grad_estimate(objective), (None, 0)))(
        params, jax.random.split(jax.random.key(5), 40_000)
    )
    g = np.asarray(grads, np.float64)
    assert_unbiased(g.mean(0), g.std(0) / np.sqrt(len(g)), [1.6, 2.6], label="mvd z²")


@pytest.mark.slow
def test_mvd_on_a_plated_site_inside_an_importance_weighted_bound_is_unbiased():
    # Two data, one Bernoulli latent each, K = 2 particles: a particle's log-weight sums its
    # two data before the particles are coupled, so each datum's site must be perturbed alone.
    x = jnp.array([0.4, -0.6])
    logits = jnp.array([0.3, -0.5])

    def model(x):
        with vj.plate("data", 2):
            z = vj.sample("z", dist.Bernoulli(0.3))
            vj.sample("x", dist.Normal(MU[z.astype(jnp.int32)], 1.0), obs=x)

    def family(params, x):
        with vj.plate("data", 2):
            vj.sample("z", dist.Bernoulli(logits=params), estimator=vj.mvd())

    def exact(params):
        import itertools

        total = 0.0
        for zs in itertools.product((0, 1), repeat=4):  # (particle, datum) values
            z = jnp.array(zs).reshape(2, 2)
            log_q = jnp.where(z == 1, jax.nn.log_sigmoid(params), jax.nn.log_sigmoid(-params))
            log_p = jnp.where(z == 1, jnp.log(0.3), jnp.log(0.7)) + jax.scipy.stats.norm.logpdf(
                x, MU[z], 1.0
            )
            w = jnp.sum(log_p - log_q, axis=1)
            total = total + jnp.exp(jnp.sum(log_q)) * (jax.nn.logsumexp(w) - jnp.log(2.0))
        return total

    mean, se, _ = mc_gradient(vj.iwae(model, family, 2), logits, x, n=40_000)
    assert_unbiased(mean, se, jax.grad(exact)(logits), label="mvd plated iwae")
