r"""Conditioner networks of the flows: plain-JAX MLPs and MADE, with explicit parameter pytrees,
and :func:`conditioner_network`, which adapts a flax module or an ``(init, apply)`` pair.

A conditioner maps the part of the input a layer may look at (and a context vector, for
conditional flows) to the parameters of an elementwise transformation. Its parameters are a
plain pytree (lists of ``{"w", "b"}`` dictionaries), so optax, ``jax.tree.map`` and
``stop_gradient`` apply to them directly; the masks of MADE are constants computed from the
static sizes, not parameters.

**MLP.** ``h_0 = [x, c]``, ``h_{l+1} = a(h_l W_l + b_l)``, output ``h_L W_L + b_L``. The last
layer starts at zero, so a coupling layer starts as the identity.

**MADE** (Germain et al. 2015, "MADE: Masked Autoencoder for Distribution Estimation"). Input
``i`` gets degree ``i`` (``1..d``); hidden unit ``k`` gets degree ``m_k = (k mod max(d−1, 1)) + 1``;
a connection into a hidden unit of degree ``m`` from a unit of degree ``m'`` exists iff
``m ≥ m'``, and into output ``i`` iff ``i > m``. Output ``i`` then depends on ``x_{<i}`` only, so
the Jacobian of the outputs with respect to ``x`` is strictly lower triangular. The context (if
any) enters the first hidden layer and, directly, the outputs, so every output (the first too)
can depend on it.

**Custom conditioners** (:func:`conditioner_network`). A flax ``nnx.Module`` (its parameters are
its state from ``nnx.split``, applied as ``nnx.merge(graphdef, state)(inputs)``), a flax
``linen.Module`` (``module.init(key, inputs)``, ``module.apply``) or a pure pair
``(init(key) -> params, apply(params, inputs) -> outputs)`` becomes a :class:`Conditioner`:
the same pure ``init`` / ``apply`` pair, hashed and compared by identity, so that a layer holding
it stays a static argument of ``jit``. The graph definition is held, not a live module.

Example:
    >>> import jax, jax.numpy as jnp
    >>> params = made_init(jax.random.key(0), 3, (8,), num_outputs=2)
    >>> out = made_apply(params, jnp.ones(3), None, 3, (8,), 2)
    >>> out.shape  # (outputs per dimension, dimension)
    (2, 3)
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Conditioner",
    "conditioner_network",
    "made_apply",
    "made_init",
    "made_masks",
    "mlp_apply",
    "mlp_init",
]


def _dense_init(key, fan_in: int, fan_out: int, zero: bool) -> dict:
    if zero:
        return {"w": jnp.zeros((fan_in, fan_out)), "b": jnp.zeros((fan_out,))}
    w = jax.random.normal(key, (fan_in, fan_out)) / np.sqrt(max(fan_in, 1))
    return {"w": w, "b": jnp.zeros((fan_out,))}


def mlp_init(key, sizes: tuple[int, ...], *, zero_last: bool = True) -> list[dict]:
    """Parameters of an MLP with layer widths ``sizes = (in, h_1, ..., out)``.

    Weights are ``N(0, 1/fan_in)``, biases zero; the last layer is zero when ``zero_last``.
    """
    keys = jax.random.split(key, len(sizes) - 1)
    last = len(sizes) - 2
    return [
        _dense_init(k, sizes[i], sizes[i + 1], zero_last and i == last) for i, k in enumerate(keys)
    ]


def mlp_apply(params: list[dict], x, activation: Callable = jnp.tanh):
    """``h_{l+1} = a(h_l W_l + b_l)`` with no activation after the last layer."""
    for layer in params[:-1]:
        x = activation(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


@functools.cache
def made_masks(dim: int, hidden: tuple[int, ...], num_outputs: int) -> tuple[np.ndarray, ...]:
    """The 0/1 masks of MADE's weight matrices, laid out like the weights ``(fan_in, fan_out)``.

    The output layer has ``num_outputs · dim`` units, unit ``j · dim + i`` being output ``j`` of
    dimension ``i``.
    """
    degrees = [np.arange(1, dim + 1)]
    for width in hidden:
        degrees.append(np.arange(width) % max(dim - 1, 1) + 1)
    masks = [
        (later[None, :] >= earlier[:, None]).astype(np.float32)
        for earlier, later in itertools.pairwise(degrees)
    ]
    out_degrees = np.tile(np.arange(1, dim + 1), num_outputs)
    masks.append((out_degrees[None, :] > degrees[-1][:, None]).astype(np.float32))
    return tuple(masks)


def made_init(
    key, dim: int, hidden: tuple[int, ...], num_outputs: int, context_dim: int = 0
) -> dict:
    """Parameters of a MADE network (last layer and context-to-output weights start at zero)."""
    sizes = (dim, *hidden, num_outputs * dim)
    key_layers, key_context = jax.random.split(key)
    params = {"layers": mlp_init(key_layers, sizes)}
    if context_dim:
        params["context_hidden"] = jax.random.normal(
            key_context, (context_dim, hidden[0])
        ) / np.sqrt(context_dim)
        params["context_out"] = jnp.zeros((context_dim, num_outputs * dim))
    return params


def made_apply(
    params: dict,
    x,
    context,
    dim: int,
    hidden: tuple[int, ...],
    num_outputs: int,
    activation: Callable = jnp.tanh,
):
    """MADE's outputs, shape ``(num_outputs, dim)``; output ``[:, i]`` depends on ``x_{<i}``."""
    masks = made_masks(dim, hidden, num_outputs)
    layers = params["layers"]
    h = x
    for index, (layer, mask) in enumerate(zip(layers, masks)):
        pre = h @ (layer["w"] * mask.astype(layer["w"].dtype)) + layer["b"]
        if index == 0 and context is not None:
            pre = pre + context @ params["context_hidden"]
        if index == len(layers) - 1:
            h = pre
        else:
            h = activation(pre)
    if context is not None:
        h = h + context @ params["context_out"]
    return h.reshape(num_outputs, dim)


