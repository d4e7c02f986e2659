"""Choosing strategies from outside a program: the ``with_estimators`` handler."""

from __future__ import annotations

from numpyro.primitives import Messenger

from vijax.core import ESTIMATOR_KEY
from vijax.core.handlers import SiteNameChecked
from vijax.estimators.strategies import check_strategy, default_strategy

__all__ = ["site_strategy", "with_estimators"]


class with_estimators(SiteNameChecked, Messenger):
    """Set the gradient strategy of named sites without editing the program.

    ``with_estimators(family, {"z": vj.score_function(baseline=vj.leave_one_out())})`` is the
    family with site ``z`` differentiated by the score function; the mapping overrides a
    strategy chosen at the site. Names that are not sample sites of the program raise
    ``ValueError`` when it returns.

    Example:
        >>> import jax, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def family(params):
        ...     vj.sample("z", dist.Normal(params, 1.0))
        >>> family_sf = vj.with_estimators(family, {"z": vj.score_function()})
    """

    _handler_name = "with_estimators"

    def __init__(self, fn=None, estimators: dict | None = None, *, default=None):
        estimators = dict(estimators or {})
        for name, strategy in estimators.items():
            check_strategy(strategy, name)
        if default is not None:
            check_strategy(default, "<default>")
        self.estimators = estimators
        self.default = default
        super().__init__(fn)

    # Equal when they wrap the same program with the same choices, so an objective rebuilt
    # around ``with_estimators(family, ...)`` is the same static argument to ``jit`` and
    # ``vj.fit`` does not compile it again.
    def __eq__(self, other):
        return (
            type(other) is type(self)
            and self.fn == other.fn
            and self.estimators == other.estimators
            and self.default == other.default
        )

    def __hash__(self):
        return hash((type(self), self.fn))

    def _expected_names(self):
        return self.estimators

    def _names_site(self, msg) -> bool:
        return msg["type"] == "sample" and not msg["is_observed"]

    def process_message(self, msg) -> None:
        super().process_message(msg)
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        strategy = self.estimators.get(msg["name"], self.default)
        if strategy is not None:
            msg["infer"] = {**(msg.get("infer") or {}), ESTIMATOR_KEY: strategy}


def site_strategy(msg: dict):
    """The strategy of a site: chosen at the site or from outside, else the default rule."""
    strategy = (msg.get("infer") or {}).get(ESTIMATOR_KEY)
    return default_strategy(msg["fn"]) if strategy is None else strategy
