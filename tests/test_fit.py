"""The fit loop: conjugate recovery, no recompilation, minibatches, resume, non-finite guard."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import vijax as vj

X = jnp.asarray(np.random.default_rng(0).normal(1.3, 1.0, size=20), dtype=jnp.float32)


def model(x):
    mu = vj.sample("mu", dist.Normal(0.0, 1.0))
    with vj.plate("data", x.shape[0]):
        vj.sample("x", dist.Normal(mu, 1.0), obs=x)


FAMILY = vj.mean_field_normal(model)
OBJECTIVE = vj.elbo(model, FAMILY, num_particles=8)
OPTIMIZER = optax.adam(optax.cosine_decay_schedule(0.05, 4000, alpha=1e-3))
# Gradient noise sets how close the last iterate gets; 128 particles bring it well inside 1e-2.
PRECISE_OBJECTIVE = vj.elbo(model, FAMILY, num_particles=128)
PRECISE_OPTIMIZER = optax.adam(optax.cosine_decay_schedule(0.05, 3000, alpha=1e-3))


@pytest.mark.slow
def test_conjugate_normal_normal_posterior_is_recovered():
    params = FAMILY.init(jax.random.key(0), X)
    result = vj.fit(
        PRECISE_OBJECTIVE,
        params,
        PRECISE_OPTIMIZER,
        jax.random.key(1),
        X,
        num_steps=3000,
        progress=False,
    )
    n = X.shape[0]
    post_mean = float(X.sum() / (n + 1))
    post_std = float(np.sqrt(1.0 / (n + 1)))
    mean = float(result.params["loc"]["mu"])
    std = float(jnp.exp(result.params["log_scale"]["mu"]))
    # 1e-2 relative, as the issue asks; over seeds 0-5 the largest relative errors were 0.2%
    # (mean) and 0.6% (std).
    assert abs(mean - post_mean) < 1e-2 * abs(post_mean)
    assert abs(std - post_std) < 1e-2 * post_std
    assert result.history.shape == (3000,)
    assert np.all(np.isfinite(result.history))
    # the ELBO is below log p(x) and reaches it at the exact posterior (within MC noise)
    log_evidence = dist.MultivariateNormal(jnp.zeros(n), jnp.eye(n) + jnp.ones((n, n))).log_prob(X)
    assert result.history[-200:].mean() < float(log_evidence) + 0.05
    assert result.history[-200:].mean() > float(log_evidence) - 0.1


def _count_compilations(fn):
    events = []

    def listener(name, duration, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return len(events)


@pytest.mark.skipif(
    jax.config.jax_check_tracer_leaks, reason="the tracer-leak checker disables JAX's trace cache"
)
def test_second_fit_with_the_same_shapes_does_not_recompile():
    params = FAMILY.init(jax.random.key(0), X)

    def run(num_steps, key):
        return vj.fit(
            vj.elbo(model, FAMILY, num_particles=8),
            params,
            OPTIMIZER,
            key,
            X,
            num_steps=num_steps,
            chunk_size=100,
            progress=True,
        )

    first = _count_compilations(lambda: run(250, jax.random.key(1)))
    assert first >= 1
    # same shapes, other data values, another step count and key: nothing compiles
    second = _count_compilations(lambda: run(130, jax.random.key(2)))
    assert second == 0


@pytest.mark.skipif(
    jax.config.jax_check_tracer_leaks, reason="the tracer-leak checker disables JAX's trace cache"
)
def test_an_objective_rebuilt_with_the_same_estimators_does_not_recompile():
    params = FAMILY.init(jax.random.key(0), X)

    def run(estimators):
        family = vj.with_estimators(FAMILY, estimators)
        return vj.fit(
            vj.elbo(model, family, num_particles=4),
            params,
            OPTIMIZER,
            jax.random.key(1),
            X,
            num_steps=20,
            progress=False,
        )

    score = {"mu": vj.score_function(baseline=vj.running_mean())}
    assert _count_compilations(lambda: run(score)) >= 1
    rebuilt = {"mu": vj.score_function(baseline=vj.running_mean())}
    assert _count_compilations(lambda: run(rebuilt)) == 0
    # another choice is another program
    assert _count_compilations(lambda: run({"mu": vj.reparameterized()})) >= 1


def test_resumed_fit_equals_an_uninterrupted_one():
    params = FAMILY.init(jax.random.key(0), X)
    whole = vj.fit(
        OBJECTIVE,
        params,
        OPTIMIZER,
        jax.random.key(5),
        X,
        num_steps=300,
        chunk_size=64,
        progress=False,
    )
    part = vj.fit(
        OBJECTIVE,
        params,
        OPTIMIZER,
        jax.random.key(5),
        X,
        num_steps=170,
        chunk_size=64,
        progress=False,
    )
    rest = vj.fit(
        OBJECTIVE,
        None,
        OPTIMIZER,
        jax.random.key(99),
        X,
        num_steps=130,
        state=part.state,
        chunk_size=64,
        progress=False,
    )
    np.testing.assert_array_equal(np.concatenate([part.history, rest.history]), whole.history)
    for a, b in zip(jax.tree.leaves(rest.params), jax.tree.leaves(whole.params)):
        np.testing.assert_array_equal(a, b)
    assert int(rest.state.step) == 300


def test_minibatches_visit_every_datum_once_per_epoch():
    data = jnp.arange(12.0)

    def objective(params, key, batch):  # the value is the sum of the batch it was given
        return jnp.sum(batch) + 0.0 * params

    result = vj.fit(
        objective,
        jnp.zeros(()),
        optax.sgd(0.1),
        jax.random.key(0),
        num_steps=12,
        data=(data,),
        batch_size=3,
        progress=False,
    )
    per_epoch = result.history.reshape(3, 4).sum(axis=1)
    np.testing.assert_allclose(per_epoch, data.sum())
    # each epoch is a fresh permutation, not the same order every time
    assert not np.array_equal(result.history[:4], result.history[4:8])


@pytest.mark.slow
def test_minibatch_fit_recovers_the_posterior():
    n, batch = 200, 20
    x = jnp.asarray(np.random.default_rng(1).normal(-0.7, 1.0, size=n), dtype=jnp.float32)

    def minibatch_model(x_batch):
        mu = vj.sample("mu", dist.Normal(0.0, 1.0))
        with vj.plate("data", n, subsample_size=x_batch.shape[0]):
            vj.sample("x", dist.Normal(mu, 1.0), obs=x_batch)

    family = vj.mean_field_normal(minibatch_model)
    params = family.init(jax.random.key(0), x[:batch])
    optimizer = optax.adam(optax.cosine_decay_schedule(0.05, 3000, alpha=1e-2))
    result = vj.fit(
        vj.elbo(minibatch_model, family, 4),
        params,
        optimizer,
        jax.random.key(3),
        num_steps=3000,
        data=(x,),
        batch_size=batch,
        progress=False,
    )
    post_mean = float(x.sum() / (n + 1))
    # minibatch noise on the mean gradient: tolerance 0.03 (posterior std is 0.07)
    assert abs(float(result.params["loc"]["mu"]) - post_mean) < 0.03


def test_non_finite_objective_stops_with_the_step_and_keeps_the_last_good_state():
    def objective(params, key):
        # sqrt(1 − w) is NaN, with a NaN gradient, once the ascent pushes w past 1
        return -((params["w"] - 5.0) ** 2) + jnp.sqrt(1.0 - params["w"])

    with pytest.raises(vj.NonFiniteError, match=r"step \d+") as info:
        vj.fit(
            objective,
            {"w": jnp.array(0.0)},
            optax.sgd(0.05),
            jax.random.key(0),
            num_steps=1000,
            chunk_size=16,
            progress=False,
        )
    result = info.value.result
    # the kept parameters are those of the failing step: finite, and the objective is NaN there
    assert np.isfinite(float(result.params["w"]))
    assert np.isnan(float(objective(result.params, None)))
    assert np.all(np.isfinite(result.history))
    step = int(result.state.bad_step)
    assert f"step {step}" in str(info.value)
    assert len(result.history) == step
    assert "params['w']" in str(info.value)


def test_bad_inputs_are_refused_with_a_named_argument():
    params = FAMILY.init(jax.random.key(0), X)
    with pytest.raises(ValueError, match="argument 0"):
        vj.fit(
            OBJECTIVE,
            params,
            OPTIMIZER,
            jax.random.key(0),
            X.at[3].set(jnp.nan),
            num_steps=1,
            progress=False,
        )
    with pytest.raises(ValueError, match="num_steps"):
        vj.fit(OBJECTIVE, params, OPTIMIZER, jax.random.key(0), X, num_steps=-1)
    with pytest.raises(ValueError, match="batch_size"):
        vj.fit(
            OBJECTIVE, params, OPTIMIZER, jax.random.key(0), num_steps=1, data=(X,), batch_size=0
        )
    with pytest.raises(ValueError, match="leading lengths"):
        vj.fit(
            OBJECTIVE,
            params,
            OPTIMIZER,
            jax.random.key(0),
            num_steps=1,
            data=(X, X[:3]),
            batch_size=2,
        )
    with pytest.raises(ValueError, match="optimizer"):
        vj.fit(OBJECTIVE, params, "adam", jax.random.key(0), X, num_steps=1)


def test_running_mean_state_is_carried_by_fit():
    def bern_model():
        vj.sample("z", dist.Bernoulli(0.3))
        vj.factor("f", 0.0)

    def family(params):
        vj.sample(
            "z",
            dist.Bernoulli(logits=params),
            estimator=vj.score_function(baseline=vj.running_mean(0.9)),
        )

    result = vj.fit(
        vj.elbo(bern_model, family),
        jnp.array(0.0),
        optax.sgd(0.0),
        jax.random.key(0),
        num_steps=50,
        progress=False,
    )
    state = result.state.estimator_state["z"]
    assert int(state["count"]) == 50
    # with a frozen family the signal's mean is the ELBO; the EMA must be near it
    exact = float(jnp.log(0.5) * 0 + (0.5 * jnp.log(0.3 / 0.5) + 0.5 * jnp.log(0.7 / 0.5)))
    debiased = float(state["mean"]) / (1 - 0.9**50)
    assert abs(debiased - exact) < 0.3


def test_python_arguments_stay_static_under_fit():
    def shaped_model(x, num_groups):  # num_groups sizes an array: it must not be traced
        mu = vj.sample("mu", dist.Normal(jnp.zeros(num_groups), 1.0).to_event(1))
        with vj.plate("data", x.shape[0]):
            vj.sample("x", dist.Normal(mu.sum(), 1.0), obs=x)

    family = vj.mean_field_normal(shaped_model)
    params = family.init(jax.random.key(0), X, 3)
    assert params["loc"]["mu"].shape == (3,)
    result = vj.fit(
        vj.elbo(shaped_model, family),
        params,
        optax.adam(1e-2),
        jax.random.key(1),
        X,
        3,
        num_steps=20,
        progress=False,
    )
    assert np.all(np.isfinite(result.history))
