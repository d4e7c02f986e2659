r"""Evaluating a trained VAE: test log-likelihood, bounds, KL per latent dimension, active units,
reconstructions and samples.

**Log-likelihood by importance sampling** (Burda et al. 2016, §5; Rezende et al. 2014): with
``K`` draws from the encoder's ``q(z | x_i)``,

    log p(x_i) ≈ log (1/K) Σ_k p(x_i, z_k) / q(z_k | x_i),   z_k ~ q(z | x_i),

whose expectation is the IWAE bound ``L_K ≤ log p(x_i)``, increasing to it as ``K → ∞``; the
convention is ``K = 5000``. :func:`evaluate_bounds` runs the ``K`` particles in chunks of
``particle_batch`` (a ``lax.scan`` that carries a running ``logsumexp``, so memory is one
chunk's), over the data in batches of ``batch_size`` (one compiled program; the last batch is
padded). From the same particles it estimates the bounds ``L_k`` for smaller ``k`` (means over
the ``K/k`` disjoint groups, unbiased) and the ELBO (``k = 1``).

**KL per latent dimension and active units** (Burda et al. 2016, §5.2): the average over data
of ``KL(q(z_l | x) ‖ p(z_l))``, and the number of dimensions whose posterior mean varies with
the input, ``A_l = Cov_x(E_{q(z_l | x)}[z_l]) > 10⁻²``.

Evaluation always reports the model itself: ``β = 1`` and, for a relaxed latent, the discrete
latent it relaxes (:meth:`VAE.for_evaluation`).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from vijax.models import vae
    >>> model = vae.mlp_vae((8, 8), vae.gaussian(2), hidden=(16,))
    >>> params = model.init(jax.random.key(0))
    >>> x = jnp.full((6, 8, 8), 0.5)
    >>> out = vae.evaluate_bounds(model, params, jax.random.key(1), x, num_particles=40,
    ...                           particle_batch=20, batch_size=6, bounds=(1,))
    >>> out["log_likelihood"].shape, bool((out["log_likelihood"] >= out["elbo"]).all())
    ((6,), True)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vijax.core import seed
from vijax.objectives import per_datum_log_weights

__all__ = [
    "active_units",
    "encoder_outputs",
    "evaluate_bounds",
    "generate",
    "kl_per_dimension",
    "reconstruct",
]

ACTIVE_THRESHOLD = 1e-2


def _check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


@functools.partial(
    jax.jit, static_argnames=("model", "family", "num_chunks", "particle_batch", "bounds")
)
def _batch_bounds(params, key, args, *, model, family, num_chunks, particle_batch, bounds):
    """Running logsumexp over ``num_chunks`` chunks of particles, and the group bounds."""

    def body(carry, chunk_key):
        lse, sums = carry
        # (P, B)
        lw = per_datum_log_weights(model, family, params, chunk_key, particle_batch, *args)
        lse = jnp.logaddexp(lse, jax.nn.logsumexp(lw, axis=0))
        new_sums = []
        for k, total in zip(bounds, sums):
            groups = lw.reshape(particle_batch // k, k, lw.shape[-1])
            group_bounds = jax.nn.logsumexp(groups, axis=1) - jnp.log(k)
            new_sums.append(total + jnp.sum(group_bounds, axis=0))
        return (lse, tuple(new_sums)), None

    rows = jax.tree.leaves(args)[0].shape[0]
    initial = (jnp.full((rows,), -jnp.inf), tuple(jnp.zeros((rows,)) for _ in bounds))
    (lse, sums), _ = jax.lax.scan(body, initial, jax.random.split(key, num_chunks))
    total = num_chunks * particle_batch
    estimates = tuple(s / (total // k) for k, s in zip(bounds, sums))
    return lse - jnp.log(total), estimates


def _batches(arrays, batch_size):
    """Fixed-size batches of ``arrays`` (the last one padded with its first row) and counts."""
    rows = arrays[0].shape[0]
    for start in range(0, rows, batch_size):
        chunk = [a[start : start + batch_size] for a in arrays]
        count = chunk[0].shape[0]
        if count < batch_size:
            pad = batch_size - count
            chunk = [jnp.concatenate([c, jnp.repeat(c[:1], pad, axis=0)]) for c in chunk]
        yield tuple(chunk), count


def evaluate_bounds(
    vae,
    params,
    key: jax.Array,
    x: jax.Array,
    y: jax.Array | None = None,
    *,
    num_particles: int = 5000,
    particle_batch: int = 500,
    batch_size: int = 100,
    bounds: tuple[int, ...] = (1, 5, 50),
) -> dict[str, np.ndarray]:
    """Per-datum importance-sampled log-likelihood and bounds ``L_k`` (module docstring).

    Args:
      vae: a :class:`~vijax.models.vae.VAE` (evaluated as ``vae.for_evaluation()``).
      params: its parameters.
      key: a ``jax.random.key``.
      x, y: images ``(N, *image_shape)`` (and classes for a conditional VAE).
      num_particles: ``K`` for the log-likelihood (5000 by convention).
      particle_batch: particles per chunk (``num_particles`` must be a multiple of it; it must
        be a multiple of every ``k`` in ``bounds``).
      batch_size: data per compiled call (memory: ``particle_batch × batch_size`` decodings).
      bounds: the ``k`` of the bounds ``L_k`` to estimate (``1`` is the ELBO).

    Returns:
      ``{"log_likelihood": (N,), "elbo": (N,) if 1 in bounds, "iwae_k": (N,) per other k}``,
      NumPy float64 arrays in nats per image.
    """
    for name, value in (
        ("num_particles", num_particles),
        ("particle_batch", particle_batch),
        ("batch_size", batch_size),
    ):
        _check_positive(f"evaluate_bounds: {name}", value)
    particle_batch = min(particle_batch, num_particles)
    if num_particles % particle_batch:
        raise ValueError(
            f"evaluate_bounds: num_particles ({num_particles}) must be a multiple of "
            f"particle_batch ({particle_batch})"
        )
    bounds = tuple(bounds)
    for k in bounds:
        _check_positive("evaluate_bounds: each bound's k", k)
        if particle_batch % k:
            raise ValueError(
                f"evaluate_bounds: particle_batch ({particle_batch}) must be a multiple of "
                f"every k in bounds, got k={k}"
            )
    evaluated = vae.for_evaluation()
    arrays = (x,) if y is None else (x, y)
    lls, estimates = [], []
    for index, (batch, count) in enumerate(_batches(arrays, batch_size)):
        ll, est = _batch_bounds(
            params,
            jax.random.fold_in(key, index),
            batch,
            model=evaluated.model,
            family=evaluated.family,
            num_chunks=num_particles // particle_batch,
            particle_batch=particle_batch,
            bounds=bounds,
        )
        lls.append(np.asarray(ll, np.float64)[:count])
        estimates.append([np.asarray(e, np.float64)[:count] for e in est])
    out = {"log_likelihood": np.concatenate(lls)}
    for j, k in enumerate(bounds):
        out["elbo" if k == 1 else f"iwae_{k}"] = np.concatenate([e[j] for e in estimates])
    return out


@functools.partial(jax.jit, static_argnames=("vae",))
def _encode(vae, params, x, y):
    return vae.encode(params.family, x, y)


def encoder_outputs(vae, params, x, y=None, *, batch_size: int = 1000) -> jax.Array:
    """The encoder's raw outputs ``(N, latent.num_parameters)``, in batches."""
    arrays = (x,) if y is None else (x, y)
    out = []
    for batch, count in _batches(arrays, batch_size):
        raw = _encode(vae, params, batch[0], batch[1] if y is not None else None)
        out.append(raw[:count])
    return jnp.concatenate(out)


