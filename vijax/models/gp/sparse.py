r"""The sparse variational GP (SVGP) as a vijax model and family.

Hensman, Fusi & Lawrence (2013), "Gaussian Processes for Big Data"; Hensman, Matthews &
Ghahramani (2015), "Scalable Variational Gaussian Process Classification". With a kernel ``k_θ``,
``M`` inducing inputs ``Z`` and inducing values ``u = f(Z)``, the **model** is

    θ ~ flat (improper),  u | θ ~ N(0, K_zz),
    f_i | u, θ ~ N(k_iᵀ K_zz⁻¹ u, k_ii − k_iᵀ K_zz⁻¹ k_i),   y_i | f_i ~ p(y_i | f_i, θ),

for ``i`` in a ``vj.plate("data", N, subsample_size=B)``, and the **family** is

    θ ~ δ(θ̂),  u ~ q(u) = N(m, S),  f_i | u ~ p(f_i | u, θ)   (the model's own conditional).

Why point masses: the family needs ``θ`` too (its ``p(f_i | u, θ)`` and the marginals below), and
an objective hands parameters to the family; as latent sites with point-mass families the
hyperparameters reach the model by replay, like every other latent, so the model stays a
generative program (a proper hyperprior could replace the flat one: MAP-II).

``vj.elbo(model, family)`` is then the SVGP bound: the hyperparameters' term is zero (a point
mass against a flat prior: type-II maximum likelihood for ``θ = (kernel, Z, likelihood)``), the
``f`` terms cancel (closed-form KL of equal Normals: zero), ``u`` has the closed-form Gaussian KL,
and what is left is

    ELBO = Σ_i E_{q(f_i)}[log p(y_i | f_i)] − KL(q(u) ‖ p(u)) ≤ log p(y | θ),
    q(f_i) = N(μ_i, σ_i²),  μ_i = k_iᵀ K_zz⁻¹ m,
    σ_i² = k_ii − k_iᵀ K_zz⁻¹ k_i + k_iᵀ K_zz⁻¹ S K_zz⁻¹ k_i,

with the data term scaled by ``N/B`` on a minibatch of ``B`` rows drawn uniformly (with
replacement, by the family; the model replays them): an unbiased estimate. **Whitened**
(``whiten=True``, the default): the site ``u`` holds ``v = L⁻¹u`` (``K_zz = L Lᵀ``) with prior
``N(0, I)``, ``q(v) = N(m, S)``, and ``k_iᵀ K_zz⁻¹`` becomes ``(L⁻¹ k_i)ᵀ``; the prior and the
conditioning of the optimization no longer depend on ``K_zz``.

The family's ``f`` site declares its marginal ``q(f_i)`` (``infer={"marginal": ...}``, see
:mod:`vijax.models.gp.expectations`), so its expectation is computed by Gauss–Hermite quadrature
(``expectation=gauss_hermite(K)``, the default; :meth:`SVGP.elbo` wraps the objective with
:func:`~vijax.models.gp.expectations.quadrature`), by Monte Carlo from the marginal
(``local_reparameterized()``), or by plain Monte Carlo through ``u`` (``vj.reparameterized()``).
The whitened prior ``N(0, I)`` has its own closed-form KL (no factorization), and within one
evaluation the model reuses the family's ``K_zz`` factor, projections and conditional
``p(f | u)`` (:class:`SharedAlgebra`; the KL of a :class:`GPConditional` from itself is a
constant zero, so neither ``Pᵀu`` nor the draw of ``u`` survives compilation when ``f`` is
integrated over its marginal), the flat hyperprior skips NumPyro's support check, and the
minibatch rows are drawn from the first key the seed handler splits off: a step costs what a
hand-written SVGP step costs (``benchmarks/gp.py``).

Parameters (a dict): ``params["hyperparameters"] = {"kernel": ..., "inducing_inputs": Z (M, D),
"likelihood": ...}`` (unconstrained; each leaf is one point-mass site named by its path, e.g.
``"kernel.lengthscale"``), and ``params["inducing"] = {"mean": m (M,), "scale": (M, M)}``, the
lower-triangular factor of ``S`` with its diagonal stored through softplus.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import vijax as vj
    >>> from vijax.models import gp
    >>> X = jnp.linspace(-2.0, 2.0, 40)[:, None]
    >>> y = jnp.sin(2.0 * X[:, 0])
    >>> svgp = gp.svgp(gp.RBF(), gp.Gaussian(), num_inducing=8)
    >>> params = svgp.init(jax.random.key(0), X, y)
    >>> result = vj.fit(svgp.elbo(), params, optax.adam(0.05), jax.random.key(1), X, y,
    ...                 num_steps=300, progress=False)
    >>> mean, variance = svgp.predict_f(result.params, X)
    >>> bool(jnp.sqrt(jnp.mean((mean - y) ** 2)) < 0.1)
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.linalg import solve_triangular
from numpyro.distributions import constraints
from numpyro.distributions.kl import kl_divergence

import vijax.objectives as objectives
from vijax.core import plate, sample, substitute
from vijax.estimators import Reparameterized, ScoreFunction
from vijax.models.gp import collapsed
from vijax.models.gp.expectations import MARGINAL_KEY, GaussHermite, gauss_hermite, quadrature
from vijax.models.gp.kernels import positive_transform
from vijax.models.gp.likelihoods import Gaussian
from vijax.models.gp.linalg import check_finite, cholesky, raise_if_failed

__all__ = [
    "SVGP",
    "GPConditional",
    "SharedAlgebra",
    "StandardMultivariateNormal",
    "hyperparameter_site_names",
    "inducing_raw_scale",
    "inducing_scale_tril",
    "standard_multivariate_normal",
    "svgp",
]


class StandardMultivariateNormal(dist.MultivariateNormal):
    """``N(0, I_M)``, the prior of whitened inducing values; build it with
    :func:`standard_multivariate_normal`.

    A distinct type only so that its KL divergence from a Gaussian has the closed form below,
    which needs no factorization (NumPyro's generic Gaussian KL solves against ``I``).
    """


def standard_multivariate_normal(size: int, dtype=None) -> StandardMultivariateNormal:
    """``N(0, I_size)``."""
    dtype = dtype or jnp.result_type(float)
    return StandardMultivariateNormal(jnp.zeros(size, dtype), scale_tril=jnp.eye(size, dtype=dtype))


@kl_divergence.register(dist.MultivariateNormal, StandardMultivariateNormal)
def _kl_to_standard_normal(q, p):
    r"""``KL(N(m, L Lᵀ) ‖ N(0, I)) = ½ (‖m‖² + ‖L‖²_F − M − 2 Σ_i log |L_ii|)``."""
    del p  # standard by construction
    scale_tril = q.scale_tril
    size = scale_tril.shape[-1]
    log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(scale_tril, axis1=-2, axis2=-1))), axis=-1)
    return (
        0.5 * (jnp.sum(q.loc**2, axis=-1) + jnp.sum(scale_tril**2, axis=(-2, -1)) - size) - log_det
    )


class GPConditional(dist.Normal):
    """``p(f_i | u) = N(P[:, i]ᵀ u, c_i)``, the GP conditional of the ``f`` site.

    The family draws ``f`` from the model's own conditional, so ``KL(q(f | u) ‖ p(f | u))`` is
    zero. A distinct type only so that, when model and family hold the very same conditional
    (:class:`SharedAlgebra` hands the model the family's object), the KL below is a constant
    zero: NumPyro's Normal–Normal formula would compute it elementwise, and its gradient back
    through ``Pᵀu``, only to get zeros (and it would keep the draw of ``u`` alive when nothing
    else needs it). Any other pair gets that formula.
    """


@kl_divergence.register(GPConditional, GPConditional)
def _kl_gp_conditional(q, p):
    r"""``0`` for the very same conditional, else ``KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²))``."""
    if q is p:
        return jnp.zeros(jnp.broadcast_shapes(q.batch_shape, p.batch_shape), q.loc.dtype)
    return kl_divergence.dispatch(dist.Normal, dist.Normal)(q, p)


#: One dict per evaluation of an SVGP objective (trace time only): see :class:`SharedAlgebra`.
_SHARED: list[dict] = []


def _shared(tag: str, objects: tuple, compute: Callable):
    """``compute()``, or its result from earlier in the current evaluation of an SVGP objective
    when it was asked for with the very same arrays (compared by identity)."""
    if not _SHARED:
        return compute()
    cache = _SHARED[-1]
    key = (tag, *(id(x) for x in objects))
    entry = cache.get(key)
    if entry is not None and all(a is b for a, b in zip(entry[0], objects)):
        return entry[1]
    value = compute()
    cache[key] = (objects, value)  # holding the objects keeps their ids unique meanwhile
    return value


@dataclass(frozen=True)
class SharedAlgebra:
    """An SVGP objective whose model and family share their kernel algebra in each evaluation.

    The model is replayed on the family's values, so both see the very same hyperparameter
    arrays, data and plate indices, and compute the same ``K_zz`` factor and projections
    ``L⁻¹ K_zx``. XLA does not merge repeated Cholesky factorizations and triangular solves
    (they are library calls), so without sharing a step would do them twice. Inside this
    wrapper, the second request returns the first result (matched by array identity; each run
    of the family starts afresh, so a model only reuses the results of the family run it is
    replayed on, within the same trace; nothing outlives the call). The programs are
    unchanged and correct without it.
    """

    objective: Callable

    def __call__(self, params, key, *args, **kwargs):
        _SHARED.append({})
        try:
            return self.objective(params, key, *args, **kwargs)
        finally:
            _SHARED.pop()


#: the default strategy of the ``f`` site: 20-point Gauss–Hermite quadrature
DEFAULT_EXPECTATION = GaussHermite(20)

#: the smallest conditional variance ``k_ii − k_iᵀK_zz⁻¹k_i`` (rounding can make it negative)
MIN_VARIANCE = 1e-12


def inducing_scale_tril(raw: jax.Array) -> jax.Array:
    """``L = tril(raw, −1) + diag(softplus(diag raw))``: the factor of ``S = L Lᵀ``."""
    diagonal = positive_transform("softplus")(jnp.diagonal(raw))
    return jnp.tril(raw, -1) + jnp.diag(diagonal)


def inducing_raw_scale(scale_tril: jax.Array) -> jax.Array:
    """Inverse of :func:`inducing_scale_tril` (``scale_tril`` with a positive diagonal)."""
    diagonal = positive_transform("softplus").inv(jnp.diagonal(scale_tril))
    return jnp.tril(scale_tril, -1) + jnp.diag(diagonal)


def _key_name(entry) -> str:
    if isinstance(entry, jax.tree_util.DictKey):
        return str(entry.key)
    if isinstance(entry, jax.tree_util.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, jax.tree_util.GetAttrKey):
        return entry.name
    return str(entry)


def hyperparameter_site_names(hyperparameters) -> list[str]:
    """The point-mass site of each hyperparameter leaf, named by its path (``"kernel.variance"``).

    Example:
        >>> import jax.numpy as jnp
        >>> hyper = {"kernel": {"variance": 0.0}, "inducing_inputs": jnp.zeros(2)}
        >>> hyperparameter_site_names(hyper)
        ['inducing_inputs', 'kernel.variance']
    """
    paths, _ = jax.tree_util.tree_flatten_with_path(hyperparameters)
    return [".".join(_key_name(entry) for entry in path) for path, _ in paths]


def _is_strategy(expectation) -> bool:
    return isinstance(expectation, Reparameterized | ScoreFunction) or expectation is None


@dataclass(frozen=True)
class SVGP:
    """A sparse variational GP: its model, family, objective and predictions (see :func:`svgp`)."""

    kernel: Any
    likelihood: Any
    num_inducing: int
    whiten: bool = True
    expectation: Any = DEFAULT_EXPECTATION
    batch_size: int | None = None
    num_data: int | None = None
    jitter: float = 1e-6

    # -- data and parameter checks -----------------------------------------------------------
    def _check_data(self, where: str, X, y=None):
        X = jnp.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"{where}: X must have shape (N, D), got {X.shape}")
        check_finite(where, "X", X)
        if y is not None:
            y = jnp.asarray(y)
            if y.shape != (X.shape[0],):
                raise ValueError(
                    f"{where}: y must have shape ({X.shape[0]},) to match X {X.shape}, "
                    f"got {y.shape}"
                )
            check_finite(where, "y", y)
            self.likelihood.check_targets(y)
        return X, y

    def _template(self, num_features: int) -> dict:
        """Shapes and dtypes of the hyperparameters for inputs with ``num_features`` columns."""

        def build():
            return {
                "kernel": self.kernel.init(num_features),
                "inducing_inputs": jnp.zeros((self.num_inducing, num_features)),
                "likelihood": self.likelihood.init(),
            }

        return jax.eval_shape(build)

    def _check_hyperparameters(self, where: str, hyperparameters, num_features: int) -> None:
        Z = hyperparameters.get("inducing_inputs") if isinstance(hyperparameters, dict) else None
        if Z is not None and (jnp.ndim(Z) != 2 or jnp.shape(Z)[1] != num_features):
            raise ValueError(
                f"{where}: inducing_inputs must have shape ({self.num_inducing}, {num_features}) "
                f"to match the inputs' {num_features} columns, got {jnp.shape(Z)}"
            )
        template = self._template(num_features)
        expected = dict(zip(hyperparameter_site_names(template), jax.tree.leaves(template)))
        try:
            given = dict(
                zip(hyperparameter_site_names(hyperparameters), jax.tree.leaves(hyperparameters))
            )
        except Exception:  # not a pytree of arrays
            given = {}
        missing, extra = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
        if missing or extra:
            raise ValueError(
                f"{where}: params['hyperparameters'] has leaves {sorted(given)}, expected "
                f"{sorted(expected)} for this kernel and likelihood (missing {missing}, "
                f"unexpected {extra})"
            )
        for name, leaf in expected.items():
            if jnp.shape(given[name]) != leaf.shape:
                raise ValueError(
                    f"{where}: hyperparameter {name!r} has shape {jnp.shape(given[name])}, "
                    f"expected {leaf.shape} for inputs with {num_features} columns"
                )
            check_finite(where, f"hyperparameter {name!r}", given[name])

    def _check_inducing(self, where: str, inducing) -> None:
        M = self.num_inducing
        if jnp.shape(inducing.get("mean")) != (M,) or jnp.shape(inducing.get("scale")) != (M, M):
            raise ValueError(
                f"{where}: params['inducing'] must be {{'mean': ({M},), 'scale': ({M}, {M})}}, "
                f"got mean {jnp.shape(inducing.get('mean'))} and scale "
                f"{jnp.shape(inducing.get('scale'))}"
            )

    def _check_params(self, where: str, params, num_features: int) -> None:
        if not isinstance(params, dict) or set(params) != {"hyperparameters", "inducing"}:
            keys = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(
                f"{where}: params must be a dict with keys ['hyperparameters', 'inducing'] "
                f"(from SVGP.init), got {keys}"
            )
        self._check_hyperparameters(where, params["hyperparameters"], num_features)
        self._check_inducing(where, params["inducing"])

    # -- parameters ---------------------------------------------------------------------------
    def init(
        self,
        key: jax.Array,
        X,
        y=None,
        *,
        inducing_inputs=None,
        kernel_params=None,
        likelihood_params=None,
    ) -> dict:
        """Initial parameters: ``Z`` a random subset of the rows of ``X`` (or ``inducing_inputs``),
        the kernel's and likelihood's defaults (or the given unconstrained params), and ``q(u)``
        the prior (``m = 0``; ``S = I`` whitened, ``S = K_zz`` otherwise).

        Raises:
          ValueError: ``X`` / ``y`` of the wrong shape or not finite, more inducing points than
            rows, ``inducing_inputs`` of the wrong shape.
          CholeskyError: ``K_zz`` cannot be factorized with the jitter (names it).
        """
        X, y = self._check_data("SVGP.init", X, y)
        num_rows, num_features = X.shape
        if inducing_inputs is None:
            if self.num_inducing > num_rows:
                raise ValueError(
                    f"SVGP.init: num_inducing={self.num_inducing} is more than the {num_rows} rows "
                    "of X; pass inducing_inputs"
                )
            rows = jax.random.choice(key, num_rows, (self.num_inducing,), replace=False)
            inducing_inputs = X[rows]
        hyperparameters = {
            "kernel": self.kernel.init(num_features) if kernel_params is None else kernel_params,
            "inducing_inputs": jnp.asarray(inducing_inputs, X.dtype),
            "likelihood": self.likelihood.init()
            if likelihood_params is None
            else likelihood_params,
        }
        self._check_hyperparameters("SVGP.init", hyperparameters, num_features)
        M = self.num_inducing
        if self.whiten:
            scale_tril = jnp.eye(M, dtype=X.dtype)
        else:
            scale_tril = self._cholesky_zz(hyperparameters)
        inducing = {"mean": jnp.zeros(M, X.dtype), "scale": inducing_raw_scale(scale_tril)}
        return {"hyperparameters": hyperparameters, "inducing": inducing}

    def hyperparameters(self, params) -> dict:
        """The constrained hyperparameters: ``{"kernel", "inducing_inputs", "likelihood"}``."""
        hyper = params["hyperparameters"]
        return {
            "kernel": self.kernel.constrained(hyper["kernel"]),
            "inducing_inputs": hyper["inducing_inputs"],
            "likelihood": self.likelihood.constrained(hyper["likelihood"]),
        }

    def inducing_distribution(self, params) -> tuple[jax.Array, jax.Array]:
        """``(m, L)`` of ``q(u) = N(m, L Lᵀ)`` (of ``v = L_zz⁻¹ u`` when whitened)."""
        return params["inducing"]["mean"], inducing_scale_tril(params["inducing"]["scale"])

    # -- the GP algebra -----------------------------------------------------------------------
    def _cholesky_zz(self, hyperparameters) -> jax.Array:
        kernel_params, Z = hyperparameters["kernel"], hyperparameters["inducing_inputs"]
        return _shared(
            "K_zz",
            (self, Z, *jax.tree.leaves(kernel_params)),
            lambda: cholesky(self.kernel(kernel_params, Z), self.jitter, "K_zz"),
        )

    def _rows_projection(self, hyperparameters, chol_zz, X, rows, selects):
        """``(X_rows, P, c)`` for the plate's rows of ``X`` (shared within an evaluation)."""

        def compute():
            X_rows = X[rows] if selects else X
            return (X_rows, *self._projection(hyperparameters, chol_zz, X_rows))

        kernel_params, Z = hyperparameters["kernel"], hyperparameters["inducing_inputs"]
        objects = (self, Z, chol_zz, X, rows if selects else None, *jax.tree.leaves(kernel_params))
        return _shared("projection", objects, compute)

    def _projection(self, hyperparameters, chol_zz, X) -> tuple[jax.Array, jax.Array]:
        """``(P, c)``: ``f_i | u ~ N(P[:, i]ᵀ u, c_i)`` (``u`` whitened or not)."""
        kernel_params, Z = hyperparameters["kernel"], hyperparameters["inducing_inputs"]
        A = solve_triangular(chol_zz, self.kernel(kernel_params, Z, X), lower=True)  # L⁻¹ K_zx
        conditional = self.kernel.diag(kernel_params, X) - jnp.sum(A**2, axis=0)
        P = A if self.whiten else solve_triangular(chol_zz.T, A, lower=False)
        return P, jnp.maximum(conditional, MIN_VARIANCE)

    def _conditional(self, P, conditional, u) -> GPConditional:
        """``p(f | u) = N(Pᵀu, c)``: one object per evaluation, shared by family and model."""
        return _shared(
            "f | u",
            (P, conditional, u),
            lambda: GPConditional(P.T @ u, jnp.sqrt(conditional)),
        )

    def _marginal(self, P, conditional, mean, scale_tril) -> tuple[jax.Array, jax.Array]:
        return P.T @ mean, conditional + jnp.sum((scale_tril.T @ P) ** 2, axis=0)

    def _subsamples(self, X) -> bool:
        """Whether the plate draws ``batch_size`` of the rows of ``X`` itself."""
        return (
            self.num_data is None and self.batch_size is not None and (self.batch_size < X.shape[0])
        )

    def _rows_key(self, X):
        """The family's key for its minibatch rows (``None`` when it draws none).

        Drawn before any other site: the seed handler splits its key once per site in order,
        so a key drawn first costs one split where one drawn after the hyperparameter and
        ``u`` sites would wait for a chain of them.
        """
        return numpyro.prng_key() if self._subsamples(X) else None

    def _plate(self, X, rows_key=None):
        """The data plate and whether its indices select rows of ``X``.

        With ``rows_key`` (the family) a subsampling plate gets its rows from ``B`` uniform
        draws with replacement (``O(B)``; NumPyro's own draw without replacement costs
        ``O(B·N)`` on CPU, which dominates a step for large ``N``); the model replays them.
        """
        num_rows = X.shape[0]
        if self.num_data is not None:  # X is a minibatch of a data set of num_data rows
            if num_rows > self.num_data:
                raise ValueError(
                    f"SVGP: X has {num_rows} rows but num_data={self.num_data}; with num_data "
                    "set, pass minibatches (vj.fit(..., data=(X, y), batch_size=B))"
                )
            return plate("data", self.num_data, subsample_size=num_rows), False
        if not self._subsamples(X):
            return plate("data", num_rows), False
        if rows_key is None:
            return plate("data", num_rows, subsample_size=self.batch_size), True
        rows = jax.random.randint(rows_key, (self.batch_size,), 0, num_rows)
        with substitute(data={"data": rows}):
            return plate("data", num_rows, subsample_size=self.batch_size), True

    def _hyperparameter_sites(self, hyperparameters, *, point_mass: bool):
        """One site per hyperparameter leaf: a flat prior (model) or a point mass (family)."""
        leaves, treedef = jax.tree.flatten(hyperparameters)
        values = []
        for name, leaf in zip(hyperparameter_site_names(hyperparameters), leaves):
            if point_mass:
                leaf = jnp.asarray(leaf)
                values.append(sample(name, dist.Delta(leaf, event_dim=leaf.ndim)))
            else:
                # no support check: the density is 0 on all of ℝ, and NumPyro's check (finite
                # values) would be a reduction over every leaf in each step that can only add
                # -inf; non-finite parameters are refused by the checks here and by vj.fit
                flat = dist.ImproperUniform(
                    constraints.real, (), tuple(leaf.shape), validate_args=False
                )
                values.append(sample(name, flat))
        return jax.tree.unflatten(treedef, values)

    # -- the programs -------------------------------------------------------------------------
    def model(self, X, y=None):
        """The GP model program (see the module docstring); returns ``y`` (sampled if ``None``)."""
        X, y = self._check_data("SVGP.model", X, y)
        hyper = self._hyperparameter_sites(self._template(X.shape[1]), point_mass=False)
        chol_zz = self._cholesky_zz(hyper)
        M = self.num_inducing
        if self.whiten:
            prior = standard_multivariate_normal(M, X.dtype)
        else:
            prior = dist.MultivariateNormal(jnp.zeros(M), scale_tril=chol_zz)
        u = sample("u", prior)
        data_plate, selects = self._plate(X)
        with data_plate as rows:
            _, P, conditional = self._rows_projection(hyper, chol_zz, X, rows, selects)
            y_rows = y[rows] if selects and y is not None else y
            f = sample("f", self._conditional(P, conditional, u))
            return sample("y", self.likelihood.distribution(hyper["likelihood"], f), obs=y_rows)

    def family(self, params, X, y=None):
        """The family program: point-mass hyperparameters, ``q(u)``, and ``p(f | u)`` with its
        declared marginal ``q(f_i)`` (integrated by the ``expectation`` strategy)."""
        X, y = self._check_data("SVGP.family", X, y)
        self._check_params("SVGP.family", params, X.shape[1])
        if _SHARED:  # a family run starts a new pairing: the model replayed on it comes next
            _SHARED[-1].clear()
        rows_key = self._rows_key(X)
        hyper = self._hyperparameter_sites(params["hyperparameters"], point_mass=True)
        chol_zz = self._cholesky_zz(hyper)
        mean, scale_tril = self.inducing_distribution(params)
        u = sample("u", dist.MultivariateNormal(mean, scale_tril=scale_tril))
        data_plate, selects = self._plate(X, rows_key)
        with data_plate as rows:
            _, P, conditional = self._rows_projection(hyper, chol_zz, X, rows, selects)
            marginal_mean, marginal_variance = self._marginal(P, conditional, mean, scale_tril)
            marginal = dist.Normal(marginal_mean, jnp.sqrt(marginal_variance))
            return sample(
                "f",
                self._conditional(P, conditional, u),
                estimator=self.expectation,
                infer={MARGINAL_KEY: marginal},
            )

    def elbo(self, num_particles: int = 1) -> Callable:
        """``vj.elbo(model, family)``, wrapped by
        :func:`~vijax.models.gp.expectations.quadrature` so that a ``gauss_hermite``
        expectation is computed by quadrature.

        The objective is called as ``objective(params, key, X, y)``; with ``num_data`` set, as
        ``vj.fit(objective, ..., data=(X, y), batch_size=B)``.
        """
        return quadrature(SharedAlgebra(objectives.elbo(self.model, self.family, num_particles)))

    # -- prediction and metrics (one compiled program each; checks run eagerly) --------------
    def _checked(self, where: str, params, X, y=None):
        X, y = self._check_data(where, X, y)
        self._check_params(where, params, X.shape[1])
        return X, y

    def _raise_if_failed(self, ok) -> None:
        raise_if_failed(ok, "K_zz", self.num_inducing, self.jitter)

    def predict_f(self, params, X_new) -> tuple[jax.Array, jax.Array]:
        """Mean and variance of ``q(f(x))`` at each row of ``X_new`` (the formulas above)."""
        X_new, _ = self._checked("SVGP.predict_f", params, X_new)
        mean, variance, ok = _predict_f(self, params, X_new)
        self._raise_if_failed(ok)
        return mean, variance

    def predict_y(self, params, X_new) -> tuple[jax.Array, jax.Array]:
        """Mean and variance of ``y`` at each row: ``∫ p(y | f) q(f) df``'s moments."""
        X_new, _ = self._checked("SVGP.predict_y", params, X_new)
        mean, variance, ok = _predict_y(self, params, X_new)
        self._raise_if_failed(ok)
        return mean, variance

    def log_predictive_density(self, params, X_new, y_new) -> jax.Array:
        """``log ∫ p(y_i | f) q(f(x_i)) df`` for each held-out point."""
        X_new, y_new = self._checked("SVGP.log_predictive_density", params, X_new, y_new)
        if y_new is None:
            raise ValueError("SVGP.log_predictive_density: y_new is required")
        log_density, ok = _log_predictive_density(self, params, X_new, y_new)
        self._raise_if_failed(ok)
        return log_density

    def evaluate(self, params, X_new, y_new) -> dict:
        """Test metrics: ``nlpd`` (mean negative log predictive density), and ``rmse`` of the
        predictive mean or, for a Bernoulli likelihood, ``error_rate`` of ``p(y=1) > ½``."""
        X_new, y_new = self._checked("SVGP.evaluate", params, X_new, y_new)
        if y_new is None:
            raise ValueError("SVGP.evaluate: y_new is required")
        metrics, ok = _evaluate(self, params, X_new, y_new)
        self._raise_if_failed(ok)
        return metrics

    # -- Gaussian likelihood references ------------------------------------------------------
    def _gaussian(self, where: str):
        if not isinstance(self.likelihood, Gaussian):
            raise ValueError(
                f"{where} needs a Gaussian likelihood, got {type(self.likelihood).__name__}"
            )

    def _reference_arguments(self, where: str, params, X, y):
        self._gaussian(where)
        X, y = self._check_data(where, X, y)
        if y is None:
            raise ValueError(f"{where}: y is required")
        self._check_hyperparameters(where, params["hyperparameters"], X.shape[1])
        hyper = params["hyperparameters"]
        noise = self.likelihood.variance(hyper["likelihood"])
        return hyper, noise, X, y

    def collapsed_elbo(self, params, X, y) -> jax.Array:
        """Titsias's (2009) collapsed bound at these hyperparameters (Gaussian likelihood):
        the SVGP ELBO maximized over ``q(u)`` (see :func:`~vijax.models.gp.collapsed_elbo`)."""
        hyper, noise, X, y = self._reference_arguments("SVGP.collapsed_elbo", params, X, y)
        return collapsed.collapsed_elbo(
            self.kernel,
            hyper["kernel"],
            hyper["inducing_inputs"],
            noise,
            X,
            y,
            jitter=self.jitter,
        )

    def exact_log_marginal_likelihood(self, params, X, y) -> jax.Array:
        """``log N(y; 0, K_xx + σ² I)`` at these hyperparameters (``O(N³)``; small ``N``)."""
        hyper, noise, X, y = self._reference_arguments(
            "SVGP.exact_log_marginal_likelihood", params, X, y
        )
        return collapsed.exact_log_marginal_likelihood(
            self.kernel, hyper["kernel"], noise, X, y, jitter=self.jitter
        )

    def optimal_inducing(self, params, X, y) -> dict:
        """``params`` with ``q(u)`` replaced by the optimum for a Gaussian likelihood (the ``q``
        at which the SVGP ELBO equals the collapsed bound)."""
        hyper, noise, X, y = self._reference_arguments("SVGP.optimal_inducing", params, X, y)
        mean, scale_tril = collapsed.optimal_inducing_distribution(
            self.kernel,
            hyper["kernel"],
            hyper["inducing_inputs"],
            noise,
            X,
            y,
            jitter=self.jitter,
            whiten=self.whiten,
        )
        inducing = {"mean": mean, "scale": inducing_raw_scale(scale_tril)}
        return {"hyperparameters": params["hyperparameters"], "inducing": inducing}


