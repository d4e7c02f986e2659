"""Bayesian logistic regression: vijax vs hand-written JAX vs NumPyro SVI, in one process.

Model: scikit-learn's breast-cancer data (569 rows), features standardised plus an intercept
column (31 weights), ``w ~ Normal(0, 1)``, ``y ~ Bernoulli(logits = X w)``. Family: mean-field
Normal, scale ``softplus(raw)``, started at loc 0 and scale 0.1 (NumPyro's ``AutoNormal``
default scale). Objective: the Monte Carlo ELBO with one reparameterised particle,
``log p(y, w) - log q(w)`` at the sample (what NumPyro's ``Trace_ELBO`` computes). Optimiser:
``optax.adam(1e-2)``.

Measured (see ``benchmarks/README.md``):

* ``step``: steady-state seconds per step, a jitted ``lax.scan`` of 5000 steps (the same scan
  driver around each implementation's step), median of repeats timed round-robin;
* ``fit, first call``: a 5000-step fit after JAX's caches are cleared, so tracing and
  compilation are included, as in a fresh process;
* ``fit, second call``: the same call again with the same shapes.

Run with ``python -m benchmarks.logreg``; writes ``benchmarks/results/logreg.{json,md}``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.initialization import init_to_value
from sklearn.datasets import load_breast_cancer

from benchmarks import harness, steps

NAME = "logreg"
NUM_STEPS = 5000
STEADY_REPEATS = 15
FIT_REPEATS = 5
LEARNING_RATE = 1e-2
INIT_SCALE = 0.1
ELBO_EVAL_KEYS = 4000
HISTORY_TAIL = 500
OPTIMIZER = optax.adam(LEARNING_RATE)


# --------------------------------------------------------------------------------------------
# Data and model


def load_data() -> tuple[jax.Array, jax.Array]:
    """Standardised breast-cancer features with an intercept column, and 0/1 labels."""
    features, labels = load_breast_cancer(return_X_y=True)
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    features = np.hstack([np.ones((features.shape[0], 1)), features])
    return jnp.asarray(features, jnp.float32), jnp.asarray(labels, jnp.float32)


def model(X: jax.Array, y: jax.Array) -> None:
    """NumPyro model: standard Normal prior on the weights, Bernoulli-logit likelihood."""
    weights = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ weights), obs=y)


# --------------------------------------------------------------------------------------------
# Hand-written JAX (the floor)


def hand_init(num_features: int) -> dict[str, jax.Array]:
    """Mean-field Normal parameters: loc 0, scale ``INIT_SCALE`` (stored before softplus)."""
    return {
        "loc": jnp.zeros(num_features, jnp.float32),
        "raw_scale": jnp.full(num_features, steps.inverse_softplus(INIT_SCALE), jnp.float32),
    }


def hand_elbo(
    params: dict[str, jax.Array], key: jax.Array, X: jax.Array, y: jax.Array
) -> jax.Array:
    """One-particle ELBO ``log p(y | w) + log p(w) - log q(w)`` at a reparameterised ``w``.

    The ``log(2 pi)`` terms of prior and family cancel and are left out.
    """
    scale = jax.nn.softplus(params["raw_scale"])
    noise = jax.random.normal(key, params["loc"].shape)
    weights = params["loc"] + scale * noise
    logits = X @ weights
    log_likelihood = jnp.sum(y * logits - steps.softplus(logits))
    log_prior = -0.5 * jnp.sum(weights**2)
    log_q = -0.5 * jnp.sum(noise**2) - jnp.sum(jnp.log(scale))
    return log_likelihood + log_prior - log_q


def hand_negative_elbo(
    params: dict[str, jax.Array], key: jax.Array, X: jax.Array, y: jax.Array
) -> jax.Array:
    """The loss minimised by the hand-written step."""
    return -hand_elbo(params, key, X, y)


def hand_elbo_numpyro_densities(
    params: dict[str, jax.Array], key: jax.Array, X: jax.Array, y: jax.Array
) -> jax.Array:
    """:func:`hand_elbo` with every log density from ``numpyro.distributions``' ``log_prob``.

    A diagnostic, not the floor: it separates the cost of NumPyro's density formulas (which
    vijax also runs, since it runs NumPyro models) from the cost of a framework around them.
    """
    scale = jax.nn.softplus(params["raw_scale"])
    noise = jax.random.normal(key, params["loc"].shape)
    weights = params["loc"] + scale * noise
    log_likelihood = jnp.sum(dist.Bernoulli(logits=X @ weights).log_prob(y))
    log_prior = jnp.sum(dist.Normal(0.0, 1.0).log_prob(weights))
    log_q = jnp.sum(dist.Normal(params["loc"], scale).log_prob(weights))
    return log_likelihood + log_prior - log_q


hand_step = steps.descent_step(hand_negative_elbo, OPTIMIZER)
hand_numpyro_densities_step = steps.descent_step(
    lambda params, key, X, y: -hand_elbo_numpyro_densities(params, key, X, y), OPTIMIZER
)


@functools.partial(jax.jit, static_argnames="num_steps")
def hand_fit(
    params: dict[str, jax.Array],
    key: jax.Array,
    X: jax.Array,
    y: jax.Array,
    num_steps: int = NUM_STEPS,
) -> tuple[dict[str, jax.Array], jax.Array]:
    """The fit a user would write: one jitted scan; returns final params and ELBO history."""
    carry = steps.initial_carry(OPTIMIZER, params, key)
    (params, *_), elbos = jax.lax.scan(
        lambda c, _: hand_step(c, X, y), carry, None, length=num_steps
    )
    return params, elbos


# --------------------------------------------------------------------------------------------
# NumPyro


def numpyro_svi(num_features: int) -> SVI:
    """SVI with an ``AutoNormal`` guide started at loc 0 and scale ``INIT_SCALE``."""
    start = init_to_value(values={"w": jnp.zeros(num_features)})
    guide = AutoNormal(model, init_loc_fn=start, init_scale=INIT_SCALE)
    return SVI(model, guide, OPTIMIZER, Trace_ELBO())


def numpyro_params_as_hand(params: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """``AutoNormal`` params in the hand-written layout (to score them with :func:`hand_elbo`)."""
    raw_scale = jnp.log(jnp.expm1(params["w_auto_scale"]))
    return {"loc": params["w_auto_loc"], "raw_scale": raw_scale}


def numpyro_elbo(svi: SVI) -> Callable[..., jax.Array]:
    """NumPyro's own one-particle ``Trace_ELBO`` as ``elbo(params, key, X, y)``."""
    loss = Trace_ELBO()
    return lambda params, key, X, y: -loss.loss(key, params, svi.model, svi.guide, X, y)


