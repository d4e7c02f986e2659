"""IWAE with 16 particles: vijax vs hand-written JAX vs NumPyro, in one process.

Model: a Normal-Normal model with ``D = 10`` latent dimensions and ``N = 50`` data points,
``z ~ Normal(0, I)``, ``x_n ~ Normal(z, I)``, on synthetic data drawn once from a fixed seed.
Family: mean-field Normal, scale ``softplus(raw)``, started at loc 0 and scale 0.1.
Objective: the importance-weighted bound with ``K = 16`` reparameterised particles,
``logsumexp_k(log p(x, z_k) - log q(z_k)) - log K``, particles vectorised. NumPyro's IWAE is
``RenyiELBO(alpha=0, num_particles=16)`` (its ``alpha = 0`` case is the IWAE bound of Burda
et al.). Optimiser: ``optax.adam(1e-2)``.

The exact posterior, ``Normal(sum(x) / (N + 1), 1 / (N + 1))`` per dimension, is in the
family, so at the optimum every bound equals the log evidence ``log p(x)``, which the rows
report as ``log_evidence`` next to each implementation's final bound.

Measured: steady-state seconds per step in a jitted ``lax.scan`` of 5000 steps (the same scan
driver around each implementation's step), median of repeats timed round-robin.

Run with ``python -m benchmarks.iwae``; writes ``benchmarks/results/iwae.{json,md}``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import SVI, RenyiELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.initialization import init_to_value

from benchmarks import harness, steps

NAME = "iwae"
NUM_LATENTS = 10
NUM_DATA = 50
NUM_PARTICLES = 16
NUM_STEPS = 5000
STEADY_REPEATS = 15
LEARNING_RATE = 1e-2
INIT_SCALE = 0.1
BOUND_EVAL_KEYS = 2000
OPTIMIZER = optax.adam(LEARNING_RATE)
LOG_2PI = float(np.log(2 * np.pi))


# --------------------------------------------------------------------------------------------
# Data and model


def make_data(seed: int = 0) -> jax.Array:
    """``NUM_DATA`` points ``x_n = z + noise`` around one latent ``z ~ Normal(0, I)``."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=NUM_LATENTS)
    return jnp.asarray(latent + rng.normal(size=(NUM_DATA, NUM_LATENTS)), jnp.float32)


