"""The mean-field Normal auto-family: supports, plates, initialization, densities, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

import vijax as vj

LOG_2PI = float(np.log(2 * np.pi))


def normal_log_pdf(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * LOG_2PI


def constrained_model():
    vj.sample("half_normal", dist.HalfNormal(1.0))
    vj.sample("gamma", dist.Gamma(2.0, 3.0))
    vj.sample("log_normal", dist.LogNormal(0.0, 1.0))
    vj.sample("dirichlet", dist.Dirichlet(jnp.ones(3)))
    vj.sample("uniform", dist.Uniform(-1.0, 2.0))
    vj.sample("beta", dist.Beta(2.0, 2.0))
    with vj.plate("groups", 4):
        vj.sample("local_simplex", dist.Dirichlet(jnp.ones(3)))


def test_samples_lie_in_the_support():
    # A wide family (σ = 2 around 0 in the unconstrained space) stresses the bijections' edges.
    # ("zeros" also keeps this test fast: it compiles no Gamma/Dirichlet prior sampler.)
    family = vj.mean_field_normal(constrained_model, init_scale=2.0, init_loc="zeros")

    @jax.jit
    def init_and_draw(key):
        params = family.init(key)
        return params, vj.sample_posterior(family, params, jax.random.fold_in(key, 1), 2000)

    params, draws = init_and_draw(jax.random.key(0))
    # unconstrained dimensions: K − 1 for a K-simplex, one per plate element
    assert params["loc"]["dirichlet"].shape == (2,)
    assert params["loc"]["local_simplex"].shape == (4, 2)
    for name in ("half_normal", "gamma", "log_normal"):
        assert np.all(np.asarray(draws[name]) > 0), name
    for name in ("uniform",):
        assert np.all((draws[name] > -1.0) & (draws[name] < 2.0))
    assert np.all((draws["beta"] > 0.0) & (draws["beta"] < 1.0))
    for name in ("dirichlet", "local_simplex"):
        assert np.all(np.asarray(draws[name]) >= 0), name
        np.testing.assert_allclose(draws[name].sum(-1), 1.0, atol=1e-5)
    assert draws["local_simplex"].shape == (2000, 4, 3)
    # and the model accepts every draw: its log-density is finite
    one = jax.tree.map(lambda v: v[0], draws)
    total, _ = vj.log_density(constrained_model, one)
    assert np.isfinite(float(total))


class SoftplusHalfNormal(dist.HalfNormal):
    """A HalfNormal whose support asks for the softplus bijection."""

    support = constraints.softplus_positive


def _softplus_inverse(x):
    return jnp.log(jnp.expm1(x))


# (prior, x ↦ u = T⁻¹(x), log|dT/du| at u) for exp, softplus and the affine sigmoid of (−1, 2)
TRANSFORMS = {
    "exp": (dist.Gamma(2.0, 3.0), jnp.log, lambda u: u),
    "softplus": (SoftplusHalfNormal(1.0), _softplus_inverse, jax.nn.log_sigmoid),
    "interval": (
        dist.Uniform(-1.0, 2.0),
        lambda x: jax.scipy.special.logit((x + 1.0) / 3.0),
        lambda u: jnp.log(3.0) + jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u),
    ),
}


@pytest.mark.parametrize("kind", sorted(TRANSFORMS))
def test_log_prob_is_unconstrained_normal_minus_log_jacobian(kind):
    prior, inverse, log_jacobian = TRANSFORMS[kind]

    def model():
        vj.sample("s", prior)

    family = vj.mean_field_normal(model)
    loc, log_scale = 0.3, -0.5
    params = {"loc": {"s": jnp.array(loc)}, "log_scale": {"s": jnp.array(log_scale)}}
    tr = vj.trace(vj.seed(family, jax.random.key(2))).get_trace(params)
    x = tr["s"]["value"]
    u = inverse(x)
    # log q(x) = log N(u; μ, σ) − log|dT/du|
    expected = normal_log_pdf(u, loc, np.exp(log_scale)) - log_jacobian(u)
    # as the family's trace scores it (the path the objectives use)...
    np.testing.assert_allclose(jnp.sum(vj.core.site_log_prob(tr["s"])), expected, rtol=1e-5)
    # ...and as a density of the family program at a given value
    total, _ = vj.log_density(family, {"s": x}, params)
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    # the median of the family is T(μ)
    np.testing.assert_allclose(inverse(family.median(params)["s"]), loc, rtol=1e-5)


def test_local_latents_get_per_datum_parameters():
    def model(x):
        scale = vj.sample("scale", dist.HalfNormal(1.0))
        with vj.plate("data", x.shape[0]):
            z = vj.sample("z", dist.Normal(0.0, scale))
            with vj.plate("outer", 2, dim=-2):
                vj.sample("w", dist.Gamma(2.0, 1.0))
            vj.sample("x", dist.Normal(z, 1.0), obs=x)

    x = jnp.arange(5.0)
    family = vj.mean_field_normal(model, init_scale=1e-4, init_loc="zeros")
    params = jax.jit(family.init)(jax.random.key(0), x)
    assert params["loc"]["z"].shape == (5,) and params["loc"]["w"].shape == (2, 5)
    params["loc"]["z"] = jnp.arange(5.0) * 10.0
    params["loc"]["w"] = jnp.arange(10.0).reshape(2, 5) / 10.0
    draws = vj.seed(family, jax.random.key(1))(params, x)
    # σ = 1e-4: each datum's draw sits on its own loc (in the constrained space for w)
    np.testing.assert_allclose(draws["z"], params["loc"]["z"], atol=1e-3)
    np.testing.assert_allclose(draws["w"], jnp.exp(params["loc"]["w"]), rtol=1e-3)


N, B = 6, 2
X = jnp.arange(N) * 10.0


def subsampled_model(x):
    mu = vj.sample("mu", dist.Normal(0.0, 10.0))
    with vj.plate("data", N, subsample_size=B) as idx:
        vj.deterministic("idx", idx)
        z = vj.sample("z", dist.Normal(mu, 1.0))
        vj.sample("weights", dist.Dirichlet(jnp.ones(3)))  # rows on axis −2 of its parameters
        vj.sample("x", dist.Normal(z, 0.1), obs=x[idx])


def test_subsampled_plate_uses_the_selected_rows_and_the_model_replays_them():
    family = vj.mean_field_normal(subsampled_model, init_scale=1e-4, init_loc="zeros")
    params = jax.jit(family.init)(jax.random.key(0), X)
    # init sees the full plate: one row of parameters per datum
    assert params["loc"]["z"].shape == (N,) and params["loc"]["weights"].shape == (N, 2)
    params["loc"]["z"] = X + 1.0  # row i ↔ datum i
    params["loc"]["weights"] = jnp.stack([jnp.arange(N) / N, -jnp.arange(N) / N], axis=-1)
    stick_breaking = biject_to(constraints.simplex)

    @jax.jit
    @jax.vmap
    def run(key):
        family_trace = vj.trace(vj.seed(family, key)).get_trace(params, X)
        # replaying the model on the family's trace (what the objectives do)
        model_trace = vj.trace(
            vj.seed(vj.replay(subsampled_model, trace=family_trace), jax.random.fold_in(key, 1))
        ).get_trace(X)
        return (
            family_trace["data"]["value"],
            family_trace["z"]["value"],
            family_trace["weights"]["value"],
            jnp.sum(vj.core.site_log_prob(family_trace["z"])),
            {name: model_trace[name]["value"] for name in ("idx", "x", "z")},
        )

    idx, z, weights, log_q, replayed = run(jax.random.split(jax.random.key(1), 20))
    assert idx.shape == (20, B)
    assert all(len(set(row)) == B for row in np.asarray(idx).tolist())
    assert len({tuple(row) for row in np.asarray(idx).tolist()}) > 1  # fresh rows per key
    np.testing.assert_allclose(z, X[idx] + 1.0, atol=1e-3)
    expected_weights = stick_breaking(params["loc"]["weights"][idx])
    np.testing.assert_allclose(weights, expected_weights, atol=1e-3)
    # the family's log-density of its draw uses the same rows (scaled by N / B)
    expected = N / B * jnp.sum(normal_log_pdf(z, X[idx] + 1.0, 1e-4), axis=-1)
    np.testing.assert_allclose(log_q, expected, rtol=1e-4)
    # the replayed model uses the family's indices, data rows and values
    np.testing.assert_array_equal(replayed["idx"], idx)
    np.testing.assert_array_equal(replayed["x"], X[idx])
    np.testing.assert_array_equal(replayed["z"], z)


def test_init_zeros_sets_unconstrained_zeros_and_init_scale():
    family = vj.mean_field_normal(constrained_model, init_loc="zeros", init_scale=0.5)
    params = jax.jit(family.init)(jax.random.key(0))
    for name, loc in params["loc"].items():
        np.testing.assert_array_equal(loc, 0.0, err_msg=name)
        np.testing.assert_allclose(params["log_scale"][name], np.log(0.5), rtol=1e-6)
    # zeros in the unconstrained space: 1 for exp, the centre of an interval, the uniform simplex
    median = jax.jit(family.median)(params)
    np.testing.assert_allclose(median["gamma"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(median["uniform"], 0.5, rtol=1e-6)
    np.testing.assert_allclose(median["dirichlet"], jnp.full(3, 1 / 3), rtol=1e-5)


def _scalar_model():
    vj.sample("loc", dist.Normal(5.0, 1.0))
    vj.sample("rate", dist.Gamma(2.0, 3.0))


def test_init_sample_draws_from_the_prior():
    # "sample": exp(loc["rate"]) is one Gamma(2, 3) draw per key (mean 2/3, variance 2/9).
    # Mean of n = 2000 keys within 4 SE = 4 sqrt(2/9 / n): false-failure probability < 6.4e-5.
    family = vj.mean_field_normal(_scalar_model, init_loc="sample")
    keys = jax.random.split(jax.random.key(0), 2000)
    locs = jax.jit(jax.vmap(lambda key: family.init(key)["loc"]))(keys)
    rates = np.exp(np.asarray(locs["rate"]))
    assert abs(rates.mean() - 2 / 3) < 4 * np.sqrt(2 / 9 / 2000)
    assert abs(float(locs["loc"].mean()) - 5.0) < 4 * np.sqrt(1 / 2000)
    # one draw each, not a summary: the spread is the prior's (sd 1 for "loc")
    assert 0.9 < float(locs["loc"].std()) < 1.1


def test_init_median_is_the_median_of_prior_draws():
    # "median" of 15 draws from N(5, 1): symmetric around 5 with sd ≈ 1.2533 / sqrt(15)
    # ≈ 0.32. Mean over 1000 keys within 4 SE (4 · 0.32 / sqrt(1000) ≈ 0.041), false-failure
    # probability < 6.4e-5; its spread is far below one prior draw's (sd 1).
    family = vj.mean_field_normal(_scalar_model)
    keys = jax.random.split(jax.random.key(1), 1000)
    locs = jax.jit(jax.vmap(lambda key: family.init(key)["loc"]["loc"]))(keys)
    assert abs(float(locs.mean()) - 5.0) < 4 * 0.324 / np.sqrt(1000)
    assert 0.25 < float(locs.std()) < 0.40


def test_init_median_keeps_the_sample_shape():
    def model():
        vj.sample("k", dist.Normal(0.0, 1.0), sample_shape=(5,))

    family = vj.mean_field_normal(model, init_scale=0.5)
    params = family.init(jax.random.key(0))
    values = vj.seed(family, jax.random.key(1))(params)
    # five independent latents, not one value: the family draws five distinct numbers...
    assert params["loc"]["k"].shape == (5,)
    assert len(set(np.asarray(values["k"]).tolist())) == 5
    # ...scores them as five Normal terms, and the model scores each of the five
    log_q, _ = vj.log_density(family, values, params)
    expected_q = jnp.sum(normal_log_pdf(values["k"], params["loc"]["k"], 0.5))
    np.testing.assert_allclose(log_q, expected_q, rtol=1e-5)
    total, _ = vj.log_density(model, values)
    np.testing.assert_allclose(total, jnp.sum(normal_log_pdf(values["k"], 0.0, 1.0)), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"init_loc": "mean"}, "init_loc"),
        ({"init_loc": None}, "init_loc"),
        ({"init_scale": 0.0}, "init_scale"),
        ({"init_scale": -1.0}, "init_scale"),
    ],
)
def test_init_options_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vj.mean_field_normal(_scalar_model, **kwargs)


def test_discrete_latent_names_the_site():
    def model():
        vj.sample("mu", dist.Normal(0.0, 1.0))
        vj.sample("count", dist.Poisson(3.0))

    family = vj.mean_field_normal(model)
    with pytest.raises(ValueError, match="'count'"):
        family.init(jax.random.key(0))


def test_model_without_latents_is_refused():
    def model(x):
        vj.sample("x", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(ValueError, match="no latent"):
        vj.mean_field_normal(model).init(jax.random.key(0), 1.0)


def _improper_model(y):
    mu = vj.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
    sigma = vj.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    with vj.plate("groups", 3):
        offset = vj.sample("offset", dist.ImproperUniform(constraints.unit_interval, (), ()))
    with vj.plate("data", y.shape[0]):
        vj.sample("y", dist.Normal(mu + jnp.sum(offset), sigma), obs=y)


def test_improper_uniform_sites_get_prototypes_in_their_support():
    # ImproperUniform cannot be drawn from: the prototype run sets each latent as NumPyro's
    # init_to_uniform does, T(u) with u ~ Uniform(-2, 2), inside the support.
    y = jnp.array([0.5, 1.5, 2.0, 1.0])
    latents, plates = vj.families._sites.model_sites(
        _improper_model, jax.random.key(0), (y,), {}, full_plates=False
    )
    assert [s.name for s in latents] == ["mu", "sigma", "offset"]
    assert [s.shape for s in latents] == [(), (), (3,)]
    assert set(plates) == {"groups", "data"}
    for site in latents:
        u = site.transform.inv(site.value)
        assert bool(jnp.all(site.support(site.value))), site.name
        assert bool(jnp.all(jnp.abs(u) <= 2.0)), site.name


@pytest.mark.parametrize("init_loc", ["median", "sample", "zeros"])
def test_improper_uniform_sites_initialize_without_a_sampler(init_loc):
    # "median" and "sample" fall back to init_to_uniform for a site without a sampler (NumPyro's
    # rule): finite parameters, within Uniform(-2, 2) in the unconstrained space, and a finite ELBO.
    y = jnp.array([0.5, 1.5, 2.0, 1.0])
    for family in (
        vj.mean_field_normal(_improper_model, init_loc=init_loc),
        vj.full_rank_normal(_improper_model, init_loc=init_loc),
    ):
        params = family.init(jax.random.key(0), y)
        for name, u in params["loc"].items():
            assert bool(jnp.all(jnp.abs(u) <= 2.0)), (type(family).__name__, name)
        value = vj.elbo(_improper_model, family)(params, jax.random.key(1), y).value
        assert bool(jnp.isfinite(value)), type(family).__name__


def test_improper_uniform_map_init_finds_the_closed_form_mode():
    # With flat priors on (mu, log sigma) the unconstrained log joint is
    # sum log N(y | mu, sigma) + log sigma, whose mode is mu = mean(y) and
    # sigma^2 = sum (y - mean)^2 / (n - 1); the MAP search starts from init_to_uniform's values.
    def model(y):
        mu = vj.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
        sigma = vj.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        with vj.plate("data", y.shape[0]):
            vj.sample("y", dist.Normal(mu, sigma), obs=y)

    y = jnp.array([0.5, 1.5, 2.0, 1.0])
    params = vj.mean_field_normal(model, init_loc="map").init(jax.random.key(0), y)
    np.testing.assert_allclose(params["loc"]["mu"], 1.25, atol=1e-4)
    expected = 0.5 * np.log(np.sum((np.asarray(y) - 1.25) ** 2) / 3)
    np.testing.assert_allclose(params["loc"]["sigma"], expected, atol=1e-4)