@dataclass(frozen=True)
class _NnxApply:
    """``apply(state, inputs)`` of an ``nnx.Module`` given by its graph definition."""

    graphdef: Any

    def __call__(self, state, inputs):
        from flax import nnx

        return nnx.merge(self.graphdef, state)(inputs)


@dataclass(frozen=True, eq=False)
class _Constant:
    """``init(key) -> value``: an ``nnx`` module's state, captured when the layer was built."""

    value: Any = None

    def __call__(self, key):
        return self.value


@dataclass(frozen=True)
class _LinenInit:
    """``init(key) -> module.init(key, zeros(in_size))``."""

    module: Any
    in_size: int

    def __call__(self, key):
        return self.module.init(key, jnp.zeros((self.in_size,)))


@dataclass(frozen=True, eq=False)
class Conditioner:
    """A conditioner network as a pure pair: ``init(key) -> params``,
    ``apply(params, inputs) -> outputs`` (build it with :func:`conditioner_network`).

    Compared and hashed by identity (``eq=False``): a layer holding one is hashable, and two
    layers are equal only when they hold the same network object. ``kind`` is ``"nnx"``,
    ``"linen"`` or ``"pair"``.
    """

    init: Callable
    apply: Callable
    kind: str

    def __repr__(self) -> str:
        return f"Conditioner(kind={self.kind!r})"


def _is_pair(value) -> bool:
    return (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(callable(part) for part in value)
    )


def conditioner_network(conditioner, what: str, in_size: int) -> Conditioner:
    """A :class:`Conditioner` from a flax module or an ``(init, apply)`` pair.

    Args:
      conditioner: an ``nnx.Module`` (parameters: its state from ``nnx.split``, taken now; the
        key of ``init`` is unused), a ``linen.Module`` (parameters:
        ``module.init(key, zeros(in_size))``; applied with ``module.apply``), a pure pair
        ``(init(key) -> params, apply(params, inputs) -> outputs)``, or a :class:`Conditioner`
        (returned as it is).
      what: the caller's name, for error messages.
      in_size: the length of the network's input vector.

    Raises:
      ValueError: naming ``conditioner``, for anything else.
    """
    if isinstance(conditioner, Conditioner):
        return conditioner
    if _is_pair(conditioner):
        init, apply = conditioner
        return Conditioner(init, apply, "pair")
    from flax import linen, nnx

    if isinstance(conditioner, nnx.Module):
        graphdef, state = nnx.split(conditioner)
        return Conditioner(_Constant(state), _NnxApply(graphdef), "nnx")
    if isinstance(conditioner, linen.Module):
        return Conditioner(_LinenInit(conditioner, in_size), conditioner.apply, "linen")
    raise ValueError(
        f"{what}: conditioner must be an nnx.Module, a linen.Module or a pair "
        f"(init(key) -> params, apply(params, inputs) -> outputs), got {conditioner!r}"
    )
