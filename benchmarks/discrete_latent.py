"""A discrete-latent model trained with every applicable gradient strategy, in one process.

**Model.** A mixture of ``C = 10`` multivariate Bernoullis on scikit-learn's digits, binarized
at half the maximum intensity (8 × 8 = 64 pixels), 1500 training and 297 held-out images:

    z_i ~ Categorical(softmax(a)),   x_i | z_i ~ Π_d Bernoulli(sigmoid(L[z_i, d])),

written once with NumPyro's primitives (``numpyro.plate("data", 1500, subsample_size=100)``
around a minibatch, so every log-density is scaled by 1500 / 100) and run unchanged by vijax
and NumPyro. The model parameters ``θ = (a, L)`` (mixing logits and per-component pixel
logits) train with the family parameters in the same Adam step
(``vj.ModelAndFamilyParams``). **Family**: amortized, ``q(z_i | x_i) = Categorical(logits =
x_i W + b)`` (``φ = (W, b)``). The objective is the ELBO (or a ``K``-particle bound), and the
exact held-out log-likelihood ``log p(x) = logsumexp_c(log π_c + Σ_d log p(x_d | L_cd))`` is
closed form, so every strategy is judged on the same number.

**Strategies** (vijax, each through ``vj.with_estimators`` and trained with ``vj.fit``):

- ``score function``: REINFORCE (``vj.score_function()``), Rao-Blackwellized over the data
  plate (datum ``i``'s score multiplies only datum ``i``'s terms). Also hand-written in JAX
  and run by NumPyro's ``TraceGraph_ELBO`` (its Rao-Blackwellized score-function ELBO).
- ``score function + running mean``: ``vj.running_mean(0.9)`` (one scalar mean over the data).
- ``score function + learned``: ``vj.learned(b)`` with a per-datum linear baseline
  ``b(x_i) = x_i · w + c`` trained by regression on the learning signal (Mnih & Gregor 2014);
  ``c`` starts at the initial per-datum signal (the scaled exact ELBO of the initial params),
  ``w`` at zero.
- ``score function + leave-one-out, K``: the ELBO averaged over ``K`` particles, each datum's
  baseline the mean of its other ``K − 1`` particles' signals (Kool et al. 2019).
- ``mvd``: measure-valued derivatives (``vj.mvd()``): ``C`` coupled re-evaluations per step.
- ``enumeration``: exact sum over the ``C`` values of each ``z_i`` (``vj.enumeration()``):
  the exact per-datum ELBO, zero variance from ``z``. Also hand-written in JAX, and NumPyro's
  ``TraceEnum_ELBO`` with the guide site ``{"enumerate": "parallel"}`` (needs ``funsor``; the
  column is empty, with a note, when it is not installed).
- ``VIMCO, K``: ``vj.vimco(model, family, K)``: IWAE with the score function and VIMCO's
  leave-one-out baseline.
- ``IWAE per datum, K + score function`` / ``+ score function + running mean`` / ``+ mvd``:
  ``vj.per_datum_iwae(model, family, K)`` (the bound of Burda et al. 2016 per image,
  ``Σ_i log (1/K) Σ_k w_ik``, times the minibatch scale) with that strategy on ``z``. The bound
  is one coupled block per image, so ``z_ik`` is scored with image ``i``'s bound only
  (Rao-Blackwellized over the data) and MVD perturbs every image's ``z`` at once.
- ``IWAE per datum, K + leave-one-out (VIMCO per datum)``: ``per_datum_iwae`` with
  ``vj.leave_one_out()``: VIMCO's advantage within each image; also hand-written
  (:func:`hand_per_datum_vimco_loss`). ``per_datum_iwae`` refuses ``vj.enumeration()`` (each
  image's K particles would have to be enumerated jointly), so there is no IWAE +
  enumeration row.

Every ELBO here uses ``log p − log q`` at the sample (``analytic_kl=False``), as the
hand-written and NumPyro ELBOs do (NumPyro registers no Categorical KL anyway).

``vj.iwae`` / ``vj.vimco`` weight whole particles, so in the ``VIMCO, K`` row each particle is a
joint draw of the minibatch's 100 latents and the bound is the ``K``-sample bound of the
(scaled) minibatch, not the per-datum IWAE ``Σ_i log (1/K) Σ_k w_ik`` of the ``IWAE per
datum`` rows (``vj.per_datum_iwae``). With this many data one particle dominates the
whole-minibatch weights, so that bound sits close to the ELBO. ``vj.iwae`` with ``vj.mvd()``
is left out: inside a coupled block a particle's weight sums its plate elements, so
measure-valued re-evaluations move one datum at a time (C × 100 runs per particle here); it is
exact but not a sensible choice at this minibatch size.

**Budget.** ``NUM_STEPS = 3000`` Adam steps (learning rate 1e-2; 200 epochs of 15 minibatches of
100) from the same initial parameters for every strategy and implementation, repeated for
``NUM_SEEDS = 5`` seeds (0 to 4: the step keys and the minibatch order) that every strategy
shares, and for ``SCORE_FUNCTION_SEEDS = 20`` seeds (0 to 19) in the plain ``score function``
row (see *Two basins* below). The held-out ``log p(x)`` is evaluated every ``SEGMENT = 250``
steps (the curves, and the ``.png``). vijax trains through ``vj.fit(..., data=(x_train,),
batch_size=100, state=...)`` one segment at a time (a resumed fit draws what an uninterrupted
one would); the hand-written and NumPyro runs train with their timed step. Every run reshuffles
the training set every epoch (vj.fit with permutations drawn from its key, the others with a
per-seed schedule of permutations), so the runs differ only in their random numbers.

**Two basins.** The single-sample score-function runs (vijax, hand-written and NumPyro alike)
end in one of two places: a local optimum at held-out ``log p(x) ≈ −24.5`` or a better one
near ``−23.4`` (or above), by chance. Over 30 seeds of the same estimator and
schedule, vijax's step ended at ``−24.5`` in 20 runs, the hand-written step in 22, and the
hand-written step drawing from vijax's key stream in 24: the same odds. With the same
parameters and the same draws the two gradients agree to float precision (relative
difference ≤ 1e-7), and at the initial parameters their means and variances agree (within
Monte Carlo error, 4,000 draws). So a mean over a few seeds differs by up to ~1 nat between
implementations of the same estimator (with 3 seeds the first run of this benchmark had
vijax at −24.52 on all three and the hand-written step at [−23.37, −24.51, −23.53]); read
``test_log_px_seeds``, not only the mean, for the single-sample score-function rows; the
plain ``score function`` row, where vijax, hand-written and NumPyro are compared, trains 20
seeds so that the three means compare.

**Timing.** Every implementation's step (one gradient, one Adam update; the minibatch gathered
from the training set by a schedule of per-epoch permutations, identically for all) runs in
the same jitted ``lax.scan`` of ``SEGMENT`` steps (``harness.scan_steps``); the vijax step is
``vj.gradient_estimator(objective).estimate`` (what ``vj.fit`` runs, baseline state carried),
the hand-written step ``jax.value_and_grad`` of a hand-written surrogate, NumPyro's
``svi.update``. All scans are compiled and run once, then timed round-robin
``STEADY_REPEATS`` times (``harness.time_scans``); times are medians, ratios medians of
repeat-by-repeat ratios.

The hand-written floors compute what the model as written computes, as fast as we could write
it (``x·l − softplus(l)`` for the Bernoulli log-likelihood, the enumerated axis first, the
components broadcast rather than gathered). Timed as extra references, not as the floor, each
with vijax's ratio to it: ``hand_rewritten`` (enumeration) rewrites the model's likelihood of
all components at once as one matrix product, ``x L^T − Σ_d softplus(L)``, which no framework
running the model as written can do; ``hand_expanded`` (enumeration) is the floor evaluated
the way vijax evaluates the model (a full ``(B,)`` array of each value, so ``L[z]`` and both
``log q(z)``, ``log p(z)`` are gathers whose gradients are scatter-adds): it isolates that
cost; ``hand_inverse_cdf`` (score function) draws ``z`` by inverse CDF from one uniform per
datum instead of NumPyro's Gumbel-max sampler (``C`` uniforms per datum), a change of sampler.
The per-datum VIMCO row's hand-written step (:func:`hand_per_datum_vimco_loss`) is timed and
trained like the floors, though vijax has no step to compare with it.

**Reading the table.** One row per strategy; the time columns are seconds per step, empty
where an implementation does not exist (NumPyro has no baselines, MVD or VIMCO). The extra
fields per implementation (``_vijax``, ``_hand``, ``_numpyro``), means over the seeds:
``test_log_px`` (exact held-out ``log p(x)`` per image, nats: higher is better; the number to
compare strategies on; ``test_log_px_seeds`` per seed), ``test_elbo`` / ``train_elbo`` (exact
ELBO per image under ``q``), ``objective_tail`` (mean of the last ``SEGMENT`` per-step
objective estimates per image: the objective each one optimizes), ``curve`` (held-out
``log p(x)`` every ``SEGMENT`` steps from step 0). ``fit_s`` is vj.fit's own wall time per
step over the segmented runs (its per-epoch reshuffling and its Python between segments
included), to set against the bare step in the ``vijax`` column.

Takes 2.5 minutes of wall time on a 2-core CPU (150 s measured), a good part of it compiling
the 19 timed steps and vj.fit's programs; wall time grows with whatever else the machine runs
(about 4 minutes with a load average of 6). Run with
``python -m benchmarks.discrete_latent`` (``--quick`` for a smoke run that writes nothing);
writes ``benchmarks/results/discrete_latent.{json,md,png}``.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import SVI, TraceGraph_ELBO

from benchmarks import harness, steps

NAME = "discrete_latent"
NUM_COMPONENTS = 10
NUM_PIXELS = 64
NUM_TEST = 297
NUM_TRAIN = 1500
BATCH_SIZE = 100
STEPS_PER_EPOCH = NUM_TRAIN // BATCH_SIZE
NUM_STEPS = 3000
SEGMENT = 250
NUM_PARTICLES = 5
LEARNING_RATE = 1e-2
RUNNING_MEAN_DECAY = 0.9
STEADY_REPEATS = 7
NUM_SEEDS = 5
SCORE_FUNCTION_SEEDS = 20
SEED = 0
INIT_PIXEL_SCALE = 0.5
OPTIMIZER = optax.adam(LEARNING_RATE)
SCALE = NUM_TRAIN / BATCH_SIZE  # the subsample plate's scale on every minibatch log-density


@dataclasses.dataclass(frozen=True)
class Budget:
    """Steps, evaluation segment and timing repeats of one run (the full run or ``--quick``)."""

    num_steps: int = NUM_STEPS
    segment: int = SEGMENT
    repeats: int = STEADY_REPEATS
    num_seeds: int = NUM_SEEDS
    score_function_seeds: int = SCORE_FUNCTION_SEEDS  # the "score function" row (two basins)


QUICK = Budget(num_steps=60, segment=30, repeats=2, num_seeds=1, score_function_seeds=1)


# --------------------------------------------------------------------------------------------
# Data, model, family


def load_data(seed: int = SEED) -> tuple[jax.Array, jax.Array]:
    """``(x_train, x_test)``: binarized digits (64 pixels), shuffled once with ``seed``.

    The images come from ``vijax.data.digits`` (scikit-learn's digits scaled to ``[0, 1]``), or
    straight from scikit-learn when vijax cannot be imported (the other columns still run).
    """
    try:
        from vijax.data import datasets

        images = np.asarray(datasets.digits()[0])
    except ImportError:
        from sklearn.datasets import load_digits

        images = load_digits().images / 16.0
    pixels = images.reshape(len(images), -1)
    binary = (pixels > 0.5 * pixels.max()).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(binary))
    binary = binary[order]
    return jnp.asarray(binary[:NUM_TRAIN]), jnp.asarray(binary[NUM_TRAIN : NUM_TRAIN + NUM_TEST])


def model(theta: dict[str, jax.Array], x: jax.Array) -> None:
    """The mixture of Bernoullis on a minibatch ``x`` of the ``NUM_TRAIN`` training images."""
    with numpyro.plate("data", NUM_TRAIN, subsample_size=x.shape[0]):
        z = numpyro.sample("z", dist.Categorical(logits=theta["mix_logits"]))
        numpyro.sample("x", dist.Bernoulli(logits=theta["pixel_logits"][z]).to_event(1), obs=x)


def family(phi: dict[str, Any], x: jax.Array) -> None:
    """Amortized ``q(z_i | x_i) = Categorical(logits = x_i W + b)``."""
    with numpyro.plate("data", NUM_TRAIN, subsample_size=x.shape[0]):
        numpyro.sample("z", dist.Categorical(logits=x @ phi["W"] + phi["b"]))


def init_params(seed: int = SEED) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """``(θ, φ)``: uniform mixing, pixel logits ``N(0, 0.5²)``, a uniform family."""
    pixel = INIT_PIXEL_SCALE * np.random.default_rng(seed + 1).normal(
        size=(NUM_COMPONENTS, NUM_PIXELS)
    )
    theta = {
        "mix_logits": jnp.zeros(NUM_COMPONENTS, jnp.float32),
        "pixel_logits": jnp.asarray(pixel, jnp.float32),
    }
    phi = {
        "W": jnp.zeros((NUM_PIXELS, NUM_COMPONENTS), jnp.float32),
        "b": jnp.zeros(NUM_COMPONENTS, jnp.float32),
    }
    return theta, phi


def epoch_orders(seed: int, num_steps: int) -> jax.Array:
    """One random permutation of the training set per epoch (``(epochs, NUM_TRAIN)``, int32):
    the minibatch schedule of the hand-written and NumPyro runs, reshuffled every epoch as
    ``vj.fit`` reshuffles (with permutations of its own)."""
    rng = np.random.default_rng(1000 + seed)
    num_epochs = -(-num_steps // STEPS_PER_EPOCH)
    return jnp.asarray(np.stack([rng.permutation(NUM_TRAIN) for _ in range(num_epochs)]), jnp.int32)


def minibatch(x_train: jax.Array, order: jax.Array, step: jax.Array) -> jax.Array:
    """Minibatch ``step`` of the schedule ``order`` (see :func:`epoch_orders`)."""
    epoch, position = jnp.divmod(step, STEPS_PER_EPOCH)
    permutation = jax.lax.dynamic_index_in_dim(order, epoch, keepdims=False)
    indices = jax.lax.dynamic_slice_in_dim(permutation, position * BATCH_SIZE, BATCH_SIZE)
    return jnp.take(x_train, indices, axis=0)


# --------------------------------------------------------------------------------------------
# Exact evaluation (closed form)


def log_joint_table(theta: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """``log p(x_i, z_i = c)`` for every image and component, shape ``(N, C)``."""
    pixel = theta["pixel_logits"]
    log_likelihood = x @ pixel.T - jnp.sum(steps.softplus(pixel), axis=1)
    return log_likelihood + jax.nn.log_softmax(theta["mix_logits"])


@jax.jit
def exact_log_px(theta: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """Mean exact ``log p(x_i)`` per image (nats)."""
    return jnp.mean(jax.nn.logsumexp(log_joint_table(theta, x), axis=1))


@jax.jit
def exact_elbo(theta: dict[str, jax.Array], phi: dict[str, Any], x: jax.Array) -> jax.Array:
    """Mean exact ELBO per image, ``Σ_c q(c | x_i) (log p(x_i, c) − log q(c | x_i))``."""
    log_q = jax.nn.log_softmax(x @ phi["W"] + phi["b"])
    return jnp.mean(jnp.sum(jnp.exp(log_q) * (log_joint_table(theta, x) - log_q), axis=1))


def evaluation(theta, phi, x_train, x_test) -> dict[str, float]:
    """The exact held-out ``log p(x)``, held-out ELBO and training ELBO per image."""
    return {
        "test_log_px": float(exact_log_px(theta, x_test)),
        "test_elbo": float(exact_elbo(theta, phi, x_test)),
        "train_elbo": float(exact_elbo(theta, phi, x_train)),
    }


# --------------------------------------------------------------------------------------------
# Hand-written JAX (the floors)


def _log_likelihood(x: jax.Array, logits: jax.Array) -> jax.Array:
    """``Σ_d log Bernoulli(x_d | sigmoid(l_d))`` as ``x·l − softplus(l)``."""
    return jnp.sum(x * logits - steps.softplus(logits), axis=-1)


def hand_score_function_loss(params, key, x, sampler: str = "gumbel") -> tuple:
    """``(−S, ELBO estimate)``: the REINFORCE surrogate of the minibatch ELBO, Rao-Blackwellized
    per datum, ``S = Σ_i f_i + Σ_i ⊥f_i log q(z_i | x_i)`` with
    ``f_i = s (log p(x_i, z_i) − log q(z_i | x_i))`` and ``s`` the minibatch scale.

    ``sampler="gumbel"`` draws ``z`` as NumPyro's Categorical does (Gumbel-max, ``C`` uniforms
    per datum); ``"inverse_cdf"`` from one uniform per datum.
    """
    theta, phi = params
    logits = x @ phi["W"] + phi["b"]
    log_q_all = jax.nn.log_softmax(logits)
    if sampler == "gumbel":  # from the unnormalized logits, as NumPyro's sampler draws
        z = jax.random.categorical(key, jax.lax.stop_gradient(logits))
    else:
        u = jax.random.uniform(key, (x.shape[0], 1))
        probs = jnp.exp(jax.lax.stop_gradient(log_q_all))
        z = jnp.sum(jnp.cumsum(probs, axis=1)[:, :-1] < u, axis=1)
    log_q = jnp.take_along_axis(log_q_all, z[:, None], axis=1)[:, 0]
    log_prior = jax.nn.log_softmax(theta["mix_logits"])[z]
    f = SCALE * (_log_likelihood(x, theta["pixel_logits"][z]) + log_prior - log_q)
    elbo = jnp.sum(f)
    return -(elbo + jnp.sum(jax.lax.stop_gradient(f) * log_q)), elbo


def hand_enumeration_loss(params, key, x) -> tuple:
    """``(−ELBO, ELBO)``: the exact minibatch ELBO, the model's likelihood at every component.

    The enumerated axis comes first: ``log p(x_i | c)`` is a ``(C, B)`` table of sums of the
    ``(C, B, D)`` elementwise Bernoulli log-densities, as the model computes them.
    """
    theta, phi = params
    log_q = jax.nn.log_softmax(x @ phi["W"] + phi["b"]).T  # (C, B)
    log_likelihood = _log_likelihood(x, theta["pixel_logits"][:, None, :])  # (C, B)
    log_joint = log_likelihood + jax.nn.log_softmax(theta["mix_logits"])[:, None]
    elbo = SCALE * jnp.sum(jnp.exp(log_q) * (log_joint - log_q))
    return -elbo, elbo


def hand_enumeration_rewritten_loss(params, key, x) -> tuple:
    """:func:`hand_enumeration_loss` with ``log p(x_i | c) = x_i · L_c − Σ_d softplus(L_cd)``
    for all ``c`` by one matrix product: a model rewrite, an extra reference, not the floor."""
    theta, phi = params
    log_q = jax.nn.log_softmax(x @ phi["W"] + phi["b"])
    elbo = SCALE * jnp.sum(jnp.exp(log_q) * (log_joint_table(theta, x) - log_q))
    return -elbo, elbo


def hand_enumeration_expanded_loss(params, key, x) -> tuple:
    """:func:`hand_enumeration_loss` evaluated the way vijax evaluates the model today: at
    each value ``c`` the site holds a full ``(B,)`` array of ``c``'s, so the model gathers
    ``L[z]`` (``(C, B, D)``) and both ``log q(z)`` and ``log p(z)`` are ``take_along_axis``
    gathers, whose gradients are scatter-adds. A diagnostic that isolates that cost."""
    theta, phi = params
    num_components, batch = theta["mix_logits"].shape[0], x.shape[0]
    z = jnp.broadcast_to(jnp.arange(num_components)[:, None], (num_components, batch))
    log_q_all = jnp.broadcast_to(
        jax.nn.log_softmax(x @ phi["W"] + phi["b"]), (num_components, batch, num_components)
    )
    log_q = jnp.take_along_axis(log_q_all, z[..., None], axis=-1)[..., 0]
    log_prior = jax.nn.log_softmax(theta["mix_logits"])[z]
    log_joint = _log_likelihood(x, theta["pixel_logits"][z]) + log_prior
    elbo = SCALE * jnp.sum(jnp.exp(log_q) * (log_joint - log_q))
    return -elbo, elbo


def hand_per_datum_vimco_loss(params, key, x) -> tuple:
    """``(−S, bound estimate)``: the per-datum IWAE bound ``Σ_i log (1/K) Σ_k w_ik`` (times the
    minibatch scale) with VIMCO's leave-one-out score term per datum (Mnih & Rezende 2016),

        S = s Σ_i L_i + s Σ_{i,k} ⊥(L_i − L_i^{−k}) log q(z_ik | x_i),

    ``L_i = log (1/K) Σ_k w_ik`` and ``L_i^{−k}`` the same with ``log w_ik`` replaced by the
    mean of the other ``K − 1`` log-weights of datum ``i``.
    """
    theta, phi = params
    num, batch = NUM_PARTICLES, x.shape[0]
    logits = x @ phi["W"] + phi["b"]
    log_q_all = jax.nn.log_softmax(logits)
    z = jax.random.categorical(key, jax.lax.stop_gradient(logits), shape=(num, batch))
    log_q = log_q_all[jnp.arange(batch), z]  # (K, B)
    log_prior = jax.nn.log_softmax(theta["mix_logits"])[z]
    log_w = _log_likelihood(x, theta["pixel_logits"][z]) + log_prior - log_q  # (K, B)
    bound = jax.nn.logsumexp(log_w, axis=0) - jnp.log(num)  # (B,)
    fixed = jax.lax.stop_gradient(log_w)
    others = (jnp.sum(fixed, axis=0) - fixed) / (num - 1)  # (K, B)
    own = jnp.eye(num, dtype=bool)[:, :, None]  # particle k's own slot in its k-th copy
    replaced = jnp.where(own, others[:, None, :], fixed[None])  # (K, K, B)
    left_out = jax.nn.logsumexp(replaced, axis=1) - jnp.log(num)  # (K, B)
    advantage = jax.lax.stop_gradient(bound)[None] - left_out
    value = SCALE * jnp.sum(bound)
    return -(value + SCALE * jnp.sum(advantage * log_q)), value


# --------------------------------------------------------------------------------------------
# Steps (one gradient, one Adam update, the minibatch chosen by step index)


def hand_step(loss: Callable[..., tuple]) -> Callable:
    """``step((params, opt_state, key, t), x_train)`` minimizing ``loss(params, key, x_batch)``,
    which returns ``(loss, objective estimate)``; the step outputs the estimate."""

    def step(carry, x_train, order):
        params, opt_state, key, t = carry
        (_, value), grads = jax.value_and_grad(loss, has_aux=True)(
            params, jax.random.fold_in(key, t), minibatch(x_train, order, t)
        )
        updates, opt_state = OPTIMIZER.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state, key, t + 1), value

    return step


def hand_carry(params, key) -> tuple:
    return params, OPTIMIZER.init(params), key, jnp.zeros((), jnp.int32)


def vijax_step(estimator: Any) -> Callable:
    """The same step around ``vj.gradient_estimator(objective).estimate`` (state carried)."""

    def step(carry, x_train, order):
        params, opt_state, state, key, t = carry
        value, grads, state = estimator.estimate(
            params, state, jax.random.fold_in(key, t), minibatch(x_train, order, t)
        )
        updates, opt_state = OPTIMIZER.update(jax.tree.map(jnp.negative, grads), opt_state)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, state, key, t + 1), value

    return step


def vijax_carry(estimator: Any, params, key, x_train) -> tuple:
    state = estimator.init(params, key, x_train[:BATCH_SIZE])
    return params, OPTIMIZER.init(params), state, key, jnp.zeros((), jnp.int32)


def numpyro_step(svi: SVI) -> Callable:
    """``svi.update`` on the minibatch of the step index (NumPyro carries its own key)."""

    def step(carry, x_train, order):
        state, t = carry
        state, loss = svi.update(state, minibatch(x_train, order, t))
        return (state, t + 1), -loss

    return step


# --------------------------------------------------------------------------------------------
# NumPyro


def numpyro_programs(theta, phi) -> tuple[Callable, Callable]:
    """The model and family with their parameters as ``numpyro.param`` sites."""

    def numpyro_model(x):
        model({name: numpyro.param(name, value) for name, value in theta.items()}, x)

    def numpyro_guide(x):
        family({name: numpyro.param(name, value) for name, value in phi.items()}, x)

    return numpyro_model, numpyro_guide


def numpyro_svi(theta, phi, enumerate_guide: bool) -> SVI:
    """``TraceGraph_ELBO`` (score function), or ``TraceEnum_ELBO`` with the guide's ``z``
    enumerated in parallel (raises ``ImportError`` without ``funsor``)."""
    numpyro_model, numpyro_guide = numpyro_programs(theta, phi)
    if not enumerate_guide:
        return SVI(numpyro_model, numpyro_guide, OPTIMIZER, TraceGraph_ELBO())
    import funsor  # noqa: F401  (TraceEnum_ELBO needs it: fail here with a clear reason)
    from numpyro.handlers import infer_config
    from numpyro.infer import TraceEnum_ELBO

    guide = infer_config(
        numpyro_guide, lambda site: {"enumerate": "parallel"} if site["name"] == "z" else {}
    )
    return SVI(numpyro_model, guide, OPTIMIZER, TraceEnum_ELBO())


def numpyro_params(svi: SVI, state: Any) -> tuple[dict, dict]:
    params = svi.get_params(state)
    theta = {name: params[name] for name in ("mix_logits", "pixel_logits")}
    return theta, {name: params[name] for name in ("W", "b")}


# --------------------------------------------------------------------------------------------
# vijax strategies


@dataclasses.dataclass
class Strategy:
    """One vijax strategy: its objective and initial params (``ModelAndFamilyParams``)."""

    case: str
    objective: Any
    params: Any
    note: str = ""


def with_learned_baseline(vj: Any, theta, phi, x_train) -> tuple[Callable, Any]:
    """The family with a learned per-datum linear baseline, and params holding its weights."""

    def baseline(params, x):
        weights = params.family["baseline"]
        return x @ weights["w"] + weights["c"]

    start = SCALE * float(exact_elbo(theta, phi, x_train))
    weights = {"w": jnp.zeros(NUM_PIXELS, jnp.float32), "c": jnp.asarray(start, jnp.float32)}
    chosen = vj.with_estimators(family, {"z": vj.score_function(vj.learned(baseline))})
    return chosen, vj.ModelAndFamilyParams(theta, {**phi, "baseline": weights})


IWAE_CASE = f"IWAE per datum, K={NUM_PARTICLES}"
IWAE_SCORE = f"{IWAE_CASE} + score function"
IWAE_RUNNING_MEAN = f"{IWAE_CASE} + score function + running mean"
IWAE_LEAVE_ONE_OUT = f"{IWAE_CASE} + leave-one-out (VIMCO per datum)"
IWAE_MVD = f"{IWAE_CASE} + mvd"


def vijax_strategies(vj: Any, theta, phi, x_train) -> list[Strategy]:
    """Every vijax strategy of this benchmark (see the module docstring)."""
    params = vj.ModelAndFamilyParams(theta, phi)
    K = NUM_PARTICLES

    def elbo_with(strategy, num_particles=1):
        chosen = vj.with_estimators(family, {"z": strategy})
        return vj.elbo(model, chosen, num_particles, analytic_kl=False)

    def per_datum_iwae_with(strategy):
        return vj.per_datum_iwae(model, vj.with_estimators(family, {"z": strategy}), K)

    learned_family, learned_params = with_learned_baseline(vj, theta, phi, x_train)
    return [
        Strategy("score function", elbo_with(vj.score_function()), params),
        Strategy(
            "score function + running mean",
            elbo_with(vj.score_function(vj.running_mean(RUNNING_MEAN_DECAY))),
            params,
        ),
        Strategy(
            "score function + learned",
            vj.elbo(model, learned_family, analytic_kl=False),
            learned_params,
        ),
        Strategy(
            f"score function + leave-one-out, K={K}",
            elbo_with(vj.score_function(vj.leave_one_out()), K),
            params,
        ),
        Strategy("mvd", elbo_with(vj.mvd()), params),
        Strategy("enumeration", elbo_with(vj.enumeration()), params),
        Strategy(f"VIMCO, K={K}", vj.vimco(model, family, K), params),
        Strategy(IWAE_SCORE, per_datum_iwae_with(vj.score_function()), params),
        Strategy(
            IWAE_RUNNING_MEAN,
            per_datum_iwae_with(vj.score_function(vj.running_mean(RUNNING_MEAN_DECAY))),
            params,
        ),
        Strategy(
            IWAE_LEAVE_ONE_OUT,
            per_datum_iwae_with(vj.score_function(vj.leave_one_out())),
            params,
            note="per_datum_iwae refuses vj.enumeration() (no IWAE + enumeration row)",
        ),
        Strategy(IWAE_MVD, per_datum_iwae_with(vj.mvd()), params),
    ]


# --------------------------------------------------------------------------------------------
# Measurement


@dataclasses.dataclass
class Run:
    """One implementation of one case: its timed scan and its training (one seed per call)."""

    scan: Callable[[], Any]
    train: Callable[[int], dict[str, Any]] | None  # None: timed only (a diagnostic variant)


def tail_mean(values: np.ndarray, count: int) -> float:
    """Mean of the last ``count`` per-step objective estimates, per training image."""
    return float(np.mean(np.asarray(values)[-count:]) / NUM_TRAIN)


def scan_run(step, make_carry, to_params, x_train, x_test, budget: Budget) -> Run:
    """A :class:`Run` whose timed scan (``budget.segment`` steps of ``step``, jitted, from
    ``make_carry(SEED)``) is also what trains it, one segment at a time, evaluating after each.
    """
    segment = harness.scan_steps(step, budget.segment)

    def train(seed: int) -> dict[str, Any]:
        state, order = make_carry(seed), epoch_orders(seed, budget.num_steps)
        curve = [evaluation(*to_params(state), x_train, x_test)["test_log_px"]]
        values = []
        for _ in range(budget.num_steps // budget.segment):
            state, segment_values = segment(state, x_train, order)
            values.append(np.asarray(segment_values))
            curve.append(evaluation(*to_params(state), x_train, x_test)["test_log_px"])
        return {
            **evaluation(*to_params(state), x_train, x_test),
            "objective_tail": tail_mean(np.concatenate(values), budget.segment),
            "curve": curve,
        }

    timed = (make_carry(SEED), x_train, epoch_orders(SEED, budget.num_steps))
    return Run(functools.partial(segment, *timed), train)


def fit_train(vj, strategy: Strategy, x_train, x_test, budget: Budget, seed: int) -> dict:
    """Train with ``vj.fit``, ``budget.segment`` steps per call (resumed from its state)."""

    def segment(state=None):
        return vj.fit(
            strategy.objective,
            strategy.params,
            OPTIMIZER,
            jax.random.key(seed),
            num_steps=budget.segment,
            data=(x_train,),
            batch_size=BATCH_SIZE,
            state=state,
            progress=False,
        )

    if seed == SEED:  # compile, and compile a resume, before the timed run
        harness.block(segment(harness.block(segment()).state))
    to_params = lambda params: (params.model, params.family)  # noqa: E731
    curve = [evaluation(*to_params(strategy.params), x_train, x_test)["test_log_px"]]
    histories, state, seconds = [], None, 0.0
    for _ in range(budget.num_steps // budget.segment):
        start = time.perf_counter()
        result = harness.block(segment(state))
        seconds += time.perf_counter() - start
        state = result.state
        histories.append(result.history)
        curve.append(evaluation(*to_params(result.params), x_train, x_test)["test_log_px"])
    return {
        **evaluation(*to_params(result.params), x_train, x_test),
        "objective_tail": tail_mean(np.concatenate(histories), budget.segment),
        "curve": curve,
        "fit_s": seconds / budget.num_steps,
    }


def hand_runs(theta, phi, x_train, x_test, budget: Budget) -> dict[str, dict[str, Run]]:
    """Hand-written runs per case: the floors (``hand``) and the extra references."""

    def make_carry(seed: int) -> tuple:
        return hand_carry((theta, phi), jax.random.key(seed))

    losses = {
        ("score function", "hand"): hand_score_function_loss,
        ("score function", "hand_inverse_cdf"): functools.partial(
            hand_score_function_loss, sampler="inverse_cdf"
        ),
        ("enumeration", "hand"): hand_enumeration_loss,
        ("enumeration", "hand_rewritten"): hand_enumeration_rewritten_loss,
        ("enumeration", "hand_expanded"): hand_enumeration_expanded_loss,
        (IWAE_LEAVE_ONE_OUT, "hand"): hand_per_datum_vimco_loss,
    }
    runs: dict[str, dict[str, Run]] = {}
    for (case, name), loss in losses.items():
        run = scan_run(hand_step(loss), make_carry, lambda c: c[0], x_train, x_test, budget)
        if name != "hand":  # a diagnostic: same objective as the floor, timed only
            run = dataclasses.replace(run, train=None)
        runs.setdefault(case, {})[name] = run
    return runs


def numpyro_runs(theta, phi, x_train, x_test, budget: Budget, notes: dict[str, list[str]]):
    """NumPyro runs: ``TraceGraph_ELBO`` (score function), ``TraceEnum_ELBO`` (enumeration)."""
    runs: dict[str, dict[str, Run]] = {}
    for case, enumerate_guide in (("score function", False), ("enumeration", True)):
        svi = harness.attempt(
            "NumPyro", lambda e=enumerate_guide: numpyro_svi(theta, phi, e), notes[case]
        )
        if svi is None:
            continue

        def make_carry(seed: int, svi=svi) -> tuple:
            state = svi.init(jax.random.key(seed), x_train[:BATCH_SIZE])
            return state, jnp.zeros((), jnp.int32)

        to_params = lambda c, svi=svi: numpyro_params(svi, c[0])  # noqa: E731
        run = scan_run(numpyro_step(svi), make_carry, to_params, x_train, x_test, budget)
        if harness.attempt("NumPyro scan", run.scan, notes[case]) is not None:
            runs[case] = {"numpyro": run}
    return runs


def vijax_runs(vj, strategies: list[Strategy], x_train, x_test, budget: Budget, notes):
    """vijax runs: the timed scan around the estimator, the training through ``vj.fit``."""
    runs: dict[str, dict[str, Run]] = {}
    key = jax.random.key(SEED)
    for strategy in strategies:
        estimator = vj.gradient_estimator(strategy.objective)
        carry = harness.attempt(
            "vijax init",
            lambda e=estimator, s=strategy: vijax_carry(e, s.params, key, x_train),
            notes[strategy.case],
        )
        if carry is None:
            continue
        scan = functools.partial(
            harness.scan_steps(vijax_step(estimator), budget.segment),
            carry,
            x_train,
            epoch_orders(SEED, budget.num_steps),
        )
        if harness.attempt("vijax scan", scan, notes[strategy.case]) is None:
            continue
        train = functools.partial(fit_train, vj, strategy, x_train, x_test, budget)
        runs[strategy.case] = {"vijax": Run(scan, train)}
    return runs


def train_seeds(run: Run, num_seeds: int) -> dict[str, Any]:
    """Train ``run`` once per seed; the mean of each number over the seeds (and the per-seed
    held-out ``log p(x)``), the curves averaged step by step."""
    per_seed = [run.train(SEED + i) for i in range(num_seeds)]
    summary: dict[str, Any] = {}
    for field in per_seed[0]:
        values = [result[field] for result in per_seed]
        summary[field] = (
            np.mean(values, axis=0).tolist() if field == "curve" else float(np.mean(values))
        )
    summary["test_log_px_seeds"] = [round(r["test_log_px"], 3) for r in per_seed]
    return summary


def seeds_of(case: str, budget: Budget) -> int:
    """Seeds trained for ``case``: more for the plain score function, whose runs end in one of
    two basins by chance (see the module docstring), so that its means compare."""
    return budget.score_function_seeds if case == "score function" else budget.num_seeds


def numpyro_notes() -> dict[str, str]:
    """What NumPyro ran per case (its enumeration needs ``funsor``, an optional package)."""
    notes = {"score function": "NumPyro: TraceGraph_ELBO (no baseline)"}
    try:
        import funsor
    except ImportError:
        return notes
    notes["enumeration"] = (
        f"NumPyro: TraceEnum_ELBO, guide site enumerated in parallel (funsor {funsor.__version__})"
    )
    return notes


def measure(budget: Budget = Budget()) -> list[harness.Row]:
    """Time every case's implementations round-robin, train them, and build the rows."""
    harness.warm_up_jax()
    x_train, x_test = load_data()
    theta, phi = init_params()
    notes: dict[str, list[str]] = collections.defaultdict(list)
    vj, reason = harness.import_vijax()
    strategies = []
    if reason:
        notes["score function"].append(reason)
    else:
        strategies = harness.attempt(
            "vijax strategies",
            lambda: vijax_strategies(vj, theta, phi, x_train),
            notes["score function"],
        )
    strategies = strategies or []
    for strategy in strategies:
        notes[strategy.case].extend(filter(None, [strategy.note]))
    for case, note in numpyro_notes().items():
        notes[case].append(note)
    runs: dict[str, dict[str, Run]] = {s.case: {} for s in strategies}
    for more in (
        vijax_runs(vj, strategies, x_train, x_test, budget, notes) if strategies else {},
        hand_runs(theta, phi, x_train, x_test, budget),
        numpyro_runs(theta, phi, x_train, x_test, budget, notes),
    ):
        for case, implementations in more.items():
            runs.setdefault(case, {}).update(implementations)

    scans = {(case, name): run.scan for case, impls in runs.items() for name, run in impls.items()}
    times, _ = harness.time_scans(scans, budget.repeats)
    results = {
        (case, name): harness.attempt(
            f"{name} training",
            functools.partial(train_seeds, run, seeds_of(case, budget)),
            notes[case],
        )
        for case, impls in runs.items()
        for name, run in impls.items()
        if run.train is not None
    }
    return [
        make_case_row(case, impls, times, results, "; ".join(notes[case]), budget)
        for case, impls in runs.items()
    ]


