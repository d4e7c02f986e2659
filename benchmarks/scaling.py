"""Scaling: data-parallel overhead vs device count, and populations of runs vs sequential fits.

**Device count.** For ``N`` in 1, 2, 4 a child process starts with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before JAX is imported) and times
``vj.fit(..., mesh=<N devices>)`` against the plain one-device ``vj.fit`` in the same process:
Bayesian logistic regression on breast cancer (569 × 31), minibatches of 128 rows split over
the devices, the 1-particle ELBO, Adam. The ``N`` host "devices" share this machine's cores,
so the row checks the *overhead* of the sharded program (its partitioning, the all-reduce of
the gradients, the replicated state), not a speed-up: ``ratio_one_device`` = sharded seconds
per step / one-device seconds per step.

**Populations.** ``R = 64`` runs trained by one ``vj.fit_population`` call against the same
64 runs done by 64 sequential ``vj.fit`` calls (same keys; the population's run ``r`` equals
fit ``r``), and against the floor, a hand-written ``jit(vmap(scan))`` of the same step:

- *small*: a Normal model with one latent mean and 20 data (the closed-form posterior is known),
  2-particle ELBO, 5000 steps per run: per-step work is tiny, so the sequential fits pay
  mostly fixed costs per step that the population pays once for 64 runs;
- *logreg*: the breast-cancer logistic regression, 2000 steps per run: here each step is a
  569 × 31 matrix product, and on a CPU the population's 64 runs cost close to 64 times one
  run's arithmetic, which bounds the gain;
- *learning-rate sweep*: the small model with 16 learning rates; sequentially that is 16
  ``vj.fit`` calls with 16 optimizers (each a new program to compile, as a user's loop over
  ``optax.adam(lr)`` would), in the population one ``optax.inject_hyperparams`` optimizer and
  ``hyperparams={"learning_rate": rates}``;
- *small VAEs*: 64 VAEs on 300 binarized 8 × 8 digits (``vae.mlp_vae``: encoder
  ``64 → 16 → 4``, decoder ``2 → 16 → 64``, two Gaussian latents), each with its own initial
  parameters and key (minibatch order, draws), 1-particle ELBO with the closed-form KL,
  minibatches of 50, Adam, 200 steps; the hand-written floor is the same networks and ELBO in
  ``jnp`` (a random contiguous minibatch per step instead of vj.fit's per-epoch permutation).

Each population row is timed twice: *first call* (``jax.clear_caches()`` before it, so
tracing and compilation are paid as in a fresh process; the sequential fits compile once) and
*second call* (same shapes again, compiled programs reused). ``vijax_s`` is the population's
seconds, ``sequential_s`` the 64 fits', ``ratio_sequential`` = population / sequential (below
1 is faster; the target is ≤ 0.1 for small models), ``ratio_hand`` = population / the
hand-written ``jit(vmap(scan))``.

Run with ``python -m benchmarks.scaling``; writes ``benchmarks/results/scaling.{json,md}``.
The environment variables ``SCALING_RUNS``, ``SCALING_REPEATS``, ``SCALING_DEVICE_COUNTS`` and
``SCALING_DEVICE_STEPS`` change the population size, the repeats, the device counts and the
steps timed per device count; ``SCALING_STEPS_FRACTION`` (default 1) scales every population's
step count and ``SCALING_SWEEP_RUNS`` (default 16) the sweep's size, for a short run. On an
accelerator (``benchmarks/gpu.sh``, which sets them for a run of a few minutes) only the
populations run.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

from benchmarks import harness, steps

NAME = "scaling"
NUM_RUNS = int(os.environ.get("SCALING_RUNS", "64"))
DEVICE_COUNTS = tuple(int(n) for n in os.environ.get("SCALING_DEVICE_COUNTS", "1,2,4").split(","))
DEVICE_STEPS = int(os.environ.get("SCALING_DEVICE_STEPS", "1000"))
DEVICE_REPEATS = 5
DEVICE_BATCH = 128
STEPS_FRACTION = float(os.environ.get("SCALING_STEPS_FRACTION", "1"))
SMALL_DATA = 20


def _steps(count: int) -> int:
    return max(1, round(count * STEPS_FRACTION))


SMALL_STEPS = _steps(5000)
LOGREG_STEPS = _steps(2000)
SWEEP_STEPS = _steps(1000)
SWEEP_RUNS = min(NUM_RUNS, int(os.environ.get("SCALING_SWEEP_RUNS", "16")))
VAE_STEPS = _steps(200)
VAE_IMAGES = 300
VAE_BATCH = 50
VAE_LATENT = 2
VAE_HIDDEN = 16
VAE_LEARNING_RATE = 1e-2
REPEATS = int(os.environ.get("SCALING_REPEATS", "3"))
LEARNING_RATE = 1e-2


# --------------------------------------------------------------------------------------------
# Models (written out with vijax's primitives; the families are hand-written programs)


def load_breast_cancer() -> tuple[jax.Array, jax.Array]:
    """Standardised breast-cancer features with an intercept column, and 0/1 labels."""
    from sklearn.datasets import load_breast_cancer as load

    features, labels = load(return_X_y=True)
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    features = np.hstack([np.ones((features.shape[0], 1)), features])
    return jnp.asarray(features, jnp.float32), jnp.asarray(labels, jnp.float32)


def logreg_parts(vj: Any, num_data: int, subsample: bool) -> tuple[Callable, dict]:
    """``(objective, params)``: 1-particle Monte Carlo ELBO of the logistic regression."""

    def model(x, y):
        w = vj.sample("w", dist.Normal(jnp.zeros(x.shape[1]), 1.0).to_event(1))
        size = x.shape[0] if subsample else None
        with vj.plate("data", num_data, subsample_size=size):
            vj.sample("y", dist.Bernoulli(logits=x @ w), obs=y)

    def family(params, x, y):
        scale = jax.nn.softplus(params["raw_scale"])
        vj.sample("w", dist.Normal(params["loc"], scale).to_event(1))

    params = {"loc": jnp.zeros(31), "raw_scale": jnp.full(31, float(np.log(np.expm1(0.1))))}
    return vj.elbo(model, family, analytic_kl=False), params


def small_data() -> jax.Array:
    return jnp.asarray(np.random.default_rng(0).normal(1.3, 1.0, SMALL_DATA), jnp.float32)


def small_program(vj: Any) -> tuple[Callable, Callable]:
    """``(model, family)``: a Normal mean with 20 data and a Normal family."""

    def model(x):
        mu = vj.sample("mu", dist.Normal(0.0, 1.0))
        with vj.plate("data", x.shape[0]):
            vj.sample("x", dist.Normal(mu, 1.0), obs=x)

    def family(params, x):
        vj.sample("mu", dist.Normal(params["loc"], jax.nn.softplus(params["raw_scale"])))

    return model, family


def small_parts(vj: Any) -> tuple[Callable, dict]:
    """``(objective, params)``: the small model's 2-particle Monte Carlo ELBO."""
    params = {"loc": jnp.zeros(()), "raw_scale": jnp.zeros(())}
    return vj.elbo(*small_program(vj), 2, analytic_kl=False), params


