"""Amortized families: an encoder per datum (nnx, linen, plain apply), plates and minibatches.

The reference is a linear-Gaussian VAE with a fixed decoder, whose posterior per datum is
Gaussian in closed form: ``z_i ~ N(0, I)``, ``x_i ~ N(W z_i + b, σ² I)`` gives
``P = I + WᵀW/σ²`` and ``E[z_i | x_i] = P⁻¹ Wᵀ (x_i − b) / σ²``, an affine map of ``x_i``
that a one-layer (linear) encoder represents exactly, with the covariance ``P⁻¹`` as constant
outputs.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from flax import nnx

import vijax as vj

SIGMA = 0.5
W = np.array([[1.0, 0.5], [-0.3, 0.8], [0.6, -0.9]])
B = np.array([0.2, -0.1, 0.3])
N = 32
Z_TRUE = np.random.default_rng(0).normal(size=(N, 2))
X = jnp.asarray(
    Z_TRUE @ W.T + B + SIGMA * np.random.default_rng(1).normal(size=(N, 3)), jnp.float32
)
PRECISION = np.eye(2) + W.T @ W / SIGMA**2
COVARIANCE = np.linalg.inv(PRECISION)
POSTERIOR_MEANS = (np.asarray(X) - B) @ W @ COVARIANCE.T / SIGMA**2


def vae(x):
    with vj.plate("data", x.shape[0]):
        z = vj.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        vj.sample("x", dist.Normal(z @ W.T + B, SIGMA).to_event(1), obs=x)


class FullEncoder(nnx.Module):
    """One linear layer: (loc, log_diagonal, off_diagonal) of a 2-d Gaussian per datum."""

    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 8, rngs=rngs)

    def __call__(self, x):
        out = self.linear(x)
        return out[:, :2], out[:, 2:4], out[:, 4:].reshape(-1, 2, 2)


@pytest.mark.slow
def test_nnx_full_rank_encoder_recovers_each_datums_exact_posterior():
    # STL (path) gradients vanish when q(z | x_i) is the exact posterior for every i, which a
    # linear encoder can represent: the fit converges to it, not to a noise floor. Measured:
    # mean error ≈ 4e-7, covariance ≈ 3e-6 after 3000 steps; tolerances 1e-3.
    family = vj.amortized_normal(
        FullEncoder(nnx.Rngs(0)), site="z", plate="data", covariance="full"
    )
    params = family.init(jax.random.key(0), X)
    result = vj.fit(
        vj.elbo(vae, vj.with_estimators(family, {"z": vj.path()}), num_particles=4),
        params,
        optax.adam(optax.exponential_decay(0.03, 3000, 0.1)),
        jax.random.key(1),
        X,
        num_steps=3000,
        progress=False,
    )
    assert result.history[-1] > result.history[0]
    median = family.median(result.params, X)["z"]
    np.testing.assert_allclose(median, POSTERIOR_MEANS, atol=1e-3)
    _, log_diagonal, off_diagonal = nnx.merge(family.encoder.graphdef, result.params)(X)
    tril = jnp.tril(off_diagonal, -1) + jax.vmap(jnp.diag)(jnp.exp(log_diagonal))
    covariance = tril @ jnp.swapaxes(tril, -1, -2)
    np.testing.assert_allclose(covariance, np.broadcast_to(COVARIANCE, (N, 2, 2)), atol=1e-3)
    # quantiles per datum: loc ± sd Φ⁻¹(q)
    q = family.quantiles(result.params, jnp.array([0.5, 0.975]), X)["z"]
    assert q.shape == (2, N, 2)
    half_width = np.broadcast_to(1.959964 * np.sqrt(np.diag(COVARIANCE)), (N, 2))
    np.testing.assert_allclose(q[1] - q[0], half_width, rtol=1e-3)


class LinenEncoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        out = nn.Dense(4)(x)
        return out[:, :2], out[:, 2:]


def linear_vae(theta, x):
    """The VAE with a learnable decoder: ``model(model_params, x)``."""
    with vj.plate("data", x.shape[0]):
        z = vj.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        vj.sample("x", dist.Normal(z @ theta["w"].T + theta["b"], SIGMA).to_event(1), obs=x)


@pytest.mark.parametrize("kind", ["nnx", "linen"])
def test_gradients_flow_into_encoder_and_decoder(kind):
    if kind == "nnx":

        class Encoder(nnx.Module):
            def __init__(self, rngs):
                self.linear = nnx.Linear(3, 4, rngs=rngs)

            def __call__(self, x):
                out = self.linear(x)
                return out[:, :2], out[:, 2:]

        encoder = Encoder(nnx.Rngs(0))
    else:
        encoder = LinenEncoder()
    family = vj.amortized_normal(encoder, site="z", plate="data")
    params = vj.ModelAndFamilyParams(
        model={"w": jnp.ones((3, 2)), "b": jnp.zeros(3)},
        family=family.init(jax.random.key(0), X),
    )
    objective = vj.elbo(linear_vae, family, num_particles=2)
    value, grads = jax.jit(vj.value_and_grad_estimate(objective))(params, jax.random.key(1), X)
    assert np.isfinite(float(value))
    for leaf in jax.tree.leaves(grads.family) + jax.tree.leaves(grads.model):
        assert np.all(np.isfinite(np.asarray(leaf))) and np.any(np.asarray(leaf) != 0)
    # one draw per datum, with the per-datum shape
    draws = jax.jit(lambda p, k: vj.sample_posterior(family, p, k, 7, X))(
        params.family, jax.random.key(2)
    )
    assert draws["z"].shape == (7, N, 2)
    # the family scores each datum on its own: log q = Σ_i log N(z_i; μ(x_i), σ(x_i)²)
    tr = vj.trace(vj.seed(family, jax.random.key(3))).get_trace(params.family, X)
    assert tr["z"]["fn"].batch_shape == (N,) and tr["z"]["fn"].event_shape == (2,)
    assert [f.name for f in tr["z"]["cond_indep_stack"]] == ["data"]


def pure_encoder(params, x):
    """A plain apply function: the loc is x @ w, the scale e^{-6}."""
    return x @ params["w"], jnp.full((x.shape[0], 2), -6.0)


ENCODER_PARAMS = {"w": jnp.asarray(np.random.default_rng(2).normal(size=(3, 2)), jnp.float32)}
BATCH = 4


def subsampled_vae(x):
    with vj.plate("data", N, subsample_size=BATCH) as idx:
        z = vj.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        vj.sample("x", dist.Normal(z @ W.T + B, SIGMA).to_event(1), obs=x[idx])


def test_subsampled_plate_encodes_the_selected_rows_and_the_model_replays_them():
    family = vj.amortized_normal(pure_encoder, site="z", plate="data", subsample_size=BATCH)

    @jax.jit
    @jax.vmap
    def run(key):
        family_trace = vj.trace(vj.seed(family, key)).get_trace(ENCODER_PARAMS, X)
        model_trace = vj.trace(
            vj.seed(vj.replay(subsampled_vae, trace=family_trace), jax.random.fold_in(key, 1))
        ).get_trace(X)
        return (
            family_trace["data"]["value"],
            family_trace["z"]["value"],
            jnp.sum(vj.core.site_log_prob(family_trace["z"])),
            model_trace["data"]["value"],
            model_trace["x"]["value"],
        )

    idx, z, log_q, model_idx, model_x = run(jax.random.split(jax.random.key(0), 10))
    assert z.shape == (10, BATCH, 2)
    assert len({tuple(row) for row in np.asarray(idx).tolist()}) > 1  # fresh rows per key
    expected_loc = jnp.take(X, idx, axis=0) @ ENCODER_PARAMS["w"]
    np.testing.assert_allclose(z, expected_loc, atol=1e-2)
    # log q of the minibatch is scaled by N / B, like the model's terms
    log_n = jax.scipy.stats.norm.logpdf(z, expected_loc, np.exp(-6.0)).sum((-1, -2))
    np.testing.assert_allclose(log_q, N / BATCH * log_n, rtol=1e-4)
    np.testing.assert_array_equal(model_idx, idx)
    np.testing.assert_array_equal(model_x, jnp.take(X, idx, axis=0))


def minibatch_vae(x):
    """The model for vj.fit's minibatches: it receives B rows of the N."""
    with vj.plate("data", N, subsample_size=x.shape[0]):
        z = vj.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        vj.sample("x", dist.Normal(z @ W.T + B, SIGMA).to_event(1), obs=x)


