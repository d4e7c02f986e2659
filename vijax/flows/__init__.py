r"""Normalizing flows: layers, flows as distributions, fast path gradients, flow families.

- Layers (:mod:`vijax.flows.bijector` for the interface): :func:`planar`, :func:`radial`
  (Rezende & Mohamed 2015), :func:`affine_coupling` (RealNVP), :func:`spline_coupling`
  (rational-quadratic splines, Durkan et al. 2019), :func:`masked_autoregressive` (MAF),
  :func:`inverse_autoregressive` (IAF), :func:`affine`, :func:`triangular_affine`,
  :func:`permutation`; composed with :func:`chain` and :func:`repeat` (unrolled up to
  :data:`UNROLL_MAX` repetitions, scanned beyond). Every layer has a forward
  pass with its log-determinant, an inverse, and the fast path gradient's step
  ``g' = J^{-T}(g − ∇ log|det J|)``.
- :class:`Flow` and :class:`FlowDistribution`: a standard-normal base pushed through a layer,
  as a NumPyro distribution (``vj.sample("z", flow.distribution(params))``), conditional flows
  included (a context vector enters the conditioners).
- Fast path gradients (Vaitl et al. 2024): the score ``∇_x log q(x)`` travels forward with the
  sample, so the ``path`` strategy needs no inverse pass (:mod:`vijax.flows.flow`); and for
  maximum likelihood, :func:`maximum_likelihood_path_loss`.
- :func:`make_flow` and :func:`flow_family`: named flows and the family program for
  ``vj.elbo`` / ``vj.iwae`` / ``vj.iwae_dreg``.
- :mod:`vijax.flows.targets`: the 2-D energies U1–U4, banana and Neal's funnel as models.

Example:
    >>> import jax, numpyro.distributions as dist
    >>> import vijax as vj
    >>> from vijax.flows.targets import target_model
    >>> family = vj.flow_family(2, "planar", 8, estimator=vj.path())
    >>> objective = vj.elbo(target_model("U1"), family, num_particles=8)
    >>> value = objective(family.init(jax.random.key(0)), jax.random.key(1)).value
"""

from vijax.flows.autoregressive import (
    InverseAutoregressive,
    MaskedAutoregressive,
    inverse_autoregressive,
    masked_autoregressive,
)
from vijax.flows.bijector import Layer, dense_forward_with_score
from vijax.flows.composition import UNROLL_MAX, Chain, Repeat, chain, repeat
from vijax.flows.coupling import (
    AffineTransformer,
    Coupling,
    SplineTransformer,
    affine_coupling,
    alternating_mask,
    spline_coupling,
)
from vijax.flows.family import FLOW_KINDS, FlowFamily, flow_family, make_flow
from vijax.flows.flow import Flow, FlowDistribution, FlowIntermediates
from vijax.flows.linear import (
    Affine,
    Permutation,
    TriangularAffine,
    affine,
    permutation,
    triangular_affine,
)
from vijax.flows.maximum_likelihood import maximum_likelihood_path_loss
from vijax.flows.networks import Conditioner, conditioner_network
from vijax.flows.planar import Planar, planar
from vijax.flows.radial import Radial, radial

__all__ = [
    "FLOW_KINDS",
    "UNROLL_MAX",
    "Affine",
    "AffineTransformer",
    "Chain",
    "Conditioner",
    "Coupling",
    "Flow",
    "FlowDistribution",
    "FlowFamily",
    "FlowIntermediates",
    "InverseAutoregressive",
    "Layer",
    "MaskedAutoregressive",
    "Permutation",
    "Planar",
    "Radial",
    "Repeat",
    "SplineTransformer",
    "TriangularAffine",
    "affine",
    "affine_coupling",
    "alternating_mask",
    "chain",
    "conditioner_network",
    "dense_forward_with_score",
    "flow_family",
    "inverse_autoregressive",
    "make_flow",
    "masked_autoregressive",
    "maximum_likelihood_path_loss",
    "permutation",
    "planar",
    "radial",
    "repeat",
    "spline_coupling",
    "triangular_affine",
]
