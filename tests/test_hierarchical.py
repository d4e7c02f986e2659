"""Hierarchical bounds (HVI, IWHVI, DIWHVI, SIVI) against quadrature and exact enumeration.

Two hierarchical families on the Normal–Normal model ``z ~ N(θ, 1)``, ``x_i ~ N(z, 1)``:

- *Gaussian*: ``λ ~ N(μ, s²)``, ``z | λ ~ N(λ, σ²)``, so ``q(z) = N(μ, s² + σ²)`` and the exact
  reverse ``q(λ | z)`` is Gaussian; the reverse ``r(λ | z) = N(a z + b, t²)`` is either that
  conditional or a deliberately wrong one. Every bound is a Gaussian integral over the noises
  ``(ε_λ0, ε_z, ε_1..ε_K)``, computed by tensor Gauss–Hermite quadrature (8 nodes agree with
  12 to 2e-5 here).
- *Mixture*: ``λ ~ Categorical(π)`` over 3 components, ``z | λ ~ N(m_λ, s_λ²)``, reverse
  ``r(λ | z) = Categorical(logits = w z + c)`` (not the exact conditional): exact by summing
  over every ``λ`` and Gauss–Hermite over ``z``.

Statistical checks use ``tests.test_estimators.assert_unbiased``: ``|mean − exact| < 4.5 SE``
per coordinate (a two-sided normal tail of 7e-6; with < 100 coordinates in this file the
false-failure budget for fresh seeds is below 1e-3, and the seeds are fixed).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import vijax as vj
from tests.test_estimators import Z, _flat, assert_unbiased, mc_gradient

X = jnp.array([0.7, -0.2, 1.3])
THETA = jnp.array(0.2)


def model(theta, x):
    z = vj.sample("z", dist.Normal(theta, 1.0))
    with vj.plate("data", x.shape[0]):
        vj.sample("x", dist.Normal(z, 1.0), obs=x)


def log_joint(theta, z, x):
    return dist.Normal(theta, 1.0).log_prob(z) + jnp.sum(
        dist.Normal(z[..., None], 1.0).log_prob(x), axis=-1
    )


def log_evidence(theta, x):
    n = x.shape[0]
    cov = jnp.eye(n) + jnp.ones((n, n))
    return jax.scipy.stats.multivariate_normal.logpdf(x, theta * jnp.ones(n), cov)


def value_and_gradient(objective, params, *args, n, seed=0):
    """Means and standard errors of ``n`` draws of the value and of the gradient estimate."""
    estimator = vj.gradient_estimator(objective)

    @jax.jit
    def draws(keys):
        def one(key):
            value, grads, _ = estimator.estimate(params, None, key, *args)
            return value, _flat(grads)

        return jax.vmap(one)(keys)

    values, grads = draws(jax.random.split(jax.random.key(seed), n))
    values, grads = np.asarray(values, np.float64), np.asarray(grads, np.float64)
    mean_se = lambda a: (a.mean(0), a.std(0, ddof=1) / np.sqrt(n))  # noqa: E731
    return mean_se(values), mean_se(grads)


def assert_value_unbiased(value, exact, label):
    (mean, se), exact = value, float(exact)
    print(f"{label} value: {mean:.4f} ± {se:.4f} vs exact {exact:.4f}")
    assert abs(mean - exact) < Z * se, label


def hermite_grid(dims, nodes):
    """Tensor Gauss–Hermite nodes ``(points, dims)`` and weights for ``E`` over ``N(0, I)``."""
    eps, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / np.sqrt(2 * np.pi)
    grids = np.meshgrid(*([eps] * dims), indexing="ij")
    weights = np.prod(np.meshgrid(*([w] * dims), indexing="ij"), axis=0).ravel()
    return jnp.asarray(np.stack([g.ravel() for g in grids], axis=1)), jnp.asarray(weights)


# --------------------------------------------------------------------------------------------
# The Gaussian hierarchical family
# --------------------------------------------------------------------------------------------


def family(phi, x):
    lam = vj.sample("lam", dist.Normal(phi["mu"], jnp.exp(phi["log_s"])))
    vj.sample("z", dist.Normal(lam, jnp.exp(phi["log_sigma"])))


def reverse(psi, latents, x):
    vj.sample("lam", dist.Normal(psi["a"] * latents["z"] + psi["b"], jnp.exp(psi["log_t"])))


PHI = {"mu": jnp.array(0.3), "log_s": jnp.array(-0.5), "log_sigma": jnp.array(-0.7)}
WRONG_PSI = {"a": jnp.array(0.2), "b": jnp.array(0.0), "log_t": jnp.array(-0.5)}


def exact_reverse(phi):
    """``q(λ | z) = N(a z + b, t²)`` for the Gaussian family."""
    s2, sigma2 = jnp.exp(2 * phi["log_s"]), jnp.exp(2 * phi["log_sigma"])
    a = s2 / (s2 + sigma2)
    return {"a": a, "b": phi["mu"] * (1 - a), "log_t": 0.5 * jnp.log(a * sigma2)}


def mixing_reverse(phi):
    """SIVI's ``r(λ | z) = q(λ) = N(μ, s²)`` in the reverse's parameterization."""
    return {"a": jnp.zeros(()), "b": phi["mu"], "log_t": phi["log_s"]}


def params_of(psi, theta=THETA, phi=PHI):
    return vj.ModelAndFamilyParams(model=theta, family=vj.FamilyAndReverseParams(phi, psi))


def gaussian_log_weights(theta, phi, psi, eps, num_inner):
    """``log p(x, z) − log q̂_K(z)`` at noises ``eps[..., :K+2]``."""
    mu, s, sigma = phi["mu"], jnp.exp(phi["log_s"]), jnp.exp(phi["log_sigma"])
    lam0 = mu + s * eps[..., 0]
    z = lam0 + sigma * eps[..., 1]
    loc, t = psi["a"] * z + psi["b"], jnp.exp(psi["log_t"])
    lams = jnp.concatenate([lam0[..., None], loc[..., None] + t * eps[..., 2 : 2 + num_inner]], -1)
    weights = (
        dist.Normal(mu, s).log_prob(lams)
        + dist.Normal(lams, sigma).log_prob(z[..., None])
        - dist.Normal(loc[..., None], t).log_prob(lams)
    )
    log_q = jax.nn.logsumexp(weights, axis=-1) - jnp.log(num_inner + 1)
    return log_joint(theta, z, X) - log_q


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def gaussian_bound(params, num_inner, num_particles=1, nodes=8):
    """``L_K`` (``num_particles = 1``) or ``L_{M,K}``, by quadrature over every noise."""
    theta, phi, psi = params.model, params.family.family, params.family.reverse
    dims = num_inner + 2
    eps, w = hermite_grid(dims * num_particles, nodes)
    eps = eps.reshape(-1, num_particles, dims)
    log_w = gaussian_log_weights(theta, phi, psi, eps, num_inner)
    return jnp.sum(w * (jax.nn.logsumexp(log_w, axis=1) - jnp.log(num_particles)))


@functools.partial(jax.jit, static_argnums=(1, 2))
def gaussian_sivi_bound(theta_phi, num_inner, nodes=8):
    theta, phi = theta_phi.model, theta_phi.family
    return gaussian_bound(params_of(mixing_reverse(phi), theta, phi), num_inner, nodes=nodes)


def exact_marginal_elbo(theta, phi):
    """The ELBO of ``q(z) = N(μ, s² + σ²)``, closed form."""
    mu, v = phi["mu"], jnp.exp(2 * phi["log_s"]) + jnp.exp(2 * phi["log_sigma"])
    log2pi = jnp.log(2 * jnp.pi)
    prior = -0.5 * log2pi - 0.5 * ((mu - theta) ** 2 + v)
    likelihood = jnp.sum(-0.5 * log2pi - 0.5 * ((X - mu) ** 2 + v))
    return prior + likelihood + 0.5 * jnp.log(2 * jnp.pi * jnp.e * v)


def test_quadrature_reference_is_accurate():
    # With the exact reverse the bound is the closed-form marginal ELBO for every K; with the
    # wrong one, 8 and 12 nodes agree.
    for nodes in (8, 12):
        np.testing.assert_allclose(
            gaussian_bound(params_of(exact_reverse(PHI)), 2, nodes=nodes),
            exact_marginal_elbo(THETA, PHI),
            rtol=1e-5,
        )
    np.testing.assert_allclose(
        gaussian_bound(params_of(WRONG_PSI), 2, nodes=8),
        gaussian_bound(params_of(WRONG_PSI), 2, nodes=12),
        rtol=1e-5,
    )


def test_bounds_are_ordered_and_tighten_with_num_inner():
    """HVI ≤ IWHVI(1) ≤ IWHVI(2) ≤ IWHVI(3) ≤ ELBO(q(z)) ≤ log p(x), and DIWHVI above IWHVI."""
    params = params_of(WRONG_PSI)
    bounds = [float(gaussian_bound(params, k)) for k in range(4)]
    elbo = float(exact_marginal_elbo(THETA, PHI))
    evidence = float(log_evidence(THETA, X))
    print(f"L_K, K = 0..3: {bounds}; marginal ELBO {elbo:.4f}; log p(x) {evidence:.4f}")
    # measured: -4.8075 < -4.6301 < -4.5674 < -4.5356 < -4.4393 < -4.0800
    assert np.all(np.diff([*bounds, elbo, evidence]) > 0.02)
    # the gap to the marginal ELBO shrinks roughly like 1/K (Sobolev & Vetrov 2019)
    gaps = [elbo - b for b in bounds]
    assert gaps[3] < 0.6 * gaps[1]
    diwhvi = float(gaussian_bound(params, 1, num_particles=2))
    print(f"DIWHVI(M=2, K=1) {diwhvi:.4f}")
    assert bounds[1] + 0.02 < diwhvi < evidence
    sivi = [float(gaussian_sivi_bound(vj.ModelAndFamilyParams(THETA, PHI), k)) for k in (1, 3)]
    print(f"SIVI K = 1, 3: {sivi}")
    assert sivi[0] < sivi[1] < elbo


@pytest.mark.slow
def test_density_estimate_upper_bounds_log_q_and_converges():
    """``E[log q̂_K(z) − log q(z)]`` ≥ 0, decreasing in ``K`` to 0; exactly 0 for ``r = q(λ|z)``.

    The gap is the marginal ELBO minus ``L_K``; it is measured on the density estimate itself
    (no model terms), which keeps its standard error small.
    """

    def gaps(psi, num_inner, n=4000):
        m = vj.marginal(family, aux=("lam",), reverse=reverse, num_inner=num_inner)
        params = vj.FamilyAndReverseParams(PHI, psi)
        variance = jnp.exp(2 * PHI["log_s"]) + jnp.exp(2 * PHI["log_sigma"])
        q_z = dist.Normal(PHI["mu"], jnp.sqrt(variance))

        def one(key):
            trace = m.trace(params, key, X)
            log_q = m.log_density(params, jax.random.fold_in(key, 1), trace, X).value
            return log_q - q_z.log_prob(trace["z"]["value"])

        keys = jax.random.split(jax.random.key(num_inner), n)
        return np.asarray(jax.jit(jax.vmap(one))(keys), np.float64)

    means, ses = [], []
    for num_inner in (1, 64):
        g = gaps(WRONG_PSI, num_inner)
        means.append(g.mean())
        ses.append(g.std() / np.sqrt(g.size))
    print(f"gap E[log q̂_K − log q], K = 1, 64: {means} ± {ses}")
    elbo = float(exact_marginal_elbo(THETA, PHI))
    exact_gaps = [elbo - float(gaussian_bound(params_of(WRONG_PSI), k)) for k in (0, 1)]
    assert abs(means[0] - exact_gaps[1]) < Z * ses[0]
    assert exact_gaps[0] > means[0] > means[1] > -Z * ses[1]
    assert means[1] < 0.05 * means[0]  # measured ≈ 1/40 of the K = 1 gap
    # the exact reverse: q(z, λ) / q(λ | z) = q(z) for every λ, so log q̂_K(z) = log q(z)
    np.testing.assert_allclose(gaps(exact_reverse(PHI), 3, n=200), 0.0, atol=2e-5)


@pytest.mark.parametrize("name", ["hvi", "iwhvi", "sivi", "diwhvi"])
def test_reparameterized_values_and_gradients_are_unbiased(name):
    """Values and gradients in θ, φ and ψ (every site pathwise) against the quadrature."""
    params = params_of(WRONG_PSI)
    if name == "hvi":
        objective = vj.hvi(model, family, aux=("lam",), reverse=reverse)
        bound = functools.partial(gaussian_bound, num_inner=0)
    elif name == "iwhvi":  # two outer particles averaged: each inner block nests in the plate
        objective = vj.iwhvi(
            model, family, aux=("lam",), reverse=reverse, num_inner=2, num_particles=2
        )
        bound = functools.partial(gaussian_bound, num_inner=2)
    elif name == "diwhvi":
        objective = vj.diwhvi(
            model, family, aux=("lam",), reverse=reverse, num_particles=2, num_inner=1
        )
        bound = functools.partial(gaussian_bound, num_inner=1, num_particles=2)
    else:
        objective = vj.sivi(model, family, aux="lam", num_inner=2)
        params = vj.ModelAndFamilyParams(THETA, PHI)
        bound = functools.partial(gaussian_sivi_bound, num_inner=2)
    value, (mean, se) = value_and_gradient(objective, params, X, n=10_000)
    exact_value, exact_grad = jax.value_and_grad(bound)(params)
    assert_value_unbiased(value, exact_value, label=name)
    assert_unbiased(mean, se, _flat(exact_grad), label=name)


@pytest.mark.slow
def test_exact_reverse_gives_the_marginal_elbo_gradient():
    # With r = q(λ | z) held at its value, L_K = ELBO(q(z)) for every K: the φ-gradient is the
    # marginal ELBO's (the reverse's own gradient is zero at the optimum r).
    psi = exact_reverse(PHI)
    objective = vj.iwhvi(model, family, aux=("lam",), reverse=reverse, num_inner=3)
    mean, se, draws = mc_gradient(objective, params_of(psi), X, n=4000, seed=5)
    exact_theta, exact_phi = jax.grad(exact_marginal_elbo, argnums=(0, 1))(THETA, PHI)
    exact = jnp.concatenate([exact_theta[None], _flat(exact_phi), jnp.zeros(3)])
    assert_unbiased(mean, se, exact, atol=1e-4, label="exact reverse")
    # the draws above ran under jit(vmap(...)) over keys; one key at a time gives the same
    estimate = jax.jit(vj.grad_estimate(objective))
    keys = jax.random.split(jax.random.key(5), 4000)
    for i in (0, 1234):
        single = _flat(estimate(params_of(psi), keys[i], X))
        np.testing.assert_allclose(single, draws[i], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# The mixture family: a discrete auxiliary site
# --------------------------------------------------------------------------------------------

MIX_PHI = {
    "logits": jnp.array([0.3, -0.4, 0.1]),
    "locs": jnp.array([-0.5, 0.4, 1.2]),
    "log_scales": jnp.array([-0.6, -0.3, -0.9]),
}
MIX_PSI = {"w": jnp.array([-1.0, 0.2, 0.8]), "c": jnp.array([0.2, 0.0, -0.3])}


def mixture_family(phi, x):
    lam = vj.sample("lam", dist.Categorical(logits=phi["logits"]))
    vj.sample("z", dist.Normal(phi["locs"][lam], jnp.exp(phi["log_scales"][lam])))


def mixture_reverse(psi, latents, x):
    vj.sample("lam", dist.Categorical(logits=psi["w"] * latents["z"] + psi["c"]))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def mixture_bound(params, num_inner, num_particles=1, mixing=False, nodes=24):
    """``L_{M,K}`` by summing over every auxiliary value and Gauss–Hermite over each ``z_m``.

    ``mixing=True`` is SIVI: ``r(λ | z) = π``, the family's mixing weights.
    """
    theta, phi = params.model, params.family
    if not mixing:
        phi, psi = phi.family, phi.reverse
    log_pi = jax.nn.log_softmax(phi["logits"])
    locs, scales = phi["locs"], jnp.exp(phi["log_scales"])
    eps, w = hermite_grid(1, nodes)
    combos = jnp.array(list(itertools.product(range(3), repeat=num_inner + 1)))  # (C, K+1)

    def per_particle(eps_m):  # (nodes,) → log weights (3^(K+1), nodes) and their probabilities
        lam0 = combos[:, 0][:, None]
        z = locs[lam0] + scales[lam0] * eps_m[None, :]  # (C, nodes)
        log_r = log_pi[None, None, :] if mixing else psi["w"] * z[..., None] + psi["c"]
        log_r = jax.nn.log_softmax(log_r, axis=-1) * jnp.ones((*z.shape, 1))  # (C, nodes, 3)
        lam = combos[:, None, :]  # (C, 1, K+1)
        r_lam = jnp.take_along_axis(log_r, jnp.broadcast_to(lam, z.shape + lam.shape[-1:]), -1)
        log_q = log_pi[lam] + dist.Normal(locs[lam], scales[lam]).log_prob(z[..., None])
        log_q_hat = jax.nn.logsumexp(log_q - r_lam, axis=-1) - jnp.log(num_inner + 1)
        prob = log_pi[combos[:, 0]][:, None] + jnp.sum(r_lam[..., 1:], axis=-1)
        return log_joint(theta, z, X) - log_q_hat, prob  # (C, nodes) each

    log_ws, log_probs = [], []
    for m in range(num_particles):
        log_w, log_prob = per_particle(eps[:, 0])
        shape = [1] * (2 * num_particles)
        shape[2 * m : 2 * m + 2] = log_w.shape
        log_ws.append(log_w.reshape(shape))
        log_probs.append((log_prob + jnp.log(w)[None, :]).reshape(shape))
    total_log_w = jnp.stack(jnp.broadcast_arrays(*log_ws))
    bound = jax.nn.logsumexp(total_log_w, axis=0) - jnp.log(num_particles)
    return jnp.sum(jnp.exp(sum(log_probs)) * bound)


def test_mixture_reference_matches_a_closed_form():
    # With K = 0 and r = π (SIVI), L_0 = E[log p(x, z) − log q(z | λ)]: check it against the
    # same expectation written out per component.
    params = vj.ModelAndFamilyParams(THETA, MIX_PHI)
    pi = jax.nn.softmax(MIX_PHI["logits"])
    locs, scales = MIX_PHI["locs"], jnp.exp(MIX_PHI["log_scales"])
    log2pi = jnp.log(2 * jnp.pi)
    per_component = (
        -0.5 * log2pi
        - 0.5 * ((locs - THETA) ** 2 + scales**2)
        + jnp.sum(-0.5 * log2pi - 0.5 * ((X[:, None] - locs) ** 2 + scales**2), axis=0)
        + 0.5 * jnp.log(2 * jnp.pi * jnp.e * scales**2)
    )
    np.testing.assert_allclose(
        mixture_bound(params, 0, mixing=True), jnp.sum(pi * per_component), rtol=1e-5
    )


def _mixture(name, strategy, inner=None):
    """The objective, its parameters and its exact bound for a discrete auxiliary site."""
    lam_strategy = {"enum": vj.enumeration(), "score": vj.score_function()}[strategy]
    fam = vj.with_estimators(mixture_family, {"lam": lam_strategy})
    rev = mixture_reverse if inner is None else vj.with_estimators(mixture_reverse, inner)
    params = vj.ModelAndFamilyParams(THETA, vj.FamilyAndReverseParams(MIX_PHI, MIX_PSI))
    if name == "hvi":
        objective = vj.hvi(model, fam, aux=("lam",), reverse=rev)
        bound = functools.partial(mixture_bound, num_inner=0)
    elif name == "iwhvi":
        objective = vj.iwhvi(model, fam, aux=("lam",), reverse=rev, num_inner=2)
        bound = functools.partial(mixture_bound, num_inner=2)
    elif name == "diwhvi":
        objective = vj.diwhvi(model, fam, aux=("lam",), reverse=rev, num_particles=2, num_inner=1)
        bound = functools.partial(mixture_bound, num_inner=1, num_particles=2)
    else:
        objective = vj.sivi(model, fam, aux=("lam",), num_inner=2)
        params = vj.ModelAndFamilyParams(THETA, MIX_PHI)
        bound = functools.partial(mixture_bound, num_inner=2, mixing=True)
    return objective, params, bound


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "strategy", "inner"),
    [
        ("hvi", "enum", None),
        ("iwhvi", "score", "leave_one_out"),
        ("sivi", "enum", None),
        ("diwhvi", "score", None),
    ],
)
def test_discrete_auxiliary_site_gradients_are_unbiased(name, strategy, inner):
    """λ_0 enumerated or on the score function; inner draws λ_{1..K} on the score function,
    plain or with the leave-one-out baseline over the inner particles (VIMCO for the inner
    block, which ``Marginal.log_density`` returns as a coupled particle block)."""
    if inner == "leave_one_out":
        inner = {"lam": vj.score_function(vj.leave_one_out())}
    objective, params, bound = _mixture(name, strategy, inner)
    exact_value, exact_grad = jax.value_and_grad(bound)(params)
    value, (mean, se) = value_and_gradient(objective, params, X, n=40_000)
    label = f"{name} λ_0:{strategy} inner:{'loo' if inner else 'plain'}"
    assert_value_unbiased(value, exact_value, label=label)
    exact = _flat(exact_grad)
    assert_unbiased(mean, se, exact, label=label)
    # informative: the standard errors resolve most coordinates of the gradient
    assert np.mean(se < 0.25 * np.abs(exact)) > 0.5


@pytest.mark.slow
def test_discrete_bounds_are_ordered():
    params = vj.ModelAndFamilyParams(THETA, vj.FamilyAndReverseParams(MIX_PHI, MIX_PSI))
    bounds = [float(mixture_bound(params, k)) for k in range(3)]
    # the exact marginal ELBO: q(z) = Σ_λ π_λ N(z; m_λ, s_λ²), by quadrature per component
    pi = jax.nn.softmax(MIX_PHI["logits"])
    locs, scales = MIX_PHI["locs"], jnp.exp(MIX_PHI["log_scales"])
    eps, w = hermite_grid(1, 40)
    z = locs[:, None] + scales[:, None] * eps[None, :, 0]
    log_q = jax.nn.logsumexp(
        jnp.log(pi) + dist.Normal(locs, scales).log_prob(z[..., None]), axis=-1
    )
    elbo = float(jnp.sum(pi[:, None] * w[None, :] * (log_joint(THETA, z, X) - log_q)))
    print(f"mixture L_K, K = 0..2: {bounds}; marginal ELBO {elbo:.4f}")
    assert bounds[0] < bounds[1] < bounds[2] < elbo < float(log_evidence(THETA, X))


# --------------------------------------------------------------------------------------------
# Transformations and bad input
# --------------------------------------------------------------------------------------------


def test_bad_input_is_refused_naming_the_argument_or_site():
    key, params = jax.random.key(0), params_of(WRONG_PSI)

    def run(objective, p=params):  # traces (where the checks run) without executing
        return jax.eval_shape(vj.grad_estimate(objective), p, key, X)

    with pytest.raises(ValueError, match=r"aux: unknown site\(s\) \['lambda'\]"):
        run(vj.iwhvi(model, family, aux=("lambda",), reverse=reverse, num_inner=1))
    with pytest.raises(ValueError, match="num_inner must be an int >= 0"):
        vj.iwhvi(model, family, aux=("lam",), reverse=reverse, num_inner=-1)
    with pytest.raises(ValueError, match="num_particles"):
        vj.diwhvi(model, family, aux=("lam",), reverse=reverse, num_particles=0, num_inner=1)
    with pytest.raises(ValueError, match="aux must be"):
        vj.hvi(model, family, aux=(), reverse=reverse)

    def wrong_site(psi, latents, x):
        vj.sample("mu", dist.Normal(latents["z"], 1.0))

    with pytest.raises(ValueError, match=r"reverse: does not sample the auxiliary site\(s\)"):
        run(vj.hvi(model, family, aux=("lam",), reverse=wrong_site))

    def extra_site(psi, latents, x):
        reverse(psi, latents, x)
        vj.sample("u", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"reverse: samples site\(s\) \['u'\]"):
        run(vj.iwhvi(model, family, aux=("lam",), reverse=extra_site, num_inner=2))
    with pytest.raises(ValueError, match="FamilyAndReverseParams"):
        run(vj.hvi(model, family, aux=("lam",), reverse=reverse), vj.ModelAndFamilyParams(0.0, PHI))
    with pytest.raises(ValueError, match=r"aux: site\(s\) \['z'\] are latent sites of the model"):
        run(vj.hvi(model, family, aux=("z",), reverse=reverse))
    enumerated = vj.with_estimators(mixture_reverse, {"lam": vj.enumeration()})
    mixture_params = vj.FamilyAndReverseParams(MIX_PHI, MIX_PSI)
    with pytest.raises(ValueError, match="site 'lam' of the reverse: enumeration is not supported"):
        run(
            vj.iwhvi(model, mixture_family, aux=("lam",), reverse=enumerated, num_inner=2),
            vj.ModelAndFamilyParams(THETA, mixture_params),
        )
    path_family = vj.with_estimators(family, {"z": vj.path()})
    with pytest.raises(ValueError, match="site 'z' of the family: the path"):
        run(vj.iwhvi(model, path_family, aux=("lam",), reverse=reverse, num_inner=2))
    run(vj.hvi(model, path_family, aux=("lam",), reverse=reverse))  # K = 0: STL is unbiased
