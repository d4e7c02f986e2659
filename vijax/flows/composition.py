r"""Composing layers: :func:`chain` (different layers in sequence) and :func:`repeat` (one layer
``n`` times with its own parameters each time, run by ``lax.scan`` so that a flow of length 32
compiles like a flow of length 1).

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

__all__ = ["Chain", "Repeat", "chain", "repeat"]


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

    def __post_init__(self):
        _check_layer(self.layer, "repeat")
        check_positive_int(self.times, "repeat", "times")

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
        (y, total), _ = jax.lax.scan(step, (x, _zero(x)), params, length=self.times)
        return y, total

    def inverse_and_log_det(self, params, y, context=None):
        def step(carry, p):
            y, total = carry
            x, log_det = self.layer.inverse_and_log_det(p, y, context)
            return (x, total + log_det), None

        y = _promote(y, params)
        (x, total), _ = jax.lax.scan(step, (y, _zero(y)), params, length=self.times, reverse=True)
        return x, total

    def forward_with_score(self, params, x, score, context=None):
        def step(carry, p):
            x, score, total = carry
            y, log_det, score = self.layer.forward_with_score(p, x, score, context)
            return (y, score, total + log_det), None

        x, score = _promote(x, params), _promote(score, params)
        (y, score, total), _ = jax.lax.scan(step, (x, score, _zero(x)), params, length=self.times)
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


def repeat(layer, times: int) -> Repeat:
    """``layer`` applied ``times`` times, each with its own parameters (scanned, not unrolled)."""
    return Repeat(layer, times)
