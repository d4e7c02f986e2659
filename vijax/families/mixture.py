r"""Mixtures of families: ``q(z) = Σ_c π_c q_c(z)``, ``π = softmax(logits)``.

**Sampling.** The component index is an ordinary sample site (``"component"`` by default),

    c ~ Categorical(π),   z ~ q_c,

so its gradient strategy is chosen like any other site's: at the mixture
(``vj.mixture(..., estimator=vj.enumeration())``), from outside
(``vj.with_estimators(mix, {"component": vj.score_function(vj.leave_one_out())})``) or by the
default rule (score function, since a categorical has no reparameterization). The components
are drawn reparameterized (their own strategies do not apply).

**Density: the index is marginalized.** The family scores ``z`` by the mixture density

    log q(z) = logsumexp_c (log π_c + log q_c(z)),

not by the joint ``log π_c + log q_c(z)``. The joint would give the looser auxiliary-variable
bound ``E[log p(x, z) − log q(z) − log q(c | z)] ≤ ELBO`` (Agakov & Barber 2004); with the
marginal, ``E_{c, z}[log p(x, z) − log q(z)]`` *is* the ELBO of the mixture, and the index
only decides where ``z`` is drawn. Its gradient is
``Σ_c ∇π_c E_{q_c}[f] + Σ_c π_c ∇E_{q_c}[f]``, ``f = log p − log q``: enumeration of ``c``
(``vj.enumeration()``) computes the first sum exactly (one reparameterized draw per component,
common random numbers), the score function (``vj.score_function(baseline)``) estimates it with
``(f − b) ∇ log π_c``, the measure-valued derivative (``vj.mvd()``) with coupled values of ``c``.

The index site is marked ``infer={"marginalized": True}``: it belongs to the family's sampler,
not to the model, and its ``log π_c`` is not part of ``log q``. An objective that matches
family and model sites by name must skip such sites (both in the match and in ``log q``);
:func:`vijax.elbo` does not yet (see the project's issue 4 note), and the test suite writes the
ELBO as a four-line program that does.

**Where the density sits.** ``log q(z)`` does not factorize over sites, so the latent sites
take the names of the model's sites and the *last* one carries the whole ``log q(z)`` (its
distribution holds the earlier sites' values); the earlier ones carry ``0``. Every sum over
the family's sites (what objectives use) is exact. ``vj.log_density(mixture, values, params)``
needs a value for the index site and adds its ``log π_c``; :meth:`Mixture.log_prob` gives
``log q(z)``. The ``vj.path()`` strategy on the last site would hold the earlier values fixed
in it (biased for multi-site mixtures).

Components must sample the same latent sites with the same shapes; subsampled plates are
refused (the index is global: a component is chosen for all of ``z`` at once).

Example:
    >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model():
    ...     vj.sample("z", dist.Normal(0.0, 1.0))
    >>> mix = vj.mixture([vj.mean_field_normal(model, init_loc="sample"),
    ...                   vj.mean_field_normal(model, init_loc="sample")])
    >>> params = mix.init(jax.random.key(0))
    >>> draws = vj.sample_posterior(mix, params, jax.random.key(1), 100)
    >>> sorted(draws), draws["z"].shape
    (['component', 'z'], (100,))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as npd
from jax.scipy.special import ndtr

from vijax.core import (
    MARGINALIZED_KEY,
    arguments,
    block,
    is_marginalized,
    log_density,
    sample,
    seed,
    substitute,
    trace,
)
from vijax.estimators.strategies import check_strategy
from vijax.families import _sites

__all__ = ["MARGINALIZED_KEY", "Mixture", "mixture"]  # the key re-exported from vijax.core


class _Zero(npd.Distribution):
    """A placeholder density ``0`` for a site whose value the mixture sets (see the module)."""

    pytree_data_fields = ()
    pytree_aux_fields = ("_support",)

    def __init__(self, shape, support):
        self._support = support
        super().__init__(batch_shape=(), event_shape=tuple(shape))

    @property
    def support(self):
        return self._support

    def sample(self, key, sample_shape=()):
        raise NotImplementedError("the mixture sets this site's value")

    def log_prob(self, value):
        return jnp.zeros((), jnp.result_type(value, float))


class _MixtureDensity(npd.Distribution):
    """``log q(z)`` of the mixture at the earlier sites' values and this site's value."""

    pytree_data_fields = ("params", "earlier", "arrays")
    pytree_aux_fields = ("_mixture", "_static", "_name", "_support")

    def __init__(self, mixture, params, earlier, arrays, static, name, shape, support):
        self.params, self.earlier, self.arrays = params, earlier, arrays
        self._mixture, self._static, self._name, self._support = mixture, static, name, support
        super().__init__(batch_shape=(), event_shape=tuple(shape))

    @property
    def support(self):
        return self._support

    def sample(self, key, sample_shape=()):
        raise NotImplementedError("the mixture sets this site's value")

    def log_prob(self, value):
        args, kwargs = arguments.merge(self.arrays, self._static)
        values = {**self.earlier, self._name: value}
        return self._mixture.log_prob(self.params, values, *args, **kwargs)


def _latent_sites(tr) -> list:
    return [
        (n, s)
        for n, s in tr.items()
        if s["type"] == "sample" and not s["is_observed"] and not is_marginalized(s)
    ]


@dataclass(frozen=True)
class Mixture:
    """A mixture of families (see :func:`mixture` and the module docstring).

    Parameters: ``{"logits": (C,), "components": (params_1, ..., params_C)}``.
    """

    components: tuple
    index: str = "component"
    estimator: Any = None

    def init(self, key, *args, **kwargs) -> dict:
        """Zero logits (equal weights) and each component's ``init`` with its own key.

        Components that all start at the same point stay symmetric under the gradient; start
        them apart (``init_loc="sample"``, or parameters of your own).
        """
        keys = jax.random.split(key, len(self.components))
        parts = []
        for position, (component, component_key) in enumerate(zip(self.components, keys)):
            if not callable(getattr(component, "init", None)):
                raise ValueError(
                    f"mixture: component {position} has no init(key, *args); pass the "
                    "parameters yourself as {'logits': ..., 'components': (...)}"
                )
            parts.append(component.init(component_key, *args, **kwargs))
        return {
            "logits": jnp.zeros((len(self.components),), jnp.result_type(float)),
            "components": tuple(parts),
        }

    def _structure(self, params, args, kwargs) -> list:
        """``[(name, shape, support)]`` of the components' latent sites, checked to agree."""
        reference = None
        for position, (component, component_params) in enumerate(
            zip(self.components, params["components"])
        ):
            with block():
                tr = trace(seed(component, jax.random.key(0))).get_trace(
                    component_params, *args, **kwargs
                )
            if any(is_marginalized(s) for s in tr.values()):
                raise ValueError(
                    f"mixture: component {position} is itself a mixture; nested mixtures are "
                    "not supported (list all the components in one mixture)"
                )
            for name, site in tr.items():
                if site["type"] == "plate" and site["args"][1] not in (None, site["args"][0]):
                    raise ValueError(
                        f"mixture: component {position} subsamples plate {name!r}; a mixture "
                        "chooses one component for all of z, so it needs full plates"
                    )
            structure = [
                (n, tuple(jnp.shape(s["value"])), s["fn"].support) for n, s in _latent_sites(tr)
            ]
            if reference is None:
                reference = structure
            elif [(n, shape) for n, shape, _ in structure] != [
                (n, shape) for n, shape, _ in reference
            ]:
                raise ValueError(
                    f"mixture: component {position} samples {[(n, s) for n, s, _ in structure]}"
                    f" but component 0 samples {[(n, s) for n, s, _ in reference]}; every "
                    "component must sample the same latent sites with the same shapes"
                )
        if self.index in {n for n, _, _ in reference}:
            raise ValueError(
                f"mixture: index site name {self.index!r} is also a latent site of the "
                "components; choose another index name"
            )
        return reference

    def _check_params(self, params) -> None:
        count = len(self.components)
        if (
            not isinstance(params, dict)
            or "logits" not in params
            or "components" not in params
            or len(params["components"]) != count
            or jnp.shape(params["logits"]) != (count,)
        ):
            raise ValueError(
                f"mixture: params must be {{'logits': ({count},), 'components': "
                f"(...{count} component parameters)}}"
            )

    def __call__(self, params, *args, **kwargs):
        """Draw the index, then ``z`` from that component; score ``z`` by the mixture."""
        self._check_params(params)
        structure = self._structure(params, args, kwargs)
        index = sample(
            self.index,
            npd.Categorical(logits=params["logits"]),
            estimator=self.estimator,
            infer={MARGINALIZED_KEY: True},
        )
        key = numpyro.prng_key()
        if key is None:
            raise ValueError("mixture: drawing needs a random key; run it under vj.seed")

        def branch(component, position):
            def draw(all_params, draw_key):
                with block():
                    tr = trace(seed(component, draw_key)).get_trace(
                        all_params[position], *args, **kwargs
                    )
                return {n: s["value"] for n, s in _latent_sites(tr)}

            return draw

        branches = [branch(c, i) for i, c in enumerate(self.components)]
        drawn = jax.lax.switch(index, branches, params["components"], key)
        values = {}
        arrays, static = arguments.split((args, kwargs))
        for position, (name, shape, support) in enumerate(structure):
            if position + 1 < len(structure):
                fn = _Zero(shape, support)
            else:
                fn = _MixtureDensity(
                    self, params, dict(values), arrays, static, name, shape, support
                )
            with substitute(data={name: drawn[name]}):
                values[name] = sample(name, fn)
        return values

    def log_prob(self, params, values: dict, *args, **kwargs) -> jax.Array:
        """``log q(z) = logsumexp_c (log π_c + log q_c(z))`` at ``values`` (one per site)."""
        log_weights = jax.nn.log_softmax(params["logits"])
        terms = []
        for component, component_params in zip(self.components, params["components"]):
            with block():
                term, _ = log_density(component, values, component_params, *args, **kwargs)
            terms.append(term)
        return jax.nn.logsumexp(log_weights + jnp.stack(terms))

    def _marginals(self, params, args, kwargs):
        parts = []
        for position, (component, component_params) in enumerate(
            zip(self.components, params["components"])
        ):
            marginals = getattr(component, "_unconstrained_marginals", None)
            if marginals is None:
                raise ValueError(
                    f"mixture: component {position} is not a Gaussian auto-family, so its "
                    "marginals are unknown; use vj.sample_posterior and jnp.quantile"
                )
            parts.append(marginals(component_params, *args, **kwargs))
        return parts

    def quantiles(self, params, q, *args, **kwargs) -> dict:
        r"""Marginal ``q``-quantiles of each latent in the constrained space (leading axis
        ``q``), for mixtures of Gaussian auto-families.

        The unconstrained coordinate ``u_i`` has the CDF ``F(u) = Σ_c π_c Φ((u − μ_ci)/σ_ci)``;
        its quantile is found by bisection (to float precision) and pushed through the
        site's bijection as in :meth:`MeanFieldNormal.quantiles`.
        """
        levels = _sites.quantile_levels(q)
        return _sites.compiled(_quantiles_of, self, params, (levels,), args, kwargs)

    def median(self, params, *args, **kwargs) -> dict:
        """The marginal median of each unconstrained coordinate, pushed through ``T_s``."""
        levels = jnp.array([0.5], jnp.result_type(float))
        quantiles = _sites.compiled(_quantiles_of, self, params, (levels,), args, kwargs)
        return {name: value[0] for name, value in quantiles.items()}


