r"""The variational diffusion model (Kingma, Salimans, Poole & Ho 2021, "Variational Diffusion
Models") written as a hierarchical VAE whose family is the fixed forward process.

Family (a vijax program, reparameterized): ``q(z_t | x) = N(α_t x, σ_t² I)``. Model: the prior
``p(z_1) = N(0, I)``, the reverse transitions built from a noise-prediction network ``ε̂(z_t, t)``,
and a decoder ``p(x | z_0)``. The negative ELBO per example is (VDM eq. 11, 17)

    −ELBO(x) = KL(q(z_1 | x) ‖ N(0, I))                       (prior loss)
             + E_{q(z_0|x)}[−log p(x | z_0)]                   (reconstruction loss)
             + ½ E_{t~U(0,1), ε~N(0,I)}[γ'(t) ‖ε − ε̂(z_t, t)‖²]   (diffusion loss, T → ∞)

and for ``T`` steps the diffusion loss is ``T/2 E_{i, ε}[(e^{γ(t_i) − γ(s_i)} − 1) ‖ε − ε̂‖²]``
with ``s_i = (i − 1)/T``, ``t_i = i/T``, ``i ~ U{1..T}`` (eq. 13).

Objectives here follow vijax's convention ``objective(params, key, x) -> value to maximize`` (the
mean ELBO per example, in nats), with ``params = {"denoiser": ..., "schedule": ...}``, so they
train with :func:`vijax.fit` and its minibatches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from vijax.core import sample, seed
from vijax.models.diffusion.networks import Denoiser
from vijax.models.diffusion.schedules import Schedule, alpha_sigma, gamma_and_derivative

__all__ = [
    "Decoder",
    "Losses",
    "ancestral_sample",
    "bits_per_dim",
    "check_data",
    "continuous_time_elbo",
    "diffusion_loss_variance",
    "discrete_time_elbo",
    "discretized_decoder",
    "forward_process",
    "gaussian_decoder",
    "losses",
    "stratified_times",
    "uniform_times",
]


# ----------------------------------------------------------------------------------------------
# Time samplers
# ----------------------------------------------------------------------------------------------


def uniform_times(key: jax.Array, batch_size: int) -> jax.Array:
    """Independent ``t_i ~ U(0, 1)``.

    Example:
        >>> uniform_times(jax.random.key(0), 4).shape
        (4,)
    """
    return jax.random.uniform(key, (batch_size,))


def stratified_times(key: jax.Array, batch_size: int) -> jax.Array:
    r"""Low-discrepancy times ``t_i = (u + i/B) mod 1``, ``u ~ U(0, 1)`` (VDM sec. 3.4 / App. I).

    Each ``t_i`` is marginally uniform, so the diffusion loss stays unbiased; the batch covers
    ``[0, 1]`` evenly, which lowers the variance of the batch mean.

    Example:
        >>> t = stratified_times(jax.random.key(0), 4)
        >>> sorted(round(float(x), 4) for x in jnp.diff(jnp.sort(t)))
        [0.25, 0.25, 0.25]
    """
    u = jax.random.uniform(key, ())
    return jnp.mod(u + jnp.arange(batch_size) / batch_size, 1.0)


# ----------------------------------------------------------------------------------------------
# Decoders p(x | z_0)
# ----------------------------------------------------------------------------------------------


_LOG_2PI = float(np.log(2.0 * np.pi))


class Decoder(NamedTuple):
    """``log_prob(x, z_0, γ_0)`` per example (summed over dimensions), ``sample(key, z_0, γ_0)``,
    ``check(x)`` (host-side range check), ``levels`` (``None`` for real-valued data)."""

    log_prob: Callable
    sample: Callable
    check: Callable
    levels: int | None


def gaussian_decoder() -> Decoder:
    r"""Continuous decoder ``p(x | z_0) = N(x; z_0/α_0, e^{γ_0} I)`` for real-valued data.

    ``e^{γ_0} = σ_0²/α_0²`` is the variance of ``x`` given ``z_0`` under ``q``, up to the prior.

    Example:
        >>> dec = gaussian_decoder()
        >>> round(float(dec.log_prob(jnp.zeros((1, 1)), jnp.zeros((1, 1)), 0.0)[0]), 4)
        -0.9189
    """

    def log_prob(x, z0, gamma0):
        alpha0, _ = alpha_sigma(gamma0)
        # log N(x; z_0/α_0, e^{γ_0}), written out: one fused elementwise pass
        residual = x - z0 / alpha0
        return -0.5 * jnp.sum(residual**2 * jnp.exp(-gamma0) + gamma0 + _LOG_2PI, axis=-1)

    def sample_x(key, z0, gamma0):
        alpha0, _ = alpha_sigma(gamma0)
        return z0 / alpha0 + jnp.exp(0.5 * gamma0) * jax.random.normal(key, z0.shape)

    def check(x):
        if not np.all(np.isfinite(np.asarray(x))):
            raise ValueError("x must be finite")

    return Decoder(log_prob, sample_x, check, None)


def discretized_decoder(levels: int = 17) -> Decoder:
    r"""Discretized decoder for data on ``levels`` evenly spaced values ``x_k`` of ``[−1, 1]``.

    ``p(x = x_k | z_0) ∝ exp(−(z_0/α_0 − x_k)² / (2 e^{γ_0}))`` independently per dimension
    (VDM App. B): a softmax over the levels, so ``−log p`` is in nats over a discrete alphabet and
    ``log2 levels`` bits/dim is the uniform baseline.

    Example:
        >>> dec = discretized_decoder(3)
        >>> p = jnp.exp(dec.log_prob(jnp.asarray([[-1.0]]), jnp.asarray([[-0.99]]), -9.0))
        >>> bool(p[0] > 0.999)
        True
    """
    if int(levels) < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels}")
    grid = jnp.linspace(-1.0, 1.0, levels)

    def logits(z0, gamma0):
        alpha0, _ = alpha_sigma(gamma0)
        return -0.5 * (z0[..., None] / alpha0 - grid) ** 2 / jnp.exp(gamma0)

    def log_prob(x, z0, gamma0):
        index = jnp.clip(jnp.round((x + 1.0) * (levels - 1) / 2.0), 0, levels - 1).astype(int)
        alpha0, _ = alpha_sigma(gamma0)
        # log softmax at the observed level: its logit is computed from the level itself, not
        # gathered from the (B, D, levels) logits (no gather, and no scatter in the gradient)
        observed = -0.5 * (z0 / alpha0 - grid[index]) ** 2 / jnp.exp(gamma0)
        return jnp.sum(observed - jax.nn.logsumexp(logits(z0, gamma0), axis=-1), axis=-1)

    def sample_x(key, z0, gamma0):
        return grid[jax.random.categorical(key, logits(z0, gamma0), axis=-1)]

    def check(x):
        x = np.asarray(x)
        if not np.all(np.isfinite(x)) or x.min() < -1.0 or x.max() > 1.0:
            raise ValueError(
                f"x must lie in the declared range [-1, 1] of the discretized decoder, got values "
                f"in [{x.min():g}, {x.max():g}]"
            )
        steps = (x + 1.0) * (levels - 1) / 2.0
        if np.max(np.abs(steps - np.round(steps))) > 1e-3:
            raise ValueError(f"x must take one of the {levels} levels linspace(-1, 1, {levels})")

    return Decoder(log_prob, sample_x, check, int(levels))


def check_data(decoder: Decoder, x) -> None:
    """Raise ``ValueError`` naming ``x`` if it is outside the decoder's declared range.

    Example:
        >>> check_data(discretized_decoder(17), jnp.asarray([[2.0]]))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: x must lie in the declared range [-1, 1] of the discretized decoder, ...
    """
    if jnp.ndim(x) != 2:
        raise ValueError(f"x must have shape (batch, dimension), got shape {jnp.shape(x)}")
    decoder.check(x)


# ----------------------------------------------------------------------------------------------
# The family: the forward process
# ----------------------------------------------------------------------------------------------


def forward_process(x: jax.Array, gamma_t: jax.Array) -> jax.Array:
    r"""The family, as a vijax program: ``z_t ~ q(z_t | x) = N(α_t x, σ_t² I)`` (site ``"z"``).

    ``x``: ``(B, D)``, ``gamma_t``: ``(B,)``. The site is reparameterized (``z = α x + σ ε``).

    Example:
        >>> import vijax as vj
        >>> z = vj.seed(forward_process, jax.random.key(0))(jnp.ones((3, 2)), jnp.zeros(3))
        >>> z.shape
        (3, 2)
    """
    alpha, sigma = alpha_sigma(gamma_t[:, None])
    return sample("z", dist.Normal(alpha * x, jnp.broadcast_to(sigma, x.shape)).to_event(2))


def _noise(key, x, gamma_t):
    """``(z_t, ε)`` drawn by the family program: ``ε = (z_t − α_t x) / σ_t``.

    ``ε`` is the reparameterization's noise: its pathwise derivative with respect to every
    parameter is zero, so it is read under ``stop_gradient`` (the backward pass then skips a
    chain of terms that would cancel).
    """
    z = seed(forward_process, key)(x, gamma_t)
    alpha, sigma = alpha_sigma(gamma_t[:, None])
    return z, jax.lax.stop_gradient((z - alpha * x) * (1.0 / sigma))


# ----------------------------------------------------------------------------------------------
# The ELBO
# ----------------------------------------------------------------------------------------------


class Losses(NamedTuple):
    """Per-example losses in nats, each of shape ``(B,)``; ``−ELBO`` is their sum (``total``)."""

    prior: jax.Array
    reconstruction: jax.Array
    diffusion: jax.Array

    @property
    def total(self) -> jax.Array:
        return self.prior + self.reconstruction + self.diffusion


def _prior_loss(x, gamma1):
    # KL(N(α_1 x, σ_1²) ‖ N(0, 1)) = ½ (σ_1² + α_1² x² − 1 − log σ_1²), summed over dimensions
    alpha1, sigma1 = alpha_sigma(gamma1)
    var = sigma1**2
    return 0.5 * jnp.sum(var + (alpha1 * x) ** 2 - 1.0 - jnp.log(var), axis=-1)


def losses(
    denoiser: Denoiser,
    schedule: Schedule,
    decoder: Decoder,
    params,
    key: jax.Array,
    x: jax.Array,
    *,
    num_steps: int | None = None,
    time_sampler: Callable = stratified_times,
) -> Losses:
    r"""One-sample estimates of the three VDM losses for each row of ``x`` (see module docstring).

    ``num_steps=None``: continuous time; an integer ``T``: the ``T``-step discrete-time loss, its
    step ``i = ⌈T t⌉`` drawn from the same ``t`` (so ``time_sampler`` stratifies it too).

    Example:
        >>> from vijax.models.diffusion import gaussian_denoiser, linear_schedule
        >>> L = losses(gaussian_denoiser(0.0, 1.0), linear_schedule(-10.0, 10.0),
        ...            gaussian_decoder(), {"denoiser": {}, "schedule": {}},
        ...            jax.random.key(0), jnp.zeros((8, 2)))
        >>> L.diffusion.shape
        (8,)
    """
    batch = x.shape[0]
    time_key, z_key = jax.random.split(key)
    sparams, dparams = params["schedule"], params["denoiser"]
    t = time_sampler(time_key, batch)
    ends = jnp.asarray([0.0, 1.0], t.dtype)
    # γ at the endpoints and at every t in one call of the schedule (one jvp for γ'), so a
    # learned schedule's network runs once per step, not once per use
    if num_steps is None:
        gammas, dgammas = gamma_and_derivative(schedule, sparams, jnp.concatenate([ends, t]))
        gamma0, gamma1, gamma_t = gammas[0], gammas[1], gammas[2:]
        weight = 0.5 * dgammas[2:]
    else:
        t = jnp.ceil(t * num_steps) / num_steps  # t_i = i / T, i ∈ {1..T}
        t = jnp.where(t <= 0.0, 1.0 / num_steps, t)
        gammas = schedule.gamma(sparams, jnp.concatenate([ends, t, t - 1.0 / num_steps]))
        gamma0, gamma1 = gammas[0], gammas[1]
        gamma_t, gamma_s = gammas[2 : 2 + batch], gammas[2 + batch :]
        weight = 0.5 * num_steps * jnp.expm1(gamma_t - gamma_s)
    # z_t and z_0 in one draw of the family (one program run, one noise tensor): q(z_t | x)
    # and q(z_0 | x) for each row, stacked along the batch
    gamma_both = jnp.concatenate([gamma_t, jnp.broadcast_to(gamma0, (batch,))])
    z_both, eps_both = _noise(z_key, jnp.concatenate([x, x]), gamma_both)
    z_t, eps, z0 = z_both[:batch], eps_both[:batch], z_both[batch:]
    eps_hat = denoiser.apply(dparams, z_t, gamma_t, t)
    diffusion = weight * jnp.sum((eps - eps_hat) ** 2, axis=-1)
    reconstruction = -decoder.log_prob(x, z0, gamma0)
    return Losses(_prior_loss(x, gamma1), reconstruction, diffusion)


def continuous_time_elbo(
    denoiser: Denoiser,
    schedule: Schedule,
    decoder: Decoder,
    *,
    time_sampler: Callable = stratified_times,
) -> Callable:
    r"""The VDM continuous-time ELBO as a vijax objective ``(params, key, x) -> mean ELBO``.

    ``ELBO(x) = −KL(q(z_1|x) ‖ N(0,I)) + E_q[log p(x|z_0)] − ½ E_{t,ε}[γ'(t) ‖ε − ε̂(z_t,t)‖²]``
    (Kingma et al. 2021, eq. 17), averaged over the rows of ``x`` (nats per example). Maximize it
    with :func:`vijax.fit`; ``time_sampler`` is :func:`stratified_times` (default) or
    :func:`uniform_times`.

    Example:
        >>> from vijax.models.diffusion import gaussian_denoiser, linear_schedule
        >>> obj = continuous_time_elbo(gaussian_denoiser(0.0, 1.0), linear_schedule(-10.0, 10.0),
        ...                            gaussian_decoder())
        >>> x = jax.random.normal(jax.random.key(1), (4096, 1))
        >>> value = obj({"denoiser": {}, "schedule": {}}, jax.random.key(2), x)
        >>> bool(abs(value + 1.4189) < 0.5)   # log N(x; 0, 1) averages −1.4189
        True
    """

    def objective(params, key, x):
        return -losses(
            denoiser, schedule, decoder, params, key, x, time_sampler=time_sampler
        ).total.mean()

    return objective


def discrete_time_elbo(
    denoiser: Denoiser,
    schedule: Schedule,
    decoder: Decoder,
    num_steps: int,
    *,
    time_sampler: Callable = stratified_times,
) -> Callable:
    r"""The ``T``-step VDM ELBO as an objective ``(params, key, x) -> mean ELBO`` (eq. 13).

    The diffusion loss is ``Σ_i KL(q(z_{s_i}|z_{t_i}, x) ‖ p(z_{s_i}|z_{t_i}))``
    ``= T/2 E_i[(e^{γ(t_i) − γ(s_i)} − 1) ‖ε − ε̂(z_{t_i}, t_i)‖²]``; it tends to the continuous
    loss as ``T → ∞``.

    Raises:
      ValueError: ``num_steps < 1``.

    Example:
        >>> from vijax.models.diffusion import gaussian_denoiser, linear_schedule
        >>> obj = discrete_time_elbo(gaussian_denoiser(0.0, 1.0), linear_schedule(-10.0, 10.0),
        ...                          gaussian_decoder(), 1000)
        >>> x = jax.random.normal(jax.random.key(1), (4096, 1))
        >>> bool(abs(obj({"denoiser": {}, "schedule": {}}, jax.random.key(2), x) + 1.42) < 0.5)
        True
    """
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}")

    def objective(params, key, x):
        return -losses(
            denoiser,
            schedule,
            decoder,
            params,
            key,
            x,
            num_steps=int(num_steps),
            time_sampler=time_sampler,
        ).total.mean()

    return objective


def bits_per_dim(negative_elbo_nats: jax.Array, dim: int) -> jax.Array:
    """``−ELBO / (D log 2)``: nats per example to bits per dimension.

    Example:
        >>> round(float(bits_per_dim(jnp.log(17.0) * 64, 64)), 4)
        4.0875
    """
    return negative_elbo_nats / (dim * jnp.log(2.0))


def diffusion_loss_variance(
    denoiser: Denoiser,
    schedule: Schedule,
    decoder: Decoder,
    params,
    key: jax.Array,
    x: jax.Array,
    *,
    num_repeats: int = 256,
    time_sampler: Callable = stratified_times,
) -> tuple[jax.Array, jax.Array]:
    """Mean and variance over ``num_repeats`` keys of the batch-mean diffusion loss on ``x``.

    The variance the optimizer sees; compare ``time_sampler=stratified_times`` with
    ``uniform_times``.

    Example:
        >>> from vijax.models.diffusion import gaussian_denoiser, linear_schedule
        >>> args = (gaussian_denoiser(0.0, 1.0), linear_schedule(-10.0, 10.0), gaussian_decoder(),
        ...         {"denoiser": {}, "schedule": {}}, jax.random.key(0), jnp.full((64, 1), 3.0))
        >>> _, v_strat = diffusion_loss_variance(*args, num_repeats=512)
        >>> _, v_iid = diffusion_loss_variance(*args, num_repeats=512, time_sampler=uniform_times)
        >>> bool(v_strat < v_iid)
        True
    """

    def one(k):
        return losses(
            denoiser, schedule, decoder, params, k, x, time_sampler=time_sampler
        ).diffusion.mean()

    values = jax.lax.map(one, jax.random.split(key, num_repeats))
    return values.mean(), values.var(ddof=1)


# ----------------------------------------------------------------------------------------------
# Ancestral sampling
# ----------------------------------------------------------------------------------------------


def ancestral_sample(
    denoiser: Denoiser,
    schedule: Schedule,
    decoder: Decoder,
    params,
    key: jax.Array,
    num_samples: int,
    dim: int,
    num_steps: int = 200,
) -> jax.Array:
    r"""Draw ``x ~ p(x)`` by ancestral sampling of the ``T``-step reverse model (VDM App. A.4).

    ``z_1 ~ N(0, I)``; for ``t = i/T → s = (i−1)/T``, with ``c = −expm1(γ_s − γ_t)``,

        z_s = (α_s/α_t) (z_t − c σ_t ε̂(z_t, t)) + sqrt(c) σ_s ε,

    which is ``q(z_s | z_t, x = x̂(z_t))``; finally ``x ~ p(x | z_0)``.

    Example:
        >>> from vijax.models.diffusion import gaussian_denoiser, linear_schedule
        >>> x = ancestral_sample(gaussian_denoiser(3.0, 0.5), linear_schedule(-10.0, 10.0),
        ...                      gaussian_decoder(), {"denoiser": {}, "schedule": {}},
        ...                      jax.random.key(0), 2000, 1, num_steps=100)
        >>> bool(abs(x.mean() - 3.0) < 0.05 and abs(x.std() - 0.5) < 0.05)
        True
    """
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
    sparams, dparams = params["schedule"], params["denoiser"]
    start_key, loop_key, decode_key = jax.random.split(key, 3)
    z = jax.random.normal(start_key, (num_samples, dim))

    def step(z, inputs):
        i, k = inputs
        t, s = i / num_steps, (i - 1) / num_steps
        gamma_t, gamma_s = schedule.gamma(sparams, t), schedule.gamma(sparams, s)
        alpha_t, sigma_t = alpha_sigma(gamma_t)
        alpha_s, sigma_s = alpha_sigma(gamma_s)
        c = -jnp.expm1(gamma_s - gamma_t)
        batch_t = jnp.full((num_samples,), t)
        eps_hat = denoiser.apply(dparams, z, jnp.full((num_samples,), gamma_t), batch_t)
        mean = alpha_s / alpha_t * (z - c * sigma_t * eps_hat)
        return mean + jnp.sqrt(c) * sigma_s * jax.random.normal(k, z.shape), None

    indices = jnp.arange(num_steps, 0, -1).astype(jnp.result_type(float))
    z, _ = jax.lax.scan(step, z, (indices, jax.random.split(loop_key, num_steps)))
    gamma0 = schedule.gamma(sparams, jnp.zeros(()))
    return decoder.sample(decode_key, z, gamma0)
