"""Discrete-latent VAEs: every gradient strategy against the exact gradient, on a tiny VAE whose
expectations are finite sums (enumerated truth).

The instance: 2 × 2 binary images, linear encoder and decoder, two Bernoulli latents per image
(or two categorical latents of three classes): ``2² = 4`` (``3² = 9``) joint latent values per
datum, so the ELBO and the IWAE bounds are exact sums and ``jax.grad`` of them is the truth.

Statistical checks follow ``tests/test_estimators.py``: fixed seeds, ``|mean − exact| < 4.5 SE``
per coordinate (two-sided normal tail 7e-6 each; about 400 coordinates here, so a
false-failure budget below 3e-3 for fresh seeds, and the seeds are fixed).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vijax as vj
from tests.test_estimators import Z, _flat, assert_unbiased, mc_gradient
from vijax.models import vae

IMAGE = (2, 2)
X = jnp.array([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])


def _scaled(params, factor):
    return jax.tree.map(lambda p: factor * p, params)


def tiny(latent):
    """A linear VAE with larger-than-default weights (so every gradient is far from zero)."""
    model = vae.mlp_vae(IMAGE, latent, hidden=())
    params = _scaled(model.init(jax.random.key(3)), 2.5)
    return model, params


BERNOULLI, BERNOULLI_PARAMS = tiny(vae.bernoulli(2))
CATEGORICAL, CATEGORICAL_PARAMS = tiny(vae.categorical(2, 3))


def _support(model):
    latent = model.latent
    if isinstance(latent, vae.BernoulliLatent):
        values = list(itertools.product((0.0, 1.0), repeat=latent.dim))
    else:
        values = list(itertools.product(range(latent.num_classes), repeat=latent.dim))
    return jnp.asarray(values)


def exact_log_weights(model, params, x):
    """``(V, N)``: ``log p(x_i, z) − log q(z | x_i)`` at every joint value ``z``, and
    ``(V, N)`` ``log q(z | x_i)``, by direct formulas."""
    support = _support(model)  # (V, L)
    raw = model.encode(params.family, x)  # (N, P)
    q = model.latent.posterior(raw)
    log_q = jax.vmap(lambda z: q.log_prob(jnp.broadcast_to(z, (x.shape[0], *z.shape))))(support)
    log_prior = jax.vmap(model.latent.prior().log_prob)(support)  # (V,)
    logits = model.decode(params.model, model.latent.features(support))  # (V, 2, 2)
    log_lik = jnp.sum(
        x[None] * logits[:, None] - jax.nn.softplus(logits[:, None]), axis=(-2, -1)
    )  # (V, N)
    return log_prior[:, None] + log_lik - log_q, log_q


def exact_elbo(model, params, x):
    log_w, log_q = exact_log_weights(model, params, x)
    return jnp.sum(jnp.exp(log_q) * log_w)


def exact_iwae(model, params, x, num_particles):
    """``Σ_i Σ_{z_1..z_K} Π_k q(z_k | x_i) · log (1/K) Σ_k w_ik`` over all ``V^K`` tuples."""
    log_w, log_q = exact_log_weights(model, params, x)
    count = log_w.shape[0]
    tuples = jnp.asarray(list(itertools.product(range(count), repeat=num_particles)))  # (T, K)
    weight = jnp.exp(jnp.sum(log_q[tuples], axis=1))  # (T, N)
    bound = jax.nn.logsumexp(log_w[tuples], axis=1) - jnp.log(num_particles)  # (T, N)
    return jnp.sum(weight * bound)


def elbo_gradient(model, params):
    return _flat(jax.jit(jax.grad(lambda p: exact_elbo(model, p, X)))(params))


def test_the_exact_references_agree_with_the_programs():
    # the enumerated ELBO equals vijax's log-densities of the same programs at each value
    @jax.jit
    def program_log_weights(params):
        def at(z):
            values = {"z": jnp.broadcast_to(z, (3, 2))}
            log_p, _ = vj.log_density(BERNOULLI.model, values, params.model, X)
            log_q, _ = vj.log_density(BERNOULLI.family, values, params.family, X)
            return log_p - log_q

        return jax.vmap(at)(_support(BERNOULLI))

    log_w, log_q = jax.jit(exact_log_weights, static_argnums=0)(BERNOULLI, BERNOULLI_PARAMS, X)
    np.testing.assert_allclose(program_log_weights(BERNOULLI_PARAMS), log_w.sum(axis=1), rtol=1e-5)
    # IWAE with one particle is the ELBO; more particles bound log p(x) more tightly
    bound = jax.jit(exact_iwae, static_argnums=(0, 3))
    elbo = jax.jit(exact_elbo, static_argnums=0)(BERNOULLI, BERNOULLI_PARAMS, X)
    np.testing.assert_allclose(bound(BERNOULLI, BERNOULLI_PARAMS, X, 1), elbo, rtol=1e-5)
    evidence = jnp.sum(jax.nn.logsumexp(log_w + log_q, axis=0))
    bounds = [bound(BERNOULLI, BERNOULLI_PARAMS, X, k) for k in (1, 2, 3)]
    assert bounds[0] < bounds[1] < bounds[2] < evidence


def _with(model, strategy):
    return vj.with_estimators(model.family, {"z": strategy})


@pytest.mark.parametrize("model_name", ["bernoulli", "categorical"])
def test_enumeration_per_datum_is_exact_with_zero_variance(model_name):
    model, params = (
        (BERNOULLI, BERNOULLI_PARAMS)
        if model_name == "bernoulli"
        else (CATEGORICAL, CATEGORICAL_PARAMS)
    )
    objective = vj.elbo(model.model, _with(model, vj.enumeration()))
    mean, _, draws = mc_gradient(objective, params, X, n=16)
    np.testing.assert_allclose(mean, elbo_gradient(model, params), rtol=2e-4, atol=2e-5)
    assert draws.std(0).max() < 1e-4
    value, _ = jax.jit(vj.value_and_grad_estimate(objective))(params, jax.random.key(0), X)
    exact = jax.jit(exact_elbo, static_argnums=0)(model, params, X)
    np.testing.assert_allclose(value, exact, rtol=1e-5)


def _learned_family(model):
    network = vae.mlp_encoder(IMAGE, 1, hidden=())
    baseline = vj.learned(lambda params, x: network(params.family["baseline"], x)[:, 0])
    return network, _with(model, vj.score_function(baseline))


ELBO_STRATEGIES = {
    "mvd": lambda: vj.mvd(),
    "score": lambda: vj.score_function(),
    "score+running_mean": lambda: vj.score_function(vj.running_mean(0.9)),
}


@pytest.mark.parametrize("strategy", sorted(ELBO_STRATEGIES))
@pytest.mark.parametrize("model_name", ["bernoulli", "categorical"])
def test_elbo_estimators_are_unbiased(strategy, model_name):
    model, params = (
        (BERNOULLI, BERNOULLI_PARAMS)
        if model_name == "bernoulli"
        else (CATEGORICAL, CATEGORICAL_PARAMS)
    )
    objective = vj.elbo(model.model, _with(model, ELBO_STRATEGIES[strategy]()))
    state = None
    if strategy == "score+running_mean":  # a state as after many steps: a stale mean
        state = vj.gradient_estimator(objective).init(params, jax.random.key(0), X)
        state = jax.tree.map(lambda s: jnp.full_like(s, 9 if s.dtype == jnp.int32 else -5.0), state)
    mean, se, _ = mc_gradient(objective, params, X, n=20_000, state=state)
    assert_unbiased(mean, se, elbo_gradient(model, params), label=f"{model_name} {strategy}")


def test_learned_baseline_and_leave_one_out_are_unbiased():
    network, family = _learned_family(BERNOULLI)
    baseline_params = _scaled(network.init(jax.random.key(5)), 3.0)
    params = BERNOULLI_PARAMS._replace(
        family={**BERNOULLI_PARAMS.family, "baseline": baseline_params}
    )
    mean, se, _ = mc_gradient(vj.elbo(BERNOULLI.model, family), params, X, n=20_000)
    exact = _flat(jax.jit(jax.grad(lambda p: exact_elbo(BERNOULLI, p, X)))(params))
    # the baseline's own parameters get its regression gradient; check the others
    ones = jax.tree.map(jnp.ones_like, params)
    keep = ones._replace(
        family={**ones.family, "baseline": jax.tree.map(jnp.zeros_like, baseline_params)}
    )
    keep = np.asarray(_flat(keep), bool)
    assert_unbiased(mean[keep], se[keep], exact[keep], label="score + learned baseline")

    loo = vj.elbo(BERNOULLI.model, _with(BERNOULLI, vj.score_function(vj.leave_one_out())), 4)
    mean, se, _ = mc_gradient(loo, BERNOULLI_PARAMS, X, n=20_000)
    assert_unbiased(mean, se, elbo_gradient(BERNOULLI, BERNOULLI_PARAMS), label="4-particle LOO")


def test_vimco_on_one_datum_is_unbiased_for_the_iwae_bound():
    x = X[:1]  # vj.vimco couples particles over the whole program: one datum here
    objective = vj.vimco(BERNOULLI.model, BERNOULLI.family, 3)
    mean, se, _ = mc_gradient(objective, BERNOULLI_PARAMS, x, n=20_000)
    exact = _flat(jax.jit(jax.grad(lambda p: exact_iwae(BERNOULLI, p, x, 3)))(BERNOULLI_PARAMS))
    assert_unbiased(mean, se, exact, label="vimco K=3")


PER_DATUM_STRATEGIES = {
    "score": vj.score_function(),
    "vimco per datum": vj.score_function(vj.leave_one_out()),
    "mvd": vj.mvd(),
}


@pytest.mark.parametrize("name", list(PER_DATUM_STRATEGIES))
def test_per_datum_iwae_strategies_are_unbiased(name):
    # the per-datum bound is a coupled block per image: score sites are credited with their own
    # image's bound, leave-one-out is VIMCO within each image, MVD perturbs all images at once
    objective = vae.per_datum_iwae(BERNOULLI.model, _with(BERNOULLI, PER_DATUM_STRATEGIES[name]), 2)
    mean, se, _ = mc_gradient(objective, BERNOULLI_PARAMS, X, n=20_000)
    exact_bound = jax.jit(lambda p: exact_iwae(BERNOULLI, p, X, 2))
    exact = _flat(jax.jit(jax.grad(exact_bound))(BERNOULLI_PARAMS))
    assert_unbiased(mean, se, exact, label=f"per-datum IWAE K=2, {name}")
    if name == "score":
        values = jax.jit(jax.vmap(lambda k: objective(BERNOULLI_PARAMS, k, X).value))(
            jax.random.split(jax.random.key(1), 20_000)
        )
        error = np.std(values) / np.sqrt(values.size)
        assert abs(float(values.mean()) - float(exact_bound(BERNOULLI_PARAMS))) < Z * error


def test_per_datum_iwae_gives_each_datum_its_own_signal():
    # Rao-Blackwellization per datum: the same score estimator with the structure removed
    # (one number for the whole minibatch) is unbiased too but noisier; here the variance
    # ratio is about 7 with 3 images (it grows with the batch), asserted > 1.5 (the variances
    # are known to ±3% with 20 000 draws)
    objective = vae.per_datum_iwae(BERNOULLI.model, _with(BERNOULLI, vj.score_function()), 2)

    def unstructured(params, key, x):
        return objective(params, key, x).value

    _, _, structured = mc_gradient(objective, BERNOULLI_PARAMS, X, n=20_000)
    _, _, plain = mc_gradient(unstructured, BERNOULLI_PARAMS, X, n=20_000)
    ratio = plain.var(0).sum() / structured.var(0).sum()
    print(f"per-datum signal: variance {structured.var(0).sum():.4g} vs {plain.var(0).sum():.4g}")
    assert ratio > 1.5, ratio


def test_per_datum_iwae_refuses_enumeration_naming_the_site():
    refused = vae.per_datum_iwae(BERNOULLI.model, _with(BERNOULLI, vj.enumeration()), 2)
    with pytest.raises(ValueError, match="per_datum_iwae: site 'z' uses"):
        jax.jit(vj.grad_estimate(refused))(BERNOULLI_PARAMS, jax.random.key(0), X)


def test_the_relaxation_is_a_biased_contrast():
    # The Gumbel-softmax (Concrete) VAE with the same networks optimizes a bound of another
    # model: its gradient is far from the discrete ELBO's (here by more than 20 SE somewhere),
    # which is why it is offered only as a contrast; evaluation uses the discrete latent.
    relaxed = vae.mlp_vae(IMAGE, vae.relaxed_bernoulli(2, 0.5), hidden=())
    assert relaxed.for_evaluation().latent == vae.bernoulli(2)
    mean, se, _ = mc_gradient(vj.elbo(relaxed.model, relaxed.family), BERNOULLI_PARAMS, X)
    exact = elbo_gradient(BERNOULLI, BERNOULLI_PARAMS)
    assert np.max(np.abs(mean - exact) / (se + 1e-6)) > 20.0


def test_enumeration_refuses_too_large_a_product_space():
    big = vae.mlp_vae(IMAGE, vae.bernoulli(13), hidden=())
    params = big.init(jax.random.key(0))
    objective = vj.elbo(big.model, _with(big, vj.enumeration()))
    with pytest.raises(ValueError, match="8192 joint values"):
        jax.jit(vj.grad_estimate(objective))(params, jax.random.key(0), X)
