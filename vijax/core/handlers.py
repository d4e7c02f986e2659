"""Effect handlers: seed, trace, condition, substitute, replay, block, scale, mask.

These are NumPyro's handlers (a widely used, tested implementation that vijax builds on, as
``DESIGN.md`` asks). vijax changes one behaviour: handlers that take site names (``condition``,
``substitute``, ``block(hide=...)``) raise a ``ValueError`` naming any site that the program
never reached, instead of silently ignoring a typo. The check runs when the program returns.

Example:
    >>> import jax, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model():
    ...     return vj.sample("z", dist.Normal(0.0, 1.0))
    >>> float(vj.condition(model, {"z": 0.5})())
    0.5
    >>> vj.seed(vj.condition(model, {"zz": 0.5}), jax.random.key(0))()
    Traceback (most recent call last):
    ...
    ValueError: condition: unknown site name(s) ['zz']; the program has sites ['z']
"""

from __future__ import annotations

from collections.abc import Iterable

from numpyro import handlers as _nh

__all__ = [
    "SiteNameChecked",
    "block",
    "condition",
    "mask",
    "replay",
    "scale",
    "seed",
    "substitute",
    "trace",
]

seed = _nh.seed
trace = _nh.trace
replay = _nh.replay
scale = _nh.scale
mask = _nh.mask


class SiteNameChecked:
    """Mixin for handlers keyed by site names: refuse names the program never reached.

    A subclass sets ``_handler_name`` and returns its names from ``_expected_names``; when the
    wrapped program returns, any expected name that no message carried raises ``ValueError``.
    """

    _handler_name = ""

    def _expected_names(self) -> Iterable[str]:
        return ()

    def _names_site(self, msg) -> bool:
        """Whether ``msg`` is a site this handler's names may refer to."""
        return msg.get("name") is not None

    def __enter__(self):
        self._reached: list[str] = []
        return super().__enter__()

    def process_message(self, msg) -> None:
        # some messages have no name (``prng_key``, which NumPyro's ``block`` itself sends)
        if self._names_site(msg):
            self._reached.append(msg["name"])
        super().process_message(msg)

    def __exit__(self, exc_type, exc_value, traceback):
        super().__exit__(exc_type, exc_value, traceback)
        if exc_type is None:
            reached = set(self._reached)
            unknown = sorted(set(self._expected_names()) - reached)
            if unknown:
                known = sorted(dict.fromkeys(self._reached))
                raise ValueError(
                    f"{self._handler_name}: unknown site name(s) {unknown}; "
                    f"the program has sites {known}"
                )


class condition(SiteNameChecked, _nh.condition):
    """Observe sites at the given values: ``condition(program, {"x": x_obs})``.

    Every name in ``data`` must be a site of the program (else ``ValueError``).
    """

    _handler_name = "condition"

    def _expected_names(self):
        return self.data or ()


class substitute(SiteNameChecked, _nh.substitute):
    """Replace site values (latent, param or plate indices) without observing them.

    Every name in ``data`` must be a site of the program (else ``ValueError``).
    """

    _handler_name = "substitute"

    def _expected_names(self):
        return self.data or ()


class block(SiteNameChecked, _nh.block):
    """Hide sites from the handlers outside: ``block(program, hide=["z"])``.

    Every name in ``hide`` must be a site of the program (else ``ValueError``).
    """

    _handler_name = "block"

    def _expected_names(self):
        return getattr(self, "_hide_names", None) or ()

    def __init__(self, fn=None, hide_fn=None, hide=None, expose=None, expose_types=None):
        self._hide_names = list(hide) if hide is not None else None
        super().__init__(fn, hide_fn=hide_fn, hide=hide, expose=expose, expose_types=expose_types)
