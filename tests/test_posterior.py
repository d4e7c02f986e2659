"""Posterior draws from a family and the model's predictive distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import vijax as vj

X = jnp.array([-1.0, 0.5, 2.0])
NUM = 20000


def model(x, y=None):
    mu = vj.sample("mu", dist.Normal(0.0, 5.0))
    sigma = vj.sample("sigma", dist.HalfNormal(2.0))
    with vj.plate("data", x.shape[0]):
        vj.deterministic("mean", mu * x)
        vj.sample("y", dist.Normal(mu * x, sigma), obs=y)


# q: mu ~ N(M, S²), log sigma ~ N(A, B²)
M, S, A, B = 1.5, 0.3, -0.2, 0.25
FAMILY = vj.mean_field_normal(model)
PARAMS = {
    "loc": {"mu": jnp.array(M), "sigma": jnp.array(A)},
    "log_scale": {"mu": jnp.log(S), "sigma": jnp.log(B)},
}


def within(estimate, truth, standard_error, num_se=4.0):
    return abs(float(estimate) - float(truth)) < num_se * float(standard_error)


@pytest.fixture(scope="module")
def posterior_draws():
    return jax.jit(lambda key: vj.sample_posterior(FAMILY, PARAMS, key, NUM, X))(jax.random.key(0))


def test_sample_posterior_sites_shapes_and_moments(posterior_draws):
    draws = posterior_draws
    assert set(draws) == {"mu", "sigma"}
    assert draws["mu"].shape == (NUM,) and draws["sigma"].shape == (NUM,)
    # Closed-form moments of the family; 4 SE per check, 5 checks: false-failure < 3.2e-4.
    mu, sigma = np.asarray(draws["mu"]), np.asarray(draws["sigma"])
    assert within(mu.mean(), M, S / np.sqrt(NUM))
    assert within(mu.var(), S**2, S**2 * np.sqrt(2 / (NUM - 1)))
    # sigma is log-normal: mean e^{A + B²/2}, variance (e^{B²} − 1) e^{2A + B²}
    lognormal_var = (np.exp(B**2) - 1) * np.exp(2 * A + B**2)
    assert within(sigma.mean(), np.exp(A + B**2 / 2), np.sqrt(lognormal_var / NUM))
    assert within(np.log(sigma).var(), B**2, B**2 * np.sqrt(2 / (NUM - 1)))
    # mean-field: mu and sigma uncorrelated (SE of a sample correlation at 0 is 1/sqrt(n))
    assert within(np.corrcoef(mu, sigma)[0, 1], 0.0, 1 / np.sqrt(NUM))


def test_sample_posterior_returns_deterministic_sites():
    def family(params):
        mu = vj.sample("mu", dist.Normal(params["m"], params["s"]))
        vj.deterministic("mu_squared", mu**2)

    params = {"m": 1.0, "s": 0.5}
    draws = jax.jit(lambda key: vj.sample_posterior(family, params, key, NUM))(jax.random.key(1))
    assert set(draws) == {"mu", "mu_squared"}
    np.testing.assert_allclose(draws["mu_squared"], draws["mu"] ** 2, rtol=1e-6)
    # E[mu²] = m² + s² = 1.25; Var[mu²] = 4 m² s² + 2 s⁴ = 1.125. 4 SE: false-failure < 6.4e-5
    assert within(draws["mu_squared"].mean(), 1.25, np.sqrt(1.125 / NUM))


@pytest.mark.parametrize("batch_size", [1, 4, 10, 20])
def test_batch_size_does_not_change_the_draws(batch_size):
    # Keys are split once for all draws and batching only regroups them, so batched draws are
    # the unbatched ones (batch_size ≥ num_samples is one batch).
    key = jax.random.key(3)
    plain = vj.sample_posterior(FAMILY, PARAMS, key, 20, X)
    batched = vj.sample_posterior(FAMILY, PARAMS, key, 20, X, batch_size=batch_size)
    for name in plain:
        np.testing.assert_allclose(batched[name], plain[name], rtol=1e-6, atol=1e-7)
    # and the draws are distinct from each other and from another key's
    assert len(set(np.asarray(plain["mu"]).tolist())) == 20
    other = vj.sample_posterior(FAMILY, PARAMS, jax.random.key(4), 20, X)
    assert not np.allclose(other["mu"], plain["mu"])


def test_predictive_batch_size_does_not_change_the_draws():
    key = jax.random.key(5)
    plain = vj.predictive(model, FAMILY, PARAMS, key, 12, X)
    batched = vj.predictive(model, FAMILY, PARAMS, key, 12, X, batch_size=3)
    for name in plain:
        np.testing.assert_allclose(batched[name], plain[name], rtol=1e-6, atol=1e-7)


def test_predictive_sites_shapes_and_moments():
    out = jax.jit(lambda key: vj.predictive(model, FAMILY, PARAMS, key, NUM, X))(jax.random.key(6))
    assert set(out) == {"mu", "sigma", "mean", "y"}
    assert out["y"].shape == (NUM, 3) and out["mean"].shape == (NUM, 3)
    # the model ran on each posterior draw: its deterministic site is mu · x of that draw
    np.testing.assert_allclose(out["mean"], out["mu"][:, None] * X, rtol=1e-6)
    # y_j = mu x_j + sigma ε: E[y_j] = M x_j, Var[y_j] = S² x_j² + E[σ²], E[σ²] = e^{2A + 2B²}.
    # Per datum, the mean within 4 SE (closed-form variance) and the variance within 4 SE
    # (SE from the draws' fourth central moment): 6 checks, false-failure < 4e-4.
    y = np.asarray(out["y"])
    for j, x in enumerate(np.asarray(X)):
        variance = S**2 * x**2 + np.exp(2 * A + 2 * B**2)
        assert within(y[:, j].mean(), M * x, np.sqrt(variance / NUM)), j
        centred = y[:, j] - y[:, j].mean()
        fourth = np.mean(centred**4)
        assert within(centred.var(), variance, np.sqrt((fourth - variance**2) / NUM)), j


def test_predictive_leaves_out_observed_sites():
    y = jnp.array([0.1, 0.2, 0.3])
    out = vj.predictive(model, FAMILY, PARAMS, jax.random.key(7), 5, X, y)
    assert set(out) == {"mu", "sigma", "mean"}


N, BATCH = 6, 2
DATA = jnp.arange(N) * 10.0


def subsampled_model(x):
    mu = vj.sample("mu", dist.Normal(0.0, 10.0))
    with vj.plate("data", N, subsample_size=BATCH) as idx:
        vj.deterministic("idx", idx)
        z = vj.sample("z", dist.Normal(mu, 1.0))
        vj.sample("x", dist.Normal(z, 0.1), obs=x[idx])


def test_predictive_with_a_subsampled_plate_uses_the_family_rows():
    # The family draws the local latents of the rows its plate selects; the model must run on
    # those rows (not on fresh indices of its own), so z of row i sits on loc_i = x_i + 1.
    family = vj.mean_field_normal(subsampled_model)
    params = {
        "loc": {"mu": jnp.array(0.0), "z": DATA + 1.0},
        "log_scale": {"mu": jnp.log(1e-4), "z": jnp.full(N, jnp.log(1e-4))},
    }
    out = jax.jit(lambda key: vj.predictive(subsampled_model, family, params, key, 50, DATA))(
        jax.random.key(8)
    )
    assert out["idx"].shape == (50, BATCH) and out["z"].shape == (50, BATCH)
    np.testing.assert_allclose(out["z"], DATA[out["idx"]] + 1.0, atol=1e-2)
    assert len({tuple(row) for row in np.asarray(out["idx"]).tolist()}) > 1


@pytest.mark.parametrize("draw", ["sample_posterior", "predictive"])
@pytest.mark.parametrize("num_samples", [0, -3, 2.5, "10", None])
def test_bad_num_samples_raises(draw, num_samples):
    with pytest.raises(ValueError, match="num_samples"):
        if draw == "sample_posterior":
            vj.sample_posterior(FAMILY, PARAMS, jax.random.key(0), num_samples, X)
        else:
            vj.predictive(model, FAMILY, PARAMS, jax.random.key(0), num_samples, X)


@pytest.mark.parametrize("draw", ["sample_posterior", "predictive"])
@pytest.mark.parametrize("batch_size", [0, -1, 2.5, 3])
def test_bad_batch_size_raises(draw, batch_size):
    # 3 does not divide 10: refused rather than silently dropping or padding draws
    with pytest.raises(ValueError, match="batch_size"):
        if draw == "sample_posterior":
            vj.sample_posterior(FAMILY, PARAMS, jax.random.key(0), 10, X, batch_size=batch_size)
        else:
            vj.predictive(model, FAMILY, PARAMS, jax.random.key(0), 10, X, batch_size=batch_size)


def test_sizes_accept_numpy_integers_and_static_arguments_stay_python():
    def family(params, num):  # ``num`` shapes the program: it must stay a Python int
        vj.sample("z", dist.Normal(params * jnp.ones(num), 1.0).to_event(1))

    draws = vj.sample_posterior(family, 0.5, jax.random.key(0), np.int64(7), 3)
    assert draws["z"].shape == (7, 3)
    with pytest.raises(ValueError, match="num_samples"):
        vj.sample_posterior(family, 0.5, jax.random.key(0), 2.5, 3)
