r"""Importance-weighted bounds per datum, for programs whose every site lies in one data plate.

``vj.iwae`` couples its ``K`` particles through the whole program: for a VAE on a minibatch it
bounds ``log p(x_1, ..., x_B)`` with ``log (1/K) Σ_k Π_i w_{ik}``, which for large ``B`` is
hardly tighter than the ELBO. The IWAE of Burda et al. (2016) is a bound *per datum*:

    L_K = Σ_i E[log (1/K) Σ_k w_{ik}],   w_{ik} = p_θ(x_i, z_{ik}) / q_φ(z_{ik} | x_i),

which needs the per-datum log-weights ``log w_{ik}``. Both programs are run once per particle
(vectorized); each site's log-density is read per element of the plate
(:func:`per_datum_log_weights`), and the plate's minibatch scale ``N / B`` multiplies the sum
over data.

- :func:`per_datum_iwae`: the bound above (``K = 1``: the Monte Carlo ELBO, no closed-form KL).
  It is a per-datum coupled block (:func:`vijax.particle_log_mean_exp` with ``plate=``), so
  every gradient strategy sees the per-datum structure: reparameterized sites are pathwise; a
  score-function site of datum ``i`` has datum ``i``'s bound as its learning signal, and with
  ``vj.leave_one_out()`` its VIMCO advantage within datum ``i`` (VIMCO per datum, Mnih &
  Rezende 2016); measure-valued sites perturb every datum's element at once. Enumeration is
  refused (each datum's particles would have to be enumerated jointly).
- :func:`per_datum_iwae_dreg`: the same bound with doubly reparameterized gradients (Tucker et
  al. 2019): ``∇_φ L_K = Σ_i E[Σ_k w̃_{ik}² ∂ log w_{ik}/∂z_{ik} · ∂z_{ik}/∂φ]``,
  ``w̃_{ik} = w_{ik} / Σ_j w_{ij}``. Every family site takes the path strategy (``log q`` with
  ``φ`` held fixed), and the cotangent reaching the parameters of ``q(z_{ik} | x_i)`` is scaled
  by ``w̃_{ik}`` (held fixed), which turns the IWAE gradient's ``w̃`` into ``w̃²`` for ``φ``
  while the model's parameters keep ``w̃``. (``vj.iwae_dreg`` scales the family's parameters,
  which works for one coupled block but not per datum.)

The particles are coupled within each datum only: the estimator sees one coupled block per
datum (the plate's minibatch scale ``N / B`` multiplies the block).

Example:
    >>> import jax, jax.numpy as jnp
    >>> import numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model(x):
    ...     with vj.plate("data", x.shape[0]):
    ...         z = vj.sample("z", dist.Normal(0.0, 1.0))
    ...         vj.sample("x", dist.Normal(z, 1.0), obs=x)
    >>> def family(params, x):
    ...     with vj.plate("data", x.shape[0]):
    ...         vj.sample("z", dist.Normal(params["a"] * x, 0.8))
    >>> x, params = jnp.array([0.5, -1.0, 2.0]), {"a": jnp.array(0.5)}
    >>> vj.per_datum_log_weights(model, family, params, jax.random.key(1), 7, x).shape
    (7, 3)
    >>> bound = vj.per_datum_iwae(model, family, 16)(params, jax.random.key(2), x)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from numpyro.primitives import Messenger

from vijax.core import block, site_axes, site_log_prob
from vijax.estimators import (
    path,
    site_strategy,
    stops_density_gradient,
    with_estimators,
)
from vijax.estimators.strategies import Enumerate
from vijax.objectives.expectation import Terms, particle_log_mean_exp
from vijax.objectives.gradients import scale_gradient
from vijax.objectives.programs import importance_traces

PLATE = "data"  # the default plate name, as in the examples

__all__ = [
    "PerDatumIWAE",
    "PerDatumIWAEDReG",
    "per_datum_iwae",
    "per_datum_iwae_dreg",
    "per_datum_log_weight",
    "per_datum_log_weights",
]


def _plate_scale(trace, plate: str) -> float:
    site = trace.get(plate)
    if site is None or site["type"] != "plate":
        raise ValueError(f"per-datum bound: the programs open no plate named {plate!r}")
    size, subsample = site["args"]
    return 1.0 if subsample is None else size / subsample


def _per_datum(trace, names, plate: str, family: bool):
    total = None
    for name in names:
        site = trace[name]
        if (
            family
            and stops_density_gradient(site_strategy(site))
            and not site.get("path_density")  # importance_traces stopped its parameters already
        ):
            site = {**site, "fn": jax.tree.map(jax.lax.stop_gradient, site["fn"])}
        log_prob = site_log_prob(site)
        axes = site_axes(site, jnp.ndim(log_prob))
        if plate not in axes:
            raise ValueError(
                f"per-datum bound: site {name!r} is not inside plate {plate!r}; every site "
                "must be local to a datum (use vj.iwae for global latents)"
            )
        position = axes.index(plate)
        others = tuple(i for i in range(jnp.ndim(log_prob)) if i != position)
        term = jnp.sum(log_prob, axis=others) if others else log_prob
        total = term if total is None else total + term
    return total


def per_datum_log_weight(
    model, family, params, key, args, kwargs, plate: str = PLATE, *, objective: str = ""
):
    """One particle's ``log w_i = log p(x_i, z_i) − log q(z_i | x_i)`` for every datum ``i`` of
    ``plate``.

    With ``objective`` (a name for messages) the family's sites must not be enumerated (each
    datum's particles would have to be enumerated jointly).

    Returns:
      ``(log_weights, scale)``: an array ``(B,)`` (unscaled by the minibatch factor) and the
      plate's scale ``N / B`` (a Python float).
    """
    model_trace, family_trace = importance_traces(model, family, params, key, args, kwargs)
    if objective:
        for name, site in family_trace.items():
            if site["type"] == "sample" and isinstance(site_strategy(site), Enumerate):
                raise ValueError(
                    f"{objective}: site {name!r} uses {site_strategy(site).name}, which a "
                    "multi-particle bound cannot support (each datum's particles would have to "
                    "be enumerated jointly); use vj.mvd() or vj.score_function(vj.leave_one_out()) "
                    "here, or enumeration with vj.elbo"
                )
    scale = _plate_scale(family_trace, plate)
    latents = [n for n, s in family_trace.items() if s["type"] == "sample" and not s["is_observed"]]
    observed = [n for n, s in model_trace.items() if s["type"] == "sample"]
    log_p = _per_datum(model_trace, observed, plate, family=False)
    log_q = _per_datum(family_trace, latents, plate, family=True)
    return (log_p - log_q) / scale, scale


def per_datum_log_weights(
    model, family, params, key, num_particles: int, *args, plate: str = PLATE
):
    """``(K, B)`` per-datum log-weights of ``K`` independent particles (vectorized).

    No gradient strategy is involved: this is for evaluation (a log-likelihood estimate is
    ``logsumexp_k log w_{ik} − log K``).
    """

    def one(particle_key):
        return per_datum_log_weight(model, family, params, particle_key, args, {}, plate)[0]

    return jax.vmap(one)(jax.random.split(key, num_particles))


def _check_particles(name: str, num_particles) -> int:
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"{name}: num_particles must be a positive int, got {num_particles!r}")
    return num_particles


@dataclass(frozen=True)
class PerDatumIWAE:
    """The per-datum importance-weighted bound (see :func:`per_datum_iwae`)."""

    model: Callable
    family: Callable
    num_particles: int
    plate: str = PLATE

    def __call__(self, params, key, *args, **kwargs):
        scales = []

        def one(particle_key):
            log_w, scale = per_datum_log_weight(
                self.model,
                self.family,
                params,
                particle_key,
                args,
                kwargs,
                self.plate,
                objective="per_datum_iwae",
            )
            scales.append(scale)
            return Terms.term(log_w, (self.plate,))

        bound = particle_log_mean_exp(one, key, self.num_particles, plate=self.plate)
        return bound * scales[0]  # a Python float: the coupled block keeps its structure


def per_datum_iwae(
    model: Callable, family: Callable, num_particles: int, *, plate: str = PLATE
) -> PerDatumIWAE:
    """The IWAE bound of Burda et al. (2016), one per datum of ``plate``, summed (maximize it).

    Args:
      model, family: programs whose sites all lie in ``plate`` (a VAE's ``model`` and
        ``family``; ``model(model_params, ...)`` with :class:`vijax.ModelAndFamilyParams`).
      num_particles: ``K``, particles per datum.
      plate: the data plate's name.
    """
    return PerDatumIWAE(model, family, _check_particles("per_datum_iwae", num_particles), plate)


class _ScaleParameterGradients(Messenger):
    """Scale the cotangent of every latent site's distribution parameters by ``factor[i]``
    (``i``: the datum, the parameters' leading axis)."""

    def __init__(self, fn, factor):
        self.factor = factor
        super().__init__(fn)

    def _scaled(self, name, leaf):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            return leaf
        count = self.factor.shape[0]
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != count:
            raise ValueError(
                f"per_datum_iwae_dreg: site {name!r} has a parameter of shape {jnp.shape(leaf)}, "
                f"not one row per datum ({count}); DReG per datum needs the family's "
                "distribution parameters computed per datum (an amortized family)"
            )
        shape = (count,) + (1,) * (jnp.ndim(leaf) - 1)
        factor = self.factor.reshape(shape).astype(jnp.result_type(leaf))
        return scale_gradient(leaf, factor)

    def process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["fn"] = jax.tree.map(lambda leaf: self._scaled(msg["name"], leaf), msg["fn"])


@dataclass(frozen=True)
class PerDatumIWAEDReG:
    """The per-datum IWAE bound with DReG gradients (see :func:`per_datum_iwae_dreg`)."""

    model: Callable
    family: Callable
    num_particles: int
    plate: str = PLATE

    def __call__(self, params, key, *args, **kwargs):
        family = with_estimators(self.family, default=path())
        num = self.num_particles
        keys = jax.random.split(key, num)  # the keys particle_log_mean_exp gives its particles
        with block():  # a first pass for the normalized weights, hidden from the estimator
            first = jax.vmap(
                lambda k: per_datum_log_weight(
                    self.model, family, params, k, args, kwargs, self.plate
                )[0]
            )(keys)
        normalized = jax.lax.stop_gradient(jax.nn.softmax(first, axis=0))  # (K, B)
        scales = []

        def one(particle_key, factor):
            scaled = _ScaleParameterGradients(family, factor)
            log_w, scale = per_datum_log_weight(
                self.model,
                scaled,
                params,
                particle_key,
                args,
                kwargs,
                self.plate,
                objective="per_datum_iwae_dreg",
            )
            scales.append(scale)
            return Terms.term(log_w, (self.plate,))

        bound = particle_log_mean_exp(one, key, num, normalized, plate=self.plate)
        return bound * scales[0]


def per_datum_iwae_dreg(
    model: Callable, family: Callable, num_particles: int, *, plate: str = PLATE
) -> PerDatumIWAEDReG:
    """:func:`per_datum_iwae` whose family gradient is DReG's (Tucker et al. 2019).

    Every latent site of the family must be reparameterizable, with distribution parameters
    computed per datum (an encoder's output); the value is the IWAE bound's estimate.
    """
    return PerDatumIWAEDReG(
        model, family, _check_particles("per_datum_iwae_dreg", num_particles), plate
    )
