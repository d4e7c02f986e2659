"""The flow auto-family: constraints, plates, densities, a conjugate posterior, path gradients.

The conjugate reference is Bayesian linear regression with known noise (as in
``test_families_gaussian``): ``w ~ N(0, I)``, ``y ~ N(A w, I)`` has the Gaussian posterior
``Σ = (I + AᵀA)⁻¹``, ``m = Σ Aᵀ y``, correlated (−0.69 between two weights).
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from numpyro.distributions import constraints

import vijax as vj
from vijax.families import _sites

auto_flow_module = importlib.import_module("vijax.families.auto_flow")

A = np.array(
    [[1, 0.3, 0.9], [1, -0.4, -0.2], [1, 1.0, 1.3], [1, 0.8, 0.4], [1, -1.1, -0.9], [1, 0.2, 0.5]]
)
Y = np.array([1.0, -0.5, 2.1, 1.2, -1.4, 0.6])
COVARIANCE = np.linalg.inv(np.eye(3) + A.T @ A)
MEAN = COVARIANCE @ A.T @ Y
X, YJ = jnp.asarray(A, jnp.float32), jnp.asarray(Y, jnp.float32)


def regression(x, y):
    w = vj.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with vj.plate("data", x.shape[0]):
        vj.sample("y", dist.Normal(x @ w, 1.0), obs=y)


def constrained_model():
    vj.sample("scale", dist.HalfNormal(1.0))
    vj.sample("weights", dist.Dirichlet(jnp.ones(3)))
    vj.sample("bounded", dist.Uniform(-1.0, 2.0))
    with vj.plate("groups", 4):
        vj.sample("local", dist.Normal(0.0, 1.0))


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_draws_respect_constraints_and_plates_and_the_density_adds_up(kind):
    # Every draw lies in its site's support with the site's (plated) shape; the sites' log
    # densities sum to the flow's inverse-pass log q(u) minus the bijections' log-Jacobians
    # (float32, tolerance 1e-3 relative to |log q| of order 10).
    family = vj.auto_flow(constrained_model, kind=kind, length=2, hidden=(8,), init_loc="zeros")
    params = family.init(jax.random.key(0))
    draws = vj.sample_posterior(family, params, jax.random.key(1), 200)
    assert draws["scale"].shape == (200,) and bool(jnp.all(draws["scale"] > 0))
    assert draws["weights"].shape == (200, 3)
    assert bool(jnp.all(constraints.simplex.check(draws["weights"])))
    assert bool(jnp.all((draws["bounded"] > -1.0) & (draws["bounded"] < 2.0)))
    assert draws["local"].shape == (200, 4)

    @jax.jit
    def density_and_reference(params, key):
        trace = vj.core.trace(vj.seed(family, key)).get_trace(params)
        log_q = sum(site["fn"].log_prob(site["value"]) for site in trace.values())
        latents = auto_flow_module._latents(constrained_model, (), {})
        u = {s.name: _sites.unconstrain(s, trace[s.name]["value"]) for s in latents}
        flat = _sites.ravel(latents, u)
        x = (flat - _sites.ravel(latents, params["loc"])) / jnp.exp(params["log_scale"])
        reference = (
            family.flow(flat.shape[0]).log_prob(params["flow"], x)
            - jnp.sum(params["log_scale"])
            - _sites.log_abs_det_jacobian(latents, u)
        )
        return log_q, reference

    log_q, reference = density_and_reference(params, jax.random.key(2))
    np.testing.assert_allclose(log_q, reference, rtol=1e-3, atol=1e-3)


def test_median_and_quantiles_lie_in_the_support_and_are_ordered():
    family = vj.auto_flow(constrained_model, kind="iaf", length=2, hidden=(8,), init_loc="zeros")
    params = family.init(jax.random.key(0))
    median = family.median(params)
    quantiles = family.quantiles(params, jnp.array([0.1, 0.5, 0.9]))
    assert float(median["scale"]) > 0 and median["local"].shape == (4,)
    assert quantiles["weights"].shape == (3, 3) and quantiles["local"].shape == (3, 4)
    for name in median:
        assert bool(jnp.all(jnp.diff(quantiles[name], axis=0) >= 0)), name
        np.testing.assert_allclose(quantiles[name][1], median[name], rtol=1e-6)
    with pytest.raises(ValueError, match="q must lie in"):
        family.quantiles(params, 1.5)


@pytest.mark.slow
def test_fitted_auto_flow_recovers_the_conjugate_posterior():
    # IAF (2 layers), fast path gradient, 1500 Adam steps (1e-2 decaying to 1e-3). The
    # family contains the exact posterior (an affine flow), and the path gradient vanishes
    # there. Moments from 20 000 draws (Monte Carlo error ≈ 0.004 on the mean, 0.003 on the
    # covariance). Tolerance 0.03 on the mean and 0.02 on the covariance (posterior sds
    # 0.4–0.7).
    family = vj.auto_flow(
        regression, kind="iaf", length=2, hidden=(16,), init_scale=0.5, estimator=vj.path()
    )
    params = family.init(jax.random.key(0), X, YJ)
    result = vj.fit(
        vj.elbo(regression, family, num_particles=8),
        params,
        optax.adam(optax.exponential_decay(1e-2, 1500, 0.1)),
        jax.random.key(1),
        X,
        YJ,
        num_steps=1500,
        progress=False,
    )
    draws = vj.sample_posterior(family, result.params, jax.random.key(2), 20_000, X, YJ)["w"]
    draws = np.asarray(draws, np.float64)
    np.testing.assert_allclose(draws.mean(0), MEAN, atol=0.03)
    np.testing.assert_allclose(np.cov(draws.T), COVARIANCE, atol=0.02)


def test_fast_path_gradient_is_unbiased():
    # Exact ELBO gradient by Gauss–Hermite quadrature over the 2-D base noise (40² nodes),
    # differentiated by jax.grad; 5 000 fast-path estimates must match it within 4.5
    # standard errors per coordinate (a positive site exercises the log-Jacobian term).
    def model():
        vj.sample("rate", dist.Gamma(3.0, 2.0))
        vj.sample("shift", dist.Normal(1.0, 0.5))

    family = vj.auto_flow(model, kind="planar", length=2, estimator=vj.path())
    params = family.init(jax.random.key(0))
    params = jax.tree.map(
        lambda p: p + 0.3 * jax.random.normal(jax.random.key(4), jnp.shape(p)), params
    )
    latents = auto_flow_module._latents(model, (), {})
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    weights = weights / np.sqrt(2 * np.pi)
    grid = jnp.asarray(np.stack(np.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2))
    grid_weights = jnp.asarray(np.outer(weights, weights).reshape(-1), jnp.float32)

    def exact_elbo(params):
        u, log_q, _ = family._unconstrained(params, latents, grid.astype(jnp.float32))
        rate = jnp.exp(u[:, 0])
        log_p = dist.Gamma(3.0, 2.0).log_prob(rate) + dist.Normal(1.0, 0.5).log_prob(u[:, 1])
        log_q = log_q - u[:, 0]  # the log-Jacobian of exp
        return jnp.sum(grid_weights * (log_p - log_q))

    def flat(tree):
        return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])

    exact = np.asarray(flat(jax.grad(exact_elbo)(params)))
    estimator = vj.gradient_estimator(vj.elbo(model, family))
    keys = jax.random.split(jax.random.key(3), 5_000)
    draws = np.asarray(
        jax.jit(jax.vmap(lambda k: flat(estimator.estimate(params, None, k)[1])))(keys),
        np.float64,
    )
    mean, se = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - exact) < 4.5 * se + 1e-4), (mean, exact, se)


def test_standard_estimator_draws_without_carrying_the_score():
    # With estimator=None the draw is the flow's plain forward pass: the same draw and log q
    # as the fast path family's, but no IAF Jacobian sweep or triangular solve in the
    # gradient program (and, two layers being unrolled, no scan either).
    def model():
        vj.sample("rate", dist.Gamma(3.0, 2.0))
        vj.sample("shift", dist.Normal(1.0, 0.5))

    standard = vj.auto_flow(model, kind="iaf", length=2, hidden=(8,))
    path = vj.auto_flow(model, kind="iaf", length=2, hidden=(8,), estimator=vj.path())
    params = standard.init(jax.random.key(0))
    params = jax.tree.map(
        lambda p: p + 0.3 * jax.random.normal(jax.random.key(4), jnp.shape(p)), params
    )
    latents = auto_flow_module._latents(model, (), {})
    eps = jax.random.normal(jax.random.key(5), (7, 2))
    u, log_q, score = standard._unconstrained(params, latents, eps)
    u_path, log_q_path, score_path = path._unconstrained(params, latents, eps, with_score=True)
    assert score is None and score_path.shape == (7, 2)
    np.testing.assert_allclose(u, u_path, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_q, log_q_path, rtol=1e-5, atol=1e-5)

    def primitives(family):
        value_and_grad = vj.value_and_grad_estimate(vj.elbo(model, family))
        jaxpr = jax.make_jaxpr(value_and_grad)(params, jax.random.key(1)).jaxpr
        names, stack = set(), [jaxpr]
        while stack:
            for eqn in stack.pop().eqns:
                names.add(eqn.primitive.name)
                for value in eqn.params.values():
                    for sub in value if isinstance(value, tuple | list) else (value,):
                        if hasattr(sub, "eqns"):  # a Jaxpr or ClosedJaxpr inside
                            stack.append(sub)
        return names

    assert not {"triangular_solve", "scan", "while"} & primitives(standard)
    assert "triangular_solve" in primitives(path)


def subsampled_model(x):
    with vj.plate("data", 6, subsample_size=2) as idx:
        vj.sample("z", dist.Normal(0.0, 1.0))
        vj.sample("x", dist.Normal(0.0, 1.0), obs=x[idx])


def test_subsampled_plates_are_refused():
    with pytest.raises(ValueError, match="'z' lies in plate 'data', subsampled"):
        vj.auto_flow(subsampled_model).init(jax.random.key(0), jnp.arange(6.0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "bnaf"}, "kind must be one of"),
        ({"length": 0}, "length must be a positive int"),
        ({"length": 2.0}, "length must be a positive int"),
        ({"estimator": vj.score_function()}, "estimator must be"),
        ({"init_scale": -1.0}, "init_scale must be positive"),
        ({"init_scale": "laplace"}, "init_scale must be a positive float"),
        ({"init_loc": "prior"}, "init_loc must be one of"),
        ({"num_summary_samples": 0}, "num_summary_samples must be"),
        ({"hidden": (0,)}, "invalid flow options"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        vj.auto_flow(regression, **kwargs)


def test_coupling_flows_on_one_dimension_are_refused():
    def model():
        vj.sample("p", dist.Beta(2.0, 2.0))

    with pytest.raises(ValueError, match="needs at least 2 unconstrained dimensions"):
        vj.auto_flow(model, kind="affine_coupling").init(jax.random.key(0))
