r"""Variational autoencoders as two vijax programs: a model with a decoder, a family with an
encoder.

For images ``x_1..x_N`` (and, for a conditional VAE, classes ``y_i``), the model is

    z_i ~ p(z),   x_i | z_i ~ p_θ(x | decoder_θ(f(z_i), y_i)),   i = 1..N,

inside the plate ``"data"``, and the family (the amortized posterior, Kingma & Welling 2014;
Rezende et al. 2014) is ``z_i ~ q_φ(z | encoder_φ(x_i, y_i))`` in the same plate. The ELBO is

    ELBO(θ, φ) = Σ_i E_{q_φ(z_i | x_i)}[log p_θ(x_i | z_i)] − β · KL(q_φ(z_i | x_i) ‖ p(z_i)),

``β = 1`` for the VAE, ``β ≠ 1`` for the β-VAE (Higgins et al. 2017: the latent sites of both
programs run under ``vj.scale(β)``, so every objective sees ``β (log p(z) − log q(z))``). The
conditional VAE (Sohn et al. 2015) feeds a one-hot ``y_i`` to both networks. Nothing here is a
training path of its own: ``vj.elbo(vae.model, vae.family)``, ``vj.iwae``, the per-datum
bounds of :mod:`vijax.models.vae.objectives` and every site strategy apply as to any program,
and :func:`vijax.fit` trains them with parameters
``vj.ModelAndFamilyParams(model=decoder params, family={"encoder": encoder params})``.

**Minibatches.** With ``num_data = N`` set, a call with ``B < N`` rows is a minibatch: the plate
is ``plate("data", N, subsample_size=B)`` and every log-density is scaled by ``N / B`` (what
``vj.fit(..., data=(x,), batch_size=B)`` feeds the programs). Without it the plate has the
rows' size.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import vijax as vj
    >>> from vijax.models import vae
    >>> model = vae.mlp_vae((8, 8), vae.gaussian(2), hidden=(16,))
    >>> params = model.init(jax.random.key(0))
    >>> x = jnp.zeros((5, 8, 8))
    >>> terms = vj.elbo(model.model, model.family)(params, jax.random.key(1), x)
    >>> terms.value.shape
    ()
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from vijax.core import plate, sample, scale
from vijax.models.vae.likelihoods import bernoulli as bernoulli_likelihood
from vijax.models.vae.networks import conv_decoder, conv_encoder, mlp_decoder, mlp_encoder
from vijax.objectives import ModelAndFamilyParams

__all__ = ["PLATE", "VAE", "conv_vae", "mlp_vae", "vae"]

#: the plate of the data, in model and family
PLATE = "data"
LATENT_SITE = "z"
OBSERVED_SITE = "x"


@dataclass(frozen=True)
class VAE:
    """A VAE: ``model(params, x, y=None)`` and ``family(params, x, y=None)`` programs.

    Build it with :func:`vae`, :func:`mlp_vae` or :func:`conv_vae`; the fields are those
    functions' arguments. ``dataclasses.replace`` gives variants (another ``num_data``, ``β``).
    """

    encoder: Callable
    decoder: Callable
    latent: Any
    likelihood: Any
    image_shape: tuple[int, ...]
    num_classes: int | None = None
    beta: float = 1.0
    num_data: int | None = None

    # -- parameters ------------------------------------------------------------------------
    def init(self, key: jax.Array) -> ModelAndFamilyParams:
        """Fresh parameters: ``ModelAndFamilyParams(decoder params, {"encoder": ...})``."""
        for name in ("encoder", "decoder"):
            if not hasattr(getattr(self, name), "init"):
                raise ValueError(
                    f"VAE.init: the {name} is a plain apply function without init; build the "
                    "parameters yourself as vj.ModelAndFamilyParams(decoder_params, "
                    "{'encoder': encoder_params})"
                )
        decoder_key, encoder_key = jax.random.split(key)
        return ModelAndFamilyParams(
            model=self.decoder.init(decoder_key),
            family={"encoder": self.encoder.init(encoder_key)},
        )

    # -- helpers ---------------------------------------------------------------------------
    def _check(self, x, y):
        shape = jnp.shape(x)
        if len(shape) != 1 + len(self.image_shape) or tuple(shape[1:]) != self.image_shape:
            raise ValueError(
                f"vae: x must have shape (N, {', '.join(map(str, self.image_shape))}) for "
                f"images of shape {self.image_shape}, got {tuple(shape)}"
            )
        rows = shape[0]
        if self.num_classes is None:
            if y is not None:
                raise ValueError("vae: y given, but this VAE is not conditional (num_classes)")
            return rows, None
        if y is None:
            raise ValueError(f"vae: this conditional VAE needs the classes y, shape ({rows},)")
        if jnp.shape(y) != (rows,) or not jnp.issubdtype(jnp.result_type(y), jnp.integer):
            raise ValueError(
                f"vae: y must hold {rows} integer classes (shape ({rows},)), got "
                f"{jnp.result_type(y)} of shape {jnp.shape(y)}"
            )
        return rows, jax.nn.one_hot(y, self.num_classes, dtype=jnp.float32)

    def _plate(self, rows: int):
        size = self.num_data if self.num_data is not None else rows
        if rows > size:
            raise ValueError(f"vae: x has {rows} rows but num_data is {size}")
        return plate(PLATE, size, subsample_size=rows if rows < size else None)

    def _scaled(self):
        return contextlib.nullcontext() if self.beta == 1.0 else scale(scale=self.beta)

    def decode(self, decoder_params, features, condition=None):
        """Pixel logits ``(B, *image_shape)`` of decoder features (``latent.features(z)``)."""
        args = (features,) if condition is None else (features, condition)
        return self.decoder(decoder_params, *args)

    def encode(self, family_params, x, y=None):
        """The encoder's raw output ``(B, latent.num_parameters)``."""
        _, condition = self._check(x, y)
        args = (x,) if condition is None else (x, condition)
        return self.encoder(family_params["encoder"], *args)

    # -- the programs ----------------------------------------------------------------------
    @property
    def model(self) -> Model:
        """The model program ``model(decoder_params, x, y=None)``."""
        return Model(self)

    @property
    def family(self) -> Family:
        """The family program ``family(family_params, x, y=None)``."""
        return Family(self)

    def run_model(self, params, x, y=None):
        """``z_i ~ p(z)``, ``x_i ~ p_θ(x | decoder(z_i, y_i))`` in plate ``"data"``."""
        rows, condition = self._check(x, y)
        with self._plate(rows):
            with self._scaled():
                z = sample(LATENT_SITE, self.latent.prior())
            logits = self.decode(params, self.latent.features(z), condition)
            pixels = self.likelihood.distribution(logits).to_event(len(self.image_shape))
            return sample(OBSERVED_SITE, pixels, obs=x)

    def run_family(self, params, x, y=None):
        """``z_i ~ q_φ(z | encoder(x_i, y_i))`` in plate ``"data"``; reads ``params["encoder"]``."""
        rows, _ = self._check(x, y)
        with self._plate(rows):
            raw = self.encode(params, x, y)
            with self._scaled():
                return sample(LATENT_SITE, self.latent.posterior(raw))

    # -- variants --------------------------------------------------------------------------
    def with_num_data(self, num_data: int | None) -> VAE:
        """This VAE with plate size ``num_data`` (``None``: the rows of each call)."""
        return dataclasses.replace(self, num_data=_check_optional_size("num_data", num_data))

    def for_evaluation(self) -> VAE:
        """The VAE whose likelihood an evaluation reports: ``β = 1``, a relaxed latent replaced
        by the discrete one it relaxes, and plates sized by each call."""
        latent = self.latent
        if hasattr(latent, "discrete") and callable(latent.discrete):
            latent = latent.discrete()
        return dataclasses.replace(self, beta=1.0, latent=latent, num_data=None)


