"""Programs: primitives, effect handlers and log-densities (knows nothing of the layers above)."""

from vijax.core.density import (
    ENUMERATED,
    check_site_shape,
    log_density,
    site_axes,
    site_log_prob,
)
from vijax.core.distrax_adapter import DistraxDistribution, as_numpyro_distribution
from vijax.core.handlers import block, condition, mask, replay, scale, seed, substitute, trace
from vijax.core.primitives import (
    ESTIMATOR_KEY,
    MARGINALIZED_KEY,
    deterministic,
    factor,
    is_marginalized,
    plate,
    sample,
)

__all__ = [
    "ENUMERATED",
    "ESTIMATOR_KEY",
    "MARGINALIZED_KEY",
    "DistraxDistribution",
    "as_numpyro_distribution",
    "block",
    "check_site_shape",
    "condition",
    "deterministic",
    "factor",
    "is_marginalized",
    "log_density",
    "mask",
    "plate",
    "replay",
    "sample",
    "scale",
    "seed",
    "site_axes",
    "site_log_prob",
    "substitute",
    "trace",
]
