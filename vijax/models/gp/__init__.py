r"""Gaussian-process variational inference written with vijax's primitives.

A sparse variational GP is one more model, family and objective: the model is the GP prior on
the inducing values plus a likelihood term per datum inside a (minibatched) plate, the family is
``q(u) = N(m, S)`` with point-mass hyperparameters, and the objective is ``vj.elbo`` (closed-form
KL for ``u``), its per-datum expectations by Gauss–Hermite quadrature, a strategy for
one-dimensional Gaussian sites, or by Monte Carlo. ``vj.fit`` trains it; natural gradients for
``q(u)`` are an optax transformation.

- kernels (:mod:`~vijax.models.gp.kernels`): :class:`RBF`, :class:`Matern12`,
  :class:`Matern32`, :class:`Matern52`, :class:`RationalQuadratic`, :class:`Periodic`,
  :class:`Linear`, :class:`White`, sums and products (``k1 + k2``, ``k1 * k2``), ARD;
- likelihoods (:mod:`~vijax.models.gp.likelihoods`): :class:`Gaussian`,
  :class:`Bernoulli` (logit, probit), :class:`Poisson`, :class:`StudentT`;
- the SVGP (:mod:`~vijax.models.gp.sparse`): :func:`svgp` → :class:`SVGP` with ``model``,
  ``family``, ``elbo()``, ``predict_f``, ``predict_y``, ``evaluate``, whitened or not;
- expectations (:mod:`~vijax.models.gp.expectations`): :func:`gauss_hermite`,
  :func:`local_reparameterized`, :func:`quadrature`;
- Gaussian-likelihood references (:mod:`~vijax.models.gp.collapsed`): :func:`collapsed_elbo`
  (Titsias 2009), :func:`exact_log_marginal_likelihood`, :func:`optimal_inducing_distribution`;
- natural gradients (:mod:`~vijax.models.gp.optimizers`): :func:`natural_gradient`,
  :func:`natural_gradients` (Salimbeni et al. 2018);
- :func:`plot_1d`, and :func:`~vijax.models.gp.datasets.load` for the ``vijax run gp`` data.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from vijax.models import gp
    >>> X = jnp.linspace(-3.0, 3.0, 50)[:, None]
    >>> y = (X[:, 0] > 0).astype(jnp.float32)
    >>> svgp = gp.svgp(gp.Matern52() + gp.Linear(), gp.Bernoulli(link="probit"), num_inducing=6)
    >>> params = svgp.init(jax.random.key(0), X, y)
    >>> sorted(params["hyperparameters"]), params["inducing"]["scale"].shape
    (['inducing_inputs', 'kernel', 'likelihood'], (6, 6))
    >>> objective = svgp.elbo()  # vj.elbo(svgp.model, svgp.family), expectations by quadrature
"""

from vijax.models.gp.collapsed import (
    collapsed_elbo,
    exact_log_marginal_likelihood,
    optimal_inducing_distribution,
)
from vijax.models.gp.expectations import (
    MARGINAL_KEY,
    GaussHermite,
    LocalReparameterized,
    gauss_hermite,
    local_reparameterized,
    quadrature,
)
from vijax.models.gp.kernels import (
    RBF,
    Linear,
    Matern12,
    Matern32,
    Matern52,
    Periodic,
    Product,
    RationalQuadratic,
    Sum,
    White,
)
from vijax.models.gp.likelihoods import (
    Bernoulli,
    Gaussian,
    Poisson,
    StudentT,
    gauss_hermite_rule,
)
from vijax.models.gp.linalg import CholeskyError
from vijax.models.gp.optimizers import natural_gradient, natural_gradients
from vijax.models.gp.plotting import plot_1d
from vijax.models.gp.sparse import SVGP, svgp

__all__ = [
    "MARGINAL_KEY",
    "RBF",
    "SVGP",
    "Bernoulli",
    "CholeskyError",
    "GaussHermite",
    "Gaussian",
    "Linear",
    "LocalReparameterized",
    "Matern12",
    "Matern32",
    "Matern52",
    "Periodic",
    "Poisson",
    "Product",
    "RationalQuadratic",
    "StudentT",
    "Sum",
    "White",
    "collapsed_elbo",
    "exact_log_marginal_likelihood",
    "gauss_hermite",
    "gauss_hermite_rule",
    "local_reparameterized",
    "natural_gradient",
    "natural_gradients",
    "optimal_inducing_distribution",
    "plot_1d",
    "quadrature",
    "svgp",
]
