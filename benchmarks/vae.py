"""VAE training step at batch 128, 512 and 1024: vijax vs hand-written JAX vs NumPyro.

Data: scikit-learn's 1,797 digits (8 × 8, no download), binarized once with a fixed key.
Model: ``z ~ N(0, I_8)``, ``x | z ~ Bernoulli(logits = decoder(z))`` per image inside a data
plate of size ``N = 1797`` subsampled to the batch (every log-density scaled by ``N / B``).
Networks: encoder ``64 → 256 → 16`` (loc and log-scale of ``q(z | x)``), decoder
``8 → 256 → 64``, ReLU. Objective: the ELBO with one reparameterized particle and the Gaussian
KL in closed form (NumPyro: ``TraceMeanField_ELBO``, which uses the closed form too). Optimiser:
``optax.adam(1e-3)``.

- **hand-written**: the ELBO written out in ``jnp`` (``x·ℓ − softplus(ℓ)``, the Gaussian KL),
  plain matrices for the networks: the floor.
- **vijax**: ``vae.mlp_vae`` (flax ``nnx`` networks as pure functions), ``vj.elbo(vae.model,
  vae.family)``, ``vj.value_and_grad_estimate``.
- **NumPyro**: the same model with ``flax_module`` (linen ``Dense`` layers), ``SVI.update``.

Every implementation's step runs in the same driver: a jitted ``lax.scan`` of ``STEPS`` steps;
step ``t`` takes the batch of rows ``[(t·B) mod (N − B), … + B)`` (the same rows for all three).
Medians of repeats timed round-robin.

Run with ``python -m benchmarks.vae``; writes ``benchmarks/results/vae.{json,md}``.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.contrib.module import flax_module
from numpyro.infer import SVI, TraceMeanField_ELBO
from sklearn.datasets import load_digits

from benchmarks import harness, steps

NAME = "vae"
BATCH_SIZES = (128, 512, 1024)
LATENT = 8
HIDDEN = 256
STEPS = 200
REPEATS = 7
LEARNING_RATE = 1e-3
OPTIMIZER = optax.adam(LEARNING_RATE)


def load_data() -> jax.Array:
    """The 1,797 digits as ``(N, 8, 8)`` binary float32 images (a fixed binarization)."""
    images = np.asarray(load_digits().images, np.float32) / 16.0
    return jax.random.bernoulli(jax.random.key(0), images).astype(jnp.float32)


def batch_at(x: jax.Array, step: jax.Array, batch_size: int) -> jax.Array:
    """Rows ``[(step·B) mod (N − B), … + B)``: the same batches for every implementation."""
    start = (step * batch_size) % (x.shape[0] - batch_size)
    return jax.lax.dynamic_slice_in_dim(x, start, batch_size)


# --------------------------------------------------------------------------------------------
# Hand-written JAX (the floor)


def _dense(key, fan_in, fan_out):
    scale = 1.0 / np.sqrt(fan_in)
    return {
        "w": jax.random.uniform(key, (fan_in, fan_out), minval=-scale, maxval=scale),
        "b": jnp.zeros(fan_out),
    }


def hand_init(key: jax.Array) -> dict:
    """Encoder and decoder weights, two dense layers each."""
    keys = jax.random.split(key, 4)
    return {
        "enc1": _dense(keys[0], 64, HIDDEN),
        "enc2": _dense(keys[1], HIDDEN, 2 * LATENT),
        "dec1": _dense(keys[2], LATENT, HIDDEN),
        "dec2": _dense(keys[3], HIDDEN, 64),
    }


def _mlp(params, first, second, h):
    h = jax.nn.relu(h @ params[first]["w"] + params[first]["b"])
    return h @ params[second]["w"] + params[second]["b"]


def hand_elbo(params: dict, key: jax.Array, x: jax.Array, num_data: int) -> jax.Array:
    """``(N / B) Σ_i [log p(x_i | z_i) − KL(q(z_i | x_i) ‖ N(0, I))]``, ``z_i ~ q``."""
    flat = x.reshape(x.shape[0], -1)
    out = _mlp(params, "enc1", "enc2", flat)
    loc, log_scale = out[:, :LATENT], out[:, LATENT:]
    z = loc + jnp.exp(log_scale) * jax.random.normal(key, loc.shape)
    logits = _mlp(params, "dec1", "dec2", z)
    log_lik = jnp.sum(flat * logits - steps.softplus(logits))
    kl = jnp.sum(0.5 * (loc**2 + jnp.exp(2 * log_scale) - 1.0) - log_scale)
    return num_data / x.shape[0] * (log_lik - kl)


# --------------------------------------------------------------------------------------------
# NumPyro (flax_module)


class _LinenMLP(linen.Module):
    hidden: int
    out: int

    @linen.compact
    def __call__(self, h):
        return linen.Dense(self.out)(jax.nn.relu(linen.Dense(self.hidden)(h)))


def numpyro_model(x: jax.Array, num_data: int) -> None:
    decoder = flax_module("decoder", _LinenMLP(HIDDEN, 64), input_shape=(1, LATENT))
    with numpyro.plate("data", num_data, subsample_size=x.shape[0]):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([LATENT]).to_event(1))
        numpyro.sample(
            "x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x.reshape(x.shape[0], -1)
        )


def numpyro_guide(x: jax.Array, num_data: int) -> None:
    encoder = flax_module("encoder", _LinenMLP(HIDDEN, 2 * LATENT), input_shape=(1, 64))
    with numpyro.plate("data", num_data, subsample_size=x.shape[0]):
        out = encoder(x.reshape(x.shape[0], -1))
        loc, log_scale = out[:, :LATENT], out[:, LATENT:]
        numpyro.sample("z", dist.Normal(loc, jnp.exp(log_scale)).to_event(1))


# --------------------------------------------------------------------------------------------
# Steps in one driver


def _batched(step, batch_size: int):
    """``step(carry, x)`` on the batch of the carry's step index (hand-written / vijax carry)."""

    def run(carry, x):
        return step(carry, batch_at(x, carry[3], batch_size))

    return run