def svgp(
    kernel,
    likelihood,
    num_inducing: int,
    *,
    whiten: bool = True,
    expectation=None,
    batch_size: int | None = None,
    num_data: int | None = None,
    jitter: float = 1e-6,
) -> SVGP:
    r"""A sparse variational GP with ``num_inducing`` inducing points (see the module docstring).

    Args:
      kernel: a kernel from :mod:`vijax.models.gp.kernels` (``gp.RBF(ard=True)``, sums, ...).
      likelihood: ``gp.Gaussian()``, ``gp.Bernoulli(link=...)``, ``gp.Poisson()``,
        ``gp.StudentT(df)``.
      num_inducing: ``M``, the number of inducing points.
      whiten: parameterize ``q`` over ``v = L_zz⁻¹ u`` (prior ``N(0, I)``).
      expectation: the strategy of the ``f`` site: ``gp.gauss_hermite(K)`` (default: ``K = 2``
        for a Gaussian likelihood, whose log-density is quadratic in ``f`` so that two nodes are
        exact, ``K = 20`` otherwise), ``gp.local_reparameterized()`` or ``vj.reparameterized()``
        (Monte Carlo).
      batch_size: minibatch size ``B``: the programs take the whole data and the plate
        subsamples ``B`` rows per evaluation, drawn uniformly with replacement (``None``: all
        rows).
      num_data: instead, the number of rows ``N`` when the programs are given minibatches (as
        ``vj.fit(..., data=(X, y), batch_size=B)`` does).
      jitter: added to the diagonal of ``K_zz`` before its Cholesky factorization.

    Returns:
      An :class:`SVGP`.

    Example:
        >>> from vijax.models import gp
        >>> model = gp.svgp(gp.Matern32(ard=True), gp.Bernoulli(), num_inducing=16)
        >>> model.whiten, model.expectation.num_points
        (True, 20)
        >>> gp.svgp(gp.RBF(), gp.Gaussian(), 16).expectation.num_points  # exact for Gaussians
        2
    """
    for name, value in (("num_inducing", num_inducing), ("batch_size", batch_size)):
        if value is None and name == "batch_size":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"svgp: {name} must be a positive int, got {value!r}")
    if num_data is not None and (not isinstance(num_data, int) or num_data < 1):
        raise ValueError(f"svgp: num_data must be a positive int, got {num_data!r}")
    if num_data is not None and batch_size is not None:
        raise ValueError(
            "svgp: give batch_size (the plate subsamples the data) or num_data (the programs "
            "receive minibatches), not both"
        )
    if not (isinstance(jitter, int | float) and np.isfinite(jitter) and jitter >= 0):
        raise ValueError(f"svgp: jitter must be a non-negative number, got {jitter!r}")
    if not callable(getattr(kernel, "diag", None)):
        raise ValueError(f"svgp: kernel must be a vijax GP kernel, got {kernel!r}")
    if not callable(getattr(likelihood, "distribution", None)):
        raise ValueError(f"svgp: likelihood must be a vijax GP likelihood, got {likelihood!r}")
    if expectation is None:
        expectation = gauss_hermite(2 if isinstance(likelihood, Gaussian) else 20)
    if not _is_strategy(expectation):
        raise ValueError(
            f"svgp: expectation must be a strategy such as gp.gauss_hermite(20) or "
            f"gp.local_reparameterized(), got {expectation!r}"
        )
    return SVGP(
        kernel=kernel,
        likelihood=likelihood,
        num_inducing=num_inducing,
        whiten=bool(whiten),
        expectation=expectation,
        batch_size=batch_size,
        num_data=num_data,
        jitter=float(jitter),
    )


