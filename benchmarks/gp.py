"""Sparse variational GPs: vijax vs hand-written JAX vs GPJax, in one process.

Model: the whitened SVGP (Hensman et al. 2013, 2015) with an ARD RBF kernel, zero mean, learned
inducing inputs, ``q(u) = N(m, L Lᵀ)`` started at the prior, Adam at ``lr = 0.01``, float64.
Three problems, each run by the three implementations from the same initial parameters (the
kernel's defaults, ``Z`` = the same random training rows):

* ``diabetes``: regression, Gaussian noise (353 training rows, 10 inputs, 32 inducing points,
  full batch; vijax's default 2-node Gauss–Hermite rule is exact for Gaussian noise, GPJax and
  the hand-written step use the closed form);
* ``breast-cancer``: classification, Bernoulli with the probit link (GPJax's only link), 455
  rows, 30 inputs, 32 inducing points, 20-node Gauss–Hermite quadrature in all three;
* ``synthetic, minibatch``: 20,000 rows, 4 inputs, 64 inducing points, minibatches of 256
  (vijax: ``svgp(batch_size=256)``, a ``vj.plate(subsample_size=256)``; all three draw the
  rows uniformly with replacement).

Measured, per problem:

* ``step``: steady-state seconds per step in the same jitted ``lax.scan`` driver around each
  implementation's step (vijax: ``vj.value_and_grad_estimate(svgp.elbo())``; GPJax:
  ``eqx.filter_value_and_grad`` of ``-gpjax.objectives.elbo``, as ``gpjax.fit`` does), medians
  of repeats timed round-robin; ``ratio_gpjax`` = vijax / GPJax;
* each implementation's final parameters after the scan, scored the same way: the full-data
  ELBO (vijax's quadrature ELBO, which equals the closed form for Gaussian noise) and the test
  NLPD / RMSE / error rate (vijax's predictive), plus GPJax's own ELBO at its parameters.

And on ``diabetes``, natural gradients against Adam: with the hyperparameters and ``Z`` fixed,
the steps until the ELBO is within 1 nat of Titsias's collapsed bound (its maximum over
``q(u)``); and with everything trained, natural gradients for ``q(u)`` (step 1) plus Adam for
the rest against Adam alone (vijax and GPJax's ``fit_natgrads``), steps until within 1 nat of
the collapsed bound at the current hyperparameters, and the final ELBO and test NLPD.

GPJax is optional (``pip install gpjax``; it installs next to jax 0.10.2 without changing it);
without it its columns are empty. Run with ``python -m benchmarks.gp``; writes
``benchmarks/results/gp.{json,md}``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.linalg import solve_triangular

from benchmarks import harness, steps

NAME = "gp"
NUM_STEPS = 500
REPEATS = 7
LEARNING_RATE = 0.01
OPTIMIZER = optax.adam(LEARNING_RATE)
JITTER = 1e-6
NUM_NODES = 20  # Gauss–Hermite nodes for the Bernoulli likelihood
NATURAL_STEPS = 1000  # cap of the natural-gradient vs Adam runs
WITHIN = 1.0  # nats from the collapsed bound


# --------------------------------------------------------------------------------------------
# Problems


class Problem(NamedTuple):
    """A data set and its SVGP settings."""

    name: str
    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    likelihood: str  # "gaussian" or "probit"
    num_inducing: int
    batch_size: int | None


def problems() -> list[Problem]:
    """The three problems (float64; call inside ``jax.enable_x64``)."""
    from vijax.models.gp.datasets import load

    out = []
    for name, likelihood in (("diabetes", "gaussian"), ("breast-cancer", "probit")):
        data = load(name, jax.random.key(0))
        out.append(
            Problem(
                name, data.x_train, data.y_train, data.x_test, data.y_test, likelihood, 32, None
            )
        )
    rng = np.random.default_rng(0)
    x = rng.uniform(-2.0, 2.0, size=(25_000, 4))
    y = np.sin(2.0 * x[:, 0]) * np.cos(x[:, 1]) + 0.3 * x[:, 2] + 0.1 * rng.normal(size=25_000)
    x, y = jnp.asarray(x), jnp.asarray(y)
    out.append(
        Problem(
            "synthetic, minibatch",
            x[:20_000],
            y[:20_000],
            x[20_000:],
            y[20_000:],
            "gaussian",
            64,
            256,
        )
    )
    return out


# --------------------------------------------------------------------------------------------
# vijax


def vijax_svgp(vj_gp: Any, problem: Problem, *, full_batch: bool = False) -> Any:
    """vijax's SVGP for ``problem`` (``full_batch``: without the minibatch plate)."""
    likelihood = vj_gp.Gaussian() if problem.likelihood == "gaussian" else vj_gp.Bernoulli("probit")
    return vj_gp.svgp(
        vj_gp.RBF(ard=True),
        likelihood,
        problem.num_inducing,
        batch_size=None if full_batch else problem.batch_size,
        jitter=JITTER,
    )