def _quantiles_of(mixture: Mixture, params, levels, *args, **kwargs) -> dict:
    weights = jax.nn.softmax(params["logits"])
    parts = mixture._marginals(params, args, kwargs)
    out = {}
    for position, (site, _, _) in enumerate(parts[0]):
        locs = jnp.stack([part[position][1] for part in parts])
        scales = jnp.stack([part[position][2] for part in parts])

        def quantile(level, locs=locs, scales=scales):
            return _mixture_quantile(level, weights, locs, scales)

        out[site.name] = _sites.constrained_quantiles(site, quantile, levels)
    return out


def _mixture_quantile(level, weights, locs, scales):
    """Quantiles of ``Σ_c w_c N(μ_c, σ_c²)`` per coordinate (``level`` as leading axes)."""
    shape = level.shape + (1,) * (locs.ndim - 1)
    target = jnp.reshape(level, shape)
    lower = jnp.min(locs - 12.0 * scales, axis=0) - 1e-6
    upper = jnp.max(locs + 12.0 * scales, axis=0) + 1e-6
    lower = jnp.broadcast_to(lower, level.shape + lower.shape)
    upper = jnp.broadcast_to(upper, level.shape + upper.shape)
    w = jnp.reshape(weights, (-1,) + (1,) * (locs.ndim - 1))

    def cdf(u):  # u: level.shape + site.shape
        z = (jnp.expand_dims(u, len(level.shape)) - locs) / jnp.where(scales > 0, scales, 1.0)
        below = jnp.where(scales > 0, ndtr(z), (z >= 0).astype(z.dtype))
        return jnp.sum(w * below, axis=len(level.shape))

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        left = cdf(mid) < target
        return jnp.where(left, mid, lo), jnp.where(left, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 100, bisect, (lower, upper))
    return 0.5 * (lo + hi)


