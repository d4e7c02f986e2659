r"""The expectation API: objectives as programs, and their unbiased gradient estimators.

An *objective* is a function ``objective(params, key, *args) -> value`` that runs programs (a
family's sample sites draw fresh values, a model scores them) and returns a number to
**maximize**: an expectation ``L(φ) = E_{z ~ q_φ}[f(z, φ)]`` evaluated at one draw. The value may be

- a plain scalar array: any function of the draws;
- :class:`Terms`: a sum of named-axis terms (:meth:`Terms.from_trace`, :func:`particle_mean`)
  whose structure lets score-function estimators Rao-Blackwellize (below);
- the result of :func:`particle_log_mean_exp`: a value coupled across ``K`` particles
  (``(1/β) log (1/K) Σ_k exp(β W_k)``: the importance-weighted bound for ``β = 1``, Rényi
  bounds otherwise).

:func:`gradient_estimator` turns an objective into an unbiased estimator of ``∇_φ L`` that honours
each fresh site's strategy. It runs the objective under a handler that draws each fresh site by
its strategy (reparameterized sites keep the path ``φ → z``; score-function sites stop it and
record ``log q_φ(z)``), then differentiates the *surrogate*

    S(φ) = f(z, φ) + Σ_{score sites s} Σ_{elements i} ⊥[A_{s,i}] · log q_φ(z_{s,i}),

where ``⊥`` is ``stop_gradient`` and ``A_{s,i} = F_{s,i} − b_{s,i}`` is the learning signal minus
the site's baseline. ``E[∇S] = ∇L`` (Schulman et al. 2015, "Gradient Estimation Using Stochastic
Computation Graphs"; Foerster et al. 2018, DiCE). A learned baseline adds its own regression
term ``−½ Σ_i (⊥F_{s,i} − b_{s,i})²``, which only its parameters feel.

**Rao-Blackwellization over plates.** When the value is :class:`Terms`, the learning signal of
element ``i`` of score site ``s`` is the sum of the terms that can depend on ``z_{s,i}``: a term
inside a plate that also holds ``s`` contributes only its elements with the same index ``i``
(plate elements are conditionally independent), every other term contributes its sum. Particles
are plates too, so particle ``k``'s score multiplies only particle ``k``'s terms. The rule keeps a
plate axis of ``s`` only if every site drawn after ``s`` lies inside that plate (a site drawn
later outside the plate may pool all of ``s``'s elements); otherwise that axis is summed. It
relies on the program honouring its plates, as in NumPyro and Pyro.

Example:
    >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def family(phi):
    ...     return vj.sample("z", dist.Normal(phi, 1.0))
    >>> def objective(phi, key):  # E_{z ~ N(φ, 1)}[z²] = φ² + 1, gradient 2φ
    ...     z = vj.seed(family, key)(phi)
    ...     return z**2
    >>> value, grad = vj.value_and_grad_estimate(objective)(1.5, jax.random.key(0))
    >>> grads = jax.vmap(vj.grad_estimate(objective), (None, 0))(1.5,
    ...     jax.random.split(jax.random.key(0), 20000))
    >>> bool(abs(grads.mean() - 3.0) < 0.05)
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from numpyro.primitives import Messenger

from vijax.core import site_axes, site_log_prob
from vijax.estimators import Signal, draw, site_strategy, stops_density_gradient
from vijax.estimators.strategies import Enumerate

__all__ = [
    "GradientEstimator",
    "Terms",
    "grad_estimate",
    "gradient_estimator",
    "particle_log_mean_exp",
    "particle_mean",
    "value_and_grad_estimate",
]

PARTICLE_AXIS_PREFIX = "__particles"


# ----------------------------------------------------------------------------------------------
# Objective values
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Linear:
    """A term ``Σ array`` whose axes carry names (plates, particles) or ``None``.

    ``opaque`` marks an array of unknown provenance (a plain scalar the user added): it is part
    of every site's signal, and refuses leave-one-out baselines.
    """

    axes: tuple[str | None, ...]
    opaque: bool = False


@dataclass(frozen=True)
class _Coupled:
    """``(1/β) log (1/K) Σ_k exp(β W_k)`` over the particle axis ``axis`` (``W``: shape ``(K,)``).

    ``β = power``: 1 is the importance-weighted bound, ``1 − α`` the Rényi bound.
    """

    axis: str
    power: float = 1.0


@jax.tree_util.register_pytree_node_class
class Terms:
    """An objective value that is a sum of named-axis terms (and coupled particle blocks).

    Build it with :meth:`from_trace`, combine with ``+``, ``-`` and scalar ``*``, and read the
    number with :attr:`value`. Any other arithmetic must go through ``.value`` (which gives up
    the structure, and with it Rao-Blackwellization).
    """

    def __init__(self, arrays: tuple, kinds: tuple):
        self.arrays = tuple(arrays)
        self.kinds = tuple(kinds)

    def tree_flatten(self):
        return self.arrays, self.kinds

    @classmethod
    def tree_unflatten(cls, kinds, arrays):
        return cls(arrays, kinds)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_trace(
        cls, trace: dict, *, sites=None, sign: float = 1.0, family: bool = False
    ) -> Terms:
        """``sign ·`` the scaled log-density of each sample site of ``trace`` (or of ``sites``).

        With ``family=True`` the trace is a family's: a site drawn with the ``path`` strategy
        contributes its density with the distribution's parameters held fixed (``log q_{⊥φ}(z)``,
        sticking the landing), the value keeping its gradient path.
        """
        arrays, kinds = [], []
        for name, site in trace.items():
            if site["type"] != "sample" or (sites is not None and name not in sites):
                continue
            if family and stops_density_gradient(site_strategy(site)):
                site = {**site, "fn": jax.tree.map(jax.lax.stop_gradient, site["fn"])}
            log_prob = site_log_prob(site)
            arrays.append(sign * log_prob)
            kinds.append(_Linear(site_axes(site, jnp.ndim(log_prob))))
        return cls(arrays, kinds)

    @classmethod
    def of(cls, value: Any) -> Terms:
        """``value`` as :class:`Terms` (a plain array becomes one opaque term)."""
        if isinstance(value, Terms):
            return value
        value = jnp.asarray(value)
        if jnp.ndim(value) != 0:
            raise ValueError(
                f"an objective must return a scalar or vj.Terms, got shape {jnp.shape(value)}"
            )
        return cls((value,), (_Linear((), opaque=True),))

    @classmethod
    def term(cls, array, axes: tuple[str | None, ...]) -> Terms:
        """One term: ``array`` with its axes named (``None`` for an unnamed axis)."""
        array = jnp.asarray(array)
        if len(axes) != jnp.ndim(array):
            raise ValueError(
                f"Terms.term: {len(axes)} axis names for an array of shape {jnp.shape(array)}"
            )
        return cls((array,), (_Linear(tuple(axes)),))

    # -- arithmetic ------------------------------------------------------------------------
    def __add__(self, other):
        other = Terms.of(other)
        return Terms(self.arrays + other.arrays, self.kinds + other.kinds)

    __radd__ = __add__

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-Terms.of(other))

    def __rsub__(self, other):
        return Terms.of(other) + (-self)

    def __mul__(self, factor):
        if isinstance(factor, Terms) or jnp.ndim(factor) != 0:
            raise ValueError("Terms can only be multiplied by a scalar")
        arrays, kinds = [], []
        for array, kind in zip(self.arrays, self.kinds):
            if isinstance(kind, _Coupled):
                # a coupled block stays a block: scale it through a linear wrapper
                arrays.append(factor * _coupled_value(array, kind.power))
                kinds.append(_Linear((), opaque=True))
            else:
                arrays.append(factor * array)
                kinds.append(kind)
        return Terms(arrays, kinds)

    __rmul__ = __mul__

    # -- reading ---------------------------------------------------------------------------
    @property
    def value(self) -> jax.Array:
        """The number this objective value stands for."""
        total = jnp.zeros(())
        for array, kind in zip(self.arrays, self.kinds):
            total = total + (
                _coupled_value(array, kind.power) if isinstance(kind, _Coupled) else jnp.sum(array)
            )
        return total

    def __float__(self):
        return float(self.value)

    def __repr__(self):
        return f"Terms({len(self.arrays)} terms)"

    # -- learning signals --------------------------------------------------------------------
    def signal(self, record: _ScoreRecord) -> Signal:
        """The learning signal of a score site, aligned with its kept axes."""
        axes, shape = record.axes, jnp.shape(record.log_prob)
        total = jnp.zeros(shape)
        for array, kind in zip(self.arrays, self.kinds):
            if isinstance(kind, _Coupled):
                total = total + _coupled_value(array, kind.power)
            else:
                total = total + _align(array, kind.axes, axes)
        particle_axes = [a for a in axes if a.startswith(PARTICLE_AXIS_PREFIX)]
        loo = None
        if particle_axes and shape[axes.index(particle_axes[0])] >= 2:
            loo_axis = particle_axes[0]
            loo = lambda: self._leave_one_out(record, total, loo_axis)  # noqa: E731
        return Signal(
            value=total,
            axes=axes,
            averaged_axes=frozenset(particle_axes) | record.subsampled,
            leave_one_out=loo,
            site=record.name,
        )

    def _leave_one_out(self, record, signal, axis):
        """Signal minus particle ``k``'s baseline computed from the other particles."""
        position = record.axes.index(axis)
        num = signal.shape[position]
        advantage = jnp.zeros(signal.shape)
        for array, kind in zip(self.arrays, self.kinds):
            if isinstance(kind, _Coupled):
                if kind.axis != axis:
                    raise ValueError(
                        f"site {record.name!r}: leave_one_out over {axis!r} cannot handle a "
                        f"coupled block over {kind.axis!r}"
                    )
                shape = [1] * len(record.axes)
                shape[position] = num
                advantage = advantage + _vimco_advantage(array, kind.power).reshape(shape)
            elif kind.opaque:
                raise ValueError(
                    f"site {record.name!r}: leave_one_out needs per-particle structure, but the "
                    "objective adds a plain scalar; build it from vj.Terms / vj.particle_mean"
                )
            else:
                part = _align(array, kind.axes, record.axes)
                part = jnp.broadcast_to(part, signal.shape)
                others = (jnp.sum(part, axis=position, keepdims=True) - part) / (num - 1)
                advantage = advantage + part - others
        return advantage