def initial_params(vj_gp: Any, problem: Problem) -> dict:
    """The shared start: kernel defaults, ``Z`` random training rows, ``q(u)`` the prior."""
    svgp = vijax_svgp(vj_gp, problem)
    return svgp.init(jax.random.key(0), problem.x_train, problem.y_train)


# --------------------------------------------------------------------------------------------
# Hand-written JAX (the floor), on vijax's parameter layout


def _softplus_inverse(x):
    return x + jnp.log(-jnp.expm1(-x))


def hand_elbo(params, key, X, y, *, likelihood: str, batch_size: int | None) -> jax.Array:
    """The whitened SVGP bound, written out: ``Σ E_q[log p(y_i | f_i)] − KL(q(v) ‖ N(0, I))``."""
    num_data = X.shape[0]
    scale = 1.0
    if batch_size is not None:
        rows = jax.random.randint(key, (batch_size,), 0, num_data)
        X, y, scale = X[rows], y[rows], num_data / batch_size
    hyper = params["hyperparameters"]
    variance = jax.nn.softplus(hyper["kernel"]["variance"])
    lengthscale = jax.nn.softplus(hyper["kernel"]["lengthscale"])
    Z = hyper["inducing_inputs"]

    def kernel(A, B):
        A, B = A / lengthscale, B / lengthscale
        d = jnp.sum(A**2, 1)[:, None] + jnp.sum(B**2, 1)[None, :] - 2.0 * A @ B.T
        return variance * jnp.exp(-0.5 * jnp.maximum(d, 0.0))

    M = Z.shape[0]
    L = jnp.linalg.cholesky(kernel(Z, Z) + JITTER * jnp.eye(M))
    A = solve_triangular(L, kernel(Z, X), lower=True)
    m, raw = params["inducing"]["mean"], params["inducing"]["scale"]
    Lq = jnp.tril(raw, -1) + jnp.diag(jax.nn.softplus(jnp.diag(raw)))
    mean = A.T @ m
    var = jnp.maximum(variance - jnp.sum(A**2, 0), 1e-12) + jnp.sum((Lq.T @ A) ** 2, 0)
    if likelihood == "gaussian":
        noise = jax.nn.softplus(hyper["likelihood"]["variance"])
        expected = -0.5 * jnp.log(2 * jnp.pi * noise) - 0.5 * ((y - mean) ** 2 + var) / noise
    else:
        nodes, weights = np.polynomial.hermite_e.hermegauss(NUM_NODES)
        f = mean[:, None] + jnp.sqrt(var)[:, None] * nodes[None, :]
        sign = 2.0 * y[:, None] - 1.0
        log_lik = jax.scipy.special.log_ndtr(sign * f)
        expected = log_lik @ (weights / math.sqrt(2 * math.pi))
    kl = 0.5 * (m @ m + jnp.sum(Lq**2) - M) - jnp.sum(jnp.log(jnp.diag(Lq)))
    return scale * jnp.sum(expected) - kl


# --------------------------------------------------------------------------------------------
# GPJax


def import_gpjax() -> tuple[Any, str]:
    """``(gpjax module, "")`` or ``(None, reason)``."""
    try:
        import gpjax
    except Exception as error:  # any import failure means "no GPJax columns"
        return None, f"import gpjax failed: {error!r}"
    return gpjax, ""