# --------------------------------------------------------------------------------------------
# vijax (planned API; every use is guarded so that a missing or broken vijax gives nulls)


class VijaxParts(NamedTuple):
    """vijax's pieces for this benchmark.

    Initial params, the Monte Carlo ELBO and its estimator, the default ELBO (closed-form KL
    where NumPyro has one) and its estimator, and notes on the setup.
    """

    params: Any
    objective: Callable[..., Any]
    estimator: Callable[..., tuple[Any, Any]]
    default_objective: Callable[..., Any]
    default_estimator: Callable[..., tuple[Any, Any]]
    notes: list[str]


def vijax_parts(vj: Any, X: jax.Array, y: jax.Array) -> VijaxParts:
    """Build vijax's mean-field Normal family, its ELBOs and their gradient estimators.

    The main vijax columns use the Monte Carlo ELBO, the estimator that the hand-written step
    and NumPyro's ``Trace_ELBO`` use; vijax's default ELBO is timed as an extra.
    """
    family, family_note = steps.vijax_mean_field_normal(vj, model, INIT_SCALE)
    params = family.init(jax.random.key(0), X, y)
    objective, objective_note = steps.vijax_monte_carlo_elbo(vj, model, family)
    default_objective = vj.objectives.elbo(model, family)
    return VijaxParts(
        params,
        objective,
        vj.value_and_grad_estimate(objective),
        default_objective,
        vj.value_and_grad_estimate(default_objective),
        [note for note in (family_note, objective_note) if note],
    )


# --------------------------------------------------------------------------------------------
# Measurements


