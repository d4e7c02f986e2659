r"""Amortized families: an encoder network gives each datum's Gaussian (Kingma & Welling 2014).

For a local latent ``z_i`` of datum ``x_i`` inside the model's data plate, the family is

    q_φ(z_i | x_i) = T#N(u_i; μ_φ(x_i), Σ_φ(x_i)),   (μ_φ(x_i), Σ_φ(x_i)) = encoder(φ, x_i),

one network for all data instead of one set of parameters per datum (Kingma & Welling 2014,
"Auto-Encoding Variational Bayes"; Rezende et al. 2014; Gershman & Goodman 2014 on amortized
inference). ``T = biject_to(support)`` (identity for real latents). The covariance is diagonal
(the encoder returns ``(loc, log_scale)``) or full (``(loc, log_diagonal, off_diagonal)``,
``L = tril(off_diagonal, −1) + diag(exp(log_diagonal))`` per datum).

**Encoders.** A flax ``nnx.Module`` (its state is the family's parameters, split with
``nnx.split``), a flax ``linen.Module`` (its variables are; ``init`` calls ``module.init``), or
any pure ``apply(params, x)`` (then the parameters are yours).

**Plates and minibatches.** The family opens the model's data plate (same name and size) and
samples ``z`` inside it, so ``log q`` is scaled like the model's terms and the model replays the
family's plate indices. ``inputs`` picks the encoder's input from the program's arguments (the
first positional one by default), with a leading data axis:

- all ``N`` rows, plate ``plate(name, N, subsample_size=B)``: the encoder sees the rows the plate
  selects;
- a minibatch of ``B`` rows (``vj.fit(..., data=..., batch_size=B)``) with ``size=N``: the plate
  is ``plate(name, N, subsample_size=B)`` and the encoder sees the batch as given.

Example:
    >>> import jax, jax.numpy as jnp, numpyro.distributions as dist
    >>> import vijax as vj
    >>> def model(x):
    ...     with vj.plate("data", x.shape[0]):
    ...         z = vj.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    ...         vj.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x[:, 0])
    >>> def encoder(params, x):  # any pure apply(params, x) -> (loc, log_scale)
    ...     return x @ params["w"], jnp.zeros((x.shape[0], 2))
    >>> family = vj.amortized_normal(encoder, site="z", plate="data")
    >>> params = {"w": jnp.ones((3, 2))}
    >>> vj.seed(family, jax.random.key(0))(params, jnp.ones((5, 3))).shape
    (5, 2)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpyro.distributions as npd
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from vijax.core import plate, sample
from vijax.families import _sites

__all__ = ["AmortizedNormal", "amortized_normal"]

COVARIANCES = ("diagonal", "full")


@dataclass(frozen=True)
class _NnxApply:
    """``apply(state, x)`` of an ``nnx.Module`` given by its graph definition."""

    graphdef: Any

    def __call__(self, state, x):
        from flax import nnx

        return nnx.merge(self.graphdef, state)(x)


def _num_rows(inputs) -> int:
    """The leading (data) axis of the encoder's inputs (an array or a pytree of arrays)."""
    leaves = jax.tree.leaves(inputs)
    if not leaves or jnp.ndim(leaves[0]) < 1:
        raise ValueError(
            "amortized_normal: the encoder's inputs need a leading data axis, got "
            f"{jax.tree.map(jnp.shape, inputs)}"
        )
    return jnp.shape(leaves[0])[0]