def mixture(families: Sequence[Callable], *, index: str = "component", estimator=None) -> Mixture:
    r"""A mixture ``q(z) = Σ_c softmax(logits)_c q_c(z)`` of families (module docstring).

    Args:
      families: two or more families ``family(params, *args)`` sampling the same latent sites
        (auto-families, flows, hand-written programs), each reparameterized.
      index: the name of the component index site.
      estimator: the index site's gradient strategy (``vj.enumeration()`` for the exact sum
        over components, ``vj.score_function(baseline)``, ...); ``None`` leaves it to
        ``vj.with_estimators`` or the default rule.

    Example:
        >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def model():
        ...     vj.sample("z", dist.Normal(0.0, 1.0))
        >>> mix = vj.mixture([vj.mean_field_normal(model)] * 2, estimator=vj.enumeration())
        >>> params = {"logits": jnp.log(jnp.array([0.25, 0.75])), "components": (
        ...     {"loc": {"z": -1.0}, "log_scale": {"z": 0.0}},
        ...     {"loc": {"z": 1.0}, "log_scale": {"z": 0.0}})}
        >>> log_q = mix.log_prob(params, {"z": 0.0})  # log(0.25 N(0; −1, 1) + 0.75 N(0; 1, 1))
        >>> round(float(log_q), 4)
        -1.4189
    """
    families = tuple(families)
    if len(families) < 2 or not all(callable(f) for f in families):
        raise ValueError(
            f"mixture: families must be a sequence of two or more programs, got {families!r}"
        )
    if not isinstance(index, str) or not index:
        raise ValueError(f"mixture: index must be a site name, got {index!r}")
    if estimator is not None:
        check_strategy(estimator, index)
    return Mixture(families, index, estimator)
