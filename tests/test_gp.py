"""Sparse variational GPs: identities against exact references, estimators, natural gradients,
minibatches, prediction and errors.

Identities run in float64 (``jax.enable_x64`` as a context, restored afterwards). Statistical
checks follow ``tests/test_estimators.py``: ``|mean − exact| < Z · SE + atol`` per coordinate
with ``Z = 4.5`` (a two-sided normal tail of 7e-6 per coordinate; fewer than 60 coordinates are
checked here, so the false-failure budget is below 5e-4 for fresh seeds; the seeds are fixed).
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import vijax as vj
from vijax.models import gp

Z_SCORE = 4.5
NUM_DATA, NUM_INDUCING = 40, 8
# One configuration shared by several tests, so that their compiled programs are shared too.
GAUSSIAN = gp.svgp(gp.RBF(ard=True), gp.Gaussian(), NUM_INDUCING)


def _data(seed=0, num_data=NUM_DATA):
    """Two input dimensions, a smooth function plus noise (float64 inside an x64 context)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2.0, 2.0, size=(num_data, 2))
    y = np.sin(2.0 * X[:, 0]) + 0.3 * X[:, 1] + 0.1 * rng.normal(size=num_data)
    return jnp.asarray(X), jnp.asarray(y)


def _random_q(params, seed=1):
    """``params`` with an arbitrary ``q(u)``: random mean, random lower-triangular scale."""
    rng = np.random.default_rng(seed)
    M = params["inducing"]["mean"].shape[0]
    inducing = {
        "mean": jnp.asarray(rng.normal(size=M)),
        "scale": jnp.asarray(np.tril(0.4 * rng.normal(size=(M, M)))),
    }
    return {**params, "inducing": inducing}


def _hyperparameters(svgp, X, y, key=0):
    """Initial parameters with non-default hyperparameters (lengthscales, noise)."""
    params = svgp.init(jax.random.key(key), X, y)
    kernel = svgp.kernel.init(X.shape[1], variance=1.3, lengthscale=jnp.array([0.7, 1.9]))
    likelihood = params["hyperparameters"]["likelihood"]
    if isinstance(svgp.likelihood, gp.Gaussian):
        likelihood = svgp.likelihood.init(variance=0.05)
    hyper = {**params["hyperparameters"], "kernel": kernel, "likelihood": likelihood}
    return {**params, "hyperparameters": hyper}


@functools.cache
def _value_and_grad(objective):
    """One jitted estimator per (equal) objective, compiled once per input types."""
    return jax.jit(vj.value_and_grad_estimate(objective))


# ----------------------------------------------------------------------------------------------
# Gaussian-likelihood identities
# ----------------------------------------------------------------------------------------------


def test_collapsed_bound_with_inducing_inputs_at_the_data_is_the_exact_marginal_likelihood():
    with jax.enable_x64(True):
        X, y = _data()
        svgp = gp.svgp(gp.RBF(ard=True), gp.Gaussian(), num_inducing=NUM_DATA)
        params = _hyperparameters(svgp, X, y)
        params["hyperparameters"]["inducing_inputs"] = X
        exact = float(svgp.exact_log_marginal_likelihood(params, X, y))
        collapsed = float(svgp.collapsed_elbo(params, X, y))
        assert abs(collapsed - exact) < 1e-3 * abs(exact), (collapsed, exact)
        # with fewer inducing points the bound is strictly looser
        fewer = gp.svgp(gp.RBF(ard=True), gp.Gaussian(), num_inducing=5)
        params5 = {**params, "hyperparameters": {**params["hyperparameters"]}}
        params5["hyperparameters"]["inducing_inputs"] = X[:5]
        assert float(fewer.collapsed_elbo(params5, X, y)) < exact - 1.0


