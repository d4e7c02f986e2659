r"""Encoder and decoder networks in flax ``nnx``, as pure ``apply(params, *inputs)`` functions.

A :class:`Network` holds an ``nnx`` module's graph definition (``nnx.split``); its parameters
are a plain nested dict of arrays (``State.to_pure_dict()``), so optax, :func:`vijax.fit`,
``jit``/``vmap``/``grad`` and checkpoints see an ordinary pytree, and

    network(params, *inputs) = nnx.merge(graphdef, params)(*inputs)

rebuilds the module only while tracing (under ``jit`` the merge costs nothing at run time).
Equal architectures give equal (and equally hashed) networks, so objectives built on them
reuse :func:`vijax.fit`'s compiled step.

The networks here (any ``Network`` or pure ``apply(params, *inputs)`` works as well):

- :func:`mlp_encoder` / :func:`mlp_decoder`: fully connected layers with ``activation``
  (Kingma & Welling 2014, Burda et al. 2016 use one or two hidden layers of a few hundred units).
- :func:`conv_encoder` / :func:`conv_decoder`: stride-2 3 × 3 convolutions (transposed in the
  decoder) around one dense layer; the image sides must be divisible by ``2^len(channels)``.

An optional condition ``c`` (a one-hot class for a conditional VAE, Sohn et al. 2015) is
concatenated to the flattened features before the first dense layer.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from vijax.models.vae import mlp_encoder
    >>> encoder = mlp_encoder((8, 8), 4, hidden=(16,))
    >>> params = encoder.init(jax.random.key(0))
    >>> encoder(params, jnp.zeros((5, 8, 8))).shape
    (5, 4)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["Network", "conv_decoder", "conv_encoder", "mlp_decoder", "mlp_encoder", "network"]


@dataclass(frozen=True)
class Network:
    """A pure network: ``init(key) -> params`` and ``network(params, *inputs) -> output``."""

    graphdef: Any
    build: Callable = field(compare=False, hash=False, repr=False)

    def init(self, key: jax.Array) -> dict:
        """Fresh parameters (a nested dict of arrays) from ``key``."""
        return nnx.to_pure_dict(nnx.split(self.build(nnx.Rngs(params=key)))[1])

    def __call__(self, params, *inputs):
        return nnx.merge(self.graphdef, params)(*inputs)


def network(build: Callable[[nnx.Rngs], nnx.Module]) -> Network:
    """A :class:`Network` from ``build(rngs) -> nnx.Module`` (built abstractly: no compute).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> linear = network(lambda rngs: nnx.Linear(3, 2, rngs=rngs))
        >>> linear(linear.init(jax.random.key(0)), jnp.ones((4, 3))).shape
        (4, 2)
    """
    if not callable(build):
        raise ValueError(f"network: build must be a function of nnx.Rngs, got {build!r}")
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(params=0))))
    return Network(graphdef, build)


def _check_sizes(name: str, sizes: Sequence[int], what: str) -> tuple[int, ...]:
    sizes = tuple(sizes)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"{name}: {what} must be positive ints, got {sizes!r}")
    return sizes


def _flat_with_condition(x, c):
    features = x.reshape(x.shape[0], -1)
    if c is not None:
        features = jnp.concatenate([features, c.reshape(c.shape[0], -1)], axis=-1)
    return features


class _MLP(nnx.Module):
    """Dense layers: ``h_{l+1} = act(W_l h_l + b_l)``, the last one linear."""

    def __init__(self, sizes, activation, output_shape, rngs):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])
        self.activation = activation
        self.output_shape = tuple(output_shape)

    def __call__(self, x, c=None):
        h = _flat_with_condition(x, c)
        for layer in self.layers[:-1]:
            h = self.activation(layer(h))
        out = self.layers[-1](h)
        return out.reshape((out.shape[0], *self.output_shape))


def mlp_encoder(
    image_shape: Sequence[int],
    num_outputs: int,
    *,
    hidden: Sequence[int] = (256, 256),
    condition_size: int = 0,
    activation: Callable = jax.nn.relu,
) -> Network:
    """``(B, *image_shape)`` images (and a ``(B, condition_size)`` condition) → ``(B, outputs)``."""
    image_shape = _check_sizes("mlp_encoder", image_shape, "image_shape")
    (num_outputs,) = _check_sizes("mlp_encoder", (num_outputs,), "num_outputs")
    hidden = _check_sizes("mlp_encoder", hidden, "hidden")
    sizes = (math.prod(image_shape) + condition_size, *hidden, num_outputs)
    return network(lambda rngs: _MLP(sizes, activation, (num_outputs,), rngs))


def mlp_decoder(
    num_inputs: int,
    image_shape: Sequence[int],
    *,
    hidden: Sequence[int] = (256, 256),
    condition_size: int = 0,
    activation: Callable = jax.nn.relu,
) -> Network:
    """``(B, num_inputs)`` latents (and a condition) → ``(B, *image_shape)`` pixel parameters."""
    image_shape = _check_sizes("mlp_decoder", image_shape, "image_shape")
    (num_inputs,) = _check_sizes("mlp_decoder", (num_inputs,), "num_inputs")
    hidden = _check_sizes("mlp_decoder", hidden, "hidden")
    sizes = (num_inputs + condition_size, *hidden, math.prod(image_shape))
    return network(lambda rngs: _MLP(sizes, activation, image_shape, rngs))


def _check_image(name: str, image_shape, channels) -> tuple[tuple[int, int], tuple[int, ...]]:
    image_shape = _check_sizes(name, image_shape, "image_shape")
    channels = _check_sizes(name, channels, "channels")
    if len(image_shape) != 2:
        raise ValueError(f"{name}: image_shape must be (height, width), got {image_shape!r}")
    factor = 2 ** len(channels)
    if image_shape[0] % factor or image_shape[1] % factor:
        raise ValueError(
            f"{name}: image sides {image_shape} must be divisible by 2^len(channels) = {factor}"
        )
    return image_shape, channels


class _ConvEncoder(nnx.Module):
    def __init__(self, image_shape, channels, hidden, num_outputs, condition_size, act, rngs):
        ins = (1, *channels[:-1])
        self.convs = nnx.List(
            [
                nnx.Conv(a, b, kernel_size=(3, 3), strides=(2, 2), padding="SAME", rngs=rngs)
                for a, b in zip(ins, channels)
            ]
        )
        factor = 2 ** len(channels)
        flat = (image_shape[0] // factor) * (image_shape[1] // factor) * channels[-1]
        self.dense = nnx.Linear(flat + condition_size, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, num_outputs, rngs=rngs)
        self.activation = act

    def __call__(self, x, c=None):
        h = x[..., None]
        for conv in self.convs:
            h = self.activation(conv(h))
        h = self.activation(self.dense(_flat_with_condition(h, c)))
        return self.out(h)


class _ConvDecoder(nnx.Module):
    def __init__(self, num_inputs, image_shape, channels, hidden, condition_size, act, rngs):
        factor = 2 ** len(channels)
        self.start = (image_shape[0] // factor, image_shape[1] // factor, channels[0])
        self.dense = nnx.Linear(num_inputs + condition_size, hidden, rngs=rngs)
        self.project = nnx.Linear(hidden, math.prod(self.start), rngs=rngs)
        outs = (*channels[1:], channels[-1])
        self.deconvs = nnx.List(
            [
                nnx.ConvTranspose(
                    a, b, kernel_size=(3, 3), strides=(2, 2), padding="SAME", rngs=rngs
                )
                for a, b in zip(channels, outs)
            ]
        )
        self.out = nnx.Conv(channels[-1], 1, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.activation = act

    def __call__(self, z, c=None):
        h = self.activation(self.dense(_flat_with_condition(z, c)))
        h = self.activation(self.project(h)).reshape((z.shape[0], *self.start))
        for deconv in self.deconvs:
            h = self.activation(deconv(h))
        return self.out(h)[..., 0]


def conv_encoder(
    image_shape: Sequence[int],
    num_outputs: int,
    *,
    channels: Sequence[int] = (32, 64),
    hidden: int = 256,
    condition_size: int = 0,
    activation: Callable = jax.nn.relu,
) -> Network:
    """``(B, H, W)`` images → stride-2 convolutions → dense → ``(B, num_outputs)``."""
    image_shape, channels = _check_image("conv_encoder", image_shape, channels)
    (num_outputs, hidden) = _check_sizes("conv_encoder", (num_outputs, hidden), "sizes")
    return network(
        lambda rngs: _ConvEncoder(
            image_shape, channels, hidden, num_outputs, condition_size, activation, rngs
        )
    )


def conv_decoder(
    num_inputs: int,
    image_shape: Sequence[int],
    *,
    channels: Sequence[int] = (64, 32),
    hidden: int = 256,
    condition_size: int = 0,
    activation: Callable = jax.nn.relu,
) -> Network:
    """``(B, num_inputs)`` latents → dense → stride-2 transposed convolutions → ``(B, H, W)``."""
    image_shape, channels = _check_image("conv_decoder", image_shape, channels)
    (num_inputs, hidden) = _check_sizes("conv_decoder", (num_inputs, hidden), "sizes")
    return network(
        lambda rngs: _ConvDecoder(
            num_inputs, image_shape, channels, hidden, condition_size, activation, rngs
        )
    )