def vae_data() -> jax.Array:
    """The first 300 digits, binarized once with a fixed key: ``(300, 8, 8)`` zeros and ones."""
    from vijax.data import binarize, digits

    images, _ = digits()
    return binarize(images[:VAE_IMAGES], jax.random.key(0))


def vae_parts(vj: Any, keys: jax.Array) -> tuple[Callable, Any]:
    """``(objective, params)``: a small MLP VAE's 1-particle ELBO, one initialization per key."""
    from vijax.models import vae

    model = vae.mlp_vae((8, 8), vae.gaussian(VAE_LATENT), hidden=(VAE_HIDDEN,), num_data=VAE_IMAGES)
    return vj.elbo(model.model, model.family), jax.vmap(model.init)(keys)


# --------------------------------------------------------------------------------------------
# Hand-written floors: the same steps in a jit(vmap(scan))


def hand_small_elbo(params, key, x):
    scale = jax.nn.softplus(params["raw_scale"])
    noise = jax.random.normal(key, (2,))
    mu = params["loc"] + scale * noise
    log_lik = -0.5 * jnp.sum((x[None, :] - mu[:, None]) ** 2, axis=1)
    log_prior = -0.5 * mu**2
    log_q = -0.5 * noise**2 - jnp.log(scale)
    return jnp.mean(log_lik + log_prior - log_q)


