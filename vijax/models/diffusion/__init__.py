"""Variational diffusion models (Kingma et al. 2021) on vijax's primitives.

The family is the forward process ``q(z_t | x) = N(α_t x, σ_t² I)`` (a reparameterized vijax
program); the objective is the continuous- or discrete-time ELBO, trained with :func:`vijax.fit`.
Data (:mod:`vijax.models.diffusion.data`): a 2-D Gaussian mixture, two moons, scikit-learn's
digits on 17 levels and Fashion-MNIST on 256 levels (:func:`fashion_mnist_levels`).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from vijax.models import diffusion
    >>> objective = diffusion.continuous_time_elbo(
    ...     diffusion.gaussian_denoiser(0.0, 1.0), diffusion.linear_schedule(-10.0, 10.0),
    ...     diffusion.gaussian_decoder())
    >>> value = objective({"denoiser": {}, "schedule": {}}, jax.random.key(0), jnp.zeros((8, 1)))
    >>> value.shape
    ()
"""

from vijax.models.diffusion.data import (
    digit_levels,
    fashion_mnist_levels,
    gaussian_mixture_2d,
    independent_pixel_bits_per_dim,
    level_frequencies,
    two_moons,
)
from vijax.models.diffusion.networks import (
    Denoiser,
    categorical_denoiser,
    gaussian_denoiser,
    mlp_denoiser,
    residual_denoiser,
)
from vijax.models.diffusion.schedules import (
    Schedule,
    alpha_sigma,
    gamma_and_derivative,
    learned_schedule,
    linear_schedule,
    validate_schedule,
)
from vijax.models.diffusion.vdm import (
    Decoder,
    Losses,
    ancestral_sample,
    bits_per_dim,
    check_data,
    continuous_time_elbo,
    diffusion_loss_variance,
    discrete_time_elbo,
    discretized_decoder,
    forward_process,
    gaussian_decoder,
    losses,
    stratified_times,
    uniform_times,
)

__all__ = [
    "Decoder",
    "Denoiser",
    "Losses",
    "Schedule",
    "alpha_sigma",
    "ancestral_sample",
    "bits_per_dim",
    "categorical_denoiser",
    "check_data",
    "continuous_time_elbo",
    "diffusion_loss_variance",
    "digit_levels",
    "discrete_time_elbo",
    "discretized_decoder",
    "fashion_mnist_levels",
    "forward_process",
    "gamma_and_derivative",
    "gaussian_decoder",
    "gaussian_denoiser",
    "gaussian_mixture_2d",
    "independent_pixel_bits_per_dim",
    "learned_schedule",
    "level_frequencies",
    "linear_schedule",
    "losses",
    "mlp_denoiser",
    "residual_denoiser",
    "stratified_times",
    "two_moons",
    "uniform_times",
    "validate_schedule",
]
