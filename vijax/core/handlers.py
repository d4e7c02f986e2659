"""Effect handlers: seed, trace, condition, substitute, replay, block, scale, mask.

These are NumPyro's handlers (a widely used, tested implementation that vijax builds on, as
``DESIGN.md`` asks). vijax changes one behaviour: handlers that take site names (``condition``,
``substitute``, ``block(hide=...)``) raise a ``ValueError`` naming any site that the program
never reached, instead of silently ignoring a typo. The check runs when the program returns.

``seed`` is NumPyro's own, so a program seeded by ``vj.seed`` draws exactly the numbers it
draws under ``numpyro.handlers.seed``. The objectives seed their programs with
:class:`fold_in_seed` instead, which gives the ``n``-th keyed message ``fold_in(key, n)``
rather than walking a chain of ``split``s: the same draws in distribution, far cheaper when
vmapped over particles and runs.

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

from jax import random as _random
from numpyro import handlers as _nh

__all__ = [
    "SiteNameChecked",
    "block",
    "condition",
    "fold_in_seed",
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

# the messages NumPyro's seed gives a key to (when the message has no key and no value yet)
_KEYED_TYPES = ("sample", "prng_key", "plate", "control_flow")


class fold_in_seed(_nh.seed):
    """Seed a program with ``key``: its ``n``-th keyed message draws from ``fold_in(key, n)``.

    The same messages take keys as under NumPyro's ``seed`` (sample, ``prng_key``, plate and
    control-flow messages that have neither a key nor a value; so an observed, conditioned,
    substituted or replayed site consumes none), counted ``n = start, start + 1, …`` in the
    order the program sends them. Running a program twice with one key repeats every draw;
    distinct ``n`` give independent keys. NumPyro's ``seed`` instead replaces its key by
    ``split(key)`` at every such message, and under ``vmap`` each of those batched ``split``s
    costs more than the draw it feeds; a ``fold_in`` costs one hash of a scalar.

    The streams differ from NumPyro's, so ``vj.seed`` stays NumPyro's ``seed`` (a user
    comparing with NumPyro gets the same numbers) and the objectives use this one.

    Used as a context manager, ``count`` afterwards is the next unused index: a second program
    seeded with ``fold_in_seed(..., key, start=count)`` continues the same stream.

    Example:
        >>> import jax, numpyro.distributions as dist
        >>> import vijax as vj
        >>> from vijax.core.handlers import fold_in_seed
        >>> def model():
        ...     return vj.sample("a", dist.Normal(0.0, 1.0)), vj.sample("b", dist.Normal(0.0, 1.0))
        >>> key = jax.random.key(0)
        >>> a, b = fold_in_seed(model, key)()
        >>> bool(a == dist.Normal(0.0, 1.0).sample(jax.random.fold_in(key, 0)))
        True
        >>> bool(b == dist.Normal(0.0, 1.0).sample(jax.random.fold_in(key, 1)))
        True
    """

    def __init__(self, fn=None, rng_seed=None, hide_types=None, start: int = 0):
        super().__init__(fn, rng_seed=rng_seed, hide_types=hide_types)
        self.count = start

    def process_message(self, msg) -> None:
        if msg["type"] in self.hide_types or msg["type"] not in _KEYED_TYPES:
            return
        if msg["kwargs"]["rng_key"] is not None or msg["value"] is not None:
            return  # a key or a value is already there: consume no index
        if self.rng_key is not None:
            msg["kwargs"]["rng_key"] = _random.fold_in(self.rng_key, self.count)
            self.count += 1

    def __call__(self, *args, **kwargs):
        if self.fn is not None and not self.stateful:
            # a fresh counter per call, as NumPyro's seed clones itself (no state across calls)
            clone = fold_in_seed(
                self.fn, rng_seed=self.rng_key, hide_types=self.hide_types, start=self.count
            )
            clone.stateful = True
            return clone(*args, **kwargs)
        return super().__call__(*args, **kwargs)


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
