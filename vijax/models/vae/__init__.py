"""Variational autoencoders written as vijax programs (see :mod:`vijax.models.vae.programs`).

- build: :func:`mlp_vae`, :func:`conv_vae`, :func:`vae` (any encoder / decoder), with a latent
  (:func:`gaussian`, :func:`bernoulli`, :func:`categorical`, :func:`relaxed_bernoulli`) and a
  pixel likelihood (:func:`bernoulli_likelihood`, :func:`continuous_bernoulli`);
- networks: :func:`mlp_encoder`, :func:`mlp_decoder`, :func:`conv_encoder`,
  :func:`conv_decoder`, :func:`network` (flax ``nnx`` modules as pure functions);
- objectives: ``vj.elbo(vae.model, vae.family)`` and every vijax objective, in particular the
  per-datum importance-weighted bounds ``vj.per_datum_iwae`` and ``vj.per_datum_iwae_dreg``
  (re-exported here);
- evaluation: :func:`evaluate_bounds` (test log-likelihood with 5000 particles, ELBO, IWAE
  bounds), :func:`kl_per_dimension`, :func:`active_units`, :func:`reconstruct`,
  :func:`generate`, and the PNG plots of :mod:`vijax.models.vae.plots`.
"""

from vijax.models.vae.evaluation import (
    active_units,
    encoder_outputs,
    evaluate_bounds,
    generate,
    kl_per_dimension,
    reconstruct,
)
from vijax.models.vae.latents import (
    BernoulliLatent,
    CategoricalLatent,
    GaussianLatent,
    RelaxedBernoulliLatent,
    bernoulli,
    categorical,
    gaussian,
    relaxed_bernoulli,
)
from vijax.models.vae.likelihoods import (
    LIKELIHOODS,
    ContinuousBernoulli,
    continuous_bernoulli,
)
from vijax.models.vae.likelihoods import bernoulli as bernoulli_likelihood
from vijax.models.vae.networks import (
    Network,
    conv_decoder,
    conv_encoder,
    mlp_decoder,
    mlp_encoder,
    network,
)
from vijax.models.vae.plots import plot_curves, plot_image_grid, plot_reconstructions
from vijax.models.vae.programs import PLATE, VAE, conv_vae, mlp_vae, vae
from vijax.objectives import (  # the per-datum bounds every VAE trains with, at hand here
    PerDatumIWAE,
    PerDatumIWAEDReG,
    per_datum_iwae,
    per_datum_iwae_dreg,
    per_datum_log_weight,
    per_datum_log_weights,
)

__all__ = [
    "LIKELIHOODS",
    "PLATE",
    "VAE",
    "BernoulliLatent",
    "CategoricalLatent",
    "ContinuousBernoulli",
    "GaussianLatent",
    "Network",
    "PerDatumIWAE",
    "PerDatumIWAEDReG",
    "RelaxedBernoulliLatent",
    "active_units",
    "bernoulli",
    "bernoulli_likelihood",
    "categorical",
    "continuous_bernoulli",
    "conv_decoder",
    "conv_encoder",
    "conv_vae",
    "encoder_outputs",
    "evaluate_bounds",
    "gaussian",
    "generate",
    "kl_per_dimension",
    "mlp_decoder",
    "mlp_encoder",
    "mlp_vae",
    "network",
    "per_datum_iwae",
    "per_datum_iwae_dreg",
    "per_datum_log_weight",
    "per_datum_log_weights",
    "plot_curves",
    "plot_image_grid",
    "plot_reconstructions",
    "reconstruct",
    "relaxed_bernoulli",
    "vae",
]