def gpjax_family(gpx: Any, problem: Problem, params: dict) -> Any:
    """GPJax's whitened family at vijax's initial parameters."""
    hyper = params["hyperparameters"]
    kernel = gpx.kernels.RBF(
        lengthscale=jax.nn.softplus(hyper["kernel"]["lengthscale"]),
        variance=jax.nn.softplus(hyper["kernel"]["variance"]),
    )
    prior = gpx.gps.Prior(mean_function=gpx.mean_functions.Zero(), kernel=kernel, jitter=JITTER)
    if problem.likelihood == "gaussian":
        noise = jax.nn.softplus(hyper["likelihood"]["variance"])
        likelihood = gpx.likelihoods.Gaussian(obs_stddev=jnp.sqrt(noise))
    else:
        likelihood = gpx.likelihoods.Bernoulli()
    return gpx.variational_families.WhitenedVariationalGaussian(
        model=prior * likelihood, inducing_inputs=hyper["inducing_inputs"]
    )


def gpjax_to_vijax(q: Any, problem: Problem) -> dict:
    """GPJax's fitted family in vijax's parameter layout (to score both the same way)."""
    from gpjax.parameters import val

    from vijax.models.gp.sparse import inducing_raw_scale

    kernel = q.model.prior.kernel
    hyper = {
        "kernel": {
            "lengthscale": _softplus_inverse(val(kernel.lengthscale)),
            "variance": _softplus_inverse(val(kernel.variance)),
        },
        "inducing_inputs": val(q.inducing_inputs),
        "likelihood": {},
    }
    if problem.likelihood == "gaussian":
        stddev = val(q.model.likelihood.obs_stddev)
        hyper["likelihood"] = {"variance": _softplus_inverse(stddev**2)}
    inducing = {
        "mean": val(q.variational_mean)[:, 0],
        "scale": inducing_raw_scale(val(q.variational_root_covariance)),
    }
    return {"hyperparameters": hyper, "inducing": inducing}


def gpjax_step(gpx: Any, optimizer: optax.GradientTransformation, problem: Problem):
    """GPJax's training step as ``gpjax.fit`` runs it: carry ``(family, opt state, key, t)``."""
    import equinox as eqx
    from gpjax.fit import get_batch

    def loss(q, batch):
        return -gpx.objectives.elbo(q, batch)

    def step(carry, X, y):
        q, opt_state, key, index = carry
        data = gpx.Dataset(X=X, y=y[:, None])
        if problem.batch_size is not None:
            data = get_batch(data, problem.batch_size, jax.random.fold_in(key, index))
        value, grads = eqx.filter_value_and_grad(loss)(q, data)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(q, eqx.is_array))
        return (eqx.apply_updates(q, updates), opt_state, key, index + 1), -value

    return step


def gpjax_carry(optimizer, q, key):
    import equinox as eqx

    return q, optimizer.init(eqx.filter(q, eqx.is_array)), key, jnp.zeros((), jnp.int32)


# --------------------------------------------------------------------------------------------
# Measurements


def scores(vj_gp: Any, problem: Problem, params: dict) -> dict[str, float]:
    """Full-data ELBO and test metrics of ``params``, by vijax's deterministic functions."""
    svgp = vijax_svgp(vj_gp, problem, full_batch=True)
    elbo = jax.jit(svgp.elbo())(params, jax.random.key(0), problem.x_train, problem.y_train)
    metrics = svgp.evaluate(params, problem.x_test, problem.y_test)
    return {"elbo": float(elbo.value), **{k: float(v) for k, v in metrics.items()}}


