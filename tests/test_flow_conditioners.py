"""Coupling layers with custom conditioners: flax ``nnx`` and ``linen`` modules, ``(init, apply)``.

Exact identities are checked in float64 (``jax.enable_x64`` inside a fixture, restored after each
test; the networks' parameters are float64 too) with relative tolerances of 1e-8 to 1e-10: each
quantity compared is computed two ways that agree to rounding (about 1e-15), so a wrong formula or
a misrouted conditioner output fails by orders of magnitude.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from flax import linen, nnx

import vijax as vj
from vijax import flows

DIM, CONTEXT, HIDDEN = 3, 2, 8
NUM_BINS, BOUND = 4, 3.0


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


class NnxNet(nnx.Module):
    def __init__(self, in_size, out_size, seed, dtype=jnp.float64):
        rngs = nnx.Rngs(seed)
        self.hidden = nnx.Linear(in_size, HIDDEN, param_dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(HIDDEN, out_size, param_dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


class LinenNet(linen.Module):
    out_size: int

    @linen.compact
    def __call__(self, x):
        h = jnp.tanh(linen.Dense(HIDDEN, param_dtype=jnp.float64)(x))
        return linen.Dense(self.out_size, param_dtype=jnp.float64)(h)


def pair_net(in_size, out_size):
    def init(key):
        k1, k2 = jax.random.split(key)
        return {
            "w1": jax.random.normal(k1, (in_size, HIDDEN)) / np.sqrt(in_size),
            "w2": 0.3 * jax.random.normal(k2, (HIDDEN, out_size)) / np.sqrt(HIDDEN),
        }

    def apply(params, x):
        return jnp.tanh(x @ params["w1"]) @ params["w2"]

    return init, apply


def network(kind, in_size, out_size, seed=0):
    if kind == "nnx":
        return NnxNet(in_size, out_size, seed)
    if kind == "linen":
        return LinenNet(out_size)
    return pair_net(in_size, out_size)


def coupling(kind, transformer, context_dim=0, parity=0, seed=0):
    mask = flows.alternating_mask(DIM, parity)
    if transformer == "affine":
        net = network(kind, DIM + context_dim, 2 * DIM, seed)
        return flows.affine_coupling(DIM, mask, context_dim=context_dim, conditioner=net)
    net = network(kind, DIM + context_dim, DIM * (3 * NUM_BINS + 1), seed)
    return flows.spline_coupling(
        DIM, mask, context_dim=context_dim, num_bins=NUM_BINS, bound=BOUND, conditioner=net
    )


KINDS = ["nnx", "linen", "pair"]


@pytest.mark.parametrize("kind", KINDS)
def test_log_det_inverse_and_fast_score_step(kind, x64):
    # An affine coupling and a conditional spline coupling, both with networks of the kind, in
    # one compiled program: log|det J| = slogdet(jacfwd); the inverse inverts with the opposite
    # log-determinant; the fast path gradient's step (one conditioner VJP) equals the dense
    # solve J^{-T}(g − ∇ log|det J|), and its forward values equal the plain forward pass.
    layers = (
        coupling(kind, "affine", parity=0, seed=0),
        coupling(kind, "spline", CONTEXT, parity=1, seed=1),
    )
    all_params = [layer.init(jax.random.key(i)) for i, layer in enumerate(layers)]
    assert flat(all_params).dtype == jnp.float64
    x = 1.5 * jax.random.normal(jax.random.key(2), (5, DIM))
    score = jax.random.normal(jax.random.key(3), (5, DIM))
    context = jnp.array([0.7, -0.4])

    def check_one(layer, params, x, g):
        y, log_det = layer.forward_and_log_det(params, x, context)
        jacobian = jax.jacfwd(lambda x: layer.forward_and_log_det(params, x, context)[0])(x)
        x_back, inverse_log_det = layer.inverse_and_log_det(params, y, context)
        fast = layer.forward_with_score(params, x, g, context)
        dense = flows.dense_forward_with_score(layer, params, x, g, context)[2]
        return log_det, jnp.linalg.slogdet(jacobian)[1], x_back, inverse_log_det, y, fast, dense

    def check(x, g):
        return [check_one(*case, x, g) for case in zip(layers, all_params)]

    for result in jax.jit(jax.vmap(check))(x, score):
        log_det, slogdet, x_back, inverse_log_det, y, fast, dense = result
        assert float(jnp.abs(log_det).max()) > 1e-3  # the custom network is not the identity
        assert float(jnp.abs(y - x).max()) > 1e-3
        np.testing.assert_allclose(log_det, slogdet, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(x_back, x, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(inverse_log_det, -log_det, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(fast[2], dense, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(fast[0], y, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(fast[1], log_det, rtol=1e-12, atol=1e-14)


class InversePassFlow(flows.FlowDistribution):
    """The flow without intermediates: its density at a draw takes the inverse pass, the
    reference for the fast path."""

    def sample_with_intermediates(self, key, sample_shape=()):
        return self.sample(key, sample_shape), []


def gaussian_model(c=None):
    vj.sample("z", dist.Normal(jnp.array([1.0, -0.5, 0.3]), jnp.array([0.7, 1.3, 0.5])).to_event(1))


def test_fast_path_gradient_equals_the_inverse_pass_path_gradient(x64):
    # A conditional flow of three couplings: nnx affine, linen spline, pair affine. The ELBO's
    # fast path gradient (score carried forward, one conditioner VJP per layer) equals the path
    # gradient through the inverse pass on the same draws, to 1e-8 relative, for every
    # network's parameters.
    flow = flows.Flow(
        flows.chain(
            coupling("nnx", "affine", CONTEXT, parity=0, seed=0),
            coupling("linen", "spline", CONTEXT, parity=1, seed=1),
            coupling("pair", "affine", CONTEXT, parity=0, seed=2),
        )
    )
    params = flow.init(jax.random.key(0))
    c = jnp.array([0.3, -0.8])

    def reference_family(params, c):
        vj.sample("z", InversePassFlow(flow, params, c), estimator=vj.path())

    fast_family = vj.flow_family(flow, estimator=vj.path(), context=lambda c: c)
    fast_gradient = vj.grad_estimate(vj.elbo(gaussian_model, fast_family, 4))
    reference_gradient = vj.grad_estimate(vj.elbo(gaussian_model, reference_family, 4))

    @jax.jit
    def compare(params, key, c):
        return fast_gradient(params, key, c), reference_gradient(params, key, c)

    fast, reference = compare(params, jax.random.key(11), c)
    for fast_layer, reference_layer in zip(fast, reference):  # each network's parameters
        fast_layer, reference_layer = flat(fast_layer), flat(reference_layer)
        scale = float(jnp.abs(reference_layer).max())
        assert scale > 1e-3  # a real gradient, not zeros
        np.testing.assert_allclose(fast_layer, reference_layer, rtol=1e-8, atol=1e-10 * scale)


def test_flow_family_with_an_nnx_conditioner_trains():
    # Two affine couplings with nnx conditioners fitted to a shifted, correlated Gaussian by
    # vj.fit with the fast path gradient. The ELBO, averaged over 2048 common draws (standard
    # error about 0.02 nats here), starts several nats below its maximum 0 (the mean alone is
    # off by 1.5 prior standard deviations) and must rise by more than 0.5 nats in 100 Adam
    # steps; a stalled or diverging fit cannot.
    mean = jnp.array([1.0, -1.0, 0.5])
    cov = jnp.array([[1.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]])

    def model():
        vj.sample("z", dist.MultivariateNormal(mean, cov))

    layers = [
        flows.affine_coupling(
            DIM,
            flows.alternating_mask(DIM, i),
            conditioner=NnxNet(DIM, 2 * DIM, seed=i, dtype=jnp.float32),
        )
        for i in range(2)
    ]
    family = vj.flow_family(flows.Flow(flows.chain(*layers)), estimator=vj.path())
    params = family.init(jax.random.key(0))
    objective = vj.elbo(model, family, num_particles=8)
    evaluate = jax.jit(lambda p: vj.elbo(model, family, 2048)(p, jax.random.key(7)).value)
    before = float(evaluate(params))
    result = vj.fit(
        objective, params, optax.adam(3e-2), jax.random.key(1), num_steps=100, progress=False
    )
    after = float(evaluate(result.params))
    assert np.all(np.isfinite(result.history))
    assert after > before + 0.5, (before, after)
    assert after < 0.05  # the ELBO bounds log Z = 0
    assert jax.tree.structure(result.params) == jax.tree.structure(params)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_output_size_is_refused_naming_conditioner(kind, x64):
    layer = flows.affine_coupling(DIM, conditioner=network(kind, DIM, 2 * DIM + 1))
    with pytest.raises(ValueError, match=r"conditioner.*\(6,\).*got \(7,\)"):
        layer.init(jax.random.key(0))
    spline = flows.spline_coupling(DIM, num_bins=NUM_BINS, conditioner=network(kind, DIM, 2 * DIM))
    with pytest.raises(ValueError, match="conditioner"):
        spline.init(jax.random.key(0))


def test_unsupported_conditioner_is_refused_naming_it():
    for bad in (lambda x: x, (1, 2), "mlp", (lambda k: None,)):
        with pytest.raises(ValueError, match="conditioner must be"):
            flows.affine_coupling(DIM, conditioner=bad)


def test_layer_with_a_custom_conditioner_is_a_static_jit_argument():
    # hashable; equal to itself and not to a layer built from another network; compiled once
    # for repeated calls with the same layer
    net = NnxNet(DIM, 2 * DIM, seed=0, dtype=jnp.float32)
    layer = flows.affine_coupling(DIM, conditioner=net)
    other = flows.affine_coupling(DIM, conditioner=net)
    assert hash(layer) == hash(layer) and layer == layer and layer != other
    assert "Conditioner(kind='nnx')" in repr(layer)
    traces = []

    @functools.partial(jax.jit, static_argnums=0)
    def forward(layer, params, x):
        traces.append(None)
        return layer.forward_and_log_det(params, x)

    params = layer.init(jax.random.key(0))
    forward(layer, params, jnp.ones(DIM))
    forward(layer, params, jnp.zeros(DIM))
    assert len(traces) == 1
    # the default stays the zero-initialized MLP: the identity at init
    default = flows.affine_coupling(DIM)
    assert default.conditioner is None
    y, log_det = default.forward_and_log_det(default.init(jax.random.key(0)), jnp.ones(DIM))
    np.testing.assert_allclose(y, jnp.ones(DIM))
    assert float(log_det) == 0.0