class _ByIdentity:
    """Holds a value compared and hashed by identity (NumPyro's constraints are unhashable;
    families must hash, so that objectives holding them key compilation caches)."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _ByIdentity) and other.value is self.value

    def __hash__(self):
        return id(self.value)


@dataclass(frozen=True)
class AmortizedNormal:
    """An amortized Gaussian family for one local site (see :func:`amortized_normal`)."""

    encoder: Callable
    site: str
    plate: str
    size: int | None = None
    subsample_size: int | None = None
    inputs: Any = 0
    covariance: str = "diagonal"
    support_ref: _ByIdentity = field(default_factory=lambda: _ByIdentity(constraints.real))
    encoder_init: Callable | None = None
    initial_params: Any = field(default=None, compare=False, hash=False, repr=False)

    @property
    def support(self):
        """The site's support (``biject_to(support)`` maps the Gaussian onto it)."""
        return self.support_ref.value

    def init(self, key, *args, **kwargs):
        """The encoder's parameters: the ``nnx`` module's state, or ``linen``'s
        ``module.init(key, x[:1])``. A plain ``apply`` function has none to give."""
        if self.initial_params is not None:
            return self.initial_params
        if self.encoder_init is None:
            raise ValueError(
                "amortized_normal: the encoder is a plain apply function, so init has no "
                "parameters to give; pass the encoder's parameters as the family's params"
            )
        x = self._encoder_input(args, kwargs)
        return self.encoder_init(key, jax.tree.map(lambda a: a[:1], x))

    def _encoder_input(self, args, kwargs):
        if callable(self.inputs):
            return self.inputs(*args, **kwargs)
        if isinstance(self.inputs, str):
            if self.inputs not in kwargs:
                raise ValueError(
                    f"amortized_normal: inputs={self.inputs!r} names no keyword argument of "
                    f"this call (got {sorted(kwargs)})"
                )
            return kwargs[self.inputs]
        if self.inputs >= len(args):
            raise ValueError(
                f"amortized_normal: inputs={self.inputs} but the call has {len(args)} "
                "positional argument(s)"
            )
        return args[self.inputs]

    def _plate_sizes(self, rows: int):
        size = self.size if self.size is not None else rows
        if self.subsample_size is not None:
            subsample = self.subsample_size
        elif rows < size:
            subsample = rows  # a minibatch of a data set of ``size`` rows
        else:
            subsample = None
        if rows not in (size, subsample):
            raise ValueError(
                f"amortized_normal: the encoder's inputs have {rows} rows, but plate "
                f"{self.plate!r} has size {size} and subsample_size {subsample}: pass all "
                "rows or one minibatch"
            )
        return size, subsample

    def _unconstrained(self, output, count: int):
        """``(loc, scale_tril or scale)`` of each datum from the encoder's output."""
        expected = 2 if self.covariance == "diagonal" else 3
        if not isinstance(output, tuple | list) or len(output) != expected:
            what = "(loc, log_scale)" if expected == 2 else "(loc, log_diagonal, off_diagonal)"
            raise ValueError(
                f"site {self.site!r}: the encoder must return {what} for covariance="
                f"{self.covariance!r}, got {type(output).__name__}"
            )
        loc = jnp.asarray(output[0])
        if loc.ndim < 1 or loc.shape[0] != count:
            raise ValueError(
                f"site {self.site!r}: the encoder's loc has shape {loc.shape}; it needs a "
                f"leading axis of {count} data"
            )
        if self.covariance == "diagonal":
            log_scale = jnp.asarray(output[1])
            if log_scale.shape != loc.shape:
                raise ValueError(
                    f"site {self.site!r}: log_scale has shape {log_scale.shape}, loc {loc.shape}"
                )
            return loc, jnp.exp(log_scale)
        log_diagonal, off_diagonal = jnp.asarray(output[1]), jnp.asarray(output[2])
        if (
            loc.ndim != 2
            or log_diagonal.shape != loc.shape
            or off_diagonal.shape != loc.shape + loc.shape[-1:]
        ):
            raise ValueError(
                f"site {self.site!r}: covariance='full' needs loc (B, L), log_diagonal (B, L) "
                f"and off_diagonal (B, L, L); got {loc.shape}, {log_diagonal.shape}, "
                f"{off_diagonal.shape}"
            )
        tril = jnp.tril(off_diagonal, -1) + jnp.exp(log_diagonal)[..., None] * jnp.eye(
            loc.shape[-1], dtype=loc.dtype
        )
        return loc, tril

    def _distribution(self, output, count: int):
        loc, spread = self._unconstrained(output, count)
        if self.covariance == "diagonal":
            base = npd.Normal(loc, spread).to_event(loc.ndim - 1)
        else:
            base = npd.MultivariateNormal(loc, scale_tril=spread)
        if _sites.is_real(self.support):
            return base
        return npd.TransformedDistribution(base, biject_to(self.support))

    def __call__(self, params, *args, **kwargs):
        """Sample the site inside the data plate, from the encoder's output on its rows."""
        x = self._encoder_input(args, kwargs)
        rows = _num_rows(x)
        size, subsample = self._plate_sizes(rows)
        with plate(self.plate, size, subsample) as indices:
            subsampled = subsample is not None and subsample != size
            batch = (
                jax.tree.map(lambda a: jnp.take(a, indices, axis=0), x)
                if (subsampled and rows == size)
                else x
            )
            count = subsample if subsampled else size
            fn = self._distribution(self.encoder(params, batch), count)
            return sample(self.site, fn)

    def _unconstrained_marginals(self, params, *args, **kwargs) -> list:
        x = self._encoder_input(args, kwargs)
        loc, spread = self._unconstrained(self.encoder(params, x), _num_rows(x))
        if self.covariance == "full":
            spread = jnp.sqrt(jnp.sum(spread**2, axis=-1))
        site = _sites.LatentSite(
            self.site, self.support, loc.ndim - 1, (), loc, None, tuple(loc.shape)
        )
        return [(site, loc, spread)]

    def median(self, params, *args, **kwargs) -> dict:
        """Each datum's median ``T(μ_φ(x_i))`` (all rows of the inputs)."""
        return _sites.compiled(_sites.median_of, self, params, (), args, kwargs)

    def quantiles(self, params, q, *args, **kwargs) -> dict:
        """Each datum's marginal ``q``-quantiles (leading axis ``q``), as
        :meth:`vijax.families.MeanFieldNormal.quantiles`."""
        levels = _sites.quantile_levels(q)
        return _sites.compiled(_sites.quantiles_of, self, params, (levels,), args, kwargs)


