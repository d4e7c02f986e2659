r"""Flows as distributions, and the fast path gradient at a vijax sample site.

A :class:`Flow` pushes a standard-normal base ``ε ~ N(0, I_d)`` through a layer ``f_θ`` (a
:func:`~vijax.flows.chain` or :func:`~vijax.flows.repeat` of layers, optionally conditioned on a
context ``c``): ``x = f_θ(ε; c)`` and

    log q_θ(x | c) = log N(ε; 0, I) − log|det ∂f_θ/∂ε|.

:class:`FlowDistribution` is that density as a NumPyro distribution, so it goes wherever a
distribution goes: ``vj.sample("z", FlowDistribution(flow, params))``, plates, ``to_event``,
every objective and strategy. It is a JAX pytree whose leaves are the parameters and the
context (``jax.tree.map(stop_gradient, d)`` stops both).

**The fast path gradient** (Vaitl et al. 2024, "Fast and Unified Path Gradient Estimators for
Normalizing Flows"). A path gradient (Roeder et al. 2017) differentiates the family's own
density term with the parameters held fixed, ``log q_{⊥θ}(x_θ)``, whose derivative is
``∇_x log q(x) · ∂x_θ/∂θ``: it needs the *score* ``∇_x log q`` at the sample. Peers get it by
an inverse pass ``x → ε`` differentiated with stopped parameters (FlowJAX's stick-the-landing),
which costs a second pass through the flow and is impossible for flows without an inverse.
Here the score travels forward with the sample: ``g_0 = ∇ log N(ε) = −ε`` and, layer by layer,

    g_{l+1} = J_l^{-T} (g_l − ∇_{x_l} log|det J_l|)

(:mod:`vijax.flows.bijector`), with each layer's Jacobian structure (Sherman–Morrison for planar
and radial, one conditioner VJP for coupling and MAF layers, a triangular solve for IAF). So
``sample_with_intermediates`` returns ``x`` together with ``log q(x)`` and ``g = ∇_x log q(x)``
from the one forward pass.

**How it meets the ``path`` strategy.** vijax evaluates a family site's density term as
``fn.log_prob(x, intermediates)`` with the intermediates of the draw, and the ``path`` strategy
passes ``fn`` with stopped parameters. :meth:`FlowDistribution.log_prob` with intermediates
returns the carried ``log q`` through a ``jax.custom_jvp`` rule that reads which inputs are
being differentiated (JAX's symbolic zeros):

- the flow's parameters or context are differentiated (the ``reparameterized`` strategy): the
  tangent is that of the carried ``log q``, i.e. the total derivative along the draw, as
  NumPyro's ``TransformedDistribution`` does with its intermediates;
- they are held fixed (the ``path`` strategy stops them): the tangent is ``g · ẋ``, the carried
  score against the value's tangent. That is exactly ``∇_x log q_{⊥θ}(x) · ∂x/∂θ`` with no
  inverse pass and no second pass through the flow.

The value is ``log q(x)`` either way. Without intermediates (a value from ``obs``,
``substitute``, ``replay`` or a score-function draw) the density is the inverse pass. The rule
relies on JAX reporting an undifferentiated input as a symbolic zero, which it does for
``stop_gradient``; if a zero tangent is instantiated instead (for example parameters threaded
through a differentiated ``lax.scan`` carry), the rule takes the first branch: the estimate
stays unbiased but is the standard one, not the path gradient.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from vijax.flows import Flow, planar, repeat
    >>> flow = Flow(repeat(planar(2), 4))
    >>> params = flow.init(jax.random.key(0))
    >>> d = flow.distribution(params)
    >>> x, log_q = d.sample_and_log_prob(jax.random.key(1), (3,))
    >>> x.shape, log_q.shape
    ((3, 2), (3,))
    >>> bool(jnp.allclose(d.log_prob(x), log_q, atol=1e-5))  # the inverse pass agrees
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as npd
from jax.custom_derivatives import SymbolicZero
from numpyro.distributions import constraints

from vijax.flows.composition import Chain, Repeat, _check_layer

__all__ = ["Flow", "FlowDistribution", "FlowIntermediates"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def context_dim_of(layer) -> int:
    """The context length a layer (or composition) reads; ``ValueError`` if its layers disagree."""
    if isinstance(layer, Chain):
        dims = {context_dim_of(inner) for inner in layer.layers} - {0}
    elif isinstance(layer, Repeat):
        dims = {context_dim_of(layer.layer)} - {0}
    else:
        dims = {getattr(layer, "context_dim", 0)} - {0}
    if len(dims) > 1:
        raise ValueError(f"flow: conditional layers must share one context_dim, got {sorted(dims)}")
    return dims.pop() if dims else 0


def _base_log_prob(eps):
    return -0.5 * jnp.sum(eps * eps, axis=-1) - eps.shape[-1] * _HALF_LOG_2PI


def _map_events(fn, x, context):
    """``fn(x_i, c_i)`` over the leading axes of ``x`` (and of ``context``), by ``vmap``."""
    lead = x.shape[:-1]
    if context is not None:
        lead = jnp.broadcast_shapes(lead, context.shape[:-1])
        context = jnp.broadcast_to(context, lead + context.shape[-1:])
        context = context.reshape((-1, *context.shape[-1:]))
    x = jnp.broadcast_to(x, lead + x.shape[-1:]).reshape((-1, *x.shape[-1:]))
    out = jax.vmap(fn)(x, context) if context is not None else jax.vmap(lambda x: fn(x, None))(x)
    return jax.tree.map(lambda a: a.reshape(lead + a.shape[1:]), out)


@dataclass(frozen=True)
class Flow:
    """A normalizing flow: ``x = transform(ε; c)``, ``ε ~ N(0, I_dim)`` (module docstring).

    ``transform`` is a layer (usually a chain or repeat of layers). Methods take the parameters
    (from :meth:`init`) explicitly and act on arrays with any leading axes.
    """

    transform: Any

    def __post_init__(self):
        _check_layer(self.transform, "Flow")
        context_dim_of(self.transform)

    @property
    def dim(self) -> int:
        """The dimension of ``x``."""
        return self.transform.dim

    @property
    def context_dim(self) -> int:
        """The length of the context vector (0 for an unconditional flow)."""
        return context_dim_of(self.transform)

    def init(self, key):
        """Initial parameters (a pytree)."""
        return self.transform.init(key)

    def distribution(self, params, context=None) -> FlowDistribution:
        """The flow as a NumPyro distribution (see :class:`FlowDistribution`)."""
        return FlowDistribution(self, params, context)

    # -- checks ------------------------------------------------------------------------------
    def check_value(self, value, what: str = "value") -> jax.Array:
        value = jnp.asarray(value)
        if value.ndim < 1 or value.shape[-1] != self.dim:
            raise ValueError(
                f"flow: {what} must have last dimension dim={self.dim}, got shape {value.shape}"
            )
        return value

    def check_context(self, context):
        context_dim = self.context_dim
        if context is None:
            if context_dim:
                raise ValueError(f"flow: context_dim={context_dim} but no context was given")
            return None
        if not context_dim:
            raise ValueError("flow: got a context, but the flow is not conditional (context_dim=0)")
        context = jnp.asarray(context)
        if context.ndim < 1 or context.shape[-1] != context_dim:
            raise ValueError(
                f"flow: context must have last dimension context_dim={context_dim}, "
                f"got shape {context.shape}"
            )
        return context

    # -- densities and draws -------------------------------------------------------------------
    def transport(self, params, eps, context=None):
        r"""``(x, log q(x), ∇_x log q(x))`` for base draws ``eps``, in one forward pass.

        The score is carried with the sample (module docstring); no inverse is computed.
        """
        eps, context = self.check_value(eps, "eps"), self.check_context(context)

        def one(e, c):
            x, log_det, score = self.transform.forward_with_score(params, e, -e, c)
            return x, _base_log_prob(e) - log_det, score

        return _map_events(one, eps, context)

    def forward(self, params, eps, context=None):
        """``(x, log q(x))`` for base draws ``eps`` (one forward pass, no score)."""
        eps, context = self.check_value(eps, "eps"), self.check_context(context)

        def one(e, c):
            x, log_det = self.transform.forward_and_log_det(params, e, c)
            return x, _base_log_prob(e) - log_det

        return _map_events(one, eps, context)

    def inverse(self, params, x, context=None):
        """``(ε, log q(x))`` by the inverse pass."""
        x, context = self.check_value(x), self.check_context(context)

        def one(x, c):
            eps, log_det = self.transform.inverse_and_log_det(params, x, c)
            return eps, _base_log_prob(eps) + log_det

        return _map_events(one, x, context)

    def log_prob(self, params, x, context=None):
        """``log q(x)`` by the inverse pass."""
        return self.inverse(params, x, context)[1]

    def score(self, params, x, context=None):
        """``∇_x log q(x)`` at any ``x``: the inverse pass to ``ε``, then the carried score."""
        eps = jax.lax.stop_gradient(self.inverse(params, x, context)[0])
        return self.transport(params, eps, context)[2]

    def _eps(self, key, sample_shape, context):
        context = self.check_context(context)
        batch = () if context is None else context.shape[:-1]
        return jax.random.normal(key, tuple(sample_shape) + batch + (self.dim,)), context

    def sample(self, params, key, sample_shape=(), context=None):
        """Draws of shape ``sample_shape + context.shape[:-1] + (dim,)``."""
        eps, context = self._eps(key, sample_shape, context)
        return self.forward(params, eps, context)[0]

    def sample_and_log_prob(self, params, key, sample_shape=(), context=None):
        """Draws and their ``log q`` from one forward pass."""
        eps, context = self._eps(key, sample_shape, context)
        return self.forward(params, eps, context)

    def sample_log_prob_and_score(self, params, key, sample_shape=(), context=None):
        """Draws, ``log q`` and ``∇_x log q`` from one forward pass (:meth:`transport`)."""
        eps, context = self._eps(key, sample_shape, context)
        return self.transport(params, eps, context)


class FlowIntermediates(NamedTuple):
    """What a draw leaves for ``log_prob``: ``log q(x)`` and the score ``∇_x log q(x)``."""

    log_prob: jax.Array
    score: jax.Array


def _perturbed(tangents) -> bool:
    leaves = jax.tree.leaves(tangents, is_leaf=lambda t: isinstance(t, SymbolicZero))
    return any(not isinstance(t, SymbolicZero) for t in leaves)


@jax.custom_jvp
def _log_prob_at_draw(parameters, value, log_prob, score):
    """``log_prob`` (carried by the draw of ``value``); derivatives in the module docstring."""
    del parameters, value, score
    return log_prob


def _log_prob_at_draw_jvp(primals, tangents):
    _, _, log_prob, score = primals
    parameters_dot, value_dot, log_prob_dot, _ = tangents
    if _perturbed(parameters_dot):
        # the flow itself is differentiated: the total derivative along the draw
        tangent = (
            jnp.zeros_like(log_prob) if isinstance(log_prob_dot, SymbolicZero) else log_prob_dot
        )
    elif isinstance(value_dot, SymbolicZero):
        tangent = jnp.zeros_like(log_prob)
    else:
        # held fixed (path gradient): ∇_x log q(x) · ẋ with the carried score
        tangent = jnp.sum(jax.lax.stop_gradient(score) * value_dot, axis=-1)
    return log_prob, tangent


_log_prob_at_draw.defjvp(_log_prob_at_draw_jvp, symbolic_zeros=True)


class FlowDistribution(npd.Distribution):
    r"""A :class:`Flow` with its parameters (and context) as a NumPyro distribution.

    ``batch_shape`` is ``context.shape[:-1]`` (``()`` without a context), ``event_shape`` is
    ``(dim,)``, the support is ``R^dim`` and draws are reparameterized (``has_rsample``).
    ``sample_and_log_prob`` takes one forward pass; ``sample_with_intermediates`` returns the
    draw's ``log q`` and score (:class:`FlowIntermediates`), with which ``log_prob`` needs no
    inverse pass and gives the fast path gradient (module docstring).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import vijax as vj
        >>> from vijax.flows import Flow, radial, repeat
        >>> flow = Flow(repeat(radial(2), 3))
        >>> d = FlowDistribution(flow, flow.init(jax.random.key(0)))
        >>> x, intermediates = d.sample_with_intermediates(jax.random.key(1))
        >>> bool(jnp.allclose(d.log_prob(x, intermediates), d.log_prob(x), atol=1e-5))
        True
    """

    arg_constraints = {}  # noqa: RUF012 (NumPyro's class attribute)
    support = constraints.real_vector
    pytree_data_fields = ("params", "context")
    pytree_aux_fields = ("flow",)

    def __init__(self, flow: Flow, params, context=None, *, validate_args=None):
        if not isinstance(flow, Flow):
            raise ValueError(f"FlowDistribution: flow must be a vj.flows.Flow, got {flow!r}")
        context = flow.check_context(context)
        self.flow, self.params, self.context = flow, params, context
        batch_shape = () if context is None else tuple(context.shape[:-1])
        super().__init__(batch_shape, (flow.dim,), validate_args=validate_args)

    @property
    def has_rsample(self) -> bool:
        return True

    def sample(self, key, sample_shape=()):
        return self.flow.sample(self.params, key, tuple(sample_shape), self.context)

    def sample_and_log_prob(self, key, sample_shape=()):
        """A draw and its ``log q`` from one forward pass."""
        return self.flow.sample_and_log_prob(self.params, key, tuple(sample_shape), self.context)

    def sample_with_intermediates(self, key, sample_shape=()):
        x, log_prob, score = self.flow.sample_log_prob_and_score(
            self.params, key, tuple(sample_shape), self.context
        )
        return x, [FlowIntermediates(log_prob, score)]

    def log_prob(self, value, intermediates=None):
        value = self.flow.check_value(value)
        if intermediates:
            (carried,) = intermediates
            if jnp.shape(carried.score) != jnp.shape(value):
                raise ValueError(
                    f"FlowDistribution.log_prob: value of shape {jnp.shape(value)} does not "
                    f"match the draw's intermediates (shape {jnp.shape(carried.score)})"
                )
            return _log_prob_at_draw(
                (self.params, self.context), value, carried.log_prob, carried.score
            )
        return self.flow.log_prob(self.params, value, self.context)

    def score(self, value):
        """``∇_x log q(x)`` at ``value`` (inverse pass, then the carried score)."""
        return self.flow.score(self.params, value, self.context)