def make_case_row(case, impls, times, results, note, budget: Budget) -> harness.Row:
    """The row of one case: seconds per step per implementation, ratios, final numbers.

    Extra fields: each implementation's final numbers (``<field>_<implementation>``), then
    vj.fit's time per step, the diagnostic hand-written variants' times and vijax's ratio to
    them, and the curves last.
    """
    per_impl = {name: times[(case, name)] for name in impls}
    row_times = {name: per_impl.get(name) for name in harness.IMPLEMENTATIONS}
    extra: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for name in impls:
        for field, value in (results.get((case, name)) or {}).items():
            if field == "curve":
                curves[f"curve_{name}"] = [round(v, 2) for v in value]
            else:
                extra[field if field == "fit_s" else f"{field}_{name}"] = value
    for name in impls:
        if name not in harness.IMPLEMENTATIONS:
            extra[f"{name}_s"] = harness.median(per_impl[name]) / budget.segment
            extra[f"ratio_{name}"] = harness.paired_ratio(per_impl.get("vijax"), per_impl[name])
            extra[f"{name}_samples"] = [t / budget.segment for t in per_impl[name]]
    return harness.make_row(
        case,
        row_times,
        per=budget.segment,
        metric="time per step",
        unit="s/step",
        notes=note,
        **extra,
        **curves,
    )