def hand_logreg_elbo(params, key, x, y):
    scale = jax.nn.softplus(params["raw_scale"])
    noise = jax.random.normal(key, params["loc"].shape)
    w = params["loc"] + scale * noise
    logits = x @ w
    log_lik = jnp.sum(y * logits - steps.softplus(logits))
    return log_lik - 0.5 * jnp.sum(w**2) + 0.5 * jnp.sum(noise**2) + jnp.sum(jnp.log(scale))


def _dense(key, fan_in, fan_out):
    bound = 1.0 / np.sqrt(fan_in)
    return {
        "w": jax.random.uniform(key, (fan_in, fan_out), minval=-bound, maxval=bound),
        "b": jnp.zeros(fan_out),
    }


def hand_vae_init(key: jax.Array) -> dict:
    """The VAE's weights as plain matrices: encoder 64 → 16 → 4, decoder 2 → 16 → 64."""
    keys = jax.random.split(key, 4)
    return {
        "enc1": _dense(keys[0], 64, VAE_HIDDEN),
        "enc2": _dense(keys[1], VAE_HIDDEN, 2 * VAE_LATENT),
        "dec1": _dense(keys[2], VAE_LATENT, VAE_HIDDEN),
        "dec2": _dense(keys[3], VAE_HIDDEN, 64),
    }


def hand_vae_elbo(params, key, x):
    """``(N / B) Σ_i [log p(x_i | z_i) − KL(q(z_i | x_i) ‖ N(0, I))]`` on a random batch."""
    batch_key, noise_key = jax.random.split(key)
    start = jax.random.randint(batch_key, (), 0, x.shape[0] - VAE_BATCH + 1)
    flat = jax.lax.dynamic_slice_in_dim(x, start, VAE_BATCH).reshape(VAE_BATCH, -1)

    def mlp(first, second, h):
        h = jax.nn.relu(h @ params[first]["w"] + params[first]["b"])
        return h @ params[second]["w"] + params[second]["b"]

    out = mlp("enc1", "enc2", flat)
    loc, log_scale = out[:, :VAE_LATENT], out[:, VAE_LATENT:]
    z = loc + jnp.exp(log_scale) * jax.random.normal(noise_key, loc.shape)
    logits = mlp("dec1", "dec2", z)
    log_lik = jnp.sum(flat * logits - steps.softplus(logits))
    kl = jnp.sum(0.5 * (loc**2 + jnp.exp(2 * log_scale) - 1.0) - log_scale)
    return x.shape[0] / VAE_BATCH * (log_lik - kl)


def hand_population(
    elbo: Callable, optimizer, num_steps: int, per_run_params: bool = False
) -> Callable:
    """``run(params, keys, *data)``: ``num_steps`` Adam steps of every run, vmapped scans
    (``per_run_params``: ``params`` carry a leading run axis, else all runs share them)."""

    def one(params, key, *data):
        def step(carry, _):
            params, opt_state, t = carry
            value, grads = jax.value_and_grad(elbo)(params, jax.random.fold_in(key, t), *data)
            grads = jax.tree.map(jnp.negative, grads)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, t + 1), value

        carry = (params, optimizer.init(params), jnp.zeros((), jnp.int32))
        (params, _, _), values = jax.lax.scan(step, carry, None, length=num_steps)
        return params, values

    @jax.jit
    def run(params, keys, *data):
        if per_run_params:
            return jax.vmap(lambda params, key: one(params, key, *data))(params, keys)
        return jax.vmap(lambda key: one(params, key, *data))(keys)

    return run


# --------------------------------------------------------------------------------------------
# Populations


