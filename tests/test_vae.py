"""VAEs as programs: densities against hand-written formulas, minibatch and β scaling, the
continuous Bernoulli, per-datum IWAE and DReG, bounds on a trained model, and bad input."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import vijax as vj
from tests.test_estimators import Z, mc_gradient
from vijax.data import binarize, check_images, dynamic_binarization, load_images
from vijax.models import vae

X = jnp.asarray(np.random.default_rng(0).integers(0, 2, size=(5, 8, 8)), jnp.float32)


def small(latent=None, **kwargs):
    model = vae.mlp_vae((8, 8), latent or vae.gaussian(3), hidden=(16,), **kwargs)
    return model, model.init(jax.random.key(0))


def test_model_and_family_densities_match_hand_written_formulas():
    model, params = small()
    z = jax.random.normal(jax.random.key(1), (5, 3))

    @jax.jit
    def both(params):
        _, terms = vj.log_density(model.model, {"z": z}, params.model, X)
        log_q, _ = vj.log_density(model.family, {"z": z}, params.family, X)
        logits = model.decode(params.model, z)
        raw = model.encode(params.family, X)
        expected = {
            "x": jnp.sum(X * logits - jax.nn.softplus(logits)),
            "z": jnp.sum(dist.Normal(0.0, 1.0).log_prob(z)),
            "q": jnp.sum(dist.Normal(raw[:, :3], jnp.exp(raw[:, 3:])).log_prob(z)),
        }
        return {"x": terms["x"], "z": terms["z"], "q": log_q}, expected

    got, expected = both(params)
    for name in ("x", "z", "q"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, err_msg=name)


def test_minibatches_and_beta_scale_the_terms():
    model, params = small(num_data=50, beta=2.5)
    z = jnp.zeros((5, 3))
    _, terms = vj.log_density(model.model, {"z": z}, params.model, X)
    _, plain = vj.log_density(model.for_evaluation().model, {"z": z}, params.model, X)
    # five rows of a fifty-image data set: every term × 10; the latent's also × β
    np.testing.assert_allclose(terms["x"], 10 * plain["x"], rtol=1e-6)
    np.testing.assert_allclose(terms["z"], 2.5 * 10 * plain["z"], rtol=1e-6)
    # the β-ELBO (closed-form KL, scaled by β and N / B) runs
    elbo = vj.elbo(model.model, model.family)(params, jax.random.key(0), X)
    assert np.isfinite(float(elbo.value))


def test_the_conditional_vae_needs_its_classes():
    model, params = small(num_classes=10)
    y = jnp.array([0, 3, 9, 1, 2])
    value = vj.elbo(model.model, model.family)(params, jax.random.key(0), X, y).value
    assert np.isfinite(float(value))
    with pytest.raises(ValueError, match="needs the classes y"):
        vj.elbo(model.model, model.family)(params, jax.random.key(0), X)
    with pytest.raises(ValueError, match="y must hold 5 integer classes"):
        vj.elbo(model.model, model.family)(params, jax.random.key(0), X, y.astype(jnp.float32))


def test_continuous_bernoulli_is_a_normalized_density_with_the_stated_mean():
    logits = jnp.array([-30.0, -4.0, -0.3, -1e-3, 0.0, 2e-3, 0.7, 5.0, 25.0])

    @jax.jit
    def summaries(logits):
        d = vae.ContinuousBernoulli(logits)
        grid = (jnp.arange(20000) + 0.5) / 20000  # midpoint rule on [0, 1]
        density = jnp.exp(jax.vmap(d.log_prob)(grid))  # (grid, logits)
        draws = d.sample(jax.random.key(0), (40000,))
        # the log normalizer is smooth through ℓ = 0 (series) and finite for large |ℓ|
        grads = jax.vmap(jax.grad(lambda l: vae.ContinuousBernoulli(l).log_prob(0.3)))(logits)
        return density, (grid[:, None] * density).mean(0), d.mean, draws, grads

    density, quadrature_mean, mean, draws, grads = summaries(logits)
    np.testing.assert_allclose(density.mean(0), 1.0, atol=2e-3)
    np.testing.assert_allclose(quadrature_mean, mean, atol=2e-3)
    assert float(draws.min()) >= 0.0 and float(draws.max()) <= 1.0
    spread = jnp.std(draws, axis=0) / jnp.sqrt(draws.shape[0])
    assert np.all(np.abs(draws.mean(0) - mean) < Z * spread + 1e-4)
    assert np.all(np.isfinite(grads))


# --------------------------------------------------------------------------------------------
# Per-datum IWAE and DReG on a tiny Gaussian VAE (2 × 2 images, linear networks)
# --------------------------------------------------------------------------------------------

TINY = vae.mlp_vae((2, 2), vae.gaussian(2), hidden=())
TINY_PARAMS = jax.tree.map(lambda p: 1.5 * p, TINY.init(jax.random.key(4)))
TINY_X = jnp.array([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])


def test_per_datum_iwae_is_the_mean_log_weight_bound_of_each_datum():
    key = jax.random.key(2)

    @functools.partial(jax.jit, static_argnums=0)
    def value_and_reference(model):
        # on a minibatch of 3 from 30 images (model 2) the sum is scaled by 10, not the
        # weights inside the log
        value = vae.per_datum_iwae(model.model, model.family, 4)(TINY_PARAMS, key, TINY_X).value
        log_w = vae.per_datum_log_weights(model.model, model.family, TINY_PARAMS, key, 4, TINY_X)
        return value, jnp.sum(jax.nn.logsumexp(log_w, axis=0) - jnp.log(4.0))

    value, expected = value_and_reference(TINY)
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    scaled = TINY.with_num_data(30)
    value, expected = value_and_reference(scaled)
    np.testing.assert_allclose(value, 10 * expected, rtol=1e-5)
    scales = []  # the plate's N / B, a Python number read while tracing
    jax.eval_shape(
        lambda: scales.append(
            vae.per_datum_log_weight(scaled.model, scaled.family, TINY_PARAMS, key, (TINY_X,), {})[
                1
            ]
        )
    )
    assert scales == [10.0]


def test_dreg_is_unbiased_for_the_iwae_gradient():
    iwae = vae.per_datum_iwae(TINY.model, TINY.family, 4)
    dreg = vae.per_datum_iwae_dreg(TINY.model, TINY.family, 4)
    mean_i, se_i, _ = mc_gradient(iwae, TINY_PARAMS, TINY_X, n=20_000, seed=0)
    mean_d, se_d, _ = mc_gradient(dreg, TINY_PARAMS, TINY_X, n=20_000, seed=1)
    # Two independent unbiased estimates of the same gradient agree within 4.5 joint SE. This
    # also fails if the w̃ scaling of the encoder's gradient were lost: the path gradient alone
    # (IWAE with sticking the landing) is biased for K > 1.
    joint = np.sqrt(se_i**2 + se_d**2)
    assert np.all(np.abs(mean_i - mean_d) < Z * joint + 1e-6), (mean_i, mean_d, joint)
    stl = vae.per_datum_iwae(TINY.model, vj.with_estimators(TINY.family, default=vj.path()), 4)
    mean_s, se_s, _ = mc_gradient(stl, TINY_PARAMS, TINY_X, n=20_000, seed=2)
    assert np.any(np.abs(mean_i - mean_s) > Z * np.sqrt(se_i**2 + se_s**2))
    with pytest.raises(ValueError, match="path asked of"):
        discrete = vae.mlp_vae((2, 2), vae.bernoulli(2), hidden=())
        objective = vae.per_datum_iwae_dreg(discrete.model, discrete.family, 2)
        jax.jit(vj.grad_estimate(objective))(
            discrete.init(jax.random.key(0)), jax.random.key(0), TINY_X
        )


# --------------------------------------------------------------------------------------------
# A small trained model: the bounds are ordered and the log-likelihood estimate is stable
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    data = load_images("digits", key=jax.random.key(0))
    model = vae.mlp_vae((8, 8), vae.gaussian(4), hidden=(64,), num_data=data.x_train.shape[0])
    objective = dynamic_binarization(vj.elbo(model.model, model.family))
    result = vj.fit(
        objective,
        model.init(jax.random.key(1)),
        optax.adam(3e-3),
        jax.random.key(2),
        data=(data.x_train,),
        batch_size=128,
        num_steps=1500,
        progress=False,
    )
    test = binarize(data.x_test[:30], jax.random.key(9))
    return model, result.params, test


@pytest.mark.slow
def test_iwae_bounds_rise_with_k_above_the_elbo_on_a_trained_model(trained):
    model, params, x = trained
    evaluated = model.for_evaluation()
    keys = jax.random.split(jax.random.key(11), 200)
    estimates = {}
    for k in (1, 5, 20):
        objective = vae.per_datum_iwae(evaluated.model, evaluated.family, k)
        values = jax.jit(jax.vmap(lambda key, o=objective: o(params, key, x).value))(keys)
        estimates[k] = np.asarray(values, np.float64) / x.shape[0]  # per image
    elbo = jax.jit(
        jax.vmap(lambda key: vj.elbo(evaluated.model, evaluated.family)(params, key, x).value)
    )(keys)
    estimates["elbo"] = np.asarray(elbo, np.float64) / x.shape[0]
    mean = {k: v.mean() for k, v in estimates.items()}
    se = {k: v.std(ddof=1) / np.sqrt(v.size) for k, v in estimates.items()}
    print({k: (round(mean[k], 4), round(se[k], 4)) for k in mean})
    # the closed-form-KL ELBO and the one-particle IWAE estimate the same bound
    assert abs(mean["elbo"] - mean[1]) < Z * np.hypot(se["elbo"], se[1])
    # L_1 ≤ L_5 ≤ L_20 (independent draws, within 4.5 joint SE)
    ladder = [1, 5, 20]
    for low, high in itertools.pairwise(ladder):
        assert mean[high] - mean[low] > -Z * np.hypot(se[low], se[high])
    assert mean[20] - mean[1] > Z * np.hypot(se[1], se[20])  # strictly tighter, visibly
    bounds = vae.evaluate_bounds(
        model, params, jax.random.key(12), x, num_particles=1000, batch_size=30, bounds=(1, 5)
    )
    # evaluate_bounds' group estimates agree with the objectives' own values
    for name, k in (("elbo", 1), ("iwae_5", 5)):
        assert abs(bounds[name].mean() - mean[k]) < Z * se[k] + 0.02
    assert bounds["log_likelihood"].mean() > mean[20]


@pytest.mark.slow
def test_test_log_likelihood_is_stable_between_1000_and_5000_particles(trained):
    model, params, x = trained
    many = vae.evaluate_bounds(
        model, params, jax.random.key(21), x, num_particles=5000, batch_size=30, bounds=(1,)
    )
    fewer = vae.evaluate_bounds(
        model, params, jax.random.key(22), x, num_particles=1000, batch_size=30, bounds=(1,)
    )
    difference = many["log_likelihood"] - fewer["log_likelihood"]
    # Stated tolerance: 0.05 nats per image on the mean over 30 images. Measured on this model
    # (3 seeds, 50 images): |mean difference| ≤ 0.016, single images up to 0.33 (heavy-tailed
    # weights); the bias L_5000 − L_1000 is below 0.002 here.
    assert abs(difference.mean()) < 0.05
    assert many["log_likelihood"].mean() > many["elbo"].mean() + 0.1
    kl = vae.kl_per_dimension(model, params, x)
    variance = vae.active_units(model, params, x)
    assert kl.shape == (4,) and np.all(kl >= 0.0)
    # an active unit (variance of its posterior mean > 0.01) carries information: KL > 0.05
    assert np.all(kl[variance > 0.01] > 0.05) and (variance > 0.01).sum() >= 2


# --------------------------------------------------------------------------------------------
# Bad input gives errors naming the argument
# --------------------------------------------------------------------------------------------


def test_bad_images_are_refused_by_name():
    good = jnp.full((4, 8, 8), 0.5)
    with pytest.raises(ValueError, match=r"x_train: 1 pixel\(s\) are NaN or infinite"):
        check_images(good.at[1, 2, 3].set(jnp.nan), name="x_train")
    with pytest.raises(ValueError, match=r"x_test: expected images of shape \(8, 8\)"):
        check_images(jnp.zeros((4, 28, 28)), name="x_test", image_shape=(8, 8))
    with pytest.raises(ValueError, match=r"x: pixels must lie in \[0, 1\].*\[0.5, 255\]"):
        check_images(good.at[0, 0, 0].set(255.0))
    with pytest.raises(ValueError, match=r"x: expected a batch of images"):
        check_images(jnp.zeros(5))
    model, params = small()
    with pytest.raises(ValueError, match=r"vae: x must have shape \(N, 8, 8\).*\(5, 28, 28\)"):
        vj.elbo(model.model, model.family)(params, jax.random.key(0), jnp.zeros((5, 28, 28)))
    with pytest.raises(ValueError, match="fit: data 0 contains NaN"):
        vj.fit(
            vj.elbo(model.model, model.family),
            params,
            optax.adam(1e-3),
            jax.random.key(0),
            data=(good.at[0, 0, 0].set(jnp.nan),),
            batch_size=2,
            num_steps=1,
            progress=False,
        )
