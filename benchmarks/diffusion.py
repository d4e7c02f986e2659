"""Variational diffusion model training step: vijax vs hand-written JAX, and linear vs learned γ.

Model (Kingma et al. 2021, "Variational Diffusion Models"): the continuous-time ELBO

    −ELBO(x) = KL(q(z_1|x) ‖ N(0, I)) + E_q[−log p(x | z_0)] + ½ E_{t,ε}[γ'(t) ‖ε − ε̂(z_t, t)‖²]

with ``q(z_t | x) = N(α_t x, σ_t² I)``, ``α_t² = sigmoid(−γ(t))``, ``σ_t² = sigmoid(γ(t))``,
one draw of ``(t, ε)`` per example, ``t`` stratified over the batch (``t_i = (u + i/B) mod 1``),
one draw of ``z_0`` for the reconstruction term.

Cases:

- **digits**: scikit-learn's 1,797 digits (8 × 8, 17 levels of ``[−1, 1]``), discretized
  decoder ``p(x = x_k | z_0) ∝ exp(−(z_0/α_0 − x_k)² / (2 e^{γ_0}))``; denoiser
  ``mlp_denoiser(64, hidden=256, depth=2)`` (the CLI's network); learned and fixed linear γ.
- **two moons**: 4,000 points of ``make_moons(noise=0.05)`` (standardized), Gaussian decoder
  ``N(z_0/α_0, e^{γ_0})``; ``mlp_denoiser(2, hidden=256, depth=2)`` and a narrow
  ``hidden=64`` network (where the non-network work weighs most); learned γ.

Implementations (one driver, :func:`harness.scan_steps`; same parameters at the start, same
batches ``[(t·B) mod (N − B), … + B)``, ``optax.adam(1e-3)``):

- **hand-written**: the loss written out in ``jnp`` with everything a hand-writer would fold
  (one normal draw for the noise of ``z_t`` and ``z_0``):
  ``z_t = α_t x + σ_t ε`` with ``ε`` kept, ``γ'`` of the learned schedule in closed form, the
  decoder's true-level logit ``−ε_0²/2`` (``z_0/α_0 − x = e^{γ_0/2} ε_0``), the prior KL
  with ``Σ x²`` factored out. The same network apply, written again by hand.
- **vijax**: ``diffusion.continuous_time_elbo`` (forward process as a vijax program ``seed``-ed
  inside the objective, γ' by ``jax.jvp``) through ``vj.value_and_grad_estimate`` (the
  estimator :func:`vijax.fit` uses), ``steps.ascent_step``.

There is no NumPyro VDM, so the NumPyro column is empty.

Also: held-out bits/dim on digits after ``BPD_STEPS`` Adam steps of :func:`experiment.train`
with the fixed linear and the learned schedule (same seeds, same network), a quality row.

Run with ``python -m benchmarks.diffusion``; writes ``benchmarks/results/diffusion.{json,md}``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import harness, steps

NAME = "diffusion"
BATCH_SIZE = 128
STEPS = 50
REPEATS = 9
LEARNING_RATE = 1e-3
OPTIMIZER = optax.adam(LEARNING_RATE)
EVAL_KEYS = 64
BPD_STEPS = 300
BPD_SEEDS = (0, 1)
BPD_HIDDEN = 128
BPD_GAMMA_RANGE = (-9.0, 6.0)


# --------------------------------------------------------------------------------------------
# Data


def digits_data() -> jax.Array:
    """The 1,797 digits as ``(N, 64)`` rows on the 17 levels ``linspace(−1, 1, 17)``."""
    from vijax.models.diffusion import digit_levels

    return digit_levels()[0]


def moons_data() -> jax.Array:
    """4,000 two-moons points (``noise=0.05``, seed 0), standardized per coordinate."""
    from vijax.models.diffusion import two_moons

    return two_moons(4000, seed=0)


def batch_at(x: jax.Array, step: jax.Array, batch_size: int) -> jax.Array:
    """Rows ``[(step·B) mod (N − B), … + B)``: the same batches for both implementations."""
    start = (step * batch_size) % (x.shape[0] - batch_size)
    return jax.lax.dynamic_slice_in_dim(x, start, batch_size)


# --------------------------------------------------------------------------------------------
# Hand-written JAX (the floor)


def hand_denoiser(params: dict, z: jax.Array, t: jax.Array, frequencies: int = 8) -> jax.Array:
    """The residual MLP of ``mlp_denoiser`` written out: time features, LN-swish blocks."""
    angles = (np.pi * 2.0 ** np.arange(frequencies)) * t[:, None]
    h = jnp.concatenate([z, jnp.sin(angles), jnp.cos(angles)], axis=-1)
    h = h @ params["input"]["w"] + params["input"]["b"]
    for block in params["blocks"]:
        u = h - h.mean(-1, keepdims=True)
        u = u * jax.lax.rsqrt((u * u).mean(-1, keepdims=True) + 1e-5) * block["scale"]
        u = jax.nn.swish(u @ block["first"]["w"] + block["first"]["b"])
        h = h + u @ block["second"]["w"] + block["second"]["b"]
    return h @ params["output"]["w"] + params["output"]["b"]


def hand_learned_gamma(params: dict, t: jax.Array):
    """``(γ(0), γ(1), γ(t), γ'(t))`` of the learned schedule, the derivative in closed form.

    ``f(t) = a t + Σ_j c_j s_j``, ``s_j = sigmoid(d_j (a t + b) + e_j)``,
    ``f'(t) = a (1 + Σ_j c_j d_j s_j (1 − s_j))``, ``γ = γ_0 + Δ (f − f_0)/(f_1 − f_0)``.
    """
    a = jax.nn.softplus(params["a"])
    d, c = jax.nn.softplus(params["d"]), jax.nn.softplus(params["c"])
    g0, gap = params["gamma_min"], jax.nn.softplus(params["raw_gap"])
    ends = jnp.stack([jnp.zeros(()), jnp.ones(())])
    s_ends = jax.nn.sigmoid(d * (a * ends + params["b"])[:, None] + params["e"])
    f0, f1 = a * ends + s_ends @ c
    s = jax.nn.sigmoid(d * (a * t + params["b"])[:, None] + params["e"])
    f = a * t + s @ c
    df = a * (1.0 + (s * (1.0 - s)) @ (c * d))
    scale = gap / (f1 - f0)
    return g0, g0 + gap, g0 + scale * (f - f0), scale * df


def hand_linear_gamma(gamma_min: float, gamma_max: float):
    """``params, t -> (γ(0), γ(1), γ(t), γ'(t))`` of the fixed linear schedule."""

    def gamma(params, t):
        del params
        slope = gamma_max - gamma_min
        return gamma_min, gamma_max, gamma_min + slope * t, jnp.full_like(t, slope)

    return gamma


def hand_loss(params, key, x, *, gamma_fn, discretized: bool, levels: int = 17):
    """Mean ``−ELBO`` over the batch, in nats, written out (see the module docstring)."""
    batch, dim = x.shape
    time_key, eps_key = jax.random.split(key)
    t = jnp.mod(jax.random.uniform(time_key, ()) + jnp.arange(batch) / batch, 1.0)
    gamma0, gamma1, gamma_t, dgamma_t = gamma_fn(params["schedule"], t)
    eps, eps0 = jax.random.normal(eps_key, (2, *x.shape))  # the noise of z_t and of z_0
    alpha_t = jnp.sqrt(jax.nn.sigmoid(-gamma_t))[:, None]
    sigma_t = jnp.sqrt(jax.nn.sigmoid(gamma_t))[:, None]
    eps_hat = hand_denoiser(params["denoiser"], alpha_t * x + sigma_t * eps, t)
    diffusion = 0.5 * jnp.mean(dgamma_t * jnp.sum((eps - eps_hat) ** 2, -1))
    var1 = jax.nn.sigmoid(gamma1)
    prior = 0.5 * (
        dim * (var1 - 1.0 - jnp.log(var1)) + jax.nn.sigmoid(-gamma1) * jnp.mean(jnp.sum(x * x, -1))
    )
    if discretized:
        grid = jnp.linspace(-1.0, 1.0, levels)
        u = x + jnp.exp(0.5 * gamma0) * eps0  # z_0 / α_0
        logits = -0.5 * jnp.exp(-gamma0) * (u[..., None] - grid) ** 2
        recon = jnp.mean(jnp.sum(0.5 * eps0**2 + jax.nn.logsumexp(logits, -1), -1))
    else:
        recon = jnp.mean(jnp.sum(0.5 * eps0**2, -1)) + dim * 0.5 * (gamma0 + jnp.log(2 * jnp.pi))
    return prior + recon + diffusion


# --------------------------------------------------------------------------------------------
# Cases


def _batched(step, batch_size: int):
    def run(carry, x):
        return step(carry, batch_at(x, carry[3], batch_size))

    return run


def measure(case: str, x, hidden: int, schedule: str, errors: list[str]) -> harness.Row:
    """Seconds per training step of vijax and the hand-written loss on ``x``."""
    import vijax as vj
    from vijax.models import diffusion

    discretized = x.shape[-1] == 64
    gamma_min, gamma_max = (-6.0, 6.0) if discretized else (-10.0, 6.0)
    decoder = diffusion.discretized_decoder(17) if discretized else diffusion.gaussian_decoder()
    noise = (
        diffusion.learned_schedule(gamma_min, gamma_max)
        if schedule == "learned"
        else diffusion.linear_schedule(gamma_min, gamma_max)
    )
    denoiser = diffusion.mlp_denoiser(x.shape[-1], hidden=hidden, depth=2)
    init_key, sched_key, key = jax.random.split(jax.random.key(0), 3)
    params = {"denoiser": denoiser.init(init_key), "schedule": noise.init(sched_key)}
    gamma_fn = (
        hand_learned_gamma if schedule == "learned" else hand_linear_gamma(gamma_min, gamma_max)
    )
    loss = functools.partial(hand_loss, gamma_fn=gamma_fn, discretized=discretized)
    objective = diffusion.continuous_time_elbo(denoiser, noise, decoder)
    hand_step = _batched(steps.descent_step(loss, OPTIMIZER), BATCH_SIZE)
    vijax_step = _batched(
        steps.ascent_step(vj.value_and_grad_estimate(objective), OPTIMIZER), BATCH_SIZE
    )
    carry = steps.initial_carry(OPTIMIZER, params, key)
    runs: dict[str, Any] = {
        "hand": functools.partial(harness.scan_steps(hand_step, STEPS), carry, x),
        "vijax": functools.partial(harness.scan_steps(vijax_step, STEPS), carry, x),
        "numpyro": None,
    }
    times, outputs = harness.time_scans(runs, REPEATS)
    # the same objective at the start, by each implementation, averaged over keys: a check
    # that the hand-written loss is the same VDM loss (they agree within Monte Carlo error)
    keys = jax.random.split(jax.random.key(7), EVAL_KEYS)
    batch = x[:BATCH_SIZE]
    vijax_values = jax.jit(jax.vmap(objective, (None, 0, None)))(params, keys, batch)
    hand_values = -jax.jit(jax.vmap(loss, (None, 0, None)))(params, keys, batch)
    check = {
        "start_elbo_vijax": float(vijax_values.mean()),
        "start_elbo_hand": float(hand_values.mean()),
        "start_elbo_se": float(np.sqrt((np.var(vijax_values) + np.var(hand_values)) / EVAL_KEYS)),
        "elbo_tail_vijax": float(np.mean(np.asarray(outputs["vijax"][1])[-20:])),
        "elbo_tail_hand": float(np.mean(np.asarray(outputs["hand"][1])[-20:])),
    }
    return harness.make_row(
        f"{case}, {schedule} γ, MLP {hidden}×2, batch {BATCH_SIZE} ({STEPS}-step jitted scan)",
        times,
        per=STEPS,
        metric="time per step",
        unit="s/step",
        notes=f"N={x.shape[0]}, D={x.shape[-1]}; Adam {LEARNING_RATE:g}; start_elbo_*: "
        f"the ELBO (nats/example) at the shared start, {EVAL_KEYS} keys, both implementations; "
        "elbo_tail_*: mean of the last 20 steps' estimates",
        **check,
    )


def measure_bits_per_dim() -> harness.Row:
    """Held-out bits/dim on digits after ``BPD_STEPS`` steps, linear vs learned schedule."""
    from vijax.models.diffusion.experiment import train

    extra: dict[str, Any] = {}
    seconds: dict[str, list[float]] = {"linear": [], "learned": []}
    for seed in BPD_SEEDS:
        for schedule in ("linear", "learned"):
            run = train(
                "digits",
                num_steps=BPD_STEPS,
                hidden=BPD_HIDDEN,
                depth=2,
                learning_rate=3e-3,
                schedule=schedule,
                gamma_range=BPD_GAMMA_RANGE,
                base="independent",
                seed=seed,
                variance_repeats=0,
            )
            extra[f"bits_per_dim_{schedule}_seed{seed}"] = run.metrics["test_bits_per_dim"]
            if schedule == "learned":
                extra[f"gamma_0_1_learned_seed{seed}"] = (
                    f"{run.metrics['gamma_0']:.2f}, {run.metrics['gamma_1']:.2f}"
                )
            seconds[schedule].append(run.metrics["fit_seconds"])
    for schedule in ("linear", "learned"):
        values = [extra[f"bits_per_dim_{schedule}_seed{s}"] for s in BPD_SEEDS]
        extra[f"bits_per_dim_{schedule}_mean"] = float(np.mean(values))
    extra["independent_pixel_bits_per_dim"] = run.metrics["independent_pixel_bits_per_dim"]
    extra["uniform_bits_per_dim"] = run.metrics["uniform_bits_per_dim"]
    extra["fit_seconds_linear"] = float(np.median(seconds["linear"]))
    extra["fit_seconds_learned"] = float(np.median(seconds["learned"]))
    return harness.Row(
        case=f"digits bits/dim after {BPD_STEPS} steps: fixed linear vs learned γ",
        vijax_s=None,
        hand_s=None,
        numpyro_s=None,
        ratio_hand=None,
        ratio_numpyro=None,
        repeats=len(BPD_SEEDS),
        metric="test bits/dim",
        unit="bits/dim",
        notes=f"experiment.train: exact independent-pixel denoiser + MLP {BPD_HIDDEN}×2 "
        "correction (base='independent', so both start at the independent-pixel "
        "log-likelihood), batch 128, AdamW 3e-3 cosine, γ(0), γ(1) = "
        f"{BPD_GAMMA_RANGE} at the start (learned: both endpoints and the shape trained), "
        "1497 train / 300 test images, −ELBO on the test images averaged over 8 draws of "
        f"(t, ε); seeds {list(BPD_SEEDS)} (data split, init, keys)",
        extra=extra,
    )


def run() -> list[harness.Row]:
    """Run the diffusion measurements and return their rows."""
    harness.warm_up_jax()
    errors: list[str] = []
    _, reason = harness.import_vijax()
    if reason:
        raise SystemExit(reason)
    digits, moons = digits_data(), moons_data()
    rows = [
        measure("digits 8×8", digits, 256, "learned", errors),
        measure("digits 8×8", digits, 256, "linear", errors),
        measure("two moons 2-D", moons, 256, "learned", errors),
        measure("two moons 2-D", moons, 64, "learned", errors),
        measure_bits_per_dim(),
    ]
    if errors:
        rows[0].notes = "; ".join([rows[0].notes, *errors])
    return rows


def main() -> None:
    """Run the benchmark, write ``results/diffusion.{json,md}`` and print the table."""
    print(harness.write_results(NAME, run()))


if __name__ == "__main__":
    main()