def _finite(x) -> jax.Array:
    return jnp.all(jnp.isfinite(x))


@functools.partial(jax.jit, static_argnums=0)
def _predict_f(svgp: SVGP, params, X):
    hyper = params["hyperparameters"]
    chol_zz = svgp._cholesky_zz(hyper)
    P, conditional = svgp._projection(hyper, chol_zz, X)
    mean, scale_tril = svgp.inducing_distribution(params)
    return (*svgp._marginal(P, conditional, mean, scale_tril), _finite(chol_zz))


@functools.partial(jax.jit, static_argnums=0)
def _predict_y(svgp: SVGP, params, X):
    mean, variance, ok = _predict_f(svgp, params, X)
    likelihood_params = params["hyperparameters"]["likelihood"]
    return (*svgp.likelihood.predict(likelihood_params, mean, variance), ok)


@functools.partial(jax.jit, static_argnums=0)
def _log_predictive_density(svgp: SVGP, params, X, y):
    mean, variance, ok = _predict_f(svgp, params, X)
    likelihood_params = params["hyperparameters"]["likelihood"]
    return svgp.likelihood.log_predictive(likelihood_params, y, mean, variance), ok


@functools.partial(jax.jit, static_argnums=0)
def _evaluate(svgp: SVGP, params, X, y):
    log_density, ok = _log_predictive_density(svgp, params, X, y)
    y_mean, _, _ = _predict_y(svgp, params, X)
    metrics = {"nlpd": -jnp.mean(log_density)}
    if type(svgp.likelihood).__name__ == "Bernoulli":
        metrics["error_rate"] = jnp.mean((y_mean > 0.5) != (y > 0.5))
    else:
        metrics["rmse"] = jnp.sqrt(jnp.mean((y_mean - y) ** 2))
    return metrics, ok