# --------------------------------------------------------------------------------------------
# Plot and entry points


def plot(rows: list[harness.Row], path: Any, budget: Budget = Budget()) -> None:
    """Held-out ``log p(x)`` per image against the step (mean over the seeds), one line per
    strategy and implementation (the diagnostic hand-written variants are timed only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(0, budget.num_steps + 1, budget.segment)
    colors = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(9, 6))
    for row, color in zip(rows, colors * 2, strict=False):
        for name in ("vijax", "hand", "numpyro"):
            curve = row.extra.get(f"curve_{name}")
            if curve:
                style = {"vijax": "-", "hand": ":", "numpyro": "--"}[name]
                label = row.case if name == "vijax" else f"{row.case} ({name})"
                ax.plot(steps[: len(curve)], curve, style, color=color, label=label)
    ax.set_xlabel("Adam step")
    ax.set_ylabel("held-out log p(x) per image (nats)")
    ax.set_title(
        "Mixture of 10 Bernoullis on binarized digits: exact held-out log p(x),\n"
        f"mean of {budget.num_seeds} seeds ({budget.score_function_seeds} for the score function)"
    )
    ax.set_ylim(-26.5, -21.5)  # step 0 (≈ −44.6 nats) is off the chart
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(budget: Budget = Budget()) -> list[harness.Row]:
    """Run the benchmark and return its rows (the full run also writes the ``.png``)."""
    rows = measure(budget)
    if budget == Budget():
        harness.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        plot(rows, harness.RESULTS_DIR / f"{NAME}.png", budget)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, write ``results/discrete_latent.{json,md,png}``, print the table.

    With ``--quick`` run a few steps and print the table without writing anything.
    """
    argv = sys.argv[1:] if argv is None else argv
    if "--quick" in argv:
        print(harness.markdown_table(NAME, run(QUICK), harness.environment()))
        return
    print(harness.write_results(NAME, run()))


if __name__ == "__main__":
    main()