def final_elbo(objective: Callable[..., jax.Array], params: Any, X: Any, y: Any) -> float:
    """An implementation's own ELBO at ``params``, averaged over ``ELBO_EVAL_KEYS`` keys."""
    return steps.mean_over_keys(objective, params, X, y, num_keys=ELBO_EVAL_KEYS)


def tail_mean(history: Any) -> float:
    """Mean of the last ``HISTORY_TAIL`` per-step objective estimates of a fit."""
    return float(np.mean(np.asarray(history)[-HISTORY_TAIL:]))


def scan_runs(
    X: jax.Array, y: jax.Array, svi: SVI, vijax: VijaxParts | None, errors: list[str]
) -> dict[str, Callable[[], Any] | None]:
    """Thunks running ``NUM_STEPS`` steps of each implementation in the same jitted scan.

    Besides the three implementations, ``vijax_default`` runs vijax's default ELBO and
    ``hand_numpyro_densities`` the diagnostic :func:`hand_elbo_numpyro_densities`.
    """
    key = jax.random.key(1)
    hand_carry = steps.initial_carry(OPTIMIZER, hand_init(X.shape[1]), key)
    runs: dict[str, Callable[[], Any] | None] = {
        "hand": functools.partial(harness.scan_steps(hand_step, NUM_STEPS), hand_carry, X, y),
        "hand_numpyro_densities": functools.partial(
            harness.scan_steps(hand_numpyro_densities_step, NUM_STEPS), hand_carry, X, y
        ),
        "numpyro": functools.partial(
            harness.scan_steps(steps.numpyro_step(svi), NUM_STEPS), svi.init(key, X, y), X, y
        ),
        "vijax": None,
        "vijax_default": None,
    }
    if vijax is None:
        return runs
    vijax_carry = steps.initial_carry(OPTIMIZER, vijax.params, key)
    for name, estimator in (("vijax", vijax.estimator), ("vijax_default", vijax.default_estimator)):
        scan = harness.scan_steps(steps.ascent_step(estimator, OPTIMIZER), NUM_STEPS)
        run = functools.partial(scan, vijax_carry, X, y)
        if harness.attempt(f"{name} scan", run, errors) is not None:
            runs[name] = run
    return runs


def measure_steady_state(
    X: jax.Array, y: jax.Array, vijax: VijaxParts | None, errors: list[str]
) -> harness.Row:
    """Seconds per step of each implementation's step inside the same jitted scan."""
    svi = numpyro_svi(X.shape[1])
    times, outputs = harness.time_scans(scan_runs(X, y, svi, vijax, errors), STEADY_REPEATS)
    default_times = times.pop("vijax_default")
    densities_s = harness.median(times.pop("hand_numpyro_densities")) / NUM_STEPS
    numpyro_params = svi.get_params(outputs["numpyro"][0])
    extra = {
        "final_elbo_hand": final_elbo(hand_elbo, outputs["hand"][0][0], X, y),
        "final_elbo_numpyro": final_elbo(numpyro_elbo(svi), numpyro_params, X, y),
        "final_elbo_vijax": None,
        "final_elbo_numpyro_by_hand": final_elbo(
            hand_elbo, numpyro_params_as_hand(numpyro_params), X, y
        ),
        "hand_numpyro_densities_s": densities_s,
        "vijax_default_s": None,
        "ratio_hand_vijax_default": None,
        "final_elbo_vijax_default": None,
    }
    for name in ("vijax", "vijax_default"):
        if outputs[name] is not None:
            params = outputs[name][0][0]
            extra[f"final_elbo_{name}"] = harness.attempt(
                f"{name} final ELBO", lambda p=params: final_elbo(vijax.objective, p, X, y), errors
            )
    if default_times:
        extra["vijax_default_s"] = harness.median(default_times) / NUM_STEPS
        extra["vijax_default_samples"] = [seconds / NUM_STEPS for seconds in default_times]
        extra["ratio_hand_vijax_default"] = harness.paired_ratio(default_times, times["hand"])
    return harness.make_row(
        f"step ({NUM_STEPS}-step jitted scan)",
        times,
        per=NUM_STEPS,
        metric="time per step",
        unit="s/step",
        notes=f"final ELBO: each implementation's own Monte Carlo ELBO, {ELBO_EVAL_KEYS}-key "
        f"average, after {NUM_STEPS} steps from loc 0, scale {INIT_SCALE} (the last iterate "
        "of Adam at lr 1e-2 is noisy: across 10 seeds the hand-written one scores σ ≈ 0.4); "
        "final_elbo_numpyro_by_hand: NumPyro's params scored by the hand-written ELBO; "
        "vijax_default: vijax's default ELBO (closed-form KL where NumPyro has one) trained "
        "in the same scan, its final params scored by the Monte Carlo ELBO; "
        "hand_numpyro_densities_s: the hand-written step with its log densities from "
        "numpyro.distributions (the cost of NumPyro's formulas without a framework)",
        **extra,
    )