@pytest.mark.parametrize("whiten", [True, False])
def test_one_natural_gradient_step_of_size_one_reaches_the_collapsed_bound(whiten):
    with jax.enable_x64(True):
        X, y = _data()
        svgp = GAUSSIAN if whiten else gp.svgp(gp.RBF(ard=True), gp.Gaussian(), 8, whiten=False)
        params = _random_q(_hyperparameters(svgp, X, y))
        value_and_grad = _value_and_grad(svgp.elbo())
        before, grads = value_and_grad(params, jax.random.key(0), X, y)
        collapsed = float(svgp.collapsed_elbo(params, X, y))
        assert float(before) < collapsed - 1.0  # far from the optimum to start with
        optimizer = gp.natural_gradients(1.0)  # hyperparameters and Z fixed
        state = optimizer.init(params)
        # one compiled update (op by op, each of its operations would compile on its own)
        update = jax.jit(optimizer.update)
        updates, state = update(jax.tree.map(jnp.negative, grads), state, params)
        after, _ = value_and_grad(optax.apply_updates(params, updates), jax.random.key(0), X, y)
        assert abs(float(after) - collapsed) < 1e-8 * abs(collapsed), (float(after), collapsed)
        assert int(state.inducing.halvings) == 0 and int(state.inducing.skipped) == 0
        # the hyperparameters did not move
        unchanged = jax.tree.map(
            jnp.array_equal, updates["hyperparameters"], updates["hyperparameters"]
        )
        assert all(jax.tree.leaves(unchanged))
        assert all(not bool(jnp.any(u)) for u in jax.tree.leaves(updates["hyperparameters"]))


def test_svgp_elbo_is_the_closed_form_bound_and_never_exceeds_the_exact_evidence():
    with jax.enable_x64(True):
        X, y = _data()
        svgp = GAUSSIAN

        def objective(params):
            return _value_and_grad(svgp.elbo())(params, jax.random.key(0), X, y)[0]

        base = _hyperparameters(svgp, X, y)
        exact = float(svgp.exact_log_marginal_likelihood(base, X, y))
        noise = float(svgp.likelihood.variance(base["hyperparameters"]["likelihood"]))
        for seed in range(3):
            params = _random_q(base, seed)
            value = float(objective(params))
            # closed form: Σ_i log N(y_i; μ_i, σ²) − σ_i²/(2σ²) − KL(N(m, S) ‖ N(0, I))
            mean, variance = svgp.predict_f(params, X)
            expected_log_lik = dist.Normal(mean, np.sqrt(noise)).log_prob(y) - variance / (
                2 * noise
            )
            m, L = svgp.inducing_distribution(params)
            kl = dist.kl_divergence(
                dist.MultivariateNormal(m, scale_tril=L),
                dist.MultivariateNormal(jnp.zeros_like(m), scale_tril=jnp.eye(m.shape[0])),
            )
            closed_form = float(jnp.sum(expected_log_lik) - kl)
            assert value == pytest.approx(closed_form, rel=1e-10)
            assert value < exact
        optimal = svgp.optimal_inducing(base, X, y)
        at_optimum = float(objective(optimal))
        assert at_optimum == pytest.approx(float(svgp.collapsed_elbo(base, X, y)), rel=1e-10)
        assert at_optimum <= exact


