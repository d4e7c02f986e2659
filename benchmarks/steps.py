"""Optimisation steps shared by the benchmarks, one per implementation.

The hand-written and the vijax step are built the same way: a scan carry
``(params, optimiser state, base key, step index)``, the step's key ``fold_in(key, index)``
(one hash per step, cheaper than splitting a key), one gradient, one optax update. Only the
gradient differs: a hand-written loss under :func:`jax.value_and_grad`, or vijax's estimator.
NumPyro's step is ``svi.update``, which manages its own key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

Carry = tuple[Any, Any, jax.Array, jax.Array]  # params, optimiser state, base key, step index
Step = Callable[..., tuple[Any, jax.Array]]  # step(carry, *data) -> (carry, objective estimate)


def scalar(value: Any) -> jax.Array:
    """An objective value as a plain number.

    vijax objectives may return a structured value whose number is its ``.value``
    (``vj.Terms``); plain arrays pass through.
    """
    return getattr(value, "value", value)


def softplus(x: jax.Array) -> jax.Array:
    """``log(1 + e^x)`` as ``(x + |x|)/2 + log1p(e^{−|x|})``, the cheapest stable form (the
    floors' Bernoulli likelihoods; ``jax.nn.softplus`` goes through ``logaddexp``, whose NaN
    handling and custom derivative cost about a third more per element)."""
    return 0.5 * (x + jnp.abs(x)) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def inverse_softplus(x: float) -> float:
    """The ``raw`` with ``softplus(raw) == x``."""
    return float(np.log(np.expm1(x)))


def initial_carry(optimizer: optax.GradientTransformation, params: Any, key: jax.Array) -> Carry:
    """The carry ``(params, optimiser state, key, step 0)`` of a hand-written or vijax step."""
    return params, optimizer.init(params), key, jnp.zeros((), jnp.int32)


def descent_step(loss: Callable[..., jax.Array], optimizer: optax.GradientTransformation) -> Step:
    """Hand-written step minimising ``loss(params, key, *data)``; outputs ``-loss``."""

    def step(carry: Carry, *data: Any) -> tuple[Carry, jax.Array]:
        params, opt_state, key, step_index = carry
        step_key = jax.random.fold_in(key, step_index)
        value, grads = jax.value_and_grad(loss)(params, step_key, *data)
        updates, opt_state = optimizer.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state, key, step_index + 1), -value

    return step


def ascent_step(
    estimator: Callable[..., tuple[jax.Array, Any]], optimizer: optax.GradientTransformation
) -> Step:
    """Step maximising an objective through ``estimator(params, key, *data) -> (value, grads)``.

    Built exactly like :func:`descent_step`; the gradients are negated because the objective
    is maximised. Outputs the objective estimate as a number (see :func:`scalar`).
    """

    def step(carry: Carry, *data: Any) -> tuple[Carry, jax.Array]:
        params, opt_state, key, step_index = carry
        value, grads = estimator(params, jax.random.fold_in(key, step_index), *data)
        grads = jax.tree.map(jnp.negative, grads)
        updates, opt_state = optimizer.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state, key, step_index + 1), scalar(value)

    return step


def numpyro_step(svi: Any) -> Step:
    """``step(svi_state, *data) -> (svi_state, objective estimate)`` through ``svi.update``."""

    def step(state: Any, *data: Any) -> tuple[Any, jax.Array]:
        state, loss = svi.update(state, *data)
        return state, -loss

    return step


def mean_over_keys(
    objective: Callable[..., jax.Array], params: Any, *data: Any, num_keys: int, seed: int = 123
) -> float:
    """``objective(params, key, *data)`` averaged over ``num_keys`` keys (vectorised)."""
    keys = jax.random.split(jax.random.key(seed), num_keys)
    in_axes = (None, 0) + (None,) * len(data)
    values = jax.vmap(lambda p, k, *d: scalar(objective(p, k, *d)), in_axes=in_axes)
    return float(jnp.mean(values(params, keys, *data)))


def vijax_mean_field_normal(vj: Any, model: Callable, init_scale: float) -> tuple[Any, str]:
    """``(family, note)``: vijax's mean-field Normal family of ``model``.

    Asked to start where the hand-written and NumPyro families start (loc 0, scale
    ``init_scale``); if this vijax does not take those options, its defaults are used and the
    note says so.
    """
    try:
        family = vj.families.mean_field_normal(model, init_loc="zeros", init_scale=init_scale)
    except TypeError:
        return vj.families.mean_field_normal(model), "vijax family: its default start"
    return family, ""


def vijax_monte_carlo_elbo(vj: Any, model: Callable, family: Any) -> tuple[Any, str]:
    """``(objective, note)``: vijax's ELBO with ``log p - log q`` at the sample, no closed-form KL.

    That is what the hand-written ELBO and NumPyro's ``Trace_ELBO`` compute. If this vijax has
    no ``analytic_kl`` option, its default ELBO is used and the note says so.
    """
    try:
        return vj.objectives.elbo(model, family, analytic_kl=False), ""
    except TypeError:
        return vj.objectives.elbo(model, family), "vijax ELBO: its default (no analytic_kl)"
