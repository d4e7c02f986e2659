"""Populations of real models: VAEs over seeds, a β sweep of a β-ELBO, particle counts.

Issue 8: many runs in one compiled program (:func:`vijax.fit_population`). These tests train
populations of models people sweep in practice and check each run against what it must equal:
the same fit done alone (VAEs), or the closed-form optimum (β-ELBO of a conjugate model).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import vijax as vj
from vijax.data import binarize, digits
from vijax.models import vae

Z = 4.5  # standard errors: two-sided false-failure probability 6.8e-6 per comparison


def _run(tree, r):
    return jax.tree.map(lambda leaf: leaf[r], tree)


# --------------------------------------------------------------------------------------------
# A population of small VAEs on digits, one per seed


@pytest.mark.slow
def test_a_population_of_vaes_equals_the_same_vaes_trained_one_by_one():
    images, _ = digits()
    x = binarize(images[:300], jax.random.key(0))  # 300 binarized 8 × 8 digits
    model = vae.mlp_vae((8, 8), vae.gaussian(2), hidden=(16,), num_data=x.shape[0])
    objective = vj.elbo(model.model, model.family)
    optimizer = optax.adam(1e-2)  # one optimizer object: vj.fit compiles once for every run
    runs, steps = 8, 200
    keys = jax.random.split(jax.random.key(1), runs)  # each run's minibatch order and draws
    params = jax.vmap(model.init)(jax.random.split(jax.random.key(2), runs))  # and its init
    common = dict(num_steps=steps, data=(x,), batch_size=50, progress=False)

    population = vj.fit_population(objective, params, optimizer, keys, in_axes=(0,), **common)

    assert population.history.shape == (runs, steps)
    assert population.state.step.tolist() == [steps] * runs
    assert np.all(np.isfinite(population.history))
    # every run learns: the mean ELBO of its last 50 steps is well above that of its first 50
    # (the minibatch estimates scatter by a few hundred nats; the gain is thousands)
    first, last = population.history[:, :50].mean(1), population.history[:, -50:].mean(1)
    assert np.all(last > first + 1000), (first, last)
    # run r is the fit of run r alone (its init, its key). Same float32 program under vmap:
    # after 200 Adam steps the parameters agree to ~4e-7; allow rtol 1e-5 / atol 1e-6 as the
    # Normal-mean population test of tests/test_scaling.py does
    for r in (0, 5):
        alone = vj.fit(objective, _run(params, r), optimizer, keys[r], **common)
        for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(_run(population.params, r))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone.history, population.history[r], rtol=1e-5)
    # the runs really differ (different inits and data orders): the comparison means something
    decoder_biases = np.asarray(jax.tree.leaves(population.params.model)[0])
    assert np.ptp(decoder_biases, axis=0).max() > 1e-2


# --------------------------------------------------------------------------------------------
# A β sweep of the β-ELBO of a conjugate Normal model: the optimum is known in closed form

N_DATA = 10
X_NORMAL = jnp.asarray(np.random.default_rng(0).normal(1.5, 1.0, N_DATA), jnp.float32)


def normal_model(x):
    z = vj.sample("z", dist.Normal(0.0, 1.0))
    with vj.plate("data", x.shape[0]):
        vj.sample("x", dist.Normal(z, 1.0), obs=x)


def normal_family(params, x):
    vj.sample("z", dist.Normal(params["loc"], jnp.exp(params["log_scale"])))


def beta_elbo(params, key, beta, x):
    """``E_q[log p(x | z)] + β E_q[log p(z) − log q(z)]`` (one draw), β a traced argument."""
    model_trace, family_trace = vj.objectives.importance_traces(
        normal_model, normal_family, params, key, (x,), {}
    )
    likelihood = vj.Terms.from_trace(model_trace, sites=["x"])
    kl_part = vj.Terms.from_trace(model_trace, sites=["z"]) - vj.Terms.from_trace(
        family_trace, family=True
    )
    return likelihood + beta * kl_part


def beta_elbo_optimum(beta, x):
    r"""The maximizer ``(m, s)`` of the β-ELBO over ``q = N(m, s²)``.

    With ``z ~ N(0, 1)``, ``x_i | z ~ N(z, 1)``, ``i = 1..n``:

        L(m, s) = −½ Σ_i (x_i − m)² − ½ n s² − (β/2) (m² + s² − 1 − log s²) + const,

    ``∂L/∂m = Σ_i x_i − (n + β) m = 0`` and ``∂L/∂s² = −n/2 − β/2 + β/(2 s²) = 0``, so

        m* = Σ_i x_i / (n + β),   s*² = β / (n + β).

    β = 1 is the exact posterior; β → ∞ gives the prior N(0, 1), β → 0 a point mass at the
    maximum-likelihood mean.
    """
    n = x.shape[0]
    return jnp.sum(x) / (n + beta), jnp.sqrt(beta / (n + beta))


def _seed_summary(values, groups, seeds):
    values = np.asarray(values, np.float64).reshape(groups, seeds)
    return values.mean(1), values.std(1, ddof=1) / np.sqrt(seeds), values


def test_a_beta_sweep_reaches_each_closed_form_beta_elbo_optimum():
    betas = np.array([0.25, 1.0, 4.0, 16.0])
    seeds = 16
    per_run_beta = jnp.asarray(np.repeat(betas, seeds), jnp.float32)  # 4 β × 16 seeds = 64 runs
    keys = jax.random.split(jax.random.key(0), per_run_beta.shape[0])
    steps = 4000
    result = vj.fit_population(
        beta_elbo,
        {"loc": jnp.zeros(()), "log_scale": jnp.zeros(())},
        optax.adam(optax.cosine_decay_schedule(0.03, steps, alpha=1e-3)),
        keys,
        per_run_beta,
        X_NORMAL,
        num_steps=steps,
        in_axes=(None, 0, None),  # β per run, the data shared
        progress=False,
    )
    assert result.history.shape == (betas.size * seeds, steps)
    expected_loc, expected_scale = beta_elbo_optimum(jnp.asarray(betas), X_NORMAL)
    loc_mean, loc_se, locs = _seed_summary(result.params["loc"], betas.size, seeds)
    scale_mean, scale_se, scales = _seed_summary(
        jnp.exp(result.params["log_scale"]), betas.size, seeds
    )
    # Each run ends a noisy one-draw SGD near the optimum (seed standard deviation 0.003-0.02,
    # growing with β), so: the mean over the 16 seeds of each β within Z standard errors of
    # the closed form, plus 3e-3 for what is left of Adam's drift as the rate decays to 3e-5
    np.testing.assert_array_less(np.abs(loc_mean - expected_loc), Z * loc_se + 3e-3)
    np.testing.assert_array_less(np.abs(scale_mean - expected_scale), Z * scale_se + 3e-3)
    # and every single run within 0.1 of it (over 10 standard deviations for the worst β)
    assert np.abs(locs - np.asarray(expected_loc)[:, None]).max() < 0.1
    assert np.abs(scales - np.asarray(expected_scale)[:, None]).max() < 0.1
    # larger β pulls q toward the prior N(0, 1): the mean shrinks to 0, the scale grows to 1,
    # and KL(q ‖ p) falls
    assert np.all(np.diff(loc_mean) < 0) and np.all(np.diff(scale_mean) > 0)
    kl = 0.5 * (loc_mean**2 + scale_mean**2 - 1.0) - np.log(scale_mean)
    assert np.all(np.diff(kl) < 0)
    # the formula's own check: β = 1 gives the exact posterior N(Σx / (n + 1), 1 / (n + 1))
    np.testing.assert_allclose(expected_scale[1], 1 / np.sqrt(N_DATA + 1), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# The number of particles: one population per particle count


@pytest.mark.slow
def test_a_sweep_over_particle_counts_is_one_program():
    # K sets the shape of every draw, so runs with different K cannot be vmapped together;
    # fit_population takes one objective per group and steps every group in one compiled loop
    seeds, steps = 16, 1000
    keys = jax.random.split(jax.random.key(3), 2 * seeds)
    optimizer = optax.adam(optax.cosine_decay_schedule(0.03, steps, alpha=1e-2))
    exact_loc, exact_scale = beta_elbo_optimum(1.0, X_NORMAL)  # β = 1: the posterior
    objectives = [vj.elbo(normal_model, normal_family, k, analytic_kl=False) for k in (1, 8)]
    groups = np.repeat([0, 1], seeds)
    result = vj.fit_population(
        objectives,
        {"loc": jnp.zeros(()), "log_scale": jnp.zeros(())},
        optimizer,
        keys,
        X_NORMAL,
        num_steps=steps,
        groups=groups,
        progress=False,
    )
    assert result.history.shape == (2 * seeds, steps)
    spread = {}
    for g, k in enumerate((1, 8)):
        locs = np.asarray(result.params["loc"], np.float64)[groups == g]
        scales = np.exp(np.asarray(result.params["log_scale"], np.float64))[groups == g]
        se = locs.std(ddof=1) / np.sqrt(seeds)
        assert abs(locs.mean() - float(exact_loc)) < Z * se + 3e-3
        assert np.abs(scales - float(exact_scale)).max() < 0.05
        spread[k] = locs.std(ddof=1)
    # eight draws per step: the gradient's variance falls 8-fold, the runs end closer together
    # (expected ratio of spreads about 1/√8 ≈ 0.35; with 16 seeds each spread is known to ±20%)
    assert spread[8] < 0.6 * spread[1], spread
