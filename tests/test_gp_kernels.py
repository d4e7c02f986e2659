"""GP kernels: closed-form values, positive semi-definiteness, ARD shapes, constraints, errors.

Identities are checked in float64 (``jax.enable_x64`` as a context, restored afterwards).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vijax.models import gp

BASE_KERNELS = [
    gp.RBF(),
    gp.RBF(ard=True),
    gp.Matern12(),
    gp.Matern32(ard=True),
    gp.Matern52(),
    gp.RationalQuadratic(ard=True),
    gp.Periodic(),
    gp.Periodic(ard=True),
    gp.Linear(),
    gp.Linear(ard=True),
    gp.White(),
    gp.RBF(positive="exp"),
]
KERNELS = [
    *BASE_KERNELS,
    gp.RBF() + gp.Periodic() + gp.White(),
    gp.Matern32(ard=True) * gp.Linear(),
    (gp.RBF() + gp.Linear()) * gp.Periodic(ard=True),
]


def _random_params(kernel, num_features, rng):
    """Parameters at random positive values (so tests do not pass only at the defaults)."""
    params = kernel.init(num_features)
    return jax.tree.map(lambda x: x + jnp.asarray(rng.normal(0.0, 0.5, jnp.shape(x))), params)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: repr(k)[:60])
def test_kernels_are_positive_semidefinite_symmetric_and_consistent(kernel):
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        X = jnp.asarray(rng.normal(size=(40, 3)))
        X = X.at[5].set(X[4])  # a repeated input: the matrix is singular, still PSD
        params = _random_params(kernel, 3, rng)
        K = np.asarray(kernel(params, X))
        assert K.shape == (40, 40)
        np.testing.assert_allclose(K, K.T, atol=1e-12)
        eigenvalues = np.linalg.eigvalsh(K)
        # PSD up to rounding: the smallest eigenvalue is at least −1e-10 of the largest
        assert eigenvalues.min() > -1e-10 * max(eigenvalues.max(), 1.0), eigenvalues.min()
        # the cross-covariance form and the diagonal agree with the symmetric form
        np.testing.assert_allclose(np.asarray(kernel(params, X, X)), K, atol=1e-9)
        np.testing.assert_allclose(np.asarray(kernel.diag(params, X)), np.diag(K), atol=1e-12)
        # gradients are finite, even at the repeated input (r = 0)
        grads = jax.grad(lambda p: jnp.sum(kernel(p, X)))(params)
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_closed_form_values():
    with jax.enable_x64(True):
        x1 = jnp.array([[0.0, 0.0]])
        x2 = jnp.array([[0.6, 0.8]])  # ‖x1 − x2‖ = 1
        variance, lengthscale = 2.0, 0.5
        r = 1.0 / lengthscale

        def value(kernel, **init):
            params = kernel.init(2, **init)
            return float(kernel(params, x1, x2)[0, 0])

        init = {"variance": variance, "lengthscale": lengthscale}
        assert value(gp.RBF(), **init) == pytest.approx(variance * math.exp(-0.5 * r**2))
        assert value(gp.Matern12(), **init) == pytest.approx(variance * math.exp(-r))
        s3, s5 = math.sqrt(3) * r, math.sqrt(5) * r
        assert value(gp.Matern32(), **init) == pytest.approx(variance * (1 + s3) * math.exp(-s3))
        expected = variance * (1 + s5 + s5**2 / 3) * math.exp(-s5)
        assert value(gp.Matern52(), **init) == pytest.approx(expected)
        expected = variance * (1 + r**2 / (2 * 3.0)) ** -3.0
        assert value(gp.RationalQuadratic(), alpha=3.0, **init) == pytest.approx(expected)
        # ARD: each dimension its own lengthscale
        ard = gp.RBF(ard=True)
        params = ard.init(2, variance=variance, lengthscale=jnp.array([0.6, 1.6]))
        expected = variance * math.exp(-0.5 * ((0.6 / 0.6) ** 2 + (0.8 / 1.6) ** 2))
        assert float(ard(params, x1, x2)[0, 0]) == pytest.approx(expected)
        # periodic: k(x, x + p) = σ², k at half a period = σ² exp(−2/ℓ²) (1-D)
        periodic = gp.Periodic()
        params = periodic.init(1, variance=variance, lengthscale=0.7, period=1.3)
        at = jnp.array([[0.2], [1.5], [0.85]])
        K = np.asarray(periodic(params, at[:1], at))
        np.testing.assert_allclose(K[0], [variance, variance, variance * math.exp(-2 / 0.49)])
        # linear: Σ_d σ_d² x_d x'_d
        linear = gp.Linear(ard=True)
        params = linear.init(2, variance=jnp.array([2.0, 3.0]))
        assert float(linear(params, x2, x2)[0, 0]) == pytest.approx(2 * 0.36 + 3 * 0.64)
        # white: σ² only where the inputs are equal
        white = gp.White()
        params = white.init(2, variance=0.3)
        K = np.asarray(white(params, jnp.concatenate([x1, x2]), jnp.concatenate([x2, x2])))
        np.testing.assert_allclose(K, [[0.0, 0.0], [0.3, 0.3]])
        # sums and products combine values
        rbf, m12 = gp.RBF(), gp.Matern12()
        p_rbf, p_m12 = rbf.init(2, **init), m12.init(2, **init)
        total = float((rbf + m12)((p_rbf, p_m12), x1, x2)[0, 0])
        product = float((rbf * m12)((p_rbf, p_m12), x1, x2)[0, 0])
        assert total == pytest.approx(value(rbf, **init) + value(m12, **init))
        assert product == pytest.approx(value(rbf, **init) * value(m12, **init))


def test_ard_shapes_and_constraints():
    with jax.enable_x64(True):
        assert gp.RBF(ard=True).init(5)["lengthscale"].shape == (5,)
        assert gp.RBF().init(5)["lengthscale"].shape == ()
        assert gp.Linear(ard=True).init(4)["variance"].shape == (4,)
        assert gp.Periodic(ard=True).init(3)["period"].shape == ()
        nested = (gp.RBF(ard=True) + gp.Linear()) * gp.White()
        assert isinstance(nested, gp.Product) and len(nested.kernels) == 2
        flat = gp.RBF() + gp.Linear() + gp.White()
        assert isinstance(flat, gp.Sum) and len(flat.kernels) == 3
        # both constraints give the requested positive values back
        for positive in ("softplus", "exp"):
            kernel = gp.Matern32(ard=True, positive=positive)
            params = kernel.init(2, variance=0.7, lengthscale=jnp.array([0.2, 3.0]))
            values = kernel.constrained(params)
            assert float(values["variance"]) == pytest.approx(0.7)
            np.testing.assert_allclose(values["lengthscale"], [0.2, 3.0])
        # unconstrained values of any sign give positive parameters
        params = {"variance": jnp.array(-30.0), "lengthscale": jnp.array([-5.0, 40.0])}
        values = gp.RBF(ard=True).constrained(params)
        assert float(values["variance"]) > 0 and bool(jnp.all(values["lengthscale"] > 0))


def test_bad_kernel_inputs_name_the_argument():
    kernel = gp.RBF(ard=True)
    params = kernel.init(3)
    with pytest.raises(ValueError, match=r"lengthscale.*3 entries.*2 dimensions"):
        kernel(params, jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="X2 must have shape"):
        kernel(params, jnp.zeros((4, 3)), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="X1 must have shape"):
        kernel(params, jnp.zeros(4))
    with pytest.raises(ValueError, match="num_features"):
        kernel.init(0)
    with pytest.raises(ValueError, match="must be finite and > 0"):
        gp.RBF().init(2, lengthscale=-1.0)
    with pytest.raises(ValueError, match="positive must be one of"):
        gp.RBF(positive="square").init(2)
    with pytest.raises(ValueError, match="one entry per kernel"):
        (gp.RBF() + gp.White())(gp.RBF().init(1), jnp.zeros((2, 1)))
    with pytest.raises(TypeError, match="combine kernels"):
        gp.RBF() + 1.0