def kl_per_dimension(vae, params, x, y=None) -> np.ndarray:
    """``(1/N) Σ_i KL(q(z_l | x_i) ‖ p(z_l))`` for each latent dimension ``l`` (nats)."""
    latent = vae.for_evaluation().latent
    raw = encoder_outputs(vae, params, x, y)
    return np.asarray(jnp.mean(latent.kl_per_dimension(raw), axis=0), np.float64)


def active_units(vae, params, x, y=None, *, threshold: float = ACTIVE_THRESHOLD) -> np.ndarray:
    """``Cov_x(E_q[z_l | x])`` per latent feature; a unit is active when it exceeds ``threshold``.

    Returns:
      The per-feature variance of the posterior mean over the data (count the active ones with
      ``(variance > threshold).sum()``).
    """
    latent = vae.for_evaluation().latent
    raw = encoder_outputs(vae, params, x, y)
    return np.asarray(jnp.var(latent.posterior_mean(raw), axis=0), np.float64)


@functools.partial(jax.jit, static_argnames=("vae",))
def _reconstruct(vae, params, key, x, y):
    z = seed(vae.family, key)(params.family, x, y)
    condition = None if y is None else jax.nn.one_hot(y, vae.num_classes)
    logits = vae.decode(params.model, vae.latent.features(z), condition)
    return vae.likelihood.mean(logits)


def reconstruct(vae, params, key, x, y=None) -> jax.Array:
    """Mean images ``E[x | z]`` at one draw ``z ~ q(z | x)`` per input (same shape as ``x``)."""
    return _reconstruct(vae.for_evaluation(), params, key, x, y)


@functools.partial(jax.jit, static_argnames=("vae", "num"))
def _generate(vae, params, key, num, y):
    features = vae.latent.sample_prior(key, num)
    condition = None if y is None else jax.nn.one_hot(y, vae.num_classes)
    return vae.likelihood.mean(vae.decode(params.model, features, condition))


def generate(vae, params, key, num: int, y=None) -> jax.Array:
    """Mean images ``E[x | z]`` for ``num`` draws ``z ~ p(z)`` (classes ``y`` if conditional)."""
    _check_positive("generate: num", num)
    evaluated = vae.for_evaluation()
    if evaluated.num_classes is not None and y is None:
        y = jnp.arange(num) % evaluated.num_classes
    return _generate(evaluated, params, key, num, y)