def _population_row(
    case: str,
    population: Callable[[], Any],
    sequential: Callable[[], Any],
    hand: Callable[[], Any] | None,
    *,
    notes: str,
    runs: int = NUM_RUNS,
    repeats: int = REPEATS,
    check: Callable[[Any, Any], float] | None = None,
) -> list[harness.Row]:
    """First-call and second-call rows for one population case."""
    calls = {"vijax": population, "sequential": sequential}
    if hand is not None:
        calls["hand"] = hand
    first, second, results = harness.time_first_and_second(calls, repeats)
    extra = {}
    if check is not None:
        extra.update(check(results["vijax"], results["sequential"]))
    rows = []
    for label, times in (("first call", first), ("second call", second)):
        sequential_s = harness.median(times["sequential"])
        rows.append(
            harness.make_row(
                f"{case}, {label}",
                {"vijax": times["vijax"], "hand": times.get("hand")},
                metric="time per call",
                notes=notes if label == "first call" else "",
                sequential_s=sequential_s,
                ratio_sequential=harness.paired_ratio(times["vijax"], times["sequential"]),
                runs=runs,
                sequential_samples=times["sequential"],
                **(extra if label == "first call" else {}),
            )
        )
    return rows


def _largest_difference(population: Any, sequential: list) -> dict:
    """How far each population run ends from the same run done alone.

    The largest difference over runs, and how many runs agree to 1e-5: float32 sums ordered
    differently by ``vmap`` leave a few ulps, which a long, unstable fit (a VAE's ReLUs, Adam)
    can amplify in a run or two; a wrong key or batch would move every run.
    """
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[r.params for r in sequential])
    per_run = np.zeros(len(sequential))
    for a, b in zip(jax.tree.leaves(population.params), jax.tree.leaves(stacked)):
        gap = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
        per_run = np.maximum(per_run, gap.reshape(len(sequential), -1).max(axis=1))
    return {
        "largest_difference_to_sequential": float(per_run.max()),
        "runs_within_1e-5": int((per_run <= 1e-5).sum()),
    }


def measure_populations(vj: Any) -> list[harness.Row]:
    """Rows for the small-model, logistic-regression, learning-rate-sweep and VAE populations."""
    keys = jax.random.split(jax.random.key(0), NUM_RUNS)
    optimizer = optax.adam(LEARNING_RATE)
    rows = []

    x = small_data()
    objective, params = small_parts(vj)
    hand = hand_population(hand_small_elbo, optimizer, SMALL_STEPS)

    def small_population():
        return vj.fit_population(
            objective, params, optimizer, keys, x, num_steps=SMALL_STEPS, progress=False
        )

    def small_sequential():
        return [
            vj.fit(objective, params, optimizer, keys[r], x, num_steps=SMALL_STEPS, progress=False)
            for r in range(NUM_RUNS)
        ]

    rows += _population_row(
        f"population of {NUM_RUNS}: Normal mean, 20 data, {SMALL_STEPS} steps",
        small_population,
        small_sequential,
        functools.partial(hand, params, keys, x),
        notes="vijax: one vj.fit_population call (progress=False); sequential: "
        f"{NUM_RUNS} vj.fit calls, one per key; hand: jit(vmap(scan)) of the same step "
        "(without vj.fit's NaN guard and chunking)",
        check=_largest_difference,
    )

    X, y = load_breast_cancer()
    objective, params = logreg_parts(vj, X.shape[0], subsample=False)
    hand = hand_population(hand_logreg_elbo, optimizer, LOGREG_STEPS)

    def logreg_population():
        return vj.fit_population(
            objective, params, optimizer, keys, X, y, num_steps=LOGREG_STEPS, progress=False
        )

    def logreg_sequential():
        return [
            vj.fit(
                objective, params, optimizer, keys[r], X, y, num_steps=LOGREG_STEPS, progress=False
            )
            for r in range(NUM_RUNS)
        ]

    rows += _population_row(
        f"population of {NUM_RUNS}: logistic regression, breast cancer, {LOGREG_STEPS} steps",
        logreg_population,
        logreg_sequential,
        functools.partial(hand, params, keys, X, y),
        notes=f"compute-bound on a CPU: {NUM_RUNS} runs need {NUM_RUNS} times the matrix "
        "products of one",
        check=_largest_difference,
    )

    objective, params = small_parts(vj)
    rates = np.geomspace(1e-3, 1e-1, SWEEP_RUNS)
    keys = keys[:SWEEP_RUNS]
    injected = optax.inject_hyperparams(optax.adam)(learning_rate=LEARNING_RATE)

    def sweep_population():
        return vj.fit_population(
            objective,
            params,
            injected,
            keys,
            x,
            num_steps=SWEEP_STEPS,
            hyperparams={"learning_rate": jnp.asarray(rates, jnp.float32)},
            progress=False,
        )

    def sweep_sequential():
        return [
            vj.fit(
                objective,
                params,
                optax.adam(float(rate)),
                keys[r],
                x,
                num_steps=SWEEP_STEPS,
                progress=False,
            )
            for r, rate in enumerate(rates)
        ]

    rows += _population_row(
        f"learning-rate sweep of {SWEEP_RUNS}: Normal mean, {SWEEP_STEPS} steps",
        sweep_population,
        sweep_sequential,
        None,
        notes="sequential: one optax.adam(lr) per call, so every call compiles its own "
        f"program (what a loop over learning rates does; {SWEEP_RUNS} runs to keep the "
        "benchmark short); population: one inject_hyperparams optimizer, rates as hyperparams",
        runs=SWEEP_RUNS,
        repeats=1,
    )

    rows += _particle_sweep_rows(vj)
    rows += _vae_rows(vj)
    return rows