def measure_problem(vj: Any, vj_gp: Any, gpx: Any, problem: Problem, errors: list[str]):
    """One row: seconds per step of the three implementations, and their final scores."""
    params = initial_params(vj_gp, problem)
    data = (problem.x_train, problem.y_train)
    key = jax.random.key(1)
    hand = functools.partial(
        hand_elbo, likelihood=problem.likelihood, batch_size=problem.batch_size
    )
    hand_step = steps.ascent_step(
        lambda p, k, X, y: jax.value_and_grad(hand)(p, k, X, y), OPTIMIZER
    )
    runs: dict[str, Callable[[], Any] | None] = {
        "hand": functools.partial(
            harness.scan_steps(hand_step, NUM_STEPS),
            steps.initial_carry(OPTIMIZER, params, key),
            *data,
        ),
        "vijax": None,
        "gpjax": None,
    }
    svgp = vijax_svgp(vj_gp, problem)
    vijax_step = steps.ascent_step(vj.value_and_grad_estimate(svgp.elbo()), OPTIMIZER)
    run = functools.partial(
        harness.scan_steps(vijax_step, NUM_STEPS),
        steps.initial_carry(OPTIMIZER, params, key),
        *data,
    )
    if harness.attempt(f"vijax scan ({problem.name})", run, errors) is not None:
        runs["vijax"] = run
    if gpx is not None:
        q = gpjax_family(gpx, problem, params)
        scan = harness.scan_steps(gpjax_step(gpx, OPTIMIZER, problem), NUM_STEPS)
        run = functools.partial(scan, gpjax_carry(OPTIMIZER, q, key), *data)
        if harness.attempt(f"gpjax scan ({problem.name})", run, errors) is not None:
            runs["gpjax"] = run
    times, outputs = harness.time_scans(runs, REPEATS)
    extra: dict[str, Any] = {"gpjax_s": None, "ratio_gpjax": None}
    for name in ("vijax", "hand", "gpjax"):
        if outputs.get(name) is None:
            continue
        final = outputs[name][0][0]
        final = gpjax_to_vijax(final, problem) if name == "gpjax" else final
        for metric, value in scores(vj_gp, problem, final).items():
            extra[f"{'final_elbo' if metric == 'elbo' else 'test_' + metric}_{name}"] = value
    if times.get("gpjax"):
        extra["gpjax_s"] = harness.median(times["gpjax"]) / NUM_STEPS
        extra["gpjax_samples"] = [t / NUM_STEPS for t in times["gpjax"]]
        extra["ratio_gpjax"] = harness.paired_ratio(times.get("vijax"), times["gpjax"])
        q_final = outputs["gpjax"][0][0]
        own = gpx.objectives.elbo(q_final, gpx.Dataset(X=data[0], y=data[1][:, None]))
        extra["final_elbo_gpjax_own"] = float(own)
    batch = "full batch" if problem.batch_size is None else f"minibatches of {problem.batch_size}"
    case = (
        f"{problem.name}: {problem.likelihood}, N={problem.x_train.shape[0]}, "
        f"D={problem.x_train.shape[1]}, M={problem.num_inducing}, {batch}"
    )
    return harness.make_row(
        case,
        {"vijax": times.get("vijax"), "hand": times.get("hand"), "numpyro": None},
        per=NUM_STEPS,
        metric="time per step",
        unit="s/step",
        notes=f"{NUM_STEPS}-step jitted scan of Adam steps (lr {LEARNING_RATE}); final "
        "scores: full-data ELBO and test metrics of each implementation's final parameters, "
        "computed by vijax; NumPyro has no sparse GP",
        **extra,
    )


def _steps_within(gaps: np.ndarray) -> int | None:
    """The first step (1-based) after which the gap to the collapsed bound is ≤ 1 nat."""
    hits = np.flatnonzero(np.asarray(gaps) <= WITHIN)
    return int(hits[0]) + 1 if hits.size else None


