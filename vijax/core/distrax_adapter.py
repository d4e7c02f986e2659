"""Use distrax distributions at vijax sample sites.

vijax's sites speak NumPyro's ``Distribution`` interface (``sample``, ``log_prob``, batch and
event shapes, ``expand`` for plates, ``has_rsample``). A distrax distribution is wrapped in
:class:`DistraxDistribution`, which forwards sampling and densities to distrax. distrax does not
expose supports, so the adapter declares the real line (with the distribution's event rank)
unless a NumPyro constraint is given.

Example:
    >>> import distrax, jax
    >>> d = as_numpyro_distribution(distrax.Normal(0.0, 1.0))
    >>> float(d.log_prob(0.0))  # doctest: +ELLIPSIS
    -0.918...
"""

from __future__ import annotations

from typing import Any

import numpyro.distributions as npd
from numpyro.distributions import constraints

__all__ = ["DistraxDistribution", "as_numpyro_distribution"]


def _is_distrax(fn: Any) -> bool:
    return type(fn).__module__.split(".")[0] == "distrax"


class DistraxDistribution(npd.Distribution):
    """A NumPyro view of a distrax distribution (sampling is pathwise, as in distrax)."""

    pytree_data_fields = ("base",)

    def __init__(self, base: Any, support: constraints.Constraint | None = None):
        self.base = base
        event_shape = tuple(base.event_shape)
        self._support = support or (
            constraints.independent(constraints.real, len(event_shape))
            if event_shape
            else constraints.real
        )
        super().__init__(batch_shape=tuple(base.batch_shape), event_shape=event_shape)

    @property
    def support(self):
        return self._support

    @property
    def has_rsample(self) -> bool:
        return True

    def sample(self, key, sample_shape=()):
        return self.base.sample(seed=key, sample_shape=sample_shape)

    def log_prob(self, value):
        return self.base.log_prob(value)

    @property
    def mean(self):
        return self.base.mean()

    @property
    def variance(self):
        return self.base.variance()


def as_numpyro_distribution(fn: Any, name: str | None = None) -> npd.Distribution:
    """Return ``fn`` as a NumPyro distribution (distrax ones are adapted, others refused)."""
    if isinstance(fn, npd.Distribution):
        return fn
    if _is_distrax(fn):
        return DistraxDistribution(fn)
    where = f"site {name!r}: " if name else ""
    raise ValueError(f"{where}expected a numpyro or distrax distribution, got {type(fn).__name__}")
