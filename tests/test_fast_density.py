"""The fast log-density rules equal NumPyro's log_prob (values and gradients)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from vijax.core import fast_density

KEY = jax.random.key(0)


def _normal(shape, key):
    return jax.random.normal(key, shape)


CASES = {
    # name: (distribution builder from (loc, scale), loc shape, scale shape, value shape)
    "iid event, scalar scale": (lambda m, s: dist.Normal(m, 1.0).to_event(1), (4,), (), (4,)),
    "event, vector scale": (lambda m, s: dist.Normal(m, s).to_event(1), (4,), (4,), (4,)),
    "value with extra batch": (lambda m, s: dist.Normal(m, s).to_event(1), (4,), (), (7, 4)),
    "two event dims": (lambda m, s: dist.Normal(m, s).to_event(2), (3, 4), (1, 4), (3, 4)),
    "plate-expanded": (
        lambda m, s: dist.Normal(m, s).to_event(1).expand([6]),
        (4,),
        (4,),
        (6, 4),
    ),
    "expanded prior": (
        lambda m, s: dist.Normal(0.0, 1.0).expand([5]).to_event(1),
        (5,),
        (),
        (5,),
    ),
    "batch and event": (lambda m, s: dist.Normal(m, s).to_event(1), (2, 3), (2, 1), (2, 3)),
    "plain normal": (lambda m, s: dist.Normal(m, s), (3,), (3,), (3,)),
    "plain normal, constant scale, expanded": (
        lambda m, s: dist.Normal(m, 1.0).expand([2, 3]),
        (3,),
        (),
        (2, 3),
    ),
    "bernoulli logits": (lambda m, s: dist.Bernoulli(logits=m * s), (5,), (5,), (5,)),
    "bernoulli logits, event": (
        lambda m, s: dist.Bernoulli(logits=m * s).to_event(1).expand([4]),
        (3,),
        (),
        (4, 3),
    ),
    "masked normal (falls back)": (lambda m, s: dist.Normal(m, s).mask(False), (3,), (3,), (3,)),
    "gamma (falls back)": (
        lambda m, s: dist.Gamma(jnp.abs(m) + 1, 1.0).to_event(1),
        (3,),
        (),
        (3,),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fast_log_prob_equals_numpyro(name):
    build, loc_shape, scale_shape, value_shape = CASES[name]
    k1, k2, k3 = jax.random.split(KEY, 3)
    loc = _normal(loc_shape, k1)
    scale = jnp.exp(0.3 * _normal(scale_shape, k2))
    value = jnp.abs(_normal(value_shape, k3)) + 0.1
    if "bernoulli" in name:
        value = jnp.where(value > 0.8, 1.0, 0.0)

    def fast(loc, scale):
        return jnp.sum(fast_density.log_prob(build(loc, scale), value))

    def reference(loc, scale):
        return jnp.sum(build(loc, scale).log_prob(value))

    d = build(loc, scale)
    assert fast_density.log_prob(d, value).shape == d.log_prob(value).shape
    np.testing.assert_allclose(
        fast_density.log_prob(d, value), d.log_prob(value), rtol=2e-5, atol=2e-5
    )
    for got, want in zip(
        jax.grad(fast, argnums=(0, 1))(loc, scale), jax.grad(reference, argnums=(0, 1))(loc, scale)
    ):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_fractional_bernoulli_targets_get_the_cross_entropy():
    # NumPyro scores a value outside {0, 1} as -inf; the fast rule returns the cross-entropy
    # y·ℓ − softplus(ℓ), the relaxed likelihood some VAEs use on grey pixels.
    logits = jnp.array([0.3, -1.2])
    value = jnp.array([0.25, 0.9])
    expected = value * logits - jax.nn.softplus(logits)
    got = fast_density.log_prob(dist.Bernoulli(logits=logits), value)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


CATEGORICAL_CASES = {
    # name: (logits shape, value shape)
    "same batch": ((100, 10), (100,)),
    "shared table": ((10,), (100,)),
    "shared table, value with two batch axes": ((10,), (4, 25)),
    "enumerated value against a batch": ((7, 10), (10, 1)),
    "size-1 logits batch": ((1, 10), (6,)),
    "scalar value": ((10,), ()),
}


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("parametrization", ["logits", "probs"])
@pytest.mark.parametrize("name", list(CATEGORICAL_CASES))
def test_fast_categorical_equals_numpyro(name, parametrization, x64):
    logits_shape, value_shape = CATEGORICAL_CASES[name]
    with jax.enable_x64(x64):
        k1, k2 = jax.random.split(KEY)
        logits = 2.0 * jax.random.normal(k1, logits_shape)
        if name.startswith("enumerated"):
            value = jnp.arange(10).reshape(value_shape)
        else:
            value = jax.random.randint(k2, value_shape, 0, logits_shape[-1])

        def build(logits):
            if parametrization == "logits":
                return dist.Categorical(logits=logits)
            return dist.Categorical(probs=jax.nn.softmax(logits, axis=-1))

        d = build(logits)
        got, want = fast_density.log_prob(d, value), d.log_prob(value)
        assert got.shape == want.shape and got.dtype == want.dtype
        tol = 1e-12 if x64 else 2e-6
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        # a weighted sum, so each output element's gradient is checked
        weights = jax.random.normal(k2, want.shape, want.dtype)
        grad_fast = jax.grad(lambda l: jnp.sum(weights * fast_density.log_prob(build(l), value)))
        grad_ref = jax.grad(lambda l: jnp.sum(weights * build(l).log_prob(value)))
        np.testing.assert_allclose(grad_fast(logits), grad_ref(logits), rtol=tol, atol=tol)


def test_fast_categorical_event_dims_and_float_values_fall_back():
    logits = jax.random.normal(KEY, (3, 5))
    d = dist.Categorical(logits=logits).to_event(1).expand([4])
    value = jnp.tile(jnp.arange(3), (4, 1))
    np.testing.assert_allclose(fast_density.log_prob(d, value), d.log_prob(value), rtol=2e-6)
    # a float value is left to NumPyro (which refuses it, as the rule would)
    plain = dist.Categorical(logits=logits[0])
    for score in (fast_density.log_prob, type(plain).log_prob):
        with pytest.raises(TypeError, match="integer"):
            score(plain, jnp.array([1.0, 2.0]))


def test_softplus_is_stable_with_the_sigmoid_gradient_everywhere():
    # the logit-Bernoulli density's softplus: equal to jax.nn.softplus to rounding from
    # −1e4 to 1e4, and its gradient is sigmoid(x) including at exactly 0 (where max(x, 0)
    # would give 0 and NumPyro 0.22's Bernoulli gives a wrong gradient)
    x = jnp.concatenate([jnp.linspace(-30.0, 30.0, 601), jnp.array([-1e4, 0.0, 1e4])])
    np.testing.assert_allclose(fast_density._softplus(x), jax.nn.softplus(x), rtol=1e-6, atol=1e-7)
    slope = jax.vmap(jax.grad(fast_density._softplus))(x)
    np.testing.assert_allclose(slope, jax.nn.sigmoid(x), atol=1e-7)
    assert float(jax.grad(fast_density._softplus)(0.0)) == 0.5