def _numpyro_batched(svi: SVI, batch_size: int, num_data: int):
    def run(carry, x):
        state, index = carry
        state, loss = svi.update(state, batch_at(x, index, batch_size), num_data)
        return (state, index + 1), -loss

    return run


def vijax_parts(vj: Any, num_data: int):
    """``(initial params, value_and_grad)`` of the vijax VAE."""
    from vijax.models import vae

    model = vae.mlp_vae((8, 8), vae.gaussian(LATENT), hidden=(HIDDEN,), num_data=num_data)
    objective = vj.elbo(model.model, model.family)
    return model.init(jax.random.key(0)), vj.value_and_grad_estimate(objective)


def measure(x: jax.Array, batch_size: int, vijax: tuple | None, errors: list[str]) -> harness.Row:
    """Seconds per training step of each implementation at ``batch_size``."""
    num_data = x.shape[0]
    key = jax.random.key(1)
    loss = functools.partial(lambda p, k, b: -hand_elbo(p, k, b, num_data))
    hand_step = _batched(steps.descent_step(loss, OPTIMIZER), batch_size)
    hand_carry = steps.initial_carry(OPTIMIZER, hand_init(jax.random.key(0)), key)
    svi = SVI(numpyro_model, numpyro_guide, OPTIMIZER, TraceMeanField_ELBO())
    svi_state = svi.init(key, x[:batch_size], num_data)
    runs: dict[str, Any] = {
        "hand": functools.partial(harness.scan_steps(hand_step, STEPS), hand_carry, x),
        "numpyro": functools.partial(
            harness.scan_steps(_numpyro_batched(svi, batch_size, num_data), STEPS),
            (svi_state, jnp.zeros((), jnp.int32)),
            x,
        ),
        "vijax": None,
    }
    if vijax is not None:
        params, value_and_grad = vijax
        vijax_step = _batched(steps.ascent_step(value_and_grad, OPTIMIZER), batch_size)
        carry = steps.initial_carry(OPTIMIZER, params, key)
        run = functools.partial(harness.scan_steps(vijax_step, STEPS), carry, x)
        if harness.attempt(f"vijax scan B={batch_size}", run, errors) is not None:
            runs["vijax"] = run
    times, outputs = harness.time_scans(runs, REPEATS)
    tails = {
        f"elbo_per_image_{name}": float(np.mean(np.asarray(out[1])[-50:])) / num_data
        for name, out in outputs.items()
        if out is not None
    }
    return harness.make_row(
        f"VAE ELBO step, batch {batch_size} ({STEPS}-step jitted scan)",
        times,
        per=STEPS,
        metric="time per step",
        unit="s/step",
        notes=f"digits 8x8 binarized, N={num_data}; MLP 64-{HIDDEN}-{2 * LATENT} / "
        f"{LATENT}-{HIDDEN}-64 ReLU; one particle, closed-form KL; elbo_per_image_*: mean "
        "of the last 50 steps' estimates from each implementation's own init (a sanity check)",
        **tails,
    )


def run() -> list[harness.Row]:
    """Run the VAE measurements and return their rows."""
    harness.warm_up_jax()
    x = load_data()
    errors: list[str] = []
    vj, reason = harness.import_vijax()
    if reason:
        errors.append(reason)
    vijax = (
        harness.attempt("vijax setup", lambda: vijax_parts(vj, x.shape[0]), errors) if vj else None
    )
    rows = [measure(x, batch_size, vijax, errors) for batch_size in BATCH_SIZES]
    if errors:
        rows[0].notes = "; ".join([rows[0].notes, *errors])
    return rows


def main() -> None:
    """Run the benchmark, write ``results/vae.{json,md}`` and print the table."""
    print(harness.write_results(NAME, run()))


if __name__ == "__main__":
    main()