def amortized_normal(
    encoder,
    *,
    site: str,
    plate: str,
    size: int | None = None,
    subsample_size: int | None = None,
    inputs: int | str | Callable = 0,
    covariance: str = "diagonal",
    support=constraints.real,
) -> AmortizedNormal:
    r"""An amortized Gaussian family for the local site ``site`` in the data plate ``plate``.

    ``q_φ(z_i | x_i) = T#N(μ_φ(x_i), Σ_φ(x_i))`` with the encoder's outputs (module docstring).

    Args:
      encoder: an ``nnx.Module``, a ``linen.Module`` or a pure ``apply(params, x)``, mapping a
        batch ``x`` (leading axis: data) to ``(loc, log_scale)`` (``covariance="diagonal"``;
        shapes ``(B, *event)``) or ``(loc, log_diagonal, off_diagonal)`` (``"full"``; shapes
        ``(B, L)``, ``(B, L)``, ``(B, L, L)``).
      site: the model's local latent site.
      plate: the name of the model's data plate (the family opens it with the same size).
      size: the plate's size ``N``; default: the number of rows of the inputs.
      subsample_size: the plate's subsample size; default: none, or the number of rows of the
        inputs when that is smaller than ``size`` (a minibatch).
      inputs: which argument feeds the encoder: a position, a keyword name, or a function of
        the program's arguments.
      covariance: ``"diagonal"`` or ``"full"``.
      support: the site's support (``biject_to(support)`` maps the Gaussian onto it).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> import vijax as vj
        >>> class Encoder(nnx.Module):
        ...     def __init__(self, rngs):
        ...         self.linear = nnx.Linear(3, 4, rngs=rngs)
        ...     def __call__(self, x):
        ...         out = self.linear(x)
        ...         return out[:, :2], out[:, 2:]
        >>> family = vj.amortized_normal(Encoder(nnx.Rngs(0)), site="z", plate="data")
        >>> params = family.init(jax.random.key(0), jnp.ones((5, 3)))
        >>> family.median(params, jnp.ones((5, 3)))["z"].shape
        (5, 2)
    """
    from flax import linen, nnx

    if covariance not in COVARIANCES:
        raise ValueError(
            f"amortized_normal: covariance must be one of {'|'.join(COVARIANCES)}, got "
            f"{covariance!r}"
        )
    for name, value in (("site", site), ("plate", plate)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"amortized_normal: {name} must be a site name, got {value!r}")
    for name, value in (("size", size), ("subsample_size", subsample_size)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"amortized_normal: {name} must be a positive int, got {value!r}")
    if size is not None and subsample_size is not None and subsample_size > size:
        raise ValueError(f"amortized_normal: subsample_size {subsample_size} exceeds size {size}")
    if not (callable(inputs) or isinstance(inputs, str)) and (
        isinstance(inputs, bool) or not isinstance(inputs, int) or inputs < 0
    ):
        raise ValueError(
            f"amortized_normal: inputs must be a position, a keyword name or a function, got "
            f"{inputs!r}"
        )
    if not isinstance(support, constraints.Constraint) or support.is_discrete:
        raise ValueError(
            f"amortized_normal: support must be a continuous constraint, got {support!r}"
        )
    common = dict(
        site=site,
        plate=plate,
        size=size,
        subsample_size=subsample_size,
        inputs=inputs,
        covariance=covariance,
        support_ref=_ByIdentity(support),
    )
    if isinstance(encoder, nnx.Module):
        graphdef, state = nnx.split(encoder)
        return AmortizedNormal(_NnxApply(graphdef), initial_params=state, **common)
    if isinstance(encoder, linen.Module):
        return AmortizedNormal(encoder.apply, encoder_init=encoder.init, **common)
    if not callable(encoder):
        raise ValueError(
            f"amortized_normal: encoder must be a flax module or apply(params, x), got {encoder!r}"
        )
    return AmortizedNormal(encoder, **common)
