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
    Reparameterized,
    ScoreFunction,
    default_strategy,
    draw,
    reparameterized,
    score_function,
)

__all__ = [
    "Constant",
    "LeaveOneOut",
    "NoBaseline",
    "Reparameterized",
    "RunningMean",
    "ScoreFunction",
    "Signal",
    "constant",
    "default_strategy",
    "draw",
    "leave_one_out",
    "no_baseline",
    "reparameterized",
    "running_mean",
    "score_function",
    "site_strategy",
    "with_estimators",
]