def _particle_sweep_rows(vj: Any) -> list[harness.Row]:
    """Particle counts K ∈ {1, 4, 16, 64}, 16 seeds each: one grouped population vs 64 fits."""
    counts = (1, 4, 16, 64)
    per_count = max(1, NUM_RUNS // len(counts))
    model, family = small_program(vj)
    objectives = [vj.iwae(model, family, k) for k in counts]
    params = {"loc": jnp.zeros(()), "raw_scale": jnp.zeros(())}
    x = small_data()
    groups = np.repeat(np.arange(len(counts)), per_count)
    keys = jax.random.split(jax.random.key(5), len(groups))
    optimizer = optax.adam(LEARNING_RATE)
    common = dict(num_steps=SWEEP_STEPS, progress=False)

    def grouped_population():
        return vj.fit_population(
            objectives,
            params,
            optimizer,
            keys,
            x,
            groups=groups,
            **common,
        )

    def grouped_sequential():
        return [
            vj.fit(objectives[g], params, optimizer, keys[r], x, **common)
            for r, g in enumerate(groups)
        ]

    return _population_row(
        f"particle-count sweep K ∈ {{1, 4, 16, 64}} × {per_count} seeds: Normal mean, "
        f"{SWEEP_STEPS} steps",
        grouped_population,
        grouped_sequential,
        None,
        notes="population: one vj.fit_population with one IWAE objective per K and "
        "groups=..., all four groups in one compiled loop; sequential: one vj.fit per run "
        "(four programs, each compiled once)",
        runs=len(groups),
        check=_largest_difference,
    )


def _vae_rows(vj: Any) -> list[harness.Row]:
    """64 small VAEs on digits: one population vs 64 vj.fit calls vs the hand-written floor."""
    x = vae_data()
    keys = jax.random.split(jax.random.key(1), NUM_RUNS)
    init_keys = jax.random.split(jax.random.key(2), NUM_RUNS)
    objective, params = vae_parts(vj, init_keys)
    optimizer = optax.adam(VAE_LEARNING_RATE)  # one object: the 64 fits share one program
    common = dict(num_steps=VAE_STEPS, data=(x,), batch_size=VAE_BATCH, progress=False)
    hand = hand_population(hand_vae_elbo, optimizer, VAE_STEPS, per_run_params=True)
    hand_params = jax.vmap(hand_vae_init)(init_keys)

    def vae_population():
        return vj.fit_population(objective, params, optimizer, keys, in_axes=(0,), **common)

    def vae_sequential():
        return [
            vj.fit(
                objective,
                jax.tree.map(lambda leaf, r=r: leaf[r], params),
                optimizer,
                keys[r],
                **common,
            )
            for r in range(NUM_RUNS)
        ]

    return _population_row(
        f"population of {NUM_RUNS}: small VAEs, {VAE_IMAGES} digits, {VAE_STEPS} steps",
        vae_population,
        vae_sequential,
        functools.partial(hand, hand_params, keys, x),
        notes=f"vae.mlp_vae (64 → {VAE_HIDDEN} → {2 * VAE_LATENT}, {VAE_LATENT} → "
        f"{VAE_HIDDEN} → 64), 1-particle ELBO with closed-form KL, minibatches of {VAE_BATCH} "
        f"of {VAE_IMAGES} binarized digits, Adam {VAE_LEARNING_RATE}; each run has its own "
        "initial parameters (in_axes=(0,)) and key; hand: the same networks and ELBO in jnp, "
        "a random contiguous minibatch per step, no NaN guard",
        check=_largest_difference,
    )


# --------------------------------------------------------------------------------------------
# Device count (in child processes)


def device_child(count: int) -> dict:
    """In a process with ``count`` host devices: seconds per step, sharded and one-device."""
    import vijax as vj

    assert jax.device_count() == count, jax.devices()
    X, y = load_breast_cancer()
    objective, params = logreg_parts(vj, X.shape[0], subsample=True)
    optimizer = optax.adam(LEARNING_RATE)
    mesh = jax.make_mesh((count,), ("data",))

    def run(mesh):
        return vj.fit(
            objective,
            params,
            optimizer,
            jax.random.key(1),
            num_steps=DEVICE_STEPS,
            data=(X, y),
            batch_size=DEVICE_BATCH,
            progress=False,
            mesh=mesh,
        )

    times, outputs = harness.time_scans(
        {"sharded": lambda: run(mesh), "one_device": lambda: run(None)}, DEVICE_REPEATS
    )
    difference = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            jax.tree.leaves(outputs["sharded"].params),
            jax.tree.leaves(outputs["one_device"].params),
        )
    )
    return {
        "sharded": [t / DEVICE_STEPS for t in times["sharded"]],
        "one_device": [t / DEVICE_STEPS for t in times["one_device"]],
        "largest_difference": difference,
        "devices": [str(d) for d in jax.devices()],
    }