def model(x: jax.Array) -> None:
    """NumPyro model: ``z ~ Normal(0, I)``, ``x_n ~ Normal(z, I)`` in a data plate."""
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def log_evidence(x: np.ndarray) -> float:
    """Exact ``log p(x)``: per dimension ``x[:, d] ~ Normal(0, I + 1 1^T)``."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    quadratic = np.sum(x**2, axis=0) - np.sum(x, axis=0) ** 2 / (n + 1)
    per_dimension = -0.5 * (n * LOG_2PI + np.log(n + 1) + quadratic)
    return float(np.sum(per_dimension))


# --------------------------------------------------------------------------------------------
# Hand-written JAX (the floor)


def hand_init(num_latents: int) -> dict[str, jax.Array]:
    """Mean-field Normal parameters: loc 0, scale ``INIT_SCALE`` (stored before softplus)."""
    return {
        "loc": jnp.zeros(num_latents, jnp.float32),
        "raw_scale": jnp.full(num_latents, steps.inverse_softplus(INIT_SCALE), jnp.float32),
    }


def hand_log_weight(params: dict[str, jax.Array], noise: jax.Array, x: jax.Array) -> jax.Array:
    """``log p(x, z) - log q(z)`` of one particle ``z = loc + scale * noise``.

    The ``log(2 pi)`` terms of prior and family cancel; the likelihood's is kept.
    """
    scale = jax.nn.softplus(params["raw_scale"])
    z = params["loc"] + scale * noise
    log_likelihood = -0.5 * jnp.sum((x - z) ** 2) - 0.5 * x.size * LOG_2PI
    log_prior = -0.5 * jnp.sum(z**2)
    log_q = -0.5 * jnp.sum(noise**2) - jnp.sum(jnp.log(scale))
    return log_likelihood + log_prior - log_q


def hand_iwae(params: dict[str, jax.Array], key: jax.Array, x: jax.Array) -> jax.Array:
    """The IWAE bound with ``NUM_PARTICLES`` particles, vectorised with ``vmap``."""
    noise = jax.random.normal(key, (NUM_PARTICLES, *params["loc"].shape))
    log_weights = jax.vmap(hand_log_weight, in_axes=(None, 0, None))(params, noise, x)
    return jax.nn.logsumexp(log_weights) - jnp.log(NUM_PARTICLES)


def hand_negative_iwae(params: dict[str, jax.Array], key: jax.Array, x: jax.Array) -> jax.Array:
    """The loss minimised by the hand-written step."""
    return -hand_iwae(params, key, x)


def hand_iwae_sufficient_statistics(
    params: dict[str, jax.Array], key: jax.Array, x: jax.Array
) -> jax.Array:
    """:func:`hand_iwae` with the likelihood rewritten through ``sum(x)`` and ``sum(x**2)``.

    ``sum_n (x_n - z)**2 = sum(x**2) - 2 z . sum_n x_n + N z . z``: a rewrite of the model,
    not of the inference, that no framework running the model as written can make. Timed as
    an extra reference (``hand_sufficient_statistics_s``), not as the floor.
    """
    noise = jax.random.normal(key, (NUM_PARTICLES, *params["loc"].shape))
    scale = jax.nn.softplus(params["raw_scale"])
    z = params["loc"] + scale * noise
    squared_norms = jnp.sum(z**2, axis=1)
    squared_distances = jnp.sum(x**2) - 2 * z @ jnp.sum(x, axis=0) + x.shape[0] * squared_norms
    log_likelihood = -0.5 * squared_distances - 0.5 * x.size * LOG_2PI
    log_q = -0.5 * jnp.sum(noise**2, axis=1) - jnp.sum(jnp.log(scale))
    log_weights = log_likelihood - 0.5 * squared_norms - log_q
    return jax.nn.logsumexp(log_weights) - jnp.log(NUM_PARTICLES)


def hand_log_weight_numpyro_densities(
    params: dict[str, jax.Array], noise: jax.Array, x: jax.Array
) -> jax.Array:
    """:func:`hand_log_weight` with every log density from ``numpyro.distributions``.

    A diagnostic, not the floor: it separates the cost of NumPyro's density formulas (which
    vijax also runs, since it runs NumPyro models) from the cost of a framework around them.
    """
    scale = jax.nn.softplus(params["raw_scale"])
    z = params["loc"] + scale * noise
    log_likelihood = jnp.sum(dist.Normal(z, 1.0).log_prob(x))
    log_prior = jnp.sum(dist.Normal(0.0, 1.0).log_prob(z))
    log_q = jnp.sum(dist.Normal(params["loc"], scale).log_prob(z))
    return log_likelihood + log_prior - log_q


def hand_iwae_numpyro_densities(
    params: dict[str, jax.Array], key: jax.Array, x: jax.Array
) -> jax.Array:
    """:func:`hand_iwae` with :func:`hand_log_weight_numpyro_densities` (a diagnostic)."""
    noise = jax.random.normal(key, (NUM_PARTICLES, *params["loc"].shape))
    log_weights = jax.vmap(hand_log_weight_numpyro_densities, in_axes=(None, 0, None))(
        params, noise, x
    )
    return jax.nn.logsumexp(log_weights) - jnp.log(NUM_PARTICLES)


hand_step = steps.descent_step(hand_negative_iwae, OPTIMIZER)
hand_numpyro_densities_step = steps.descent_step(
    lambda params, key, x: -hand_iwae_numpyro_densities(params, key, x), OPTIMIZER
)
hand_sufficient_statistics_step = steps.descent_step(
    lambda params, key, x: -hand_iwae_sufficient_statistics(params, key, x), OPTIMIZER
)


# --------------------------------------------------------------------------------------------
# NumPyro


def numpyro_svi(num_latents: int) -> SVI:
    """SVI with an ``AutoNormal`` guide and ``RenyiELBO(alpha=0)``, NumPyro's IWAE."""
    start = init_to_value(values={"z": jnp.zeros(num_latents)})
    guide = AutoNormal(model, init_loc_fn=start, init_scale=INIT_SCALE)
    return SVI(model, guide, OPTIMIZER, RenyiELBO(alpha=0.0, num_particles=NUM_PARTICLES))


def numpyro_bound(svi: SVI) -> Callable[..., jax.Array]:
    """NumPyro's own IWAE bound as ``bound(params, key, x)``."""
    loss = RenyiELBO(alpha=0.0, num_particles=NUM_PARTICLES)
    return lambda params, key, x: -loss.loss(key, params, svi.model, svi.guide, x)