def _coupled_value(log_weights, power=1.0):
    num = log_weights.shape[0]
    return (jax.nn.logsumexp(power * log_weights) - jnp.log(num)) / power


def _vimco_advantage(log_weights, power=1.0):
    """``f(W) − f(W with W_k := mean_{j≠k} W_j)`` (Mnih & Rezende 2016's VIMCO for ``f``)."""
    num = log_weights.shape[0]
    full = _coupled_value(log_weights, power)
    others_mean = (jnp.sum(log_weights) - log_weights) / (num - 1)
    replaced = jnp.where(jnp.eye(num, dtype=bool), others_mean[:, None], log_weights[None, :])
    return full - jax.vmap(lambda w: _coupled_value(w, power))(replaced)


def _align(array, array_axes, target_axes):
    """Sum ``array`` over axes not in ``target_axes``; lay the rest out as ``target_axes``."""
    keep = [i for i, a in enumerate(array_axes) if a is not None and a in target_axes]
    drop = tuple(i for i in range(jnp.ndim(array)) if i not in keep)
    reduced = jnp.sum(array, axis=drop) if drop else array
    kept_axes = [array_axes[i] for i in keep]
    order = sorted(range(len(kept_axes)), key=lambda j: target_axes.index(kept_axes[j]))
    reduced = jnp.transpose(reduced, order) if order != list(range(len(order))) else reduced
    sizes = dict(zip([kept_axes[j] for j in order], jnp.shape(reduced)))
    return jnp.reshape(reduced, [sizes.get(a, 1) for a in target_axes])