def test_predictions_with_inducing_inputs_at_the_data_are_the_exact_gp_posterior():
    with jax.enable_x64(True):
        X, y = _data()
        X_new = jnp.asarray(np.random.default_rng(5).uniform(-2.5, 2.5, size=(7, 2)))
        # a tiny jitter: the identity holds as the jitter goes to zero
        svgp = gp.svgp(gp.RBF(ard=True), gp.Gaussian(), NUM_DATA, whiten=False, jitter=1e-10)
        params = _hyperparameters(svgp, X, y)
        params["hyperparameters"]["inducing_inputs"] = X
        params = svgp.optimal_inducing(params, X, y)
        mean, variance = svgp.predict_f(params, X_new)
        hyper = params["hyperparameters"]
        noise = svgp.likelihood.variance(hyper["likelihood"])

        @jax.jit  # one compiled reference instead of a compilation per operation
        def exact_posterior(hyper):
            # exact GP regression: μ* = K*ₓ (K + σ²I)⁻¹ y, σ*² = k** − K*ₓ (K + σ²I)⁻¹ Kₓ*
            K = svgp.kernel(hyper["kernel"], X) + noise * jnp.eye(NUM_DATA)
            K_star = svgp.kernel(hyper["kernel"], X_new, X)
            exact_mean = K_star @ jnp.linalg.solve(K, y)
            exact_var = svgp.kernel.diag(hyper["kernel"], X_new) - jnp.sum(
                K_star * jnp.linalg.solve(K, K_star.T).T, axis=1
            )
            return exact_mean, exact_var

        exact_mean, exact_var = exact_posterior(hyper)
        np.testing.assert_allclose(mean, exact_mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(variance, exact_var, rtol=1e-3, atol=1e-5)
        _, y_var = svgp.predict_y(params, X_new)
        np.testing.assert_allclose(y_var, exact_var + noise, rtol=1e-3, atol=1e-5)
        log_density = svgp.log_predictive_density(params, X_new, exact_mean)
        np.testing.assert_allclose(log_density, -0.5 * jnp.log(2 * jnp.pi * y_var), rtol=1e-8)


# ----------------------------------------------------------------------------------------------
# Expectations: quadrature, Monte Carlo, minibatches
# ----------------------------------------------------------------------------------------------


def _mc(objective, params, num_draws, *args, seed=3):
    """Means and standard errors of the value and of the ``q(u)``-mean gradient."""
    value_and_grad = vj.value_and_grad_estimate(objective)

    @jax.jit
    def draws(keys):
        def one(key):
            value, grads = value_and_grad(params, key, *args)
            return jnp.concatenate([value[None], grads["inducing"]["mean"]])

        return jax.vmap(one)(keys)

    samples = np.asarray(draws(jax.random.split(jax.random.key(seed), num_draws)))
    return samples.mean(0), samples.std(0, ddof=1) / np.sqrt(num_draws)


def _assert_unbiased(mean, se, exact, atol, label):
    error = np.abs(mean - exact)
    assert np.all(error < Z_SCORE * se + atol), f"{label}: {mean} ± {se} vs {exact}"


@pytest.mark.parametrize(
    "expectation", [gp.local_reparameterized(), vj.reparameterized()], ids=["local", "through_u"]
)
def test_monte_carlo_elbo_and_gradient_are_unbiased_for_the_quadrature_ones(expectation):
    with jax.enable_x64(True):
        X, _ = _data()
        counts = jnp.asarray(np.random.default_rng(2).poisson(np.exp(np.sin(X[:, 0]))), float)
        exact_svgp = gp.svgp(
            gp.RBF(ard=True), gp.Poisson(), NUM_INDUCING, expectation=gp.gauss_hermite(40)
        )
        params = _random_q(_hyperparameters(exact_svgp, X, counts), seed=4)
        params["inducing"]["scale"] = 0.5 * params["inducing"]["scale"]
        value, grads = _value_and_grad(exact_svgp.elbo())(params, jax.random.key(0), X, counts)
        exact = np.concatenate([[float(value)], np.asarray(grads["inducing"]["mean"])])
        mc_svgp = gp.svgp(gp.RBF(ard=True), gp.Poisson(), NUM_INDUCING, expectation=expectation)
        mean, se = _mc(mc_svgp.elbo(), params, 4000, X, counts)
        _assert_unbiased(mean, se, exact, 1e-6, type(expectation).__name__)


def test_minibatch_elbo_and_gradient_are_unbiased_for_the_full_data_ones():
    with jax.enable_x64(True):
        X, y = _data()
        full = GAUSSIAN
        params = _random_q(_hyperparameters(full, X, y), seed=6)
        value, grads = _value_and_grad(full.elbo())(params, jax.random.key(0), X, y)
        exact = np.concatenate([[float(value)], np.asarray(grads["inducing"]["mean"])])
        minibatch = gp.svgp(gp.RBF(ard=True), gp.Gaussian(), NUM_INDUCING, batch_size=7)
        mean, se = _mc(minibatch.elbo(), params, 3000, X, y)
        _assert_unbiased(mean, se, exact, 1e-8, "minibatch")
        # the minibatch estimate really varies (the test could fail)
        assert se[0] > 1e-3


def _compiled_counts(fn, *args):
    """LAPACK calls, dots and xors (threefry: random bits) in ``fn``'s compiled HLO."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    calls = re.findall(r'custom_call_target="([^"]+)"', text)
    ops = re.findall(r"= \S+ ([a-z][\w-]*)\(", text)
    return {
        "cholesky": sum("potrf" in c for c in calls),
        "triangular_solve": sum("trsm" in c for c in calls),
        "dot": ops.count("dot"),
        "xor": ops.count("xor"),
    }


@pytest.mark.slow
def test_the_compiled_svgp_step_does_the_work_of_a_hand_written_one():
    """Full batch, whitened, Gaussian: no more factorizations, solves and products than the
    hand-written bound, and no random draw (the f terms cancel exactly, so neither ``u``'s
    draw nor ``Pᵀu`` may survive compilation)."""
    with jax.enable_x64(True):
        X, y = _data()
        params = _random_q(_hyperparameters(GAUSSIAN, X, y), seed=3)

        def hand(params):
            hyper = params["hyperparameters"]
            kernel, Z = hyper["kernel"], hyper["inducing_inputs"]
            L = jnp.linalg.cholesky(GAUSSIAN.kernel(kernel, Z) + 1e-6 * jnp.eye(NUM_INDUCING))
            A = jax.scipy.linalg.solve_triangular(L, GAUSSIAN.kernel(kernel, Z, X), lower=True)
            m, Lq = GAUSSIAN.inducing_distribution(params)
            mean = A.T @ m
            var = GAUSSIAN.kernel.diag(kernel, X) - jnp.sum(A**2, 0)
            var = jnp.maximum(var, 1e-12) + jnp.sum((Lq.T @ A) ** 2, 0)
            noise = GAUSSIAN.likelihood.variance(hyper["likelihood"])
            expected = -0.5 * jnp.log(2 * jnp.pi * noise) - 0.5 * ((y - mean) ** 2 + var) / noise
            kl = 0.5 * (m @ m + jnp.sum(Lq**2) - NUM_INDUCING) - jnp.sum(jnp.log(jnp.diag(Lq)))
            return jnp.sum(expected) - kl

        estimate = vj.value_and_grad_estimate(GAUSSIAN.elbo())
        value, grads = estimate(params, jax.random.key(0), X, y)
        hand_value, hand_grads = jax.value_and_grad(hand)(params)
        assert float(value) == pytest.approx(float(hand_value), rel=1e-10)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(hand_grads)):
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
        ours = _compiled_counts(estimate, params, jax.random.key(0), X, y)
        floor = _compiled_counts(jax.value_and_grad(hand), params)
        assert ours["cholesky"] == floor["cholesky"] == 1, (ours, floor)
        assert ours["triangular_solve"] <= floor["triangular_solve"], (ours, floor)
        assert ours["dot"] <= floor["dot"], (ours, floor)
        assert ours["xor"] == floor["xor"] == 0, (ours, floor)


def test_the_f_conditional_kl_is_zero_only_for_the_very_same_distribution():
    loc, scale = jnp.array([0.3, -1.0]), jnp.array([0.5, 2.0])
    same = gp.sparse.GPConditional(loc, scale)
    np.testing.assert_array_equal(dist.kl_divergence(same, same), jnp.zeros(2))
    other = gp.sparse.GPConditional(loc + 1.0, 2.0 * scale)
    expected = dist.kl_divergence(dist.Normal(loc, scale), dist.Normal(loc + 1.0, 2.0 * scale))
    np.testing.assert_allclose(dist.kl_divergence(same, other), expected, rtol=1e-6)
    assert float(jnp.min(expected)) > 0.1  # the formula, not a zero, for distinct ones


def test_quadrature_strategy_from_outside_and_its_errors():
    with jax.enable_x64(True):
        X, y = _data()
        params = _random_q(_hyperparameters(GAUSSIAN, X, y), seed=2)
        # the family with its strategy chosen from outside (60 nodes instead of 2), inside
        # the ELBO's particle block (2 particles: quadrature sites drawn by the estimator)
        family60 = vj.with_estimators(GAUSSIAN.family, {"f": gp.gauss_hermite(60)})
        objective60 = gp.quadrature(vj.elbo(GAUSSIAN.model, family60, num_particles=2))
        value, _ = _value_and_grad(objective60)(params, jax.random.key(1), X, y)
        # against the closed form Σ_i log N(y_i; μ_i, σ²) − σ_i²/(2σ²) − KL
        noise = GAUSSIAN.likelihood.variance(params["hyperparameters"]["likelihood"])
        mean, variance = GAUSSIAN.predict_f(params, X)
        m, L = GAUSSIAN.inducing_distribution(params)
        kl = 0.5 * (jnp.sum(L**2) + m @ m - m.shape[0]) - jnp.sum(jnp.log(jnp.diagonal(L)))
        expected = dist.Normal(mean, jnp.sqrt(noise)).log_prob(y) - variance / (2 * noise)
        assert float(value) == pytest.approx(float(jnp.sum(expected) - kl), rel=1e-10)
        # without the quadrature wrapper the strategy refuses to be drawn
        bare = vj.elbo(GAUSSIAN.model, GAUSSIAN.family)
        with pytest.raises(ValueError, match="quadrature"):
            jax.eval_shape(vj.value_and_grad_estimate(bare), params, jax.random.key(0), X, y)

    # a marked site with batch axes outside a plate is refused (per-element quadrature would
    # need conditionally independent elements)
    def family(loc):
        vj.sample("z", dist.Normal(loc, 1.0), estimator=gp.gauss_hermite(5))

    def objective(loc, key):
        tr = vj.trace(vj.seed(family, key)).get_trace(loc)
        return jnp.sum(tr["z"]["value"] ** 2)

    with pytest.raises(ValueError, match=r"vj\.plate"):
        gp.quadrature(objective)(jnp.zeros(3), jax.random.key(0))
    with pytest.raises(ValueError, match="num_points"):
        gp.gauss_hermite(0)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_natural_gradients_with_adam_fit_a_classifier():
    with jax.enable_x64(True):
        X, _ = _data(seed=7, num_data=60)
        labels = (jnp.sin(2.0 * X[:, 0]) > 0).astype(jnp.float64)
        svgp = gp.svgp(gp.Matern52(ard=True), gp.Bernoulli("logit"), NUM_INDUCING)
        params = svgp.init(jax.random.key(0), X, labels)
        optimizer = gp.natural_gradients(0.3, optax.adam(0.03))
        result = vj.fit(
            svgp.elbo(),
            params,
            optimizer,
            jax.random.key(1),
            X,
            labels,
            num_steps=150,
            progress=False,
        )
        assert np.all(np.isfinite(result.history))
        assert result.history[-10:].mean() > result.history[:10].mean() + 10.0
        metrics = svgp.evaluate(result.params, X, labels)
        assert float(metrics["error_rate"]) < 0.1, metrics


def test_the_natural_gradient_psd_guard_halves_a_step_that_breaks_positive_definiteness():
    with jax.enable_x64(True):
        # From a concentrated q(u) (precision 10⁴ I) a step of size γ gives the precision
        # (1 − γ)·10⁴ I + γ P*, indefinite for γ = 3 and 1.5; the guard halves twice, to 0.75.
        X, y = _data()
        params = _hyperparameters(GAUSSIAN, X, y)
        params["inducing"]["scale"] = jnp.diag(jnp.full(NUM_INDUCING, -4.6))  # S ≈ 1e-4 I
        value_and_grad = _value_and_grad(GAUSSIAN.elbo())
        before, grads = value_and_grad(params, jax.random.key(0), X, y)
        ascent = jax.tree.map(jnp.negative, grads["inducing"])

        @functools.partial(jax.jit, static_argnames="max_halvings")
        def step(step_size, max_halvings=10):
            # a schedule closing over a traced step size: one compilation for every size
            natural = gp.natural_gradient(lambda count: step_size, max_halvings=max_halvings)
            state = natural.init(params["inducing"])
            updates, state = natural.update(ascent, state, params["inducing"])
            return optax.apply_updates(params["inducing"], updates), state

        guarded, state = step(3.0)
        assert int(state.halvings) == 2 and int(state.skipped) == 0
        # the guarded step is the step of size 3/4, and it improves the bound
        direct, direct_state = step(0.75)
        assert int(direct_state.halvings) == 0
        for a, b in zip(jax.tree.leaves(guarded), jax.tree.leaves(direct)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        after, _ = value_and_grad({**params, "inducing": guarded}, jax.random.key(0), X, y)
        assert float(after) > float(before)
        # with no halving allowed the step is skipped and q(u) is left as it was
        skipped, state = step(3.0, max_halvings=0)
        assert int(state.skipped) == 1
        for a, b in zip(jax.tree.leaves(skipped), jax.tree.leaves(params["inducing"])):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "likelihood",
    [gp.Gaussian(), gp.Bernoulli("logit"), gp.Bernoulli("probit"), gp.Poisson(), gp.StudentT(5.0)],
    ids=lambda likelihood: repr(likelihood),
)
def test_likelihood_predictions_match_numerical_integration(likelihood):
    """``predict`` and ``log_predictive`` against a fine grid over ``f`` (trapezoid rule)."""
    with jax.enable_x64(True):
        params = likelihood.init()
        mean, variance = jnp.array([-0.7, 0.4]), jnp.array([0.3, 1.2])
        bernoulli = isinstance(likelihood, gp.Bernoulli)
        y = jnp.array([1.0, 0.0]) if bernoulli else jnp.array([0.0, 2.0])

        @jax.jit
        def computed_and_exact(mean, variance, y):
            grid = jnp.linspace(-12.0, 12.0, 20001)[:, None]
            weights = jnp.exp(dist.Normal(mean, jnp.sqrt(variance)).log_prob(grid))

            def integral(values):
                return jnp.trapezoid(weights * values, grid[:, 0], axis=0)

            conditional = likelihood.distribution(params, grid)
            exact_log = jnp.log(integral(jnp.exp(conditional.log_prob(y))))
            if bernoulli:
                exact_mean = integral(jnp.exp(conditional.log_prob(1.0)))
                exact_var = exact_mean * (1 - exact_mean)
            else:
                exact_mean = integral(conditional.mean)
                second = integral(conditional.variance + conditional.mean**2)
                exact_var = second - exact_mean**2
            computed = (
                likelihood.log_predictive(params, y, mean, variance),
                *likelihood.predict(params, mean, variance),
            )
            return computed, (exact_log, exact_mean, exact_var)

        computed, exact = computed_and_exact(mean, variance, y)
        for name, a, b in zip(("log_predictive", "mean", "variance"), computed, exact):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9, err_msg=name)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_bad_inputs_give_clear_errors_naming_the_argument():
    X, y = _data()
    svgp = gp.svgp(gp.RBF(ard=True), gp.Gaussian(), NUM_INDUCING)
    params = svgp.init(jax.random.key(0), X, y)
    objective = vj.value_and_grad_estimate(svgp.elbo())
    # mismatched input dimensions: data with 3 columns against a 2-column model
    X3 = jnp.concatenate([X, X[:, :1]], axis=1)
    with pytest.raises(ValueError, match="inducing_inputs must have shape"):
        objective(params, jax.random.key(0), X3, y)
    with pytest.raises(ValueError, match="inducing_inputs must have shape"):
        svgp.predict_f(params, X3)
    # inducing inputs of the wrong dimension in params
    bad = {**params, "hyperparameters": {**params["hyperparameters"]}}
    bad["hyperparameters"]["inducing_inputs"] = jnp.zeros((NUM_INDUCING, 3))
    with pytest.raises(ValueError, match="inducing_inputs"):
        svgp.predict_f(bad, X)
    with pytest.raises(ValueError, match="inducing_inputs"):
        svgp.init(jax.random.key(0), X, y, inducing_inputs=jnp.zeros((NUM_INDUCING, 3)))
    # an ARD kernel with the wrong number of lengthscales names the hyperparameter
    bad = {**params, "hyperparameters": {**params["hyperparameters"]}}
    bad["hyperparameters"]["kernel"] = gp.RBF(ard=True).init(3)
    with pytest.raises(ValueError, match=r"'kernel\.lengthscale' has shape"):
        svgp.predict_f(bad, X)
    # targets that do not match X, or fall outside the likelihood's support
    with pytest.raises(ValueError, match="y must have shape"):
        objective(params, jax.random.key(0), X, y[:-1])
    with pytest.raises(ValueError, match="only 0 and 1"):
        gp.svgp(gp.RBF(), gp.Bernoulli(), 4).init(jax.random.key(0), X, y)
    # non-finite inputs
    with pytest.raises(ValueError, match="X contains NaN"):
        svgp.init(jax.random.key(0), X.at[3, 1].set(jnp.nan), y)
    with pytest.raises(ValueError, match="y contains NaN"):
        svgp.evaluate(params, X, y.at[0].set(jnp.inf))
    with pytest.raises(ValueError, match="argument 0 contains NaN"):
        vj.fit(
            svgp.elbo(),
            params,
            optax.adam(0.01),
            jax.random.key(0),
            X.at[0, 0].set(jnp.nan),
            y,
            num_steps=1,
            progress=False,
        )
    # more inducing points than rows
    with pytest.raises(ValueError, match="num_inducing=50"):
        gp.svgp(gp.RBF(), gp.Gaussian(), 50).init(jax.random.key(0), X, y)
    with pytest.raises(ValueError, match="params must be a dict"):
        svgp.predict_f(params["inducing"], X)
    with pytest.raises(ValueError, match="expectation must be a strategy"):
        gp.svgp(gp.RBF(), gp.Gaussian(), 4, expectation="quadrature")


def test_a_cholesky_failure_names_the_jitter_it_tried():
    X, y = _data()
    duplicated = jnp.concatenate([X[:4], X[:4]])  # K_zz is singular
    svgp = gp.svgp(gp.RBF(ard=True), gp.Gaussian(), NUM_INDUCING, whiten=False, jitter=0.0)
    with pytest.raises(gp.CholeskyError, match=r"K_zz \(8 × 8\) failed with jitter 0"):
        svgp.init(jax.random.key(0), X, y, inducing_inputs=duplicated)
    whitened = gp.svgp(gp.RBF(ard=True), gp.Gaussian(), NUM_INDUCING, jitter=0.0)
    params = whitened.init(jax.random.key(0), X, y, inducing_inputs=duplicated)
    with pytest.raises(gp.CholeskyError, match="jitter 0"):
        whitened.predict_f(params, X)
    with pytest.raises(gp.CholeskyError, match="jitter 0"):
        whitened.collapsed_elbo(params, X, y)
    # the default jitter handles the duplicates
    fine = gp.svgp(gp.RBF(ard=True), gp.Gaussian(), NUM_INDUCING, jitter=1e-4)
    mean, variance = fine.predict_f(params, X)
    assert np.all(np.isfinite(np.asarray(mean))) and np.all(np.asarray(variance) > 0)
