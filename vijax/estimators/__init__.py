"""Per-site gradient strategies and baselines (see :mod:`vijax.estimators.strategies`)."""

from vijax.estimators.baselines import (
    Constant,
    LeaveOneOut,
    NoBaseline,
    RunningMean,
    Signal,
    constant,
    leave_one_out,
    no_baseline,
    running_mean,
)
from vijax.estimators.select import site_strategy, with_estimators
from vijax.estimators.strategies import (
    Implicit,
    Path,
    Reparameterized,
    ScoreFunction,
    default_strategy,
    draw,
    implicit,
    path,
    reparameterized,
    score_function,
    stops_density_gradient,
)

__all__ = [
    "Constant",
    "Implicit",
    "LeaveOneOut",
    "NoBaseline",
    "Path",
    "Reparameterized",
    "RunningMean",
    "ScoreFunction",
    "Signal",
    "constant",
    "default_strategy",
    "draw",
    "implicit",
    "leave_one_out",
    "no_baseline",
    "path",
    "reparameterized",
    "running_mean",
    "score_function",
    "site_strategy",
    "stops_density_gradient",
    "with_estimators",
]