# ----------------------------------------------------------------------------------------------
# The estimation handler
# ----------------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclass
class _ScoreRecord:
    """A score-function site: ``log q(z)`` summed to its kept axes, and what they mean."""

    log_prob: jax.Array
    name: str = field(metadata=dict(static=True))
    strategy: Any = field(metadata=dict(static=True))
    axes: tuple[str, ...] = field(metadata=dict(static=True))
    subsampled: frozenset = field(metadata=dict(static=True))

    def with_particle_axis(self, axis: str) -> _ScoreRecord:
        return _ScoreRecord(
            self.log_prob, self.name, self.strategy, (axis, *self.axes), self.subsampled
        )


_ACTIVE: list[_Estimation] = []


class _Estimation(Messenger):
    """Draw every fresh sample site by its strategy; record the score-function sites.

    A fresh site is an unobserved sample site whose value no inner handler set (``replay``,
    ``substitute`` and ``condition`` set theirs first, as NumPyro applies inner handlers first).
    """

    def __init__(self, forced: dict | None = None):
        self.forced = forced or {}  # values of enumerated sites, by name
        super().__init__()

    def __enter__(self):
        self.enumerated: list[tuple[str, jax.Array, Any]] = []  # (name, support, dtype)
        self.enumerated_log_q: list[jax.Array] = []
        self._draws: list[frozenset] = []  # plate names of each fresh draw, in order
        self._pending: list[tuple[int, dict, Any]] = []
        self._subsampled: set[str] = set()
        self._particle_records: list[_ScoreRecord] = []
        _ACTIVE.append(self)
        super().__enter__()
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        _ACTIVE.remove(self)
        return super().__exit__(exc_type, exc_value, traceback)

    def process_message(self, msg) -> None:
        if msg["type"] == "plate":
            size, subsample_size = msg["args"]
            if subsample_size is not None and subsample_size != size:
                self._subsampled.add(msg["name"])
            return
        if msg["type"] != "sample" or msg["is_observed"] or msg["value"] is not None:
            return
        strategy = site_strategy(msg)
        if isinstance(strategy, Enumerate):
            self._enumerate(msg, strategy)
        else:
            draw(msg, strategy)
        self._draws.append(frozenset(frame.name for frame in msg["cond_indep_stack"]))
        if strategy.uses_score:
            self._pending.append((len(self._draws) - 1, msg, strategy))

    def _enumerate(self, msg, strategy) -> None:
        name, fn = msg["name"], msg["fn"]
        if msg["cond_indep_stack"] or tuple(fn.batch_shape) or tuple(fn.event_shape):
            raise ValueError(
                f"site {name!r}: enumeration of batched or plated sites is not supported yet "
                "(use vj.score_function() with a baseline there)"
            )
        if name in self.forced:
            msg["value"], msg["intermediates"] = self.forced[name], []
            self.enumerated_log_q.append(fn.log_prob(msg["value"]))
        else:  # the discovery pass: any value will do, the sums come later
            draw(msg, strategy)
            support = fn.enumerate_support(expand=False).reshape(-1)
            self.enumerated.append((name, support, msg["value"].dtype))

    def add_particle_block(self, records: list[_ScoreRecord], axis: str) -> None:
        """Adopt the records of a vmapped particle block (drawn now, outside every plate)."""
        self._draws.append(frozenset())
        self._particle_records.extend(record.with_particle_axis(axis) for record in records)

    def records(self) -> list[_ScoreRecord]:
        """Score records, each reduced to the plate axes the Rao-Blackwell rule keeps."""
        out = []
        for index, msg, strategy in self._pending:
            later = self._draws[index + 1 :]
            log_prob = msg.get("score_log_prob")
            if log_prob is None:
                log_prob = site_log_prob(msg, scaled=False)
            axes = site_axes(msg, jnp.ndim(log_prob))
            kept = [
                i
                for i, a in enumerate(axes)
                if a is not None and all(a in plates for plates in later)
            ]
            drop = tuple(i for i in range(len(axes)) if i not in kept)
            log_prob = jnp.sum(log_prob, axis=drop) if drop else log_prob
            kept_axes = tuple(axes[i] for i in kept)
            subsampled = frozenset(a for a in kept_axes if a in self._subsampled)
            out.append(_ScoreRecord(log_prob, msg["name"], strategy, kept_axes, subsampled))
        return out + self._particle_records