@dataclass(frozen=True)
class Model:
    """A VAE's model program, equal (and equally hashed) for equal VAEs.

    (A bound method would do, but bound methods compare their instance by identity, so two
    equal VAEs would give unequal objectives and :func:`vijax.fit` would compile again.)
    """

    vae: VAE

    def __call__(self, params, x, y=None):
        return self.vae.run_model(params, x, y)


@dataclass(frozen=True)
class Family:
    """A VAE's family program, equal (and equally hashed) for equal VAEs."""

    vae: VAE

    def __call__(self, params, x, y=None):
        return self.vae.run_family(params, x, y)


def _check_optional_size(name: str, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"vae: {name} must be a positive int or None, got {value!r}")
    return value


def _check_latent(latent) -> None:
    if not all(hasattr(latent, a) for a in ("prior", "posterior", "num_parameters")):
        raise ValueError(f"vae: latent must be a vijax latent such as gaussian(8), got {latent!r}")


def vae(
    encoder: Callable,
    decoder: Callable,
    *,
    latent,
    image_shape: Sequence[int],
    likelihood=None,
    num_classes: int | None = None,
    beta: float = 1.0,
    num_data: int | None = None,
) -> VAE:
    """A VAE from an encoder and a decoder (:class:`~vijax.models.vae.Network` or pure apply).

    Args:
      encoder: ``encoder(params, x[, c]) -> (B, latent.num_parameters)``.
      decoder: ``decoder(params, f[, c]) -> (B, *image_shape)`` logits, with
        ``f = latent.features(z)`` of shape ``(B, latent.num_features)``.
      latent: :func:`gaussian`, :func:`bernoulli`, :func:`categorical` or
        :func:`relaxed_bernoulli`.
      image_shape: the shape of one image.
      likelihood: :func:`bernoulli_likelihood` (default) or :func:`continuous_bernoulli`.
      num_classes: for a conditional VAE, the number of classes (``c = one_hot(y)``).
      beta: the weight of the KL term (β-VAE); 1 for the VAE.
      num_data: the training set's size ``N`` (minibatches scale by ``N / B``).

    Returns:
      A :class:`VAE`.
    """
    for name, network in (("encoder", encoder), ("decoder", decoder)):
        if not callable(network):
            raise ValueError(f"vae: {name} must be callable (a Network or apply), got {network!r}")
    _check_latent(latent)
    likelihood = bernoulli_likelihood() if likelihood is None else likelihood
    if not hasattr(likelihood, "distribution"):
        raise ValueError(f"vae: likelihood must be a vijax likelihood, got {likelihood!r}")
    image_shape = tuple(image_shape)
    if not image_shape or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in image_shape
    ):
        raise ValueError(f"vae: image_shape must be positive ints, got {image_shape!r}")
    _check_optional_size("num_classes", num_classes)
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 < beta < math.inf:
        raise ValueError(f"vae: beta must be a positive number, got {beta!r}")
    return VAE(
        encoder,
        decoder,
        latent,
        likelihood,
        image_shape,
        num_classes,
        float(beta),
        _check_optional_size("num_data", num_data),
    )


