"""Populations whose runs differ in the program: the number of particles, the objective.

``vj.fit_population((objective_0, objective_1, ...), ..., groups=g)`` trains run ``r`` with
``objective[g[r]]``, all groups in one compiled loop. Each run must equal the same run done
alone by ``vj.fit`` with its objective and key. Tolerance: a vmapped step may fuse its sums
differently from the single run, so float32 results may differ by a few ulps per step; 45
Adam steps keep that below 1e-6 here, and 1e-5 relative still fails on any real difference
(another objective, particle count or key moves the parameters by 1e-2 or more, checked
below by asserting the groups really differ).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import vijax as vj

X = jnp.asarray(np.random.default_rng(0).normal(1.0, 1.0, 12), jnp.float32)


def model(x):
    mu = vj.sample("mu", dist.Normal(0.0, 1.0))
    with vj.plate("data", x.shape[0]):
        vj.sample("x", dist.Normal(mu, 1.0), obs=x)


def family(params, x):
    vj.sample("mu", dist.Normal(params["loc"], jnp.exp(params["log_scale"])))


PARAMS = {"loc": jnp.zeros(()), "log_scale": jnp.full((), -1.0)}
OPTIMIZER = optax.adam(0.05)
# a sweep over the number of particles, and three objectives, in one program each
BY_PARTICLES = (vj.iwae(model, family, 1), vj.iwae(model, family, 4), vj.iwae(model, family, 16))
BY_OBJECTIVE = (
    vj.elbo(model, family, 2, analytic_kl=False),
    vj.iwae(model, family, 8),
    vj.iwae_dreg(model, family, 8),
)


@pytest.mark.slow  # compiles four programs per case
@pytest.mark.parametrize("objectives", [BY_PARTICLES, BY_OBJECTIVE], ids=["particles", "kinds"])
def test_each_group_equals_its_runs_done_alone(objectives):
    groups = [2, 0, 1, 0, 2, 1]  # interleaved: the population puts the runs back in order
    keys = jax.random.split(jax.random.key(4), len(groups))
    population = vj.fit_population(
        objectives,
        PARAMS,
        OPTIMIZER,
        keys,
        X,
        num_steps=45,
        groups=groups,
        chunk_size=16,
        progress=False,
    )
    assert population.history.shape == (6, 45)
    for r, g in enumerate(groups):
        alone = vj.fit(objectives[g], PARAMS, OPTIMIZER, keys[r], X, num_steps=45, progress=False)
        for name in ("loc", "log_scale"):
            np.testing.assert_allclose(
                population.params[name][r], alone.params[name], rtol=1e-5, atol=1e-6
            )
        np.testing.assert_allclose(population.history[r], alone.history, rtol=1e-5, atol=1e-5)
    # the groups compute different things: run 1 (group 0) and run 2 (group 1) differ, and
    # with the same key, so does the same run under another group's objective
    other = vj.fit(objectives[1], PARAMS, OPTIMIZER, keys[1], X, num_steps=45, progress=False)
    assert abs(float(other.history[-1]) - float(population.history[1, -1])) > 1e-3


def test_groups_are_checked_and_named():
    keys = jax.random.split(jax.random.key(0), 4)
    common = dict(num_steps=1, progress=False)
    with pytest.raises(ValueError, match="groups must hold 4 ints"):
        vj.fit_population(BY_PARTICLES, PARAMS, OPTIMIZER, keys, X, groups=[0, 1, 2], **common)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        vj.fit_population(BY_PARTICLES, PARAMS, OPTIMIZER, keys, X, groups=[0, 1, 2, 3], **common)
    with pytest.raises(ValueError, match=r"no run uses objective\(s\) \[2\]"):
        vj.fit_population(BY_PARTICLES, PARAMS, OPTIMIZER, keys, X, groups=[0, 1, 1, 0], **common)
    with pytest.raises(ValueError, match="with 3 objectives, groups must give"):
        vj.fit_population(BY_PARTICLES, PARAMS, OPTIMIZER, keys, X, **common)
    with pytest.raises(ValueError, match="a single objective"):
        vj.fit_population(BY_PARTICLES[0], PARAMS, OPTIMIZER, keys, X, groups=[0] * 4, **common)


def test_groups_with_differently_shaped_baseline_states_are_refused():
    def discrete_model(x):
        z = vj.sample("z", dist.Bernoulli(0.4))
        vj.sample("x", dist.Normal(2.0 * z, 1.0), obs=x)

    def discrete_family(params, x):
        vj.sample("z", dist.Bernoulli(logits=params["logit"]))

    plain = vj.with_estimators(discrete_family, {"z": vj.score_function()})
    tracked = vj.with_estimators(discrete_family, {"z": vj.score_function(vj.running_mean())})
    objectives = (vj.elbo(discrete_model, plain), vj.elbo(discrete_model, tracked))
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="differently shaped baseline states"):
        vj.fit_population(
            objectives,
            {"logit": jnp.zeros(())},
            OPTIMIZER,
            keys,
            jnp.ones(()),
            num_steps=1,
            groups=[0, 1],
            progress=False,
        )