@pytest.mark.slow
def test_fit_with_minibatches_trains_the_encoder():
    # vj.fit feeds minibatches of 8 rows; the family (size=N) sees them as given
    family = vj.amortized_normal(
        lambda p, x: (x @ p["w"] + p["c"], jnp.broadcast_to(p["s"], (x.shape[0], 2))),
        site="z",
        plate="data",
        size=N,
    )
    params = {"w": jnp.zeros((3, 2)), "c": jnp.zeros(2), "s": jnp.zeros(2)}
    result = vj.fit(
        vj.elbo(minibatch_vae, family, num_particles=4),
        params,
        optax.adam(optax.exponential_decay(0.03, 1500, 0.02)),
        jax.random.key(0),
        data=(X,),
        batch_size=8,
        num_steps=1500,
        progress=False,
    )
    # the encoder approaches the exact posterior mean map (the mean-field optimum's mean is
    # the posterior mean). Minibatch and Monte Carlo noise: measured max error 0.017 over
    # the 64 coordinates, tolerance 0.1
    median = family.median(result.params, X)["z"]
    error = np.abs(np.asarray(median) - POSTERIOR_MEANS).max()
    print("max error of the encoder's means", error)
    assert error < 0.1
    assert np.mean(result.history[-100:]) > np.mean(result.history[:100])


def test_positive_support_and_errors():
    family = vj.amortized_normal(
        pure_encoder, site="z", plate="data", support=dist.constraints.positive
    )
    z = vj.seed(family, jax.random.key(0))(ENCODER_PARAMS, X)
    np.testing.assert_allclose(z, jnp.exp(X @ ENCODER_PARAMS["w"]), rtol=1e-2)
    with pytest.raises(ValueError, match="covariance"):
        vj.amortized_normal(pure_encoder, site="z", plate="data", covariance="dense")
    with pytest.raises(ValueError, match="subsample_size"):
        vj.amortized_normal(pure_encoder, site="z", plate="data", size=4, subsample_size=8)
    with pytest.raises(ValueError, match="plain apply function"):
        vj.amortized_normal(pure_encoder, site="z", plate="data").init(jax.random.key(0), X)
    bad = vj.amortized_normal(lambda p, x: x @ p["w"], site="z", plate="data")
    with pytest.raises(ValueError, match=r"'z'.*must return"):
        vj.seed(bad, jax.random.key(0))(ENCODER_PARAMS, X)
    sized = vj.amortized_normal(pure_encoder, site="z", plate="data", size=10)
    with pytest.raises(ValueError, match="32 rows"):
        vj.seed(sized, jax.random.key(0))(ENCODER_PARAMS, X)
    missing = vj.amortized_normal(pure_encoder, site="z", plate="data", inputs="images")
    with pytest.raises(ValueError, match="images"):
        vj.seed(missing, jax.random.key(0))(ENCODER_PARAMS, X)
