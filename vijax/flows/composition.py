r"""Composing layers: :func:`chain` (different layers in sequence) and :func:`repeat` (one layer
``n`` times with its own parameters each time, stacked on a leading axis).

**Unrolled or scanned.** A short repeat (``times ≤ UNROLL_MAX``, 8) is unrolled: the layers
run one after the other in the traced program. A longer one runs by ``lax.scan``, so that a
flow of length 32 compiles like a flow of length 1. The cut is about speed per step: on CPU a
``lax.scan`` inside a jitted training step becomes an XLA while loop whose iterations cost a
few microseconds each, forward and again in the transposed (backward) loop, which for the
small flows of variational inference (2-D targets, two to eight layers) was more than the
layers' arithmetic (``vj.auto_flow(kind="iaf", length=2)`` on a 2-D target, one Adam step:
about 22 µs scanned, 11 µs unrolled, on 2 CPU cores). ``repeat(layer, n, unroll=True/False)``
overrides the cut.

For ``f = f_L ∘ … ∘ f_1`` with ``x_l = f_l(x_{l−1})``,

    log|det ∂f/∂x| = Σ_l log|det J_l(x_{l−1})|,
    g_l = J_l^{-T} (g_{l−1} − ∇ log|det J_l(x_{l−1})|),

so the fast path gradient step of a composition is the layers' steps in order, and its inverse
runs the layers' inverses backwards. Both are layers themselves, so they nest.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from vijax.flows import affine, planar
    >>> layer = chain(affine(2), repeat(planar(2), 4))
    >>> params = layer.init(jax.random.key(0))
    >>> params[1]["u"].shape  # four planar layers, stacked
    (4, 2)
    >>> y, log_det = layer.forward_and_log_det(params, jnp.zeros(2))
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

from vijax.flows.bijector import check_positive_int

__all__ = ["UNROLL_MAX", "Chain", "Repeat", "chain", "repeat"]

UNROLL_MAX = 8
"""The longest :func:`repeat` that is unrolled by default (module docstring)."""


def _check_layer(layer, what: str) -> None:
    missing = [
        name
        for name in (
            "dim",
            "init",
            "forward_and_log_det",
            "inverse_and_log_det",
            "forward_with_score",
        )
        if not hasattr(layer, name)
    ]
    if missing:
        raise ValueError(
            f"{what}: layers must be flow layers (vj.flows.planar(...), ...), got "
            f"{type(layer).__name__} without {missing}"
        )


@dataclass(frozen=True)
class Chain:
    """Layers applied in order (see :func:`chain`); parameters are a tuple, one entry per layer."""

    layers: tuple

    def __post_init__(self):
        if not self.layers:
            raise ValueError("chain: layers must not be empty")
        for layer in self.layers:
            _check_layer(layer, "chain")
        dims = {layer.dim for layer in self.layers}
        if len(dims) != 1:
            raise ValueError(f"chain: layers must share one dim, got dims {sorted(dims)}")

    @property
    def dim(self) -> int:
        return self.layers[0].dim

    def init(self, key) -> tuple:
        keys = jax.random.split(key, len(self.layers))
        return tuple(layer.init(k) for layer, k in zip(self.layers, keys))

    def forward_and_log_det(self, params, x, context=None):
        total = 0.0
        for layer, p in zip(self.layers, params):
            x, log_det = layer.forward_and_log_det(p, x, context)
            total = total + log_det
        return x, total

    def inverse_and_log_det(self, params, y, context=None):
        total = 0.0
        for layer, p in zip(reversed(self.layers), reversed(params)):
            y, log_det = layer.inverse_and_log_det(p, y, context)
            total = total + log_det
        return y, total

    def forward_with_score(self, params, x, score, context=None):
        total = 0.0
        for layer, p in zip(self.layers, params):
            x, log_det, score = layer.forward_with_score(p, x, score, context)
            total = total + log_det
        return x, total, score


@dataclass(frozen=True)
class Repeat:
    """``layer`` applied ``times`` times with stacked parameters (see :func:`repeat`)."""

    layer: object
    times: int
    unroll: bool | None = None

    def __post_init__(self):
        _check_layer(self.layer, "repeat")
        check_positive_int(self.times, "repeat", "times")
        if self.unroll is not None and not isinstance(self.unroll, bool):
            raise ValueError(f"repeat: unroll must be None, True or False, got {self.unroll!r}")

    @property
    def unrolled(self) -> bool:
        """Whether the repetitions are unrolled (module docstring) rather than scanned."""
        return self.times <= UNROLL_MAX if self.unroll is None else self.unroll

    def _run(self, step, carry, params, reverse=False):
        """``step(carry, p)`` over the repetitions' parameters: unrolled or by ``lax.scan``."""
        if not self.unrolled:
            return jax.lax.scan(step, carry, params, length=self.times, reverse=reverse)[0]
        order = range(self.times - 1, -1, -1) if reverse else range(self.times)
        for index in order:
            carry, _ = step(carry, jax.tree.map(lambda leaf, i=index: leaf[i], params))
        return carry

    @property
    def dim(self) -> int:
        return self.layer.dim

    def init(self, key):
        """The layer's parameters for each repetition, stacked on a leading axis."""
        return jax.vmap(self.layer.init)(jax.random.split(key, self.times))

    def forward_and_log_det(self, params, x, context=None):
        def step(carry, p):
            x, total = carry
            y, log_det = self.layer.forward_and_log_det(p, x, context)
            return (y, total + log_det), None

        x = _promote(x, params)
        return self._run(step, (x, _zero(x)), params)

    def inverse_and_log_det(self, params, y, context=None):
        def step(carry, p):
            y, total = carry
            x, log_det = self.layer.inverse_and_log_det(p, y, context)
            return (x, total + log_det), None

        y = _promote(y, params)
        return self._run(step, (y, _zero(y)), params, reverse=True)

    def forward_with_score(self, params, x, score, context=None):
        def step(carry, p):
            x, score, total = carry
            y, log_det, score = self.layer.forward_with_score(p, x, score, context)
            return (y, score, total + log_det), None

        x, score = _promote(x, params), _promote(score, params)
        y, score, total = self._run(step, (x, score, _zero(x)), params)
        return y, total, score


def _zero(x):
    return jax.numpy.zeros((), x.dtype)


def _promote(x, params):
    # A scan carry keeps its dtype, so float32 inputs meet float64 parameters (x64 mode) in the
    # parameters' precision from the first layer on, as they would without the scan.
    dtypes = [
        leaf.dtype
        for leaf in jax.tree.leaves(params)
        if jax.numpy.issubdtype(leaf.dtype, jax.numpy.inexact)
    ]
    return jax.numpy.asarray(x, jax.numpy.result_type(x, *dtypes))


def chain(*layers) -> Chain:
    """The composition ``f_L ∘ … ∘ f_1`` of ``layers = (f_1, ..., f_L)`` (applied left to right)."""
    return Chain(tuple(layers))


def repeat(layer, times: int, *, unroll: bool | None = None) -> Repeat:
    """``layer`` applied ``times`` times, each with its own parameters (stacked).

    ``unroll``: ``None`` unrolls when ``times ≤ UNROLL_MAX`` and scans otherwise (module
    docstring); ``True`` / ``False`` force either.
    """
    return Repeat(layer, times, unroll)
