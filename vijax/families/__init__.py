"""Variational families: hand-written programs ``family(params, *args)`` and auto-families.

- factorized auto-families (:mod:`vijax.families.auto`): :func:`mean_field_normal`, :func:`delta`;
- joint Gaussian auto-families (:mod:`vijax.families.gaussian`): :func:`full_rank_normal`,
  :func:`low_rank_normal`, :func:`laplace_approximation`;
- a normalizing-flow auto-family (:mod:`vijax.families.auto_flow`): :func:`auto_flow`;
- :func:`mixture` of families (:mod:`vijax.families.mixture`);
- :func:`amortized_normal`, an encoder network per datum (:mod:`vijax.families.amortized`).
"""

from vijax.families.amortized import AmortizedNormal, amortized_normal
from vijax.families.auto import Delta, MeanFieldNormal, delta, mean_field_normal
from vijax.families.auto_flow import AutoFlow, auto_flow
from vijax.families.gaussian import (
    FullRankNormal,
    LowRankNormal,
    full_rank_normal,
    laplace_approximation,
    low_rank_normal,
)
from vijax.families.mixture import MARGINALIZED_KEY, Mixture, mixture

__all__ = [
    "MARGINALIZED_KEY",
    "AmortizedNormal",
    "AutoFlow",
    "Delta",
    "FullRankNormal",
    "LowRankNormal",
    "MeanFieldNormal",
    "Mixture",
    "amortized_normal",
    "auto_flow",
    "delta",
    "full_rank_normal",
    "laplace_approximation",
    "low_rank_normal",
    "mean_field_normal",
    "mixture",
]
