"""Joint Gaussian auto-families, Delta (MAP) and Laplace: exact posteriors, densities, errors.

The reference model is Bayesian linear regression with known noise, whose posterior is
Gaussian in closed form: ``w ~ N(0, I)``, ``y ~ N(A w, σ² I)`` gives
``Λ = I + AᵀA / σ²``, ``Σ = Λ⁻¹``, ``m = Σ Aᵀ y / σ²``. Its posterior is strongly correlated
(correlation −0.69 between two weights), which separates full-rank from mean-field families.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from jax.scipy.special import ndtri
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

import vijax as vj

NOISE = 1.0
A = np.array(
    [[1, 0.3, 0.9], [1, -0.4, -0.2], [1, 1.0, 1.3], [1, 0.8, 0.4], [1, -1.1, -0.9], [1, 0.2, 0.5]]
)
Y = np.array([1.0, -0.5, 2.1, 1.2, -1.4, 0.6])
PRECISION = np.eye(3) + A.T @ A / NOISE**2
COVARIANCE = np.linalg.inv(PRECISION)
MEAN = COVARIANCE @ A.T @ Y / NOISE**2
X, YJ = jnp.asarray(A, jnp.float32), jnp.asarray(Y, jnp.float32)


def regression(x, y):
    """One vector site: the weights (intercept first)."""
    w = vj.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with vj.plate("data", x.shape[0]):
        vj.sample("y", dist.Normal(x @ w, NOISE), obs=y)


def regression_two_sites(x, y):
    """The same posterior over two sites, so that joint families chain conditionals."""
    b = vj.sample("b", dist.Normal(0.0, 1.0))
    w = vj.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with vj.plate("data", x.shape[0]):
        vj.sample("y", dist.Normal(b + x[:, 1:] @ w, NOISE), obs=y)


def _fit(family, num_steps, num_particles, learning_rate, decay, strategy=None):
    params = family.init(jax.random.key(0), X, YJ)
    program = family if strategy is None else vj.with_estimators(family, default=strategy)
    schedule = optax.exponential_decay(learning_rate, num_steps, decay)
    result = vj.fit(
        vj.elbo(regression, program, num_particles=num_particles),
        params,
        optax.adam(schedule),
        jax.random.key(1),
        X,
        YJ,
        num_steps=num_steps,
        progress=False,
    )
    return result.params


@pytest.mark.parametrize(
    "make", [vj.full_rank_normal, lambda m: vj.low_rank_normal(m, rank=2)], ids=["full", "low2"]
)
def test_joint_families_recover_the_exact_posterior(make):
    # With the path (sticking-the-landing) strategy the gradient vanishes exactly when q is
    # the posterior, so the fit converges to it, not to a noise floor. Measured: errors
    # ≈ 2e-6 (mean) and 2e-7 (covariance); tolerance 1e-3. Rank 2 = D − 1 holds every 3 × 3
    # covariance (W Wᵀ + λ_min I).
    family = make(regression)
    params = _fit(family, 1500, 4, 0.03, 0.1, strategy=vj.path())
    np.testing.assert_allclose(params["loc"]["w"], MEAN, atol=1e-3)
    np.testing.assert_allclose(family.covariance(params), COVARIANCE, atol=1e-3)


def test_mean_field_underestimates_the_marginal_variances():
    # The KL(q ‖ p)-optimal mean-field Gaussian of N(m, Λ⁻¹) has mean m and σ_i² = 1/Λ_ii,
    # below Σ_ii (here by a factor 0.46–0.86). Reparameterized ELBO, 32 particles, 2000
    # Adam steps: measured mean error 4e-3 and variance error 0.3%; tolerances 2e-2, 3%.
    family = vj.mean_field_normal(regression)
    params = _fit(family, 2000, 32, 0.02, 0.01)
    variance = np.exp(2 * np.asarray(params["log_scale"]["w"]))
    np.testing.assert_allclose(params["loc"]["w"], MEAN, atol=2e-2)
    np.testing.assert_allclose(variance, 1 / np.diag(PRECISION), rtol=3e-2)
    assert np.all(variance < 0.9 * np.diag(COVARIANCE))


@pytest.mark.parametrize("model", [regression, regression_two_sites], ids=["one", "two"])
def test_laplace_is_the_exact_posterior_of_a_gaussian_model(model):
    family = vj.laplace_approximation(model)
    params = family.init(jax.random.key(0), X, YJ)
    loc = np.concatenate([np.ravel(v) for v in (params["loc"].get("b", []), params["loc"]["w"])])
    # float32 L-BFGS and Hessian: relative 1e-4
    np.testing.assert_allclose(loc, MEAN, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(family.covariance(params), COVARIANCE, rtol=1e-4, atol=1e-6)
    # and its draws are that Gaussian (the two-site chain included): 20000 draws, the
    # sample covariance within 5 standard errors (entrywise SE ≈ sqrt((Σ_ii Σ_jj + Σ_ij²)/n))
    draws = jax.jit(lambda key: vj.sample_posterior(family, params, key, 20000, X, YJ))(
        jax.random.key(3)
    )
    flat = np.concatenate([np.asarray(draws[n]).reshape(20000, -1) for n in sorted(draws)], 1)
    se = np.sqrt((np.outer(np.diag(COVARIANCE), np.diag(COVARIANCE)) + COVARIANCE**2) / 20000)
    assert np.all(np.abs(np.cov(flat.T) - COVARIANCE) < 5 * se)


@pytest.mark.slow
def test_delta_map_equals_the_closed_form_map():
    # Gaussian posterior: the MAP is the posterior mean (init_loc="map": L-BFGS), and fitting
    # the Delta family by its ELBO (= log p(x, z)) reaches it too (Adam, tolerance 1e-3).
    family = vj.delta(regression_two_sites, init_loc="map")
    params = family.init(jax.random.key(0), X, YJ)
    np.testing.assert_allclose(params["loc"]["b"], MEAN[0], atol=1e-4)
    np.testing.assert_allclose(params["loc"]["w"], MEAN[1:], atol=1e-4)
    zeros = vj.delta(regression_two_sites, init_loc="zeros").init(jax.random.key(0), X, YJ)
    result = vj.fit(
        vj.elbo(regression_two_sites, family),
        zeros,
        optax.adam(optax.exponential_decay(0.05, 1000, 0.01)),
        jax.random.key(1),
        X,
        YJ,
        num_steps=1000,
        progress=False,
    )
    np.testing.assert_allclose(result.params["loc"]["w"], MEAN[1:], atol=1e-3)
    np.testing.assert_allclose(result.params["loc"]["b"], MEAN[0], atol=1e-3)


# Gamma–Poisson: rate ~ Gamma(a, b), counts ~ Poisson(rate) → posterior Gamma(a + Σk, b + n)
COUNTS = jnp.array([3.0, 1.0, 4.0, 2.0])
A_POST, B_POST = 2.0 + 10.0, 1.0 + 4.0


def gamma_poisson(counts):
    rate = vj.sample("rate", dist.Gamma(2.0, 1.0))
    with vj.plate("data", counts.shape[0]):
        vj.sample("counts", dist.Poisson(rate), obs=counts)


def test_delta_is_the_constrained_map_and_laplace_the_unconstrained_mode():
    # Delta: argmax Gamma(a', b') = (a' − 1)/b'. Laplace in u = log rate: the mode of
    # a' u − b' e^u is e^u = a'/b', the curvature there a', so σ_u = 1/sqrt(a').
    delta = vj.delta(gamma_poisson, init_loc="map")
    point = delta.median(delta.init(jax.random.key(0), COUNTS), COUNTS)["rate"]
    np.testing.assert_allclose(point, (A_POST - 1) / B_POST, rtol=1e-5)
    laplace = vj.laplace_approximation(gamma_poisson)
    params = laplace.init(jax.random.key(0), COUNTS)
    np.testing.assert_allclose(laplace.median(params, COUNTS)["rate"], A_POST / B_POST, rtol=1e-5)
    np.testing.assert_allclose(laplace.scale_tril(params)[0, 0], A_POST**-0.5, rtol=1e-4)
    # quantiles of rate = exp(u_q): a log-normal's
    q = jnp.array([0.1, 0.5, 0.9])
    expected = A_POST / B_POST * np.exp(A_POST**-0.5 * np.asarray(ndtri(q)))
    np.testing.assert_allclose(laplace.quantiles(params, q, COUNTS)["rate"], expected, rtol=1e-4)
    np.testing.assert_allclose(
        delta.quantiles(delta.init(jax.random.key(0), COUNTS), q, COUNTS)["rate"],
        jnp.full(3, point),
        rtol=1e-6,
    )


# ------------------------------------------------------------------------------------------
# Densities by hand
# ------------------------------------------------------------------------------------------


def mixed_model():
    """A vector site, a positive site, a plated simplex site: D = 2 + 1 + 3·2 = 9."""
    vj.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    vj.sample("s", dist.HalfNormal(1.0))
    with vj.plate("groups", 3):
        vj.sample("p", dist.Dirichlet(jnp.ones(3)))


def _unconstrained(values):
    """u = T⁻¹(z) per site, the flat vector in model order, and Σ log|det ∂T/∂u|."""
    simplex = biject_to(constraints.simplex)
    u_p = simplex.inv(values["p"])
    u = jnp.concatenate([values["w"], jnp.log(values["s"])[None], u_p.reshape(-1)])
    log_jacobian = jnp.log(values["s"]) + jnp.sum(simplex.log_abs_det_jacobian(u_p, values["p"]))
    return u, log_jacobian


def _random_params(family, key):
    params = family.init(key)
    keys = jax.random.split(key, 4)
    params["loc"] = {
        k: 0.3 * jax.random.normal(jax.random.fold_in(keys[0], i), jnp.shape(v))
        for i, (k, v) in enumerate(params["loc"].items())
    }
    if "off_diagonal" in params:
        params["off_diagonal"] = 0.3 * jax.random.normal(keys[1], params["off_diagonal"].shape)
    else:
        params["cov_factor"] = 0.4 * jax.random.normal(keys[1], params["cov_factor"].shape)
    params["log_diagonal"] = 0.2 * jax.random.normal(keys[2], params["log_diagonal"].shape) - 0.5
    return params


@pytest.mark.parametrize(
    "make",
    [
        lambda m: vj.full_rank_normal(m, init_loc="zeros"),
        lambda m: vj.low_rank_normal(m, rank=3, init_loc="zeros"),
    ],
    ids=["full", "low3"],
)
def test_log_density_is_the_joint_gaussian_minus_the_log_jacobians(make):
    family = make(mixed_model)
    params = _random_params(family, jax.random.key(0))
    loc = jnp.concatenate([jnp.ravel(params["loc"][n]) for n in ("w", "s", "p")])
    gaussian = dist.MultivariateNormal(loc, family.covariance(params))

    @jax.jit
    def both(key):
        tr = vj.trace(vj.seed(family, key)).get_trace(params)
        values = {n: tr[n]["value"] for n in ("w", "s", "p")}
        from_trace = sum(jnp.sum(vj.core.site_log_prob(tr[n])) for n in values)
        at_values, _ = vj.log_density(family, values, params)
        u, log_jacobian = _unconstrained(values)
        return from_trace, at_values, gaussian.log_prob(u) - log_jacobian

    for seed in range(3):
        from_trace, at_values, expected = both(jax.random.key(seed))
        np.testing.assert_allclose(from_trace, expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(at_values, expected, rtol=1e-4, atol=1e-4)

    # the sites keep the model's names, shapes and supports, outside the plate
    @jax.jit
    def draws_and_u(key):
        draws = vj.sample_posterior(family, params, key, 1000)
        return draws, jax.vmap(lambda d: _unconstrained(d)[0])(draws)

    draws, u = draws_and_u(jax.random.key(9))
    assert draws["p"].shape == (1000, 3, 3) and draws["w"].shape == (1000, 2)
    assert np.all(np.asarray(draws["s"]) > 0)
    np.testing.assert_allclose(draws["p"].sum(-1), 1.0, atol=1e-5)
    # draws of u have covariance Σ (1000 draws: loose, 6 SE)
    sigma = np.asarray(family.covariance(params))
    se = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / 1000)
    assert np.all(np.abs(np.cov(np.asarray(u).T) - sigma) < 6 * se)


def test_median_and_quantiles_in_the_constrained_space():
    family = vj.full_rank_normal(mixed_model, init_loc="zeros")
    params = _random_params(family, jax.random.key(1))
    sd = np.sqrt(np.diag(np.asarray(family.covariance(params))))
    q = jnp.array([0.05, 0.5, 0.95])
    out = family.quantiles(params, q)
    median = family.median(params)
    z = np.asarray(ndtri(q))[:, None]
    np.testing.assert_allclose(out["w"], params["loc"]["w"] + sd[:2] * z, rtol=1e-5)
    s_q = np.exp(float(params["loc"]["s"]) + sd[2] * z[:, 0])
    np.testing.assert_allclose(out["s"], s_q, rtol=1e-5)
    np.testing.assert_allclose(out["s"][1], median["s"], rtol=1e-6)
    assert out["p"].shape == (3, 3, 3)
    np.testing.assert_allclose(out["p"].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(median["p"], biject_to(constraints.simplex)(params["loc"]["p"]))
    with pytest.raises(ValueError, match="q must lie in"):
        family.quantiles(params, [0.5, 1.0])


def test_decreasing_bijections_swap_quantile_levels():
    # biject_to(less_than(c)) is decreasing: the 0.1-quantile of z = c − e^u is c − e^{u_0.9}
    class Below(dist.Normal):
        support = constraints.less_than(1.0)

    def upper_model():
        vj.sample("t", Below(0.0, 1.0))

    family = vj.mean_field_normal(upper_model)
    params = {"loc": {"t": jnp.array(0.2)}, "log_scale": {"t": jnp.array(-0.3)}}
    out = family.quantiles(params, jnp.array([0.1, 0.9]))["t"]
    sigma = np.exp(-0.3)
    expected = 1.0 - np.exp(0.2 + sigma * np.asarray(ndtri(jnp.array([0.9, 0.1]))))
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert out[0] < out[1]


def test_mean_field_quantiles_and_the_existing_median():
    family = vj.mean_field_normal(gamma_poisson)
    params = {"loc": {"rate": jnp.array(0.4)}, "log_scale": {"rate": jnp.array(-1.0)}}
    q = jnp.array([0.25, 0.75])
    expected = np.exp(0.4 + np.exp(-1.0) * np.asarray(ndtri(q)))
    np.testing.assert_allclose(family.quantiles(params, q, COUNTS)["rate"], expected, rtol=1e-5)


def test_laplace_scale_for_mean_field_is_the_inverse_curvature():
    # mean-field "laplace" scale: σ_i = 1/sqrt(H_ii) = 1/sqrt(Λ_ii) (the KL-optimal
    # mean-field variance of a Gaussian posterior)
    family = vj.mean_field_normal(regression, init_loc="map", init_scale="laplace")
    params = family.init(jax.random.key(0), X, YJ)
    np.testing.assert_allclose(params["loc"]["w"], MEAN, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        np.exp(2 * np.asarray(params["log_scale"]["w"])), 1 / np.diag(PRECISION), rtol=1e-4
    )
    # the low-rank "laplace" scale is the probabilistic-PCA fit of Σ: W Wᵀ + d² I with d² the
    # mean of the discarded eigenvalues, exact from rank D − 1 = 2 up
    low = vj.low_rank_normal(regression, rank=2, init_loc="map", init_scale="laplace")
    low_params = low.init(jax.random.key(0), X, YJ)
    np.testing.assert_allclose(low.covariance(low_params), COVARIANCE, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------
# Plates, predictive, errors
# ------------------------------------------------------------------------------------------


def plated_model(x):
    mu = vj.sample("mu", dist.Normal(0.0, 1.0))
    with vj.plate("data", x.shape[0]):
        z = vj.sample("z", dist.Normal(mu, 1.0))
        vj.sample("x", dist.Normal(z, 0.5), obs=x)


def test_plated_latents_are_jointly_gaussian_and_predictive_works():
    x = jnp.array([0.5, -1.0, 2.0, 0.3])
    family = vj.laplace_approximation(plated_model)
    params = family.init(jax.random.key(0), x)
    # posterior of (mu, z) is Gaussian: precision from the model's quadratic form
    n = 4
    precision = np.zeros((n + 1, n + 1))
    precision[0, 0] = 1 + n
    precision[0, 1:] = precision[1:, 0] = -1
    precision[1:, 1:] = np.eye(n) * (1 + 4)
    np.testing.assert_allclose(
        family.covariance(params), np.linalg.inv(precision), rtol=1e-4, atol=1e-6
    )
    assert params["loc"]["z"].shape == (4,)
    out = vj.predictive(plated_model, family, params, jax.random.key(1), 50, x)
    assert out["z"].shape == (50, 4) and out["mu"].shape == (50,)
    # the ELBO runs: the family's sites lie outside the plate, the model's inside
    value, grads = jax.jit(vj.value_and_grad_estimate(vj.elbo(plated_model, family)))(
        params, jax.random.key(2), x
    )
    assert np.isfinite(float(value)) and grads["off_diagonal"].shape == (5, 5)


def subsampled_model(x):
    with vj.plate("data", 6, subsample_size=2) as idx:
        vj.sample("z", dist.Normal(0.0, 1.0))
        vj.sample("x", dist.Normal(0.0, 1.0), obs=x[idx])


@pytest.mark.parametrize(
    "make",
    [vj.full_rank_normal, lambda m: vj.low_rank_normal(m, rank=1), vj.laplace_approximation],
    ids=["full", "low", "laplace"],
)
def test_joint_families_refuse_subsampled_plates(make):
    with pytest.raises(ValueError, match="'z' lies in plate 'data', subsampled"):
        make(subsampled_model).init(jax.random.key(0), jnp.arange(6.0))


def test_delta_supports_subsampled_plates():
    family = vj.delta(subsampled_model, init_loc="zeros")
    params = family.init(jax.random.key(0), jnp.arange(6.0))
    params["loc"]["z"] = jnp.arange(6.0) * 10
    tr = vj.trace(vj.seed(family, jax.random.key(1))).get_trace(params, jnp.arange(6.0))
    np.testing.assert_allclose(tr["z"]["value"], tr["data"]["value"] * 10.0)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: vj.full_rank_normal(regression, init_loc="mode"), "init_loc"),
        (lambda: vj.low_rank_normal(regression, rank=2, init_loc=None), "init_loc"),
        (lambda: vj.delta(regression, init_loc="laplace"), "init_loc"),
        (lambda: vj.full_rank_normal(regression, init_scale=0.0), "init_scale"),
        (lambda: vj.full_rank_normal(regression, init_scale="hessian"), "init_scale"),
        (lambda: vj.full_rank_normal(regression, init_scale="laplace"), "init_scale"),
        (lambda: vj.low_rank_normal(regression, rank=0), "rank"),
        (lambda: vj.low_rank_normal(regression, rank=1.5), "rank"),
        (lambda: vj.laplace_approximation(regression, map_steps=0), "map_steps"),
    ],
)
def test_bad_arguments_name_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_rank_above_the_dimension_is_refused():
    with pytest.raises(ValueError, match="rank must be at most the 3"):
        vj.low_rank_normal(regression, rank=4).init(jax.random.key(0), X, YJ)


@pytest.mark.parametrize(
    "make", [vj.full_rank_normal, lambda m: vj.low_rank_normal(m, rank=1), vj.delta]
)
def test_discrete_latent_names_the_site(make):
    def model():
        vj.sample("mu", dist.Normal(0.0, 1.0))
        vj.sample("count", dist.Poisson(3.0))

    with pytest.raises(ValueError, match="'count'"):
        make(model).init(jax.random.key(0))


def test_laplace_refuses_a_hessian_that_is_not_positive_definite():
    # Point-mass priors pin the MAP search's start at (0, 0), where the gradient of
    # log p = a·b vanishes: a saddle (eigenvalues ±1), which has no Laplace approximation.
    def saddle():
        a = vj.sample("a", dist.Delta(0.0))
        b = vj.sample("b", dist.Delta(0.0))
        vj.factor("coupling", a * b)

    with pytest.raises(ValueError, match=r"not positive definite.*smallest eigenvalue -1"):
        vj.laplace_approximation(saddle).init(jax.random.key(0))


def test_wrong_parameter_size_names_the_parameter():
    family = vj.full_rank_normal(regression)
    params = family.init(jax.random.key(0), X, YJ)
    params["log_diagonal"] = jnp.zeros(4)
    params["off_diagonal"] = jnp.zeros((4, 4))
    with pytest.raises(ValueError, match="log_diagonal"):
        vj.seed(family, jax.random.key(0))(params, X, YJ)