def measure_device_counts() -> list[harness.Row]:
    """One row per device count, each measured in its own child process."""
    rows = []
    for count in DEVICE_COUNTS:
        env = dict(os.environ)
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}"
        ).strip()
        env.setdefault("JAX_PLATFORMS", "cpu")
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.scaling", "--devices", str(count)],
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            rows.append(
                harness.Row(
                    f"data-parallel fit, {count} host devices",
                    None,
                    None,
                    None,
                    None,
                    None,
                    0,
                    notes=f"child failed: {done.stderr[-300:]}",
                )
            )
            continue
        result = json.loads(lines[-1][len("RESULT ") :])
        rows.append(
            harness.make_row(
                f"data-parallel fit, {count} host devices (batch {DEVICE_BATCH}, "
                f"{DEVICE_STEPS} steps)",
                {"vijax": result["sharded"]},
                metric="time per step",
                unit="s/step",
                notes=(
                    "host devices share the machine's cores: this checks the overhead of the "
                    "sharded program, not a speed-up; one_device_s: vj.fit without a mesh in "
                    "the same process"
                    if count == DEVICE_COUNTS[0]
                    else ""
                ),
                one_device_s=harness.median(result["one_device"]),
                ratio_one_device=harness.paired_ratio(result["sharded"], result["one_device"]),
                largest_difference=result["largest_difference"],
                one_device_samples=result["one_device"],
            )
        )
    return rows


def run() -> list[harness.Row]:
    """Every scaling measurement."""
    harness.warm_up_jax()
    vj, reason = harness.import_vijax()
    if vj is None:
        return [harness.Row("scaling", None, None, None, None, None, 0, notes=reason)]
    rows = measure_device_counts() if jax.default_backend() == "cpu" else []
    return rows + measure_populations(vj)


def main(argv: list[str]) -> None:
    """``--devices N``: the child's measurement (prints one JSON line); else the benchmark."""
    if argv[:1] == ["--devices"]:
        print("RESULT " + json.dumps(device_child(int(argv[1]))), flush=True)
        return
    print(harness.write_results(NAME, run()))


if __name__ == "__main__":
    main(sys.argv[1:])