def _active_estimation() -> _Estimation | None:
    return _ACTIVE[-1] if _ACTIVE else None


# ----------------------------------------------------------------------------------------------
# Particles
# ----------------------------------------------------------------------------------------------


def _particles(fn, key, num_particles: int, per_particle=()):
    """Run ``fn(key_k, *per_particle[k])`` for ``K`` split keys under ``vmap``.

    Score records made inside are carried out of the ``vmap`` with a particle axis.
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
    keys = jax.random.split(key, num_particles)
    axis = f"{PARTICLE_AXIS_PREFIX}{len(_ACTIVE)}__"
    outer = _active_estimation()
    if outer is None:
        return jax.vmap(lambda k, *extra: Terms.of(fn(k, *extra)))(keys, *per_particle), axis

    def one(k, *extra):
        with _Estimation() as inner:
            value = Terms.of(fn(k, *extra))
        if inner.enumerated:
            raise NotImplementedError(
                f"enumerated site(s) {[n for n, _, _ in inner.enumerated]} inside a particle "
                "block (enumerate a single-particle objective instead)"
            )
        return value, inner.records()

    value, records = jax.vmap(one)(keys, *per_particle)
    outer.add_particle_block(records, axis)
    return value, axis


def particle_mean(fn: Callable, key, num_particles: int, *per_particle) -> Terms:
    r"""``(1/K) Σ_k fn(key_k)``, vectorized with ``vmap``; particles act as a plate.

    ``fn(key) -> Terms | scalar`` is one particle. The result keeps each particle's terms on a
    particle axis, so a score-function site of particle ``k`` is credited only with particle
    ``k``'s terms, and leave-one-out baselines are available. Arrays in ``per_particle``
    (leading axis ``K``) are passed to particle ``k`` as ``fn(key_k, *row_k)``.
    """
    stacked, axis = _particles(fn, key, num_particles, per_particle)
    arrays, kinds = [], []
    for array, kind in zip(stacked.arrays, stacked.kinds):
        if isinstance(kind, _Coupled):
            # an inner coupled block (a nested importance-weighted estimate) is one number per
            # outer particle: a term on the outer particle axis, the whole block every inner
            # site's signal (leave-one-out then works over the outer particles)
            array = jax.vmap(lambda w, power=kind.power: _coupled_value(w, power))(array)
            kind = _Linear(())
        arrays.append(array / num_particles)
        kinds.append(_Linear((axis, *kind.axes), opaque=False))
    return Terms(arrays, kinds)


def particle_log_mean_exp(
    fn: Callable, key, num_particles: int, *per_particle, power: float = 1.0
) -> Terms:
    r"""``(1/β) log (1/K) Σ_k exp(β W_k)`` with ``W_k = fn(key_k)`` and ``β = power``.

    With ``β = 1`` it is the importance-weighted bound; with ``β = 1 − α`` the Rényi bound
    (``β ≠ 0``; the limit ``β → 0`` is the mean, :func:`particle_mean`).

    The value couples the particles, so a score-function site's learning signal is the whole
    value; with the leave-one-out baseline it is VIMCO's (Mnih & Rezende 2016). Arrays in
    ``per_particle`` (leading axis ``K``) are passed to particle ``k`` as ``fn(key_k, *row_k)``.
    """
    if power == 0:
        raise ValueError("particle_log_mean_exp: power must be nonzero (use particle_mean)")
    stacked, axis = _particles(fn, key, num_particles, per_particle)
    log_weights = jnp.zeros((num_particles,))
    for array, kind in zip(stacked.arrays, stacked.kinds):
        if isinstance(kind, _Coupled):  # a nested block: one number per outer particle
            array = jax.vmap(lambda w, power=kind.power: _coupled_value(w, power))(array)
        log_weights = log_weights + jnp.sum(array.reshape(num_particles, -1), axis=1)
    return Terms((log_weights,), (_Coupled(axis, float(power)),))


# ----------------------------------------------------------------------------------------------
# Gradient estimators
# ----------------------------------------------------------------------------------------------


class GradientEstimator(NamedTuple):
    """An unbiased gradient estimator of an objective, as a pair of pure functions.

    ``init(params, key, *args) -> state`` builds the state of stateful baselines (running
    means); ``estimate(params, state, key, *args) -> (value, grads, state)`` returns the
    objective's value at this draw, an unbiased estimate of its gradient, and the new state.
    """

    init: Callable
    estimate: Callable


def _state_key(name: str, seen: dict) -> str:
    count = seen.get(name, 0)
    seen[name] = count + 1
    return name if count == 0 else f"{name}#{count}"


def gradient_estimator(objective: Callable) -> GradientEstimator:
    """Turn ``objective(params, key, *args)`` into a :class:`GradientEstimator`.

    The estimate is ``∇_φ`` of the surrogate in this module's docstring: pathwise through
    reparameterized sites, score terms (with baselines, Rao-Blackwellized over plates and
    particles) for score-function sites. It composes with ``jit``, ``vmap`` and ``grad``.
    """

    def run(params, state, key, args, kwargs, forced=None):
        """One evaluation: ``(value, zero-valued score terms, baseline fit terms, state, h)``."""
        with _Estimation(forced) as handler:
            out = Terms.of(objective(params, key, *args, **kwargs))
        score, fit = jnp.zeros(()), jnp.zeros(())
        new_state, seen = {}, {}
        for record in handler.records():
            state_key = _state_key(record.name, seen)
            baseline = record.strategy.baseline
            site_state = None if state is None else state.get(state_key)
            signal = dataclasses.replace(out.signal(record), params=params, args=args)
            advantage, site_state = baseline.advantage(signal, site_state)
            if site_state is not None:
                new_state[state_key] = site_state
            log_q = record.log_prob
            score = score + jnp.sum(
                jax.lax.stop_gradient(advantage) * (log_q - jax.lax.stop_gradient(log_q))
            )
            fit = fit + baseline.fit_term(signal)
        return out.value, score, fit, new_state, handler

    def surrogate(params, state, key, args, kwargs):
        value, score, fit, new_state, handler = run(params, state, key, args, kwargs)
        if not handler.enumerated:
            return value + score + fit, (value, new_state)
        # Exact sums over the enumerated sites: the objective at every joint value of their
        # supports, with the same key (every other draw repeats), weighted by Π q_φ(v).
        names = [name for name, _, _ in handler.enumerated]
        dtypes = [dtype for _, _, dtype in handler.enumerated]
        grids = jnp.meshgrid(*[support for _, support, _ in handler.enumerated], indexing="ij")
        grid = [g.reshape(-1) for g in grids]

        def at(*values):
            forced = {n: v.astype(d) for n, v, d in zip(names, values, dtypes)}
            value, score, fit, new_state, handler = run(params, state, key, args, kwargs, forced)
            if handler.enumerated:
                raise ValueError(
                    f"enumerated site(s) {[n for n, _, _ in handler.enumerated]} appear only "
                    "for some values of other enumerated sites"
                )
            return sum(handler.enumerated_log_q), value, score, fit, new_state

        log_w, values, scores, fits, states = jax.vmap(at)(*grid)
        weights = jnp.exp(log_w)
        fixed = jax.lax.stop_gradient(weights)
        value = jnp.sum(weights * values)
        total = value + jnp.sum(weights * scores) + jnp.sum(fixed * fits)
        mean = lambda x: jnp.tensordot(fixed, x, axes=1)  # noqa: E731
        new_state = jax.tree.map(
            lambda x: jnp.round(mean(x)).astype(x.dtype) if x.dtype.kind in "iu" else mean(x),
            states,
        )
        return total, (value, new_state)

    def estimate(params, state, key, *args, **kwargs):
        grads, (value, new_state) = jax.grad(surrogate, has_aux=True)(
            params, state, key, args, kwargs
        )
        return jax.lax.stop_gradient(value), grads, new_state

    def init(params, key, *args, **kwargs):
        shapes = jax.eval_shape(lambda: estimate(params, None, key, *args, **kwargs)[2])
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    return GradientEstimator(init, estimate)


def value_and_grad_estimate(objective: Callable) -> Callable:
    """``fn(params, key, *args) -> (value, grads)``: one unbiased draw (stateless baselines).

    Running-mean baselines start from their initial state on every call here; use
    :func:`gradient_estimator` (or :func:`vijax.fit`) to carry them across steps.
    """
    estimator = gradient_estimator(objective)

    def value_and_grad(params, key, *args, **kwargs):
        value, grads, _ = estimator.estimate(params, None, key, *args, **kwargs)
        return value, grads

    return value_and_grad


def grad_estimate(objective: Callable) -> Callable:
    """``fn(params, key, *args) -> grads``: an unbiased estimate of ``∇ objective``."""
    value_and_grad = value_and_grad_estimate(objective)
    return lambda params, key, *args, **kwargs: value_and_grad(params, key, *args, **kwargs)[1]
