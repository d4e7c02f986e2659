"""Rényi bounds and CUBO: unbiased gradients of the K-sample objective (Gauss–Hermite reference)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import vijax as vj
from tests.test_estimators import (
    NN_PARAMS,
    X_NN,
    _flat,
    assert_unbiased,
    mc_gradient,
    nn_exact_elbo,
    nn_family,
    nn_model,
)

K = 3


def exact_power_bound(params, x, power, num_particles=K, nodes=20):
    """E[(1/β) log (1/K) Σ_k w_k^β] for nn_model / nn_family, by quadrature over the K noises."""
    eps, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / np.sqrt(2 * np.pi)
    grids = np.meshgrid(*([eps] * num_particles), indexing="ij")
    weights = np.prod(np.meshgrid(*([w] * num_particles), indexing="ij"), axis=0).ravel()
    eps_k = jnp.stack([g.ravel() for g in grids], axis=1)
    m, s = params["loc"], jnp.exp(params["log_scale"])
    z = m + s * eps_k
    log_p = dist.Normal(0.0, 1.0).log_prob(z) + jnp.sum(
        dist.Normal(z[..., None], 1.0).log_prob(x), axis=-1
    )
    log_w = log_p - dist.Normal(m, s).log_prob(z)
    bound = (jax.nn.logsumexp(power * log_w, axis=1) - jnp.log(num_particles)) / power
    return jnp.sum(jnp.asarray(weights) * bound)


def test_power_bounds_are_ordered_like_power_means():
    # (1/β) log mean w^β increases with β, and tends to the ELBO as β → 0.
    values = [float(exact_power_bound(NN_PARAMS, X_NN, b)) for b in (1e-4, 0.5, 1.0, 2.0)]
    assert values == sorted(values)
    np.testing.assert_allclose(values[0], nn_exact_elbo(NN_PARAMS, X_NN), rtol=1e-3)


@pytest.mark.parametrize("strategy", ["reparam", "leave_one_out"])
def test_renyi_half_gradient_is_unbiased(strategy):
    family = nn_family
    if strategy == "leave_one_out":
        family = vj.with_estimators(nn_family, {"z": vj.score_function(vj.leave_one_out())})
    objective = vj.renyi(nn_model, family, K, alpha=0.5)
    mean, se, _ = mc_gradient(objective, NN_PARAMS, X_NN, n=40_000)
    exact = _flat(jax.grad(exact_power_bound)(NN_PARAMS, X_NN, 0.5))
    assert_unbiased(mean, se, exact, label=f"renyi 0.5 {strategy}")


def test_renyi_zero_is_iwae_and_one_is_the_elbo():
    key = jax.random.key(2)
    np.testing.assert_allclose(
        vj.renyi(nn_model, nn_family, K, alpha=0.0)(NN_PARAMS, key, X_NN).value,
        vj.iwae(nn_model, nn_family, K)(NN_PARAMS, key, X_NN).value,
        rtol=1e-6,
    )
    objective = vj.renyi(nn_model, nn_family, K, alpha=1.0)
    mean, se, _ = mc_gradient(objective, NN_PARAMS, X_NN, n=4000)
    assert_unbiased(mean, se, _flat(jax.grad(nn_exact_elbo)(NN_PARAMS, X_NN)), label="alpha=1")


def test_cubo_gradient_is_unbiased_and_its_value_is_the_negated_bound():
    objective = vj.cubo(nn_model, nn_family, K, n=2.0)
    mean, se, _ = mc_gradient(objective, NN_PARAMS, X_NN, n=40_000)
    exact = _flat(jax.grad(lambda p: -exact_power_bound(p, X_NN, 2.0))(NN_PARAMS))
    assert_unbiased(mean, se, exact, label="cubo")
    values = jax.vmap(lambda k: objective(NN_PARAMS, k, X_NN).value)(
        jax.random.split(jax.random.key(4), 20_000)
    )
    values = np.asarray(values, np.float64)
    se_value = values.std() / np.sqrt(values.size)
    assert abs(values.mean() + float(exact_power_bound(NN_PARAMS, X_NN, 2.0))) < 4.5 * se_value


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n must be > 1"):
        vj.cubo(nn_model, nn_family, K, n=1.0)
    with pytest.raises(ValueError, match="num_particles"):
        vj.renyi(nn_model, nn_family, 0, alpha=0.5)


@pytest.mark.parametrize("strategy", ["reparam", "leave_one_out"])
def test_renyi_is_continuous_at_alpha_one(strategy):
    # For the same 8 keys, L_{α,K} at α = 1 ± 1e-3 is within tolerance of α = 1 (the ELBO),
    # values and gradients. The gap is first order in β = 1 − α = ∓1e-3:
    # (1/β) log mean exp(β W) = mean W + (β/2) Var_k W + O(β²), and the gradient moves by
    # about β Cov_k(W, ∇W); measured here 6e-4 (values) and 3.4e-3 (gradients), so the
    # tolerance is 5e-3 for values and 1e-2 for gradients (+1e-3 relative); float32 rounding of
    # the log mean exp divided by β adds ~1e-4. With leave-one-out the score-function signal is
    # continuous too: VIMCO's L(W) − L(W_{−k}) tends to (W_k − mean_{j≠k} W_j)/K, the ELBO's
    # leave-one-out signal. And the gap is not rounding: at α = 0.9 it is ~100 times larger.
    family = nn_family
    if strategy == "leave_one_out":
        family = vj.with_estimators(nn_family, {"z": vj.score_function(vj.leave_one_out())})
    keys = jax.random.split(jax.random.key(5), 8)
    alphas = (1.0, 1.0 - 1e-3, 1.0 + 1e-3, 0.9)

    @jax.jit  # one compilation for the four objectives
    def run(params, keys, x):
        def one(alpha):
            step = vj.value_and_grad_estimate(vj.renyi(nn_model, family, K, alpha=alpha))
            value, grads = jax.vmap(step, (None, 0, None))(params, keys, x)
            return value, jax.vmap(_flat)(grads)

        return [one(alpha) for alpha in alphas]

    (value, grad), *others = [tuple(map(np.asarray, out)) for out in run(NN_PARAMS, keys, X_NN)]
    for alpha, (v, g) in zip(alphas[1:3], others[:2]):
        np.testing.assert_allclose(v, value, rtol=1e-3, atol=5e-3, err_msg=f"alpha={alpha}")
        np.testing.assert_allclose(g, grad, rtol=1e-3, atol=1e-2, err_msg=f"alpha={alpha}")
    # the gap is first order in β: at α = 0.9 (β = 0.1 = 100 · 1e-3) it is ~100 times larger
    for near, far in (
        (others[0][0] - value, others[2][0] - value),
        (others[0][1] - grad, others[2][1] - grad),
    ):
        ratio = np.linalg.norm(far) / np.linalg.norm(near)
        print(f"renyi gap ratio α=0.9 / α=0.999: {ratio:.1f}")
        assert 50 < ratio < 200