def mlp_vae(
    image_shape: Sequence[int],
    latent,
    *,
    hidden: Sequence[int] = (256, 256),
    likelihood=None,
    num_classes: int | None = None,
    beta: float = 1.0,
    num_data: int | None = None,
    activation: Callable = jax.nn.relu,
) -> VAE:
    """A VAE with fully connected encoder and decoder (``hidden`` units each, mirrored).

    Example:
        >>> from vijax.models import vae
        >>> model = vae.mlp_vae((8, 8), vae.bernoulli(3), hidden=(32,))
        >>> model.latent.num_parameters
        3
    """
    _check_latent(latent)
    condition = num_classes or 0
    encoder = mlp_encoder(
        image_shape,
        latent.num_parameters,
        hidden=hidden,
        condition_size=condition,
        activation=activation,
    )
    decoder = mlp_decoder(
        latent.num_features,
        image_shape,
        hidden=tuple(reversed(tuple(hidden))),
        condition_size=condition,
        activation=activation,
    )
    return vae(
        encoder,
        decoder,
        latent=latent,
        image_shape=image_shape,
        likelihood=likelihood,
        num_classes=num_classes,
        beta=beta,
        num_data=num_data,
    )


def conv_vae(
    image_shape: Sequence[int],
    latent,
    *,
    channels: Sequence[int] = (32, 64),
    hidden: int = 256,
    likelihood=None,
    num_classes: int | None = None,
    beta: float = 1.0,
    num_data: int | None = None,
    activation: Callable = jax.nn.relu,
) -> VAE:
    """A VAE with convolutional encoder and decoder (``channels`` mirrored in the decoder)."""
    _check_latent(latent)
    condition = num_classes or 0
    encoder = conv_encoder(
        image_shape,
        latent.num_parameters,
        channels=channels,
        hidden=hidden,
        condition_size=condition,
        activation=activation,
    )
    decoder = conv_decoder(
        latent.num_features,
        image_shape,
        channels=tuple(reversed(tuple(channels))),
        hidden=hidden,
        condition_size=condition,
        activation=activation,
    )
    return vae(
        encoder,
        decoder,
        latent=latent,
        image_shape=image_shape,
        likelihood=likelihood,
        num_classes=num_classes,
        beta=beta,
        num_data=num_data,
    )
