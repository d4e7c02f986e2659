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
import numpy as np
from numpyro.primitives import Messenger

from vijax.core import ENUMERATED, site_axes, site_log_prob
from vijax.core.density import LOG_PROB_CACHE
from vijax.estimators import Signal, draw, site_strategy, stops_density_gradient
from vijax.estimators.mvd import MeasureValued, couplings
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
    """``c · (1/β) log (1/K) Σ_k exp(β W_k)`` over the particle axis ``axis`` (``W``: ``(K,)``).

    ``β = power``: 1 is the importance-weighted bound, ``1 − α`` the Rényi bound; ``c = scale``
    (−1 for CUBO, which is minimized). With ``plates`` the block is one bound per element of
    those plates, summed: ``W`` is ``(K, *plate sizes)`` and elements couple only their own
    particles (the per-datum IWAE of Burda et al.).
    """

    axis: str
    power: float = 1.0
    scale: float = 1.0
    plates: tuple[str, ...] = ()

    def per_element(self, log_weights):
        """The bound of every plate element (a scalar without plates)."""
        return self.scale * _coupled_value(log_weights, self.power)

    def value(self, log_weights):
        return jnp.sum(self.per_element(log_weights))


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
        sticking the landing), the value keeping its gradient path. Traces from
        :func:`vijax.objectives.importance_traces` carry that density already (re-run with
        stopped family parameters, which keeps the path through earlier values); for other
        traces the site's distribution object is stopped, exact for sites that read no
        earlier value.
        """
        arrays, kinds = [], []
        for name, site in trace.items():
            if site["type"] != "sample" or (sites is not None and name not in sites):
                continue
            if (
                family
                and stops_density_gradient(site_strategy(site))
                and not site.get("path_density")
            ):
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
            if isinstance(kind, _Coupled) and isinstance(factor, int | float):
                arrays.append(array)  # a block stays a block, with its scale
                kinds.append(dataclasses.replace(kind, scale=kind.scale * float(factor)))
            elif isinstance(kind, _Coupled):  # a traced factor: the block's value, opaque
                arrays.append(factor * kind.value(array))
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
            total = total + (kind.value(array) if isinstance(kind, _Coupled) else jnp.sum(array))
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
            if isinstance(kind, _Coupled):  # each element's block, on the site's plates
                total = total + _align(kind.per_element(array), kind.plates, axes)
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
                part = kind.scale * _vimco_advantage(array, kind.power)
                advantage = advantage + _align(part, (kind.axis, *kind.plates), record.axes)
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
    """``(1/β) log (1/K) Σ_k exp(β W_k)`` along the leading (particle) axis of ``W``."""
    num = log_weights.shape[0]
    return (jax.nn.logsumexp(power * log_weights, axis=0) - jnp.log(num)) / power


def _replace_rows(base, rows):
    """``(K, K, ...)``: for each ``k``, ``base`` with its row ``k`` replaced by ``rows[k]``."""
    num = base.shape[0]
    eye = jnp.eye(num, dtype=bool).reshape((num, num) + (1,) * (base.ndim - 1))
    return jnp.where(eye, rows[:, None], base[None])


def _vimco_advantage(log_weights, power=1.0):
    """``f(W) − f(W with W_k := mean_{j≠k} W_j)`` (Mnih & Rezende 2016's VIMCO for ``f``),
    per trailing (plate) element of ``W``."""
    num = log_weights.shape[0]
    full = _coupled_value(log_weights, power)
    others_mean = (jnp.sum(log_weights, axis=0) - log_weights) / (num - 1)
    replaced = _replace_rows(log_weights, others_mean)
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


@jax.tree_util.register_dataclass
@dataclass
class _LocalSite:
    """An enumerated or measure-valued site: what its re-evaluations need.

    ``layout`` names each axis of ``value``: a kept plate or particle axis (its elements are
    perturbed together, being conditionally independent), or ``None`` (batch axes that the
    Rao-Blackwell rule does not keep, and event axes: perturbed one element at a time).
    """

    value: jax.Array
    log_q: jax.Array  # log q(value), batch-shaped (enumeration weights)
    extra: Any  # enumeration: the support, shape (C, *event); mvd: list of Couplings
    name: str = field(metadata=dict(static=True))
    strategy: Any = field(metadata=dict(static=True))
    layout: tuple = field(metadata=dict(static=True))
    batch_ndim: int = field(metadata=dict(static=True))

    def with_particle_axis(self, axis: str) -> _LocalSite:
        return _LocalSite(
            self.value,
            self.log_q,
            self.extra,
            self.name,
            self.strategy,
            (axis, *self.layout),
            self.batch_ndim + 1,
        )


_ACTIVE: list[_Estimation] = []


class _Estimation(Messenger):
    """Draw every fresh sample site by its strategy; record score and local sites.

    A fresh site is an unobserved sample site whose value no inner handler set (``replay``,
    ``substitute`` and ``condition`` set theirs first, as NumPyro applies inner handlers first).
    ``forced`` gives the values of enumerated / measure-valued sites in a re-evaluation;
    ``lifted`` maps a forced site drawn inside particle blocks to those blocks' axes.
    """

    def __init__(self, forced: dict | None = None, lifted: dict | None = None):
        self.forced = forced or {}
        self.lifted = lifted or {}
        self._broadcast = list(self.forced.values())
        super().__init__()

    def __enter__(self):
        self._draws: list[frozenset] = []  # plate names of each fresh draw, in order
        self._pending: list[tuple[int, dict, Any]] = []
        self._local: list[tuple[int, dict, Any, Any, Any]] = []
        self._subsampled: set[str] = set()
        self._particle_records: list[_ScoreRecord] = []
        self._particle_local: list[_LocalSite] = []
        self.blocks = 0  # particle blocks opened so far (names their axes)
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
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        if msg["value"] is not None:
            if any(msg["value"] is v for v in self._broadcast):
                msg[ENUMERATED] = True  # a replayed enumerated value (the model's copy)
            return
        strategy = site_strategy(msg)
        local = isinstance(strategy, Enumerate | MeasureValued)
        if local and msg["name"] in self.forced and not self.lifted.get(msg["name"]):
            msg["value"], msg["intermediates"] = self.forced[msg["name"]], []
            if isinstance(strategy, Enumerate):
                msg[ENUMERATED] = True
        else:
            draw(msg, strategy)
        self._draws.append(frozenset(frame.name for frame in msg["cond_indep_stack"]))
        if strategy.uses_score or local:  # log q is read again by the objective's terms
            msg[LOG_PROB_CACHE] = {}  # shared with the trace's copy of this site
        if strategy.uses_score:
            self._pending.append((len(self._draws) - 1, msg, strategy))
        if local:
            self._local.append((len(self._draws) - 1, msg, strategy, *self._local_extra(msg)))

    def _local_extra(self, msg):
        fn, value = msg["fn"], msg["value"]
        if isinstance(site_strategy(msg), Enumerate):
            support = fn.enumerate_support(expand=False)
            support = support.reshape((support.shape[0], *fn.event_shape))
            return site_log_prob(msg, scaled=False), support
        if self.forced:  # a re-evaluation: couplings are not needed
            return jnp.zeros(()), None
        key = jax.random.fold_in(msg["kwargs"]["rng_key"], 0x6D7664)
        return jnp.zeros(()), couplings(fn, value, key, msg["name"])

    def _kept_axes(self, index: int, msg: dict, ndim: int) -> tuple:
        """The site's batch axis names, ``None`` where the Rao-Blackwell rule drops the axis."""
        later = self._draws[index + 1 :]
        return tuple(
            a if a is not None and all(a in plates for plates in later) else None
            for a in site_axes(msg, ndim)
        )

    def add_particle_block(self, records, local, axis: str) -> None:
        """Adopt the records of a vmapped particle block (drawn now, outside every plate)."""
        self._draws.append(frozenset())
        self._particle_records.extend(record.with_particle_axis(axis) for record in records)
        self._particle_local.extend(site.with_particle_axis(axis) for site in local)

    def records(self) -> list[_ScoreRecord]:
        """Score records, each reduced to the plate axes the Rao-Blackwell rule keeps."""
        out = []
        for index, msg, strategy in self._pending:
            log_prob = msg.get("score_log_prob")
            if log_prob is None:
                log_prob = site_log_prob(msg, scaled=False)
            axes = self._kept_axes(index, msg, jnp.ndim(log_prob))
            kept = [i for i, a in enumerate(axes) if a is not None]
            drop = tuple(i for i in range(len(axes)) if i not in kept)
            log_prob = jnp.sum(log_prob, axis=drop) if drop else log_prob
            kept_axes = tuple(axes[i] for i in kept)
            subsampled = frozenset(a for a in kept_axes if a in self._subsampled)
            out.append(_ScoreRecord(log_prob, msg["name"], strategy, kept_axes, subsampled))
        return out + self._particle_records

    def local_sites(self) -> list[_LocalSite]:
        """Enumerated and measure-valued sites with their layouts."""
        out = []
        for index, msg, strategy, log_q, extra in self._local:
            value = msg["value"]
            event_ndim = len(msg["fn"].event_shape)
            batch_ndim = jnp.ndim(value) - event_ndim
            layout = self._kept_axes(index, msg, batch_ndim) + (None,) * event_ndim
            out.append(_LocalSite(value, log_q, extra, msg["name"], strategy, layout, batch_ndim))
        return out + self._particle_local


def _active_estimation() -> _Estimation | None:
    return _ACTIVE[-1] if _ACTIVE else None


# ----------------------------------------------------------------------------------------------
# Particles
# ----------------------------------------------------------------------------------------------


PARTICLE_MESH_AXIS = "particles"  # a mesh axis of this name splits the particles (vijax.fit)


def _particles(fn, key, num_particles: int, per_particle=()):
    """Run ``fn(key_k, *per_particle[k])`` for ``K`` split keys under ``vmap``.

    Score records and measure-valued sites made inside are carried out of the ``vmap`` with a
    particle axis; forced values of sites inside the block are passed in row by row. When the
    ambient mesh (``jax.sharding.get_abstract_mesh()``) has a ``"particles"`` axis, the
    outermost block's particles are split over it (a sharding constraint on the keys).
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
    keys = jax.random.split(key, num_particles)
    if PARTICLE_MESH_AXIS in jax.sharding.get_abstract_mesh().axis_names and len(_ACTIVE) <= 1:
        spec = jax.sharding.PartitionSpec(PARTICLE_MESH_AXIS)
        keys = jax.lax.with_sharding_constraint(keys, spec)
    outer = _active_estimation()
    if outer is None:
        axis = f"{PARTICLE_AXIS_PREFIX}{len(_ACTIVE)}__"
        return jax.vmap(lambda k, *extra: Terms.of(fn(k, *extra)))(keys, *per_particle), axis
    axis = f"{PARTICLE_AXIS_PREFIX}{len(_ACTIVE)}_{outer.blocks}__"
    outer.blocks += 1
    inside = {n: path[1:] for n, path in outer.lifted.items() if path[:1] == (axis,)}
    forced = {n: outer.forced[n] for n in inside if n in outer.forced}

    def one(k, forced_k, *extra):
        with _Estimation(forced_k, inside) as inner:
            value = Terms.of(fn(k, *extra))
        local = inner.local_sites()
        enumerated = [site.name for site in local if isinstance(site.strategy, Enumerate)]
        if enumerated:
            raise ValueError(
                f"site(s) {enumerated}: enumeration inside a particle block would need every "
                "particle's values jointly; enumerate a single-particle objective, or use "
                "vj.mvd() / vj.score_function() there"
            )
        return value, inner.records(), local

    value, records, local = jax.vmap(one)(keys, forced, *per_particle)
    outer.add_particle_block(records, local, axis)
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
            array = jax.vmap(kind.value)(array)
            kind = _Linear(())
        arrays.append(array / num_particles)
        kinds.append(_Linear((axis, *kind.axes), opaque=False))
    return Terms(arrays, kinds)


def particle_log_mean_exp(
    fn: Callable,
    key,
    num_particles: int,
    *per_particle,
    power: float = 1.0,
    plate: str | None = None,
) -> Terms:
    r"""``(1/β) log (1/K) Σ_k exp(β W_k)`` with ``W_k = fn(key_k)`` and ``β = power``.

    With ``β = 1`` it is the importance-weighted bound; with ``β = 1 − α`` the Rényi bound
    (``β ≠ 0``; the limit ``β → 0`` is the mean, :func:`particle_mean`).

    The value couples the particles, so a score-function site's learning signal is the whole
    value; with the leave-one-out baseline it is VIMCO's (Mnih & Rezende 2016). Arrays in
    ``per_particle`` (leading axis ``K``) are passed to particle ``k`` as ``fn(key_k, *row_k)``.

    With ``plate`` the bound is taken per element of that plate and summed,
    ``Σ_i (1/β) log (1/K) Σ_k exp(β W_{ik})``, where ``W_{ik}`` collects particle ``k``'s terms
    of element ``i`` (every term must lie in the plate): the per-datum IWAE of Burda et al.
    (2016). Each element's particles couple only among themselves, so a score site of datum
    ``i`` gets datum ``i``'s block as its signal (Rao-Blackwellized per datum), leave-one-out
    is VIMCO per datum, and measure-valued sites perturb all data at once.
    """
    if power == 0:
        raise ValueError("particle_log_mean_exp: power must be nonzero (use particle_mean)")
    stacked, axis = _particles(fn, key, num_particles, per_particle)
    if plate is not None:
        log_weights = None
        for array, kind in zip(stacked.arrays, stacked.kinds):
            if isinstance(kind, _Coupled) or plate not in kind.axes:
                what = "a nested coupled block" if isinstance(kind, _Coupled) else "a term"
                raise ValueError(
                    f"particle_log_mean_exp: {what} with axes "
                    f"{getattr(kind, 'axes', ())} is not inside plate {plate!r}; a per-element "
                    "bound needs every term of a particle inside that plate"
                )
            per = jax.vmap(lambda a, kind=kind: _align(a, kind.axes, (plate,)))(array)
            log_weights = per if log_weights is None else log_weights + per
        if log_weights is None:
            raise ValueError("particle_log_mean_exp: the particle returned no terms")
        return Terms((log_weights,), (_Coupled(axis, float(power), plates=(plate,)),))
    log_weights = jnp.zeros((num_particles,))
    for array, kind in zip(stacked.arrays, stacked.kinds):
        if isinstance(kind, _Coupled):  # a nested block: one number per outer particle
            array = jax.vmap(kind.value)(array)
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


def _score_terms(out: Terms, records, state, params, args):
    """Per record: the zero-valued score array ``⊥A·(ℓ − ⊥ℓ)``, the fit term, and new state."""
    scores, fits, new_state, seen = [], [], {}, {}
    for record in records:
        state_key = _state_key(record.name, seen)
        baseline = record.strategy.baseline
        site_state = None if state is None else state.get(state_key)
        signal = dataclasses.replace(out.signal(record), params=params, args=args)
        advantage, site_state = baseline.advantage(signal, site_state)
        if site_state is not None:
            new_state[state_key] = site_state
        log_q = record.log_prob
        stop = jax.lax.stop_gradient
        scores.append(stop(advantage) * (log_q - stop(log_q)))
        fits.append(baseline.fit_term(signal))
    return scores, fits, new_state


def _local_signal(base: Terms, forced: Terms, layout: tuple) -> jax.Array:
    """The objective seen by each element of a site after its value is replaced.

    ``forced`` is the objective re-evaluated with every element of the site replaced at once.
    Terms sharing a kept plate / particle axis of the site are read per element (those
    elements are conditionally independent); a coupled particle block over a kept particle
    axis is recomputed with only particle ``k``'s weight replaced, as the elements along that
    axis are not independent there; every other term counts whole.
    """
    total = jnp.zeros([1] * len(layout))
    for b, f, kind in zip(base.arrays, forced.arrays, base.kinds):
        if isinstance(kind, _Coupled) and kind.axis in layout:
            # particle k's weights replaced, every plate element's block recomputed
            values = jax.vmap(kind.per_element)(_replace_rows(b, f))
            total = total + _align(values, (kind.axis, *kind.plates), layout)
        elif isinstance(kind, _Coupled):
            total = total + kind.value(f)
        else:
            total = total + _align(f, kind.axes, layout)
    return total


def _element_masks(shape: tuple, layout: tuple) -> jax.Array:
    """``(E, *shape)`` masks, one per element along the ``None`` axes of ``layout``."""
    free = [i for i, a in enumerate(layout) if a is None]
    sizes = [shape[i] for i in free]
    count = int(np.prod(sizes, dtype=int))
    index = jnp.arange(count).reshape(sizes)
    index = jnp.expand_dims(index, [i for i in range(len(shape)) if i not in free])
    index = jnp.broadcast_to(index, shape)
    return index[None] == jnp.arange(count).reshape((count,) + (1,) * len(shape))


def _measure_valued_term(site: _LocalSite, base: Terms, evaluate: Callable) -> jax.Array:
    """``Σ_θ Σ_i ⊥[c_i (F⁺_i − F⁻_i)] (θ_i − ⊥θ_i)``: the site's measure-valued surrogate.

    ``F^±`` come from re-evaluations with the coupled values (same key: common random
    numbers), all elements along kept axes at once, the others one at a time.
    """
    stop = jax.lax.stop_gradient
    shape, layout = jnp.shape(site.value), site.layout
    if any(isinstance(kind, _Linear) and kind.opaque for kind in base.kinds):
        layout = (None,) * len(layout)  # a plain number may read every element: one at a time
    elif any(isinstance(kind, _Coupled) and kind.axis in layout for kind in base.kinds):
        # a coupled block sums each particle's plate elements into one weight before coupling
        # them: plate elements of one particle are not separable there, so perturb them one
        # at a time (particle axes stay: the block is re-scored particle by particle), unless
        # the block couples each element of that plate separately (a per-datum block)
        separate = set.intersection(
            *[
                set(kind.plates)
                for kind in base.kinds
                if isinstance(kind, _Coupled) and kind.axis in layout
            ]
        )
        layout = tuple(
            a if a is None or a.startswith(PARTICLE_AXIS_PREFIX) or a in separate else None
            for a in layout
        )
    alternatives = [v for c in site.extra for v in (c.plus, c.minus) if v is not None]
    masks = _element_masks(shape, layout)
    values = jnp.stack(alternatives).astype(site.value.dtype)
    runs = jnp.where(masks[None], values[:, None], site.value)
    runs = runs.reshape((-1, *shape))
    signals = jax.vmap(lambda v: _local_signal(base, evaluate(v), layout))(runs)
    signals = signals.reshape((len(alternatives), masks.shape[0], *signals.shape[1:]))
    per_element = stop(jnp.sum(jnp.where(masks[None], signals, 0.0), axis=1))
    at_draw = stop(jnp.broadcast_to(_local_signal(base, base, layout), shape))
    term, position = jnp.zeros(()), 0
    for coupling in site.extra:
        sides = []
        for value in (coupling.plus, coupling.minus):
            if value is None:
                sides.append(at_draw)
            else:
                sides.append(per_element[position])
                position += 1
        difference = stop(coupling.coef * (sides[0] - sides[1]))
        term = term + jnp.sum(difference * (coupling.theta - stop(coupling.theta)))
    return term


def _lifted(site: _LocalSite) -> tuple:
    return tuple(a for a in site.layout if a is not None and a.startswith(PARTICLE_AXIS_PREFIX))


def gradient_estimator(objective: Callable) -> GradientEstimator:
    """Turn ``objective(params, key, *args)`` into a :class:`GradientEstimator`.

    The estimate is ``∇_φ`` of the surrogate in this module's docstring: pathwise through
    reparameterized sites, score terms (with baselines, Rao-Blackwellized over plates and
    particles) for score-function sites, exact sums for enumerated sites and coupled
    re-evaluations for measure-valued sites (both below). It composes with ``jit``, ``vmap``
    and ``grad``.

    **Enumeration** (``vj.enumeration()``) re-runs the objective at every joint value of the
    enumerated sites' supports with the same key (every other draw repeats) and weights the
    runs by ``Π q_φ(v)``. A site inside plates is enumerated per element, never over the
    product space: with ``C`` values, ``C`` runs set every element at once, and each term that
    carries the site's plate axes is weighted element by element. This relies on the plates'
    conditional independence: terms outside the site's plates must not depend on it (as for
    Pyro's ``TraceEnum_ELBO``), and a later draw outside them is refused (the site's elements
    could not then be summed separately).

    **Measure-valued derivatives** (``vj.mvd()``) add ``⊥[c (F⁺ − F⁻)] · θ`` per distribution
    parameter ``θ`` (see :mod:`vijax.estimators.mvd`), with ``F^±`` the objective re-evaluated
    at the coupled values of the site (same key).
    """

    def evaluate(params, key, args, kwargs, forced=None, lifted=None):
        with _Estimation(forced, lifted) as handler:
            out = Terms.of(objective(params, key, *args, **kwargs))
        return out, handler.records(), handler.local_sites()

    def surrogate(params, state, key, args, kwargs):
        out, records, local = evaluate(params, key, args, kwargs)
        enumerated = [site for site in local if isinstance(site.strategy, Enumerate)]
        measured = [site for site in local if isinstance(site.strategy, MeasureValued)]
        if enumerated and measured:
            raise NotImplementedError(
                f"sites {[site.name for site in enumerated]} are enumerated and "
                f"{[site.name for site in measured]} measure-valued in one objective; use one "
                "of the two strategies (or the score function) for now"
            )
        if enumerated:
            return _enumerate(params, state, key, args, kwargs, out, records, enumerated)
        scores, fits, new_state = _score_terms(out, records, state, params, args)
        total = out.value + sum(jnp.sum(x) for x in scores) + sum(fits)
        fixed = jax.lax.stop_gradient(params)
        for site in measured:

            def at(value, site=site):
                forced = {site.name: value}
                lifted = {site.name: _lifted(site)}
                return evaluate(fixed, key, args, kwargs, forced, lifted)[0]

            total = total + _measure_valued_term(site, out, at)
        return total, (out.value, new_state)

    def _enumerate(params, state, key, args, kwargs, out, records, sites):
        for site in sites:
            if any(a is None for a in site.layout[: site.batch_ndim]):
                raise ValueError(
                    f"site {site.name!r}: enumeration sums each element separately along "
                    "plates, but this site has batch axes outside a vj.plate (or in a plate "
                    "that a later draw outside it pools); put them in a plate, or use "
                    "vj.score_function() / vj.mvd()"
                )
        plated = [site for site in sites if site.batch_ndim]
        kept = plated[0].layout[: plated[0].batch_ndim] if plated else ()
        for site in plated:
            if set(site.layout[: site.batch_ndim]) != set(kept) or len(plated) != len(sites):
                raise NotImplementedError(
                    f"enumerated sites {[s.name for s in sites]} lie in different plates; "
                    "enumerating them together is not supported yet"
                )
        names = [site.name for site in sites]
        grids = jnp.meshgrid(*[jnp.arange(site.extra.shape[0]) for site in sites], indexing="ij")
        grid = [g.reshape(-1) for g in grids]

        def at(*indices):
            # each support point with size-1 plate axes: it broadcasts along the plates (the
            # model gathers per value, not per datum: no N-fold gathers and scatters)
            forced = {
                site.name: site.extra[i]
                .reshape((1,) * site.batch_ndim + site.extra.shape[1:])
                .astype(site.value.dtype)
                for site, i in zip(sites, indices)
            }
            out, records, local = evaluate(params, key, args, kwargs, forced)
            missing = [s.name for s in local if s.name not in forced]
            if missing:
                raise ValueError(
                    f"enumerated site(s) {missing} appear only for some values of {names}"
                )
            log_q = [_align(s.log_q, s.layout[: s.batch_ndim], kept) for s in local]
            scores, fits, new_state = _score_terms(out, records, state, params, args)
            return sum(log_q), out, records, scores, fits, new_state

        log_w, outs, runs, scores, fits, states = jax.vmap(at)(*grid)
        weights = jnp.exp(log_w)  # (R, *kept sizes): per-element weights of each run
        fixed = jax.lax.stop_gradient(weights)
        share = jnp.mean(fixed.reshape(fixed.shape[0], -1), axis=1)  # (R,), sums to 1
        per = lambda w, axes: jax.vmap(lambda x: _align(x, kept, axes))(w)  # noqa: E731
        arrays, kinds = [], []
        for array, kind in zip(outs.arrays, outs.kinds):
            if isinstance(kind, _Linear) and set(kept) <= set(kind.axes):
                arrays.append(jnp.sum(per(weights, kind.axes) * array, axis=0))
                kinds.append(kind)
            elif isinstance(kind, _Coupled) and not kept:  # global sites: weight each run's block
                arrays.append(jnp.sum(weights * jax.vmap(kind.value)(array)))
                kinds.append(_Linear((), opaque=True))
            else:  # outside the site's plates: the same in every run
                arrays.append(array[0])
                kinds.append(kind)
        combined = Terms(arrays, kinds)
        total = combined.value
        mean = lambda x: jnp.tensordot(share, x, axes=1)  # noqa: E731
        new_state = jax.tree.map(
            lambda x: jnp.round(mean(x)).astype(x.dtype) if x.dtype.kind in "iu" else mean(x),
            states,
        )
        first = jax.tree.map(lambda x: x[0], runs)
        outside = []
        for index, record in enumerate(first):
            if set(kept) <= set(record.axes):
                total = total + jnp.sum(per(weights, record.axes) * scores[index])
                total = total + jnp.sum(share * fits[index])
            else:  # drawn before the plate: its signal is the enumerated objective
                outside.append(index)
        if outside:
            chosen = [first[i] for i in outside]
            extra_scores, extra_fits, extra_state = _score_terms(
                combined, chosen, state, params, args
            )
            total = total + sum(jnp.sum(x) for x in extra_scores) + sum(extra_fits)
            new_state = {**new_state, **extra_state}
        return total, (jax.lax.stop_gradient(combined.value), new_state)

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
