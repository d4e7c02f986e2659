"""The primitives of a vijax program: ``sample``, ``plate``, ``factor``, ``deterministic``.

A program is a plain Python function that calls these primitives. They are NumPyro's primitives
(``numpyro.sample`` and friends), so a model written for NumPyro runs unchanged as a vijax
program and every NumPyro effect handler applies to vijax programs. vijax adds one thing at the
site: the gradient strategy (``estimator=``) with which an objective differentiates the
expectation over that site, stored in the site's ``infer`` dictionary under ``"estimator"``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model(x):
    ...     mu = vj.sample("mu", dist.Normal(0.0, 1.0))
    ...     with vj.plate("data", x.shape[0]):
    ...         vj.sample("x", dist.Normal(mu, 1.0), obs=x)
    >>> tr = vj.trace(vj.seed(model, jax.random.key(0))).get_trace(jnp.zeros(3))
    >>> sorted(tr)
    ['data', 'mu', 'x']
"""

from __future__ import annotations

from typing import Any

import numpyro
import numpyro.distributions as npd

from vijax.core.distrax_adapter import as_numpyro_distribution

__all__ = ["deterministic", "factor", "plate", "sample"]

#: The ``infer`` key under which a site's gradient strategy is stored.
ESTIMATOR_KEY = "estimator"

#: The ``infer`` key marking a family site as part of the sampler only, marginalized out of the
#: family's density (a mixture's component index): objectives do not match it to the model.
MARGINALIZED_KEY = "marginalized"


def is_marginalized(site: dict) -> bool:
    """Whether a trace site is marked ``infer={MARGINALIZED_KEY: True}``."""
    return bool((site.get("infer") or {}).get(MARGINALIZED_KEY))


def sample(
    name: str,
    fn: Any,
    *,
    obs: Any = None,
    estimator: Any = None,
    sample_shape: tuple[int, ...] = (),
    infer: dict | None = None,
    obs_mask: Any = None,
):
    """Draw (or observe) a random choice named ``name`` from distribution ``fn``.

    Args:
      name: the site name; unique within a program.
      fn: a ``numpyro.distributions.Distribution`` or a distrax distribution (adapted).
      obs: observed value; when given the site is observed and contributes ``log fn(obs)``.
      estimator: the gradient strategy of this site (``vj.reparameterized()``,
        ``vj.score_function(...)``, ...). ``None`` uses the default rule: reparameterize when
        the distribution has ``rsample``, else score function. A ``vj.with_estimators``
        handler around the program overrides it without editing the program.
      sample_shape: extra leading sample dimensions.
      infer: NumPyro's ``infer`` dictionary, passed through.
      obs_mask: NumPyro's observation mask, passed through.

    Returns:
      The value of the site.
    """
    fn = as_numpyro_distribution(fn, name)
    if estimator is not None:
        infer = {**(infer or {}), ESTIMATOR_KEY: estimator}
    return numpyro.sample(
        name, fn, obs=obs, sample_shape=sample_shape, infer=infer, obs_mask=obs_mask
    )


def plate(name: str, size: int, subsample_size: int | None = None, dim: int | None = None):
    """A conditionally independent axis of size ``size`` (NumPyro's ``plate``).

    Sites inside are broadcast along ``dim``. With ``subsample_size=B`` the plate draws ``B``
    indices (returned by ``with plate(...) as idx``) and scales every log-density inside by
    ``size / B``, so a minibatch log-density is an unbiased estimate of the full-data one.
    The plate is also what lets a score-function estimator Rao-Blackwellize: a site's score
    inside plate ``name`` multiplies only the terms with the same index (see
    :func:`vijax.gradient_estimator`).
    """
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"plate {name!r}: size must be a positive int, got {size!r}")
    if subsample_size is not None and (
        not isinstance(subsample_size, int)
        or isinstance(subsample_size, bool)
        or not 0 < subsample_size <= size
    ):
        raise ValueError(
            f"plate {name!r}: subsample_size must be in [1, size={size}], got {subsample_size!r}"
        )
    return numpyro.plate(name, size, subsample_size=subsample_size, dim=dim)


def factor(name: str, log_factor: Any):
    """Add ``log_factor`` to the program's log-density, as an observed site named ``name``."""
    return numpyro.factor(name, log_factor)


def deterministic(name: str, value: Any):
    """Record ``value`` in the trace under ``name`` (no density)."""
    return numpyro.deterministic(name, value)


def is_distribution(fn: Any) -> bool:
    """Whether ``fn`` is a NumPyro distribution."""
    return isinstance(fn, npd.Distribution)
