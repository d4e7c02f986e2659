"""Variational families: hand-written programs ``family(params, *args)`` and auto-families."""

from vijax.families.auto import MeanFieldNormal, mean_field_normal

__all__ = ["MeanFieldNormal", "mean_field_normal"]
