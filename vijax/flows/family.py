r"""Named flows and flow families: the convenience front.

:func:`make_flow` builds the flows of the catalog by name; :func:`flow_family` wraps a flow as a
variational family program, ``family(params, *args)`` calling
``vj.sample(name, FlowDistribution(flow, params, context))``, with ``init(key, *args)`` for its
parameters, so that ``vj.elbo(model, family)``, ``vj.iwae``, ``vj.iwae_dreg`` and ``vj.fit`` take
it like any family. With ``estimator=vj.path()`` its density term is differentiated by the fast
path gradient (:mod:`vijax.flows.flow`).

=====================  =========================================================================
``kind``               the flow (``length`` layers; ``hidden``: conditioner widths)
=====================  =========================================================================
``"planar"``           ``length`` planar layers (Rezende & Mohamed 2015)
``"radial"``           ``length`` radial layers (Rezende & Mohamed 2015)
``"affine_coupling"``  ``length`` RealNVP coupling layers with alternating masks (Dinh et al. 2017)
``"spline"``           ``length`` rational-quadratic spline couplings (Durkan et al. 2019)
``"maf"``              ``length`` × (MAF layer, reversal) (Papamakarios et al. 2017)
``"iaf"``              ``length`` × (IAF layer, reversal) (Kingma et al. 2016)
``"diagonal_gaussian"``  one elementwise affine layer: ``N(t, diag e^{2s})`` (``length`` unused)
``"gaussian"``         one lower-triangular affine layer: ``N(t, L Lᵀ)`` (``length`` unused)
=====================  =========================================================================

Example:
    >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model():
    ...     vj.sample("z", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
    >>> family = vj.flow_family(2, "planar", 4, estimator=vj.path())
    >>> params = family.init(jax.random.key(0))
    >>> value, grads = vj.value_and_grad_estimate(vj.elbo(model, family))(params, jax.random.key(1))
    >>> sorted(grads)
    ['b', 'u', 'w']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vijax.core import sample
from vijax.flows.autoregressive import inverse_autoregressive, masked_autoregressive
from vijax.flows.bijector import check_non_negative_int, check_positive_int
from vijax.flows.composition import chain, repeat
from vijax.flows.coupling import affine_coupling, alternating_mask, spline_coupling
from vijax.flows.flow import Flow, FlowDistribution
from vijax.flows.linear import affine, permutation, triangular_affine
from vijax.flows.planar import planar
from vijax.flows.radial import radial

__all__ = ["FLOW_KINDS", "FlowFamily", "flow_family", "make_flow"]

FLOW_KINDS = (
    "planar",
    "radial",
    "affine_coupling",
    "spline",
    "maf",
    "iaf",
    "diagonal_gaussian",
    "gaussian",
)


def _couplings(make, dim: int, length: int):
    if dim < 2:
        raise ValueError(f"make_flow: coupling flows need dim >= 2, got dim={dim}")
    pair = chain(make(alternating_mask(dim, 0)), make(alternating_mask(dim, 1)))
    if length == 1:
        return make(alternating_mask(dim, 0))
    body = repeat(pair, length // 2)
    return body if length % 2 == 0 else chain(body, make(alternating_mask(dim, 0)))


def make_flow(
    kind: str,
    dim: int,
    length: int = 8,
    *,
    hidden=(32, 32),
    context_dim: int = 0,
    num_bins: int = 8,
    bound: float = 5.0,
) -> Flow:
    """A flow of the catalog by name (see the module docstring's table).

    Args:
      kind: one of :data:`FLOW_KINDS`.
      dim: the dimension of the latent.
      length: the number of layers.
      hidden: the conditioner's hidden widths (coupling, spline, MAF, IAF).
      context_dim: the context length of a conditional (amortized) flow; 0 for none.
      num_bins, bound: the spline's bins and range (``"spline"``).

    Raises:
      ValueError: an unknown ``kind`` or an invalid hyperparameter, naming it.
    """
    if kind not in FLOW_KINDS:
        raise ValueError(f"make_flow: kind must be one of {list(FLOW_KINDS)}, got {kind!r}")
    dim = check_positive_int(dim, "make_flow", "dim")
    length = check_positive_int(length, "make_flow", "length")
    context_dim = check_non_negative_int(context_dim, "make_flow", "context_dim")
    if kind == "planar":
        layer = repeat(planar(dim, context_dim=context_dim), length)
    elif kind == "radial":
        layer = repeat(radial(dim, context_dim=context_dim), length)
    elif kind == "affine_coupling":
        layer = _couplings(
            lambda mask: affine_coupling(dim, mask, hidden=hidden, context_dim=context_dim),
            dim,
            length,
        )
    elif kind == "spline":
        layer = _couplings(
            lambda mask: spline_coupling(
                dim, mask, hidden=hidden, context_dim=context_dim, num_bins=num_bins, bound=bound
            ),
            dim,
            length,
        )
    elif kind == "maf":
        step = masked_autoregressive(dim, hidden=hidden, context_dim=context_dim)
        layer = repeat(chain(step, permutation(dim)), length)
    elif kind == "iaf":
        step = inverse_autoregressive(dim, hidden=hidden, context_dim=context_dim)
        layer = repeat(chain(step, permutation(dim)), length)
    elif kind == "diagonal_gaussian":
        layer = affine(dim)
    else:
        layer = triangular_affine(dim)
    return Flow(layer)


@dataclass(frozen=True)
class FlowFamily:
    """A family program sampling one site from a flow (see :func:`flow_family`).

    Call it as ``family(params, *args)``; ``init(key, *args)`` gives the flow's parameters.
    Hashable, so ``vj.fit`` reuses its compilation across calls with an equal family.
    """

    flow: Flow
    name: str = "z"
    estimator: Any = None
    context: Callable | None = None

    def init(self, key, *args, **kwargs):
        """The flow's initial parameters (the arguments are the model's, unused)."""
        return self.flow.init(key)

    def distribution(self, params, *args, **kwargs) -> FlowDistribution:
        """The site's distribution for the family's arguments."""
        context = None if self.context is None else self.context(*args, **kwargs)
        return FlowDistribution(self.flow, params, context)

    def __call__(self, params, *args, **kwargs):
        return sample(
            self.name, self.distribution(params, *args, **kwargs), estimator=self.estimator
        )


def flow_family(
    flow,
    kind: str = "planar",
    length: int = 8,
    *,
    name: str = "z",
    estimator=None,
    context: Callable | None = None,
    **options,
) -> FlowFamily:
    """A variational family sampling the site ``name`` from a normalizing flow.

    Args:
      flow: a :class:`~vijax.flows.Flow`, or the latent's dimension (an int), in which case the
        flow is ``make_flow(kind, flow, length, **options)``.
      kind, length, options: the flow to build when ``flow`` is a dimension
        (see :func:`make_flow`).
      name: the sample site's name (the model's latent, a vector of length ``dim``).
      estimator: the site's gradient strategy, e.g. ``vj.path()`` for the fast path gradient
        (``None``: the default rule, reparameterized).
      context: for an amortized (conditional) flow, ``context(*args)`` maps the family's
        arguments (the model's) to the context vector.
    """
    if not isinstance(flow, Flow):
        flow = make_flow(kind, flow, length, **options)
    elif options:
        raise ValueError(f"flow_family: options {sorted(options)} only apply when building a flow")
    if not isinstance(name, str) or not name:
        raise ValueError(f"flow_family: name must be a non-empty str, got {name!r}")
    if flow.context_dim and context is None:
        raise ValueError(
            f"flow_family: the flow is conditional (context_dim={flow.context_dim}); pass "
            "context=fn(*args) giving the context vector"
        )
    return FlowFamily(flow, name, estimator, context)
