"""Programs: the eight handlers, log-densities of programs, plates and distrax sites.

Every check compares against a closed form written here with plain ``jnp`` formulas, or against
NumPyro's own implementation (``numpyro.handlers``, ``numpyro.infer.util.log_density``).
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro import handlers as numpyro_handlers
from numpyro.infer.util import log_density as numpyro_log_density

import vijax as vj

X = jnp.array([0.5, -1.0, 2.0])


def normal_log_pdf(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi)


def model(x):
    mu = vj.sample("mu", dist.Normal(0.0, 2.0))
    with vj.plate("data", 3):
        vj.sample("x", dist.Normal(mu, 1.0), obs=x)
    return mu


def closed_form_joint(mu, x):
    """log N(mu; 0, 2) + Σ_i log N(x_i; mu, 1)."""
    return normal_log_pdf(mu, 0.0, 2.0) + jnp.sum(normal_log_pdf(x, mu, 1.0))


def get_trace(program, key, *args):
    return vj.trace(vj.seed(program, key)).get_trace(*args)


# ----------------------------------------------------------------------------------------------
# log_density
# ----------------------------------------------------------------------------------------------


def test_log_density_equals_closed_form_and_numpyro():
    for mu in (0.3, -1.7):
        total, terms = vj.log_density(model, {"mu": mu}, X)
        expected = closed_form_joint(mu, X)
        np.testing.assert_allclose(total, expected, rtol=1e-6)
        np.testing.assert_allclose(terms["mu"], normal_log_pdf(mu, 0.0, 2.0), rtol=1e-6)
        np.testing.assert_allclose(terms["x"], jnp.sum(normal_log_pdf(X, mu, 1.0)), rtol=1e-6)
        reference, _ = numpyro_log_density(model, (X,), {}, {"mu": mu})
        np.testing.assert_allclose(total, reference, rtol=1e-6)


def test_log_density_under_jit_and_vmap():
    mus = jnp.array([-1.0, 0.0, 2.5])
    batched = jax.jit(jax.vmap(lambda mu: vj.log_density(model, {"mu": mu}, X)[0]))(mus)
    np.testing.assert_allclose(
        batched, jax.vmap(lambda mu: closed_form_joint(mu, X))(mus), rtol=1e-6
    )


def test_log_density_counts_factor_and_ignores_deterministic():
    def with_factor(x):
        mu = model(x)
        vj.deterministic("twice", 2 * mu)
        vj.factor("penalty", -0.7 * mu**2)

    total, terms = vj.log_density(with_factor, {"mu": 0.4}, X)
    np.testing.assert_allclose(total, closed_form_joint(0.4, X) - 0.7 * 0.16, rtol=1e-6)
    assert "twice" not in terms
    np.testing.assert_allclose(terms["penalty"], -0.7 * 0.16, rtol=1e-6)


def test_log_density_scalar_observation_is_shared_by_the_plate():
    # a scalar broadcast to the plate is N observations of the same value (NumPyro's rule)
    total, _ = vj.log_density(model, {"mu": 0.3}, 1.5)
    np.testing.assert_allclose(total, closed_form_joint(0.3, jnp.full(3, 1.5)), rtol=1e-6)


def test_log_density_missing_latent_value_names_the_site():
    with pytest.raises(ValueError, match="'mu'"):
        vj.log_density(model, {}, X)


def test_log_density_unknown_value_name_names_the_site():
    with pytest.raises(ValueError, match="'nu'"):
        vj.log_density(model, {"mu": 0.0, "nu": 1.0}, X)


@pytest.mark.parametrize(
    "obs", [jnp.ones((3, 1)), jnp.ones(4)], ids=["column-against-plate", "wrong-length"]
)
def test_log_density_refuses_observation_shape_mismatch(obs):
    # (3, 1) against a plate of 3 would silently broadcast to a 3 x 3 log-density
    with pytest.raises(ValueError, match="site 'x'"):
        vj.log_density(model, {"mu": 0.0}, obs)


def test_log_density_refuses_event_shape_mismatch():
    def simplex_model(p):
        vj.sample("p", dist.Dirichlet(jnp.ones(3)), obs=p)

    with pytest.raises(ValueError, match="site 'p'"):
        vj.log_density(simplex_model, {}, jnp.full(4, 0.25))
    # the right shape is accepted: Dirichlet(1, 1, 1) has density Γ(3) = 2 on the simplex
    total, _ = vj.log_density(simplex_model, {}, jnp.array([0.2, 0.3, 0.5]))
    np.testing.assert_allclose(total, jnp.log(2.0), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# The eight handlers
# ----------------------------------------------------------------------------------------------


def test_seed_is_reproducible_and_matches_numpyro():
    key = jax.random.key(3)
    tr = get_trace(model, key, X)
    again = get_trace(model, key, X)
    reference = numpyro_handlers.trace(numpyro_handlers.seed(model, key)).get_trace(X)
    other = get_trace(model, jax.random.key(4), X)
    assert float(tr["mu"]["value"]) == float(again["mu"]["value"])
    assert float(tr["mu"]["value"]) == float(reference["mu"]["value"])
    assert float(tr["mu"]["value"]) != float(other["mu"]["value"])


def test_seed_draws_follow_the_prior_under_vmap():
    # mu ~ N(0, 2): sample mean of n = 4000 draws has SE 2 / sqrt(n) ≈ 0.032; sample variance
    # has SE 4 sqrt(2 / n) ≈ 0.089. 4 SE each: false-failure probability < 2 · 6.4e-5.
    keys = jax.random.split(jax.random.key(0), 4000)
    draws = jax.vmap(lambda k: vj.seed(model, k)(X))(keys)
    assert abs(float(draws.mean())) < 4 * 2 / np.sqrt(4000)
    assert abs(float(draws.var()) - 4.0) < 4 * 4 * np.sqrt(2 / 4000)


def test_trace_records_values_flags_and_plates():
    tr = get_trace(model, jax.random.key(0), X)
    assert list(tr) == ["mu", "data", "x"]
    assert tr["mu"]["type"] == "sample" and not tr["mu"]["is_observed"]
    assert tr["x"]["is_observed"]
    np.testing.assert_array_equal(tr["x"]["value"], X)
    assert tr["data"]["type"] == "plate"
    assert [frame.name for frame in tr["x"]["cond_indep_stack"]] == ["data"]
    assert tr["mu"]["cond_indep_stack"] == []
    # the recorded distribution is the model's at the drawn value
    mu = tr["mu"]["value"]
    np.testing.assert_allclose(tr["x"]["fn"].log_prob(X), normal_log_pdf(X, mu, 1.0), rtol=1e-6)


def test_condition_observes_the_site_like_numpyro():
    conditioned = vj.condition(model, {"mu": 0.7})
    tr = get_trace(conditioned, jax.random.key(0), X)
    reference = numpyro_handlers.trace(
        numpyro_handlers.seed(numpyro_handlers.condition(model, {"mu": 0.7}), jax.random.key(0))
    ).get_trace(X)
    for name in ("mu", "x"):
        assert tr[name]["is_observed"] == reference[name]["is_observed"]
        np.testing.assert_array_equal(tr[name]["value"], reference[name]["value"])
    assert tr["mu"]["is_observed"] and float(tr["mu"]["value"]) == pytest.approx(0.7)
    # every site observed: the log-density needs no values and is the closed form at 0.7
    total, _ = vj.log_density(conditioned, {}, X)
    np.testing.assert_allclose(total, closed_form_joint(0.7, X), rtol=1e-6)


def test_substitute_sets_the_value_without_observing_like_numpyro():
    substituted = vj.substitute(model, {"mu": 0.7})
    tr = get_trace(substituted, jax.random.key(0), X)
    reference = numpyro_handlers.trace(
        numpyro_handlers.seed(numpyro_handlers.substitute(model, {"mu": 0.7}), jax.random.key(0))
    ).get_trace(X)
    assert not tr["mu"]["is_observed"] and not reference["mu"]["is_observed"]
    np.testing.assert_allclose(tr["mu"]["value"], 0.7)
    np.testing.assert_allclose(reference["mu"]["value"], 0.7)
    log_prob = jnp.sum(vj.core.site_log_prob(tr["x"]))
    np.testing.assert_allclose(log_prob, jnp.sum(normal_log_pdf(X, 0.7, 1.0)), rtol=1e-6)


def test_replay_reuses_a_trace_values():
    first = get_trace(model, jax.random.key(1), X)
    fresh = get_trace(model, jax.random.key(2), X)
    replayed = get_trace(vj.replay(model, trace=first), jax.random.key(2), X)
    assert float(fresh["mu"]["value"]) != float(first["mu"]["value"])
    assert float(replayed["mu"]["value"]) == float(first["mu"]["value"])
    assert not replayed["mu"]["is_observed"]


def test_block_hides_sites_from_an_outer_trace():
    def outer_and_inner(x):
        tau = vj.sample("tau", dist.HalfNormal(1.0))
        return tau, vj.block(model, hide=["mu"])(x)

    tr = get_trace(outer_and_inner, jax.random.key(0), X)
    assert set(tr) == {"tau", "data", "x"}
    reference = numpyro_handlers.trace(
        numpyro_handlers.seed(numpyro_handlers.block(model, hide=["mu"]), jax.random.key(0))
    ).get_trace(X)
    assert set(reference) == {"data", "x"}
    # hiding everything: nothing reaches the outer trace, but the program still runs
    everything = vj.trace(vj.seed(vj.block(model), jax.random.key(0)))
    assert everything.get_trace(X) == {}

    # a hidden site still draws from the outer seed (block asks it for a key): the same
    # value as under NumPyro's block, and a fresh value for another key
    def numpyro_outer_and_inner(x):
        tau = vj.sample("tau", dist.HalfNormal(1.0))
        return tau, numpyro_handlers.block(model, hide=["mu"])(x)

    _, mu = vj.seed(outer_and_inner, jax.random.key(0))(X)
    _, reference_mu = vj.seed(numpyro_outer_and_inner, jax.random.key(0))(X)
    _, other_mu = vj.seed(outer_and_inner, jax.random.key(1))(X)
    assert float(mu) == float(reference_mu) and float(mu) != float(other_mu)


def test_scale_multiplies_the_log_density():
    total, terms = vj.log_density(vj.scale(model, scale=3.0), {"mu": 0.3}, X)
    np.testing.assert_allclose(total, 3.0 * closed_form_joint(0.3, X), rtol=1e-6)
    np.testing.assert_allclose(terms["mu"], 3.0 * normal_log_pdf(0.3, 0.0, 2.0), rtol=1e-6)
    reference, _ = numpyro_log_density(numpyro_handlers.scale(model, 3.0), (X,), {}, {"mu": 0.3})
    np.testing.assert_allclose(total, reference, rtol=1e-6)


def test_mask_zeroes_masked_elements():
    keep = jnp.array([True, False, True])

    def masked_model(x):
        mu = vj.sample("mu", dist.Normal(0.0, 2.0))
        with vj.plate("data", x.shape[0]), vj.mask(mask=keep):
            vj.sample("x", dist.Normal(mu, 1.0), obs=x)

    total, terms = vj.log_density(masked_model, {"mu": 0.3}, X)
    expected = jnp.sum(jnp.where(keep, normal_log_pdf(X, 0.3, 1.0), 0.0))
    np.testing.assert_allclose(terms["x"], expected, rtol=1e-6)
    reference, _ = numpyro_log_density(masked_model, (X,), {}, {"mu": 0.3})
    np.testing.assert_allclose(total, reference, rtol=1e-6)
    # mask=False around the whole program: every term is zero
    total, _ = vj.log_density(vj.mask(model, mask=False), {"mu": 0.3}, X)
    assert float(total) == 0.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: vj.condition(model, {"mux": 1.0}),
        lambda: vj.substitute(model, {"mux": 1.0}),
        lambda: vj.block(model, hide=["mux"]),
        lambda: vj.with_estimators(model, {"mux": vj.score_function()}),
    ],
    ids=["condition", "substitute", "block", "with_estimators"],
)
def test_unknown_site_names_raise(make):
    with pytest.raises(ValueError, match="'mux'"):
        vj.seed(make(), jax.random.key(0))(X)


def test_known_site_names_do_not_raise():
    for program in (
        vj.condition(model, {"mu": 1.0}),
        vj.substitute(model, {"mu": 1.0}),
        vj.block(model, hide=["mu"]),
        vj.with_estimators(model, {"mu": vj.score_function()}),
    ):
        vj.seed(program, jax.random.key(0))(X)


# ----------------------------------------------------------------------------------------------
# Plates
# ----------------------------------------------------------------------------------------------

N_DATA, BATCH = 10, 3
DATA = jnp.array([0.1, -2.0, 3.5, 0.7, 1.2, -0.4, 5.0, 2.2, -1.3, 0.0])


def subsampled_model(x):
    mu = vj.sample("mu", dist.Normal(0.0, 2.0))
    with vj.plate("data", N_DATA, subsample_size=BATCH) as idx:
        vj.sample("x", dist.Normal(mu, 1.0), obs=x[idx])


def test_subsampled_log_density_is_scaled_minibatch_sum():
    key = jax.random.key(5)
    tr = get_trace(subsampled_model, key, DATA)
    idx = tr["data"]["value"]
    assert idx.shape == (BATCH,) and len(set(np.asarray(idx).tolist())) == BATCH
    _, terms = vj.log_density(vj.seed(subsampled_model, key), {"mu": 0.3}, DATA)
    expected = N_DATA / BATCH * jnp.sum(normal_log_pdf(DATA[idx], 0.3, 1.0))
    np.testing.assert_allclose(terms["x"], expected, rtol=1e-6)
    # plate indices can be given like any site value; NumPyro agrees
    fixed = {"mu": 0.3, "data": jnp.array([1, 4, 6])}
    total, _ = vj.log_density(subsampled_model, fixed, DATA)
    reference, _ = numpyro_log_density(subsampled_model, (DATA,), {}, fixed)
    np.testing.assert_allclose(total, reference, rtol=1e-6)


def test_subsampled_log_likelihood_is_unbiased():
    # Each draw is (N/B) Σ_{i∈S} ℓ_i with S a uniform B-subset: mean Σ_i ℓ_i, and variance
    # N² σ²/B · (N−B)/(N−1) (sampling without replacement; σ² the population variance of ℓ).
    # Average of M = 20000 draws vs the exact full-data sum, 4 SE: false-failure prob < 6.4e-5.
    def minibatch_term(key):
        return vj.log_density(vj.seed(subsampled_model, key), {"mu": 0.3}, DATA)[1]["x"]

    num_draws = 20000
    draws = jax.jit(jax.vmap(minibatch_term))(jax.random.split(jax.random.key(0), num_draws))
    per_datum = normal_log_pdf(DATA, 0.3, 1.0)
    full = float(jnp.sum(per_datum))
    variance = N_DATA**2 * float(per_datum.var()) / BATCH * (N_DATA - BATCH) / (N_DATA - 1)
    standard_error = np.sqrt(variance / num_draws)
    assert abs(float(draws.mean()) - full) < 4 * standard_error
    # and the estimator has the variance of a without-replacement subsample (not a constant)
    np.testing.assert_allclose(float(draws.var()), variance, rtol=0.1)


@pytest.mark.parametrize(
    "args",
    [(0,), (-2,), (2.0,), (True,), (3, 0), (3, 4), (3, 1.5), (3, True)],
    ids=str,
)
def test_plate_validates_arguments(args):
    with pytest.raises(ValueError, match="plate 'p'"):
        vj.plate("p", *args)


def test_plate_scale_composes_with_scale_handler():
    fixed = {"mu": 0.3, "data": jnp.array([0, 2, 9])}
    _, terms = vj.log_density(vj.scale(subsampled_model, scale=2.0), fixed, DATA)
    expected = 2.0 * N_DATA / BATCH * jnp.sum(normal_log_pdf(DATA[fixed["data"]], 0.3, 1.0))
    np.testing.assert_allclose(terms["x"], expected, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# distrax distributions at sample sites
# ----------------------------------------------------------------------------------------------


def test_distrax_sites_match_numpyro_log_density():
    loc, scale = jnp.array([0.5, -1.0]), jnp.array([1.5, 0.3])

    def with_distrax(y):
        a = vj.sample("a", distrax.Normal(1.0, 2.0))
        b = vj.sample("b", distrax.MultivariateNormalDiag(loc, scale))
        with vj.plate("data", 3):
            c = vj.sample("c", distrax.Normal(a, 1.0))
        vj.sample("y", distrax.MultivariateNormalDiag(b, scale), obs=y)
        return b, c

    def with_numpyro(y):
        a = vj.sample("a", dist.Normal(1.0, 2.0))
        b = vj.sample("b", dist.Normal(loc, scale).to_event(1))
        with vj.plate("data", 3):
            vj.sample("c", dist.Normal(a, 1.0))
        vj.sample("y", dist.MultivariateNormal(b, jnp.diag(scale**2)), obs=y)

    values = {"a": 0.2, "b": jnp.array([0.1, -0.8]), "c": jnp.array([0.0, 1.0, -1.0])}
    y = jnp.array([0.3, -0.5])

    @jax.jit
    def both(values, y):
        return vj.log_density(with_distrax, values, y), vj.log_density(with_numpyro, values, y)

    (total, terms), (reference, reference_terms) = both(values, y)
    np.testing.assert_allclose(total, reference, rtol=1e-5)
    for name in ("a", "b", "c", "y"):
        np.testing.assert_allclose(terms[name], reference_terms[name], rtol=1e-5)
    expected_b = jnp.sum(normal_log_pdf(values["b"], loc, scale))
    np.testing.assert_allclose(terms["b"], expected_b, rtol=1e-5)
    # draws come from the distrax distribution with the plate's and the event's shapes: the
    # mean of n = 4000 draws of b is loc within 4 SE = 4 scale / sqrt(n) per coordinate
    # (false-failure probability < 2 · 6.4e-5)
    keys = jax.random.split(jax.random.key(0), 4000)
    b, c = jax.jit(jax.vmap(lambda key: vj.seed(with_distrax, key)(y)))(keys)
    assert b.shape == (4000, 2) and c.shape == (4000, 3)
    assert np.all(np.abs(b.mean(0) - loc) < 4 * scale / np.sqrt(4000))


def test_sample_refuses_a_non_distribution():
    with pytest.raises(ValueError, match="site 'z'"):
        vj.sample("z", 3.0)
    with pytest.raises(ValueError, match="site 'w'"):
        vj.sample("w", jax.scipy.stats.norm)


def test_with_estimators_refuses_plates_and_observed_sites():
    def program(x):
        z = vj.sample("z", dist.Normal(0.0, 1.0))
        with vj.plate("data", 3):
            vj.sample("x", dist.Normal(z, 1.0), obs=x)

    key = jax.random.key(0)
    for name in ("data", "x"):
        handled = vj.with_estimators(program, {name: vj.score_function()})
        with pytest.raises(ValueError, match=f"unknown site name.*{name}"):
            vj.seed(handled, key)(jnp.zeros(3))
    vj.seed(vj.with_estimators(program, {"z": vj.score_function()}), key)(jnp.zeros(3))


def test_log_density_accepts_values_given_inside_and_refuses_broadcast_latents():
    def program():
        z = vj.sample("z", dist.Normal(0.0, 1.0), sample_shape=(5,))
        vj.sample("x", dist.Normal(z.sum(), 1.0), obs=0.3)

    inside = vj.substitute(program, {"z": jnp.zeros(5)})
    total, _ = vj.log_density(inside, {})
    expected = 5 * dist.Normal(0.0, 1.0).log_prob(0.0) + dist.Normal(0.0, 1.0).log_prob(0.3)
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    # a scalar would broadcast to the 5 draws and score one term instead of five
    with pytest.raises(ValueError, match="site 'z'"):
        vj.log_density(program, {"z": jnp.array(0.0)})
    with pytest.raises(ValueError, match=r"\['z'\] have no value"):
        vj.log_density(program, {})