def numpyro_params_as_hand(params: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """``AutoNormal`` params in the hand-written layout (to score them with :func:`hand_iwae`)."""
    raw_scale = jnp.log(jnp.expm1(params["z_auto_scale"]))
    return {"loc": params["z_auto_loc"], "raw_scale": raw_scale}


# --------------------------------------------------------------------------------------------
# vijax (planned API; every use is guarded so that a missing or broken vijax gives nulls)


def vijax_parts(vj: Any, x: jax.Array) -> tuple[Any, Callable[..., Any], Any, str]:
    """``(initial params, IWAE objective, estimator, note)`` of vijax's mean-field Normal."""
    family, note = steps.vijax_mean_field_normal(vj, model, INIT_SCALE)
    params = family.init(jax.random.key(0), x)
    objective = vj.objectives.iwae(model, family, num_particles=NUM_PARTICLES)
    return params, objective, vj.value_and_grad_estimate(objective), note


# --------------------------------------------------------------------------------------------
# Measurement


def final_bound(objective: Callable[..., jax.Array], params: Any, x: jax.Array) -> float:
    """An implementation's own bound at ``params``, averaged over ``BOUND_EVAL_KEYS`` keys."""
    return steps.mean_over_keys(objective, params, x, num_keys=BOUND_EVAL_KEYS)


def scan_runs(
    x: jax.Array, svi: SVI, vijax: tuple | None, errors: list[str]
) -> dict[str, Callable[[], Any] | None]:
    """Thunks running ``NUM_STEPS`` steps of each implementation in the same jitted scan.

    Besides the three implementations, ``hand_sufficient_statistics`` times the rewritten
    model of :func:`hand_iwae_sufficient_statistics` and ``hand_numpyro_densities`` the
    diagnostic :func:`hand_iwae_numpyro_densities`.
    """
    key = jax.random.key(1)
    hand_carry = steps.initial_carry(OPTIMIZER, hand_init(x.shape[1]), key)
    runs: dict[str, Callable[[], Any] | None] = {
        "hand": functools.partial(harness.scan_steps(hand_step, NUM_STEPS), hand_carry, x),
        "hand_sufficient_statistics": functools.partial(
            harness.scan_steps(hand_sufficient_statistics_step, NUM_STEPS), hand_carry, x
        ),
        "hand_numpyro_densities": functools.partial(
            harness.scan_steps(hand_numpyro_densities_step, NUM_STEPS), hand_carry, x
        ),
        "numpyro": functools.partial(
            harness.scan_steps(steps.numpyro_step(svi), NUM_STEPS), svi.init(key, x), x
        ),
        "vijax": None,
    }
    if vijax is not None:
        params, _, estimator, _ = vijax
        vijax_step = steps.ascent_step(estimator, OPTIMIZER)
        vijax_carry = steps.initial_carry(OPTIMIZER, params, key)
        run = functools.partial(harness.scan_steps(vijax_step, NUM_STEPS), vijax_carry, x)
        if harness.attempt("vijax scan", run, errors) is not None:
            runs["vijax"] = run
    return runs


def measure_steady_state(x: jax.Array, vijax: tuple | None, errors: list[str]) -> harness.Row:
    """Seconds per IWAE step of each implementation, and each one's final bound."""
    svi = numpyro_svi(x.shape[1])
    times, outputs = harness.time_scans(scan_runs(x, svi, vijax, errors), STEADY_REPEATS)
    numpyro_params = svi.get_params(outputs["numpyro"][0])
    bounds = {
        f"{name}_s": harness.median(times.pop(name)) / NUM_STEPS
        for name in ("hand_sufficient_statistics", "hand_numpyro_densities")
    }
    bounds |= {
        "log_evidence": log_evidence(np.asarray(x)),
        "final_iwae_hand": final_bound(hand_iwae, outputs["hand"][0][0], x),
        "final_iwae_numpyro": final_bound(numpyro_bound(svi), numpyro_params, x),
        "final_iwae_vijax": None,
        "final_iwae_numpyro_by_hand": final_bound(
            hand_iwae, numpyro_params_as_hand(numpyro_params), x
        ),
    }
    if outputs["vijax"] is not None:
        vijax_params, objective = outputs["vijax"][0][0], vijax[1]
        bounds["final_iwae_vijax"] = harness.attempt(
            "vijax final bound", lambda: final_bound(objective, vijax_params, x), errors
        )
    return harness.make_row(
        f"IWAE K={NUM_PARTICLES} step ({NUM_STEPS}-step jitted scan)",
        times,
        per=NUM_STEPS,
        metric="time per step",
        unit="s/step",
        notes=f"D={NUM_LATENTS}, N={NUM_DATA}; final IWAE: each implementation's own bound, "
        f"{BOUND_EVAL_KEYS}-key average, after {NUM_STEPS} steps from loc 0, scale "
        f"{INIT_SCALE}; the optimum equals log_evidence; final_iwae_numpyro_by_hand: NumPyro's "
        "params scored by the hand-written bound; hand_sufficient_statistics_s: the hand-written "
        "step with the likelihood rewritten through sum(x) and sum(x**2) (a model rewrite); "
        "hand_numpyro_densities_s: the hand-written step with its log densities from "
        "numpyro.distributions (the cost of NumPyro's formulas without a framework)",
        **bounds,
    )


def run() -> list[harness.Row]:
    """Run the IWAE measurement and return its rows."""
    harness.warm_up_jax()
    x = make_data()
    errors: list[str] = []
    vj, reason = harness.import_vijax()
    if reason:
        errors.append(reason)
    vijax = harness.attempt("vijax setup", lambda: vijax_parts(vj, x), errors) if vj else None
    if vijax is not None and vijax[3]:
        errors.append(vijax[3])
    row = measure_steady_state(x, vijax, errors)
    if errors:
        row.notes = "; ".join([row.notes, *errors])
    return [row]


def main() -> None:
    """Run the benchmark, write ``results/iwae.{json,md}`` and print the table."""
    print(harness.write_results(NAME, run()))


if __name__ == "__main__":
    main()
