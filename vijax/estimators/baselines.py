r"""Baselines (control variates) for score-function estimators.

A score-function estimator of ``∇_φ E_{q_φ(z)}[f(z)]`` uses ``(f(z) − b) ∇_φ log q_φ(z)``; any
``b`` that does not depend on ``z`` leaves it unbiased, since ``E[∇_φ log q_φ(z)] = 0``, and a
``b`` close to ``E[f]`` lowers its variance (Williams 1992; Mnih & Gregor 2014).

A baseline turns the site's learning signal (``f``, already Rao-Blackwellized over plates and
aligned with the site's elements) into an advantage ``f − b``:

- :func:`no_baseline`: ``b = 0``.
- :func:`constant`: a fixed ``b = c``.
- :func:`running_mean`: an exponential moving average of past signals, ``m_t = β m_{t−1} +
  (1 − β) f_t`` (bias-corrected as in Adam: ``b = m_{t−1} / (1 − β^{t−1})``). It uses only past
  steps, so it is independent of the current sample. Its state is carried by the fit loop (see
  :func:`vijax.gradient_estimator`); elements of subsampled plates and particles share one mean.
- :func:`leave_one_out`: with ``K`` particles, particle ``k``'s baseline is built from the other
  ``K − 1`` (Kool et al. 2019; for coupled objectives such as IWAE it is VIMCO's, Mnih & Rezende
  2016: the objective with particle ``k``'s value replaced by the mean of the others).
- :func:`learned`: ``b = fn(params, *args)``, a function of the objective's own parameters
  (a scalar, a per-datum table, a network of the data) trained with the objective: the
  surrogate gains ``−½ Σ (⊥F − b)²``, whose gradient moves ``b`` toward ``E[F]`` (Mnih & Gregor
  2014, "Neural Variational Inference and Learning in Belief Networks"). ``fn`` must read only
  parameters of its own (e.g. ``params["baseline"]``), or that term would move the family too.

Example:
    >>> import vijax as vj
    >>> estimator = vj.score_function(baseline=vj.running_mean(decay=0.9))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "Constant",
    "Learned",
    "LeaveOneOut",
    "NoBaseline",
    "RunningMean",
    "Signal",
    "constant",
    "learned",
    "leave_one_out",
    "no_baseline",
    "running_mean",
]


@dataclass(frozen=True)
class Signal:
    """A site's learning signal, aligned with the site's (kept) named axes.

    Attributes:
      value: the signal array; ``axes[i]`` names its axis ``i``.
      axes: axis names (plate names, and particle axes).
      averaged_axes: axes a running mean averages over (particles and subsampled plates).
      leave_one_out: a function returning the signal minus its leave-one-out baseline, or
        ``None`` when the site has no particle axis to leave one out of.
      site: the site name, for error messages.
      params, args: the objective's parameters and arguments (for learned baselines).
    """

    value: jax.Array
    axes: tuple[str, ...]
    averaged_axes: frozenset[str]
    leave_one_out: Callable[[], jax.Array] | None
    site: str
    params: Any = None
    args: tuple = ()

    def averaged(self) -> jax.Array:
        """The signal averaged over ``averaged_axes`` (kept as size-1 axes)."""
        reduce = tuple(i for i, a in enumerate(self.axes) if a in self.averaged_axes)
        return jnp.mean(self.value, axis=reduce, keepdims=True) if reduce else self.value


def _no_fit_term(self, signal: Signal) -> jax.Array:
    """The baseline's own training term in the surrogate (none for untrained baselines)."""
    return jnp.zeros(())


@dataclass(frozen=True)
class NoBaseline:
    """``b = 0``: plain REINFORCE."""

    fit_term = _no_fit_term

    def init(self, signal: Signal):
        return None

    def advantage(self, signal: Signal, state):
        return signal.value, state


@dataclass(frozen=True)
class Constant:
    """A fixed baseline ``b = value``."""

    value: float
    fit_term = _no_fit_term

    def init(self, signal: Signal):
        return None

    def advantage(self, signal: Signal, state):
        return signal.value - self.value, state


@dataclass(frozen=True)
class RunningMean:
    """Exponential moving average of past signals with decay ``decay`` (bias-corrected)."""

    decay: float = 0.9
    fit_term = _no_fit_term

    def init(self, signal: Signal):
        mean = jnp.zeros(jnp.shape(signal.averaged()), jnp.result_type(signal.value))
        return {"mean": mean, "count": jnp.zeros((), jnp.int32)}

    def advantage(self, signal: Signal, state):
        if state is None:
            state = self.init(signal)
        mean, count = state["mean"], state["count"]
        correction = 1.0 - self.decay ** count.astype(mean.dtype)
        baseline = jnp.where(count > 0, mean / jnp.where(count > 0, correction, 1.0), 0.0)
        current = jax.lax.stop_gradient(signal.averaged())
        new_state = {
            "mean": self.decay * mean + (1.0 - self.decay) * current,
            "count": count + 1,
        }
        return signal.value - baseline, new_state


@dataclass(frozen=True)
class LeaveOneOut:
    """Particle ``k``'s baseline from the other ``K − 1`` particles (needs ``K ≥ 2``)."""

    fit_term = _no_fit_term

    def init(self, signal: Signal):
        return None

    def advantage(self, signal: Signal, state):
        if signal.leave_one_out is None:
            raise ValueError(
                f"site {signal.site!r}: the leave_one_out baseline needs several particles "
                "(an objective with num_particles >= 2)"
            )
        return signal.leave_one_out(), state


@dataclass(frozen=True)
class Learned:
    """``b = fn(params, *args)``, trained by regression on the learning signal."""

    fn: Callable

    def init(self, signal: Signal):
        return None

    def _baseline(self, signal: Signal) -> jax.Array:
        return jnp.broadcast_to(self.fn(signal.params, *signal.args), jnp.shape(signal.value))

    def advantage(self, signal: Signal, state):
        return signal.value - jax.lax.stop_gradient(self._baseline(signal)), state

    def fit_term(self, signal: Signal) -> jax.Array:
        error = jax.lax.stop_gradient(signal.value) - self._baseline(signal)
        return -0.5 * jnp.sum(jnp.square(error))


BASELINE_TYPES = (NoBaseline, Constant, RunningMean, LeaveOneOut, Learned)


def no_baseline() -> NoBaseline:
    """No baseline (``b = 0``)."""
    return NoBaseline()


def constant(value: float) -> Constant:
    """A constant baseline ``b = value``."""
    return Constant(float(value))


def running_mean(decay: float = 0.9) -> RunningMean:
    """A bias-corrected exponential moving average of past learning signals."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"running_mean: decay must be in [0, 1), got {decay!r}")
    return RunningMean(float(decay))


def learned(fn: Callable) -> Learned:
    """A learned baseline ``b = fn(params, *args)`` trained with the objective (see above).

    Example:
        >>> import vijax as vj
        >>> baseline = vj.learned(lambda params, *args: params["baseline"])
    """
    if not callable(fn):
        raise ValueError(f"learned: fn must be callable, got {fn!r}")
    return Learned(fn)


def leave_one_out() -> LeaveOneOut:
    """The leave-one-out baseline across particles (VIMCO's for coupled objectives)."""
    return LeaveOneOut()