def measure_natural_gradients(vj: Any, vj_gp: Any, gpx: Any, problem: Problem, errors):
    """Natural gradients vs Adam on ``problem`` (Gaussian, full batch)."""
    svgp = vijax_svgp(vj_gp, problem, full_batch=True)
    data = (problem.x_train, problem.y_train)
    params = initial_params(vj_gp, problem)
    value_and_grad = vj.value_and_grad_estimate(svgp.elbo())

    def trajectory(optimizer, num_steps):
        """Gaps ``collapsed(θ_t) − ELBO_t`` along a run, and the final parameters."""

        def step(carry, _):
            params, opt_state, index = carry
            value, grads = value_and_grad(
                params, jax.random.fold_in(jax.random.key(2), index), *data
            )
            bound = svgp.collapsed_elbo(params, *data)
            updates, opt_state = optimizer.update(
                jax.tree.map(jnp.negative, grads), opt_state, params
            )
            return (optax.apply_updates(params, updates), opt_state, index + 1), (
                bound - steps.scalar(value)
            )

        @jax.jit
        def run(params):
            carry = (params, optimizer.init(params), jnp.zeros((), jnp.int32))
            (params, _, _), gaps = jax.lax.scan(step, carry, None, length=num_steps)
            final_value, _ = value_and_grad(params, jax.random.key(3), *data)
            final_gap = svgp.collapsed_elbo(params, *data) - steps.scalar(final_value)
            return params, jnp.concatenate([gaps, final_gap[None]])

        return run(params)

    fixed = {
        "natural gradients (step 1)": vj_gp.natural_gradients(1.0),
        "Adam lr 0.01": optax.multi_transform(
            {"q": optax.adam(0.01), "fixed": optax.set_to_zero()},
            {"hyperparameters": "fixed", "inducing": "q"},
        ),
        "Adam lr 0.1": optax.multi_transform(
            {"q": optax.adam(0.1), "fixed": optax.set_to_zero()},
            {"hyperparameters": "fixed", "inducing": "q"},
        ),
    }
    extra: dict[str, Any] = {}
    for label, optimizer in fixed.items():
        _, gaps = trajectory(optimizer, NATURAL_STEPS)
        # gaps[t] is measured before step t+1; gaps[-1] after the last step
        extra[f"fixed θ, steps to 1 nat: vijax {label}"] = _steps_within(gaps[1:])
    joint = {
        "natural gradients (step 1) + Adam lr 0.01": vj_gp.natural_gradients(
            1.0, optax.adam(LEARNING_RATE)
        ),
        "Adam lr 0.01": optax.adam(LEARNING_RATE),
    }
    for label, optimizer in joint.items():
        final, gaps = trajectory(optimizer, NATURAL_STEPS)
        extra[f"joint, steps to 1 nat: vijax {label}"] = _steps_within(gaps[1:])
        for metric, value in scores(vj_gp, problem, final).items():
            extra[f"joint, {NATURAL_STEPS} steps, {metric}: vijax {label}"] = value
    if gpx is not None:

        def gpjax_natgrads(num_iters):
            q = gpjax_family(gpx, problem, params)
            return gpx.fit_natgrads(
                model=q,
                objective=lambda q, d: -gpx.objectives.elbo(q, d),
                train_data=gpx.Dataset(X=data[0], y=data[1][:, None]),
                optim=optax.adam(LEARNING_RATE),
                natgrad_lr=1.0,
                num_iters=num_iters,
                verbose=False,
            )[0]

        final = harness.attempt("gpjax fit_natgrads", lambda: gpjax_natgrads(NATURAL_STEPS), errors)
        if final is not None:
            label = "GPJax fit_natgrads (step 1) + Adam lr 0.01"
            for metric, value in scores(vj_gp, problem, gpjax_to_vijax(final, problem)).items():
                extra[f"joint, {NATURAL_STEPS} steps, {metric}: {label}"] = value
    return harness.Row(
        case=f"{problem.name}: natural gradients vs Adam (within {WITHIN:g} nat of the "
        "collapsed bound)",
        vijax_s=None,
        hand_s=None,
        numpyro_s=None,
        ratio_hand=None,
        ratio_numpyro=None,
        repeats=1,
        metric="steps",
        unit="steps",
        notes="fixed θ: kernel, noise and Z held at their initial values, only q(u) trained; "
        "joint: everything trained; 'steps to 1 nat' counts steps until "
        "collapsed(θ_t) − ELBO_t ≤ 1 (None: not within the cap of "
        f"{NATURAL_STEPS} steps); scores by vijax",
        extra=extra,
    )


def run() -> list[harness.Row]:
    """Run every GP measurement and return the rows (float64 inside the call only)."""
    with jax.enable_x64(True):
        harness.warm_up_jax()
        errors: list[str] = []
        vj, reason = harness.import_vijax()
        if reason:
            raise SystemExit(reason)
        from vijax.models import gp as vj_gp

        gpx, reason = import_gpjax()
        if reason:
            errors.append(reason)
        all_problems = problems()
        rows = [measure_problem(vj, vj_gp, gpx, problem, errors) for problem in all_problems]
        rows.append(measure_natural_gradients(vj, vj_gp, gpx, all_problems[0], errors))
        if errors:
            rows[0].notes = "; ".join([rows[0].notes, *errors])
        return rows


def main() -> None:
    """Run the benchmark, write ``results/gp.{json,md}`` and print the table."""
    print(harness.write_results(NAME, run()))


if __name__ == "__main__":
    main()
