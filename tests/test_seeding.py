"""The objectives' seed handler: one fold_in per keyed message, NumPyro's choice of messages."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import vijax as vj
from vijax.core.handlers import fold_in_seed
from vijax.objectives.programs import importance_traces

KEY = jax.random.key(0)


def _key_data(key):
    return np.asarray(jax.random.key_data(key))


def _keys_by_site(program, seeder, *args):
    tr = vj.trace(seeder(program, KEY)).get_trace(*args)
    return {name: site["kwargs"].get("rng_key") for name, site in tr.items()}


def _three_sites():
    a = vj.sample("a", dist.Normal(0.0, 1.0))
    b = vj.sample("b", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    c = vj.sample("c", dist.Normal(0.0, 1.0))
    return a, b, c


def test_nth_keyed_message_gets_fold_in_of_n():
    keys = _keys_by_site(_three_sites, fold_in_seed)
    for n, name in enumerate(["a", "b", "c"]):
        np.testing.assert_array_equal(_key_data(keys[name]), _key_data(jax.random.fold_in(KEY, n)))
    data = [_key_data(k).tobytes() for k in keys.values()]
    assert len(set(data)) == 3


def test_same_key_repeats_every_draw_and_calls_keep_no_state():
    seeded = fold_in_seed(_three_sites, KEY)
    first, second = seeded(), seeded()  # the counter restarts on every call
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)
    other = fold_in_seed(_three_sites, jax.random.key(1))()
    assert not np.allclose(first[1], other[1])
    jitted = jax.jit(lambda key: fold_in_seed(_three_sites, key)())(KEY)
    for x, y in zip(first, jitted):
        np.testing.assert_allclose(x, y)


def _mixed_program():
    # keyed: plate subsample, prng_key, latent; not keyed: observed, conditioned, substituted
    vj.sample("given", dist.Normal(0.0, 1.0))
    with vj.plate("data", 10, subsample_size=4):
        vj.sample("obs", dist.Normal(0.0, 1.0), obs=jnp.zeros(4))
    numpyro.prng_key()
    vj.sample("cond", dist.Normal(0.0, 1.0))
    vj.sample("latent", dist.Normal(0.0, 1.0))


def test_keyed_messages_are_numpyros():
    program = vj.substitute(vj.condition(_mixed_program, {"cond": 0.5}), {"given": 1.0})
    ours = _keys_by_site(program, fold_in_seed)
    theirs = _keys_by_site(program, numpyro.handlers.seed)
    assert {n for n, k in ours.items() if k is not None} == {
        n for n, k in theirs.items() if k is not None
    }
    assert {n for n, k in ours.items() if k is not None} == {"data", "latent"}
    # given sites consume no index: the subsample plate is message 0, the latent message 2
    # (message 1 is the unnamed prng_key)
    np.testing.assert_array_equal(_key_data(ours["data"]), _key_data(jax.random.fold_in(KEY, 0)))
    np.testing.assert_array_equal(_key_data(ours["latent"]), _key_data(jax.random.fold_in(KEY, 2)))


def test_start_continues_a_stream_and_hide_types_skip():
    keys = vj.trace(fold_in_seed(_three_sites, KEY, start=5)).get_trace()
    np.testing.assert_array_equal(
        _key_data(keys["a"]["kwargs"]["rng_key"]), _key_data(jax.random.fold_in(KEY, 5))
    )
    seeder = fold_in_seed(rng_seed=KEY)
    with seeder:
        _three_sites()
    assert seeder.count == 3

    def program():
        return numpyro.prng_key(), vj.sample("a", dist.Normal(0.0, 1.0))

    hidden, _ = fold_in_seed(program, KEY, hide_types=["prng_key"])()
    assert hidden is None
    tr = vj.trace(fold_in_seed(program, KEY, hide_types=["prng_key"])).get_trace()
    np.testing.assert_array_equal(
        _key_data(tr["a"]["kwargs"]["rng_key"]), _key_data(jax.random.fold_in(KEY, 0))
    )


def test_model_keys_continue_after_the_familys():
    def model():
        vj.sample("z", dist.Normal(0.0, 1.0))
        vj.plate("data", 100, subsample_size=5)

    def family(params):
        vj.sample("z", dist.Normal(params, 1.0))

    model_trace, family_trace = importance_traces(model, family, 0.0, KEY, (), {})
    np.testing.assert_array_equal(
        _key_data(family_trace["z"]["kwargs"]["rng_key"]), _key_data(jax.random.fold_in(KEY, 0))
    )
    np.testing.assert_array_equal(
        _key_data(model_trace["data"]["kwargs"]["rng_key"]),
        _key_data(jax.random.fold_in(KEY, 1)),
    )
    assert model_trace["z"]["value"] is family_trace["z"]["value"]


def test_objective_particles_and_sites_are_independent():
    # p and q are the same Normals, so log p − log q is exactly the factor z1 + z2 and the
    # 2-particle ELBO is v = (z1₁ + z2₁ + z1₂ + z2₂) / 2: four unit draws, variance 1 when
    # they are independent (a correlation ρ between any pair adds ρ / 2).
    def model():
        z1 = vj.sample("z1", dist.Normal(0.0, 1.0))
        z2 = vj.sample("z2", dist.Normal(0.0, 1.0))
        vj.factor("linear", z1 + z2)

    def family(params):
        vj.sample("z1", dist.Normal(params, 1.0))
        vj.sample("z2", dist.Normal(params, 1.0))

    objective = vj.elbo(model, family, num_particles=2, analytic_kl=False)
    num_keys = 4096
    keys = jax.random.split(jax.random.key(7), num_keys)
    value = vj.value_and_grad_estimate(objective)
    values = np.asarray(jax.vmap(lambda k: value(0.0, k)[0])(keys))
    # with n = 4096 keys the standard error of the sample variance is sqrt(2 / n) ≈ 0.022
    assert abs(values.mean()) < 0.1  # SE 1/64 ≈ 0.016
    assert abs(values.var() - 1.0) < 0.1  # ≈ 4.5 standard errors

    # the particles' draws themselves: correlation of particle 1's and particle 2's z1
    def draws(key):
        k1, k2 = jax.random.split(key)  # two particles' keys
        one = vj.trace(fold_in_seed(family, k1)).get_trace(0.0)
        two = vj.trace(fold_in_seed(family, k2)).get_trace(0.0)
        return jnp.stack([one["z1"]["value"], two["z1"]["value"], one["z2"]["value"]])

    z = np.asarray(jax.vmap(draws)(keys))
    corr = np.corrcoef(z.T)
    # sample correlations of independent draws have standard error 1/sqrt(n) ≈ 0.016
    assert abs(corr[0, 1]) < 0.07  # across particles
    assert abs(corr[0, 2]) < 0.07  # across sites of one particle