def measure_fit(
    X: jax.Array, y: jax.Array, vijax: VijaxParts | None, vj: Any, errors: list[str]
) -> list[harness.Row]:
    """First-call and second-call seconds of a whole ``NUM_STEPS``-step fit."""
    key = jax.random.key(1)
    hand_params = hand_init(X.shape[1])
    svi = numpyro_svi(X.shape[1])
    fits: dict[str, Callable[[], Any] | None] = {
        "hand": lambda: hand_fit(hand_params, key, X, y),
        "numpyro": lambda: svi.run(key, NUM_STEPS, X, y, progress_bar=False),
        "vijax": None,
    }
    if vijax is not None:

        def vijax_fit() -> Any:
            return vj.fit(
                vijax.objective,
                vijax.params,
                OPTIMIZER,
                key,
                X,
                y,
                num_steps=NUM_STEPS,
                progress=True,
            )

        if harness.attempt("vj.fit", vijax_fit, errors) is not None:
            fits["vijax"] = vijax_fit
    first, second, results = harness.time_first_and_second(fits, FIT_REPEATS)
    extra = {
        "final_elbo_hand": final_elbo(hand_elbo, results["hand"][0], X, y),
        "final_elbo_numpyro": final_elbo(numpyro_elbo(svi), results["numpyro"].params, X, y),
        "final_elbo_vijax": None,
        "elbo_tail_hand": tail_mean(results["hand"][1]),
        "elbo_tail_numpyro": -tail_mean(results["numpyro"].losses),
        "elbo_tail_vijax": None,
    }
    if "vijax" in results:
        result = results["vijax"]
        extra["final_elbo_vijax"] = harness.attempt(
            "vijax fit final ELBO", lambda: final_elbo(vijax.objective, result.params, X, y), errors
        )
        extra["elbo_tail_vijax"] = harness.attempt(
            "vijax fit history", lambda: tail_mean(result.history), errors
        )
    notes = (
        "JAX caches cleared before each first call; hand: module-level jitted scan; "
        "NumPyro: svi.run(progress_bar=False), which traces again on every call; "
        f"vijax: vj.fit(progress=True); elbo_tail: mean of the last {HISTORY_TAIL} "
        "per-step estimates of the fit"
    )
    return [
        harness.make_row(
            f"fit {NUM_STEPS} steps, first call",
            first,
            metric="time per call",
            notes=notes,
            **extra,
        ),
        harness.make_row(f"fit {NUM_STEPS} steps, second call", second, metric="time per call"),
    ]


def run() -> list[harness.Row]:
    """Run every logistic-regression measurement and return the rows."""
    harness.warm_up_jax()
    X, y = load_data()
    errors: list[str] = []
    vj, reason = harness.import_vijax()
    if reason:
        errors.append(reason)
    vijax = harness.attempt("vijax setup", lambda: vijax_parts(vj, X, y), errors) if vj else None
    if vijax is not None:
        errors.extend(vijax.notes)
    rows = [measure_steady_state(X, y, vijax, errors), *measure_fit(X, y, vijax, vj, errors)]
    if errors:
        rows[0].notes = "; ".join([rows[0].notes, *errors])
    return rows


def main() -> None:
    """Run the benchmark, write ``results/logreg.{json,md}`` and print the table."""
    print(harness.write_results(NAME, run()))


if __name__ == "__main__":
    main()
