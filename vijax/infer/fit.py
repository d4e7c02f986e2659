r"""The fit loop: optax steps in compiled chunks, a progress bar between chunks.

:func:`fit` maximizes an objective by stochastic gradient ascent,

    φ_{t+1} = φ_t + optimizer(ĝ_t),   E[ĝ_t] = ∇_φ L(φ_t),

with ``ĝ_t`` from :func:`vijax.gradient_estimator`. Steps run inside one jitted program per
chunk (a ``fori_loop`` whose trip count is an argument, so every chunk, the last partial one
included, reuses one compilation); the progress bar and the non-finite check read each chunk's
values while the next chunk is already running, so they cost no device time. A second ``fit``
with the same objective, optimizer and shapes reuses the compiled chunk.

Minibatches: pass ``data=(x, y, ...)`` (arrays with a leading axis of length ``N``) and
``batch_size=B``. The data stays on the device; each epoch draws a permutation, and step ``t``
calls ``objective(params, key_t, *args, *batch_t)``. The model scales its likelihood with
``plate(name, N, subsample_size=B)``.

A step whose objective or gradient is not finite stops the run with :class:`NonFiniteError`,
which names the step and the parameters whose gradient was not finite, and carries the state
just before that step (``error.result``), so nothing is lost. The hot loop only records the
first bad step; the host recovers the state by replaying that chunk up to it (the loop is
deterministic), so the guard costs one ``isfinite`` reduction per step.

Scale: ``fit(..., mesh=mesh)`` trains data-parallel over a device mesh, across hosts too
(:mod:`vijax.infer.distributed`); :func:`vijax.fit_population` trains many runs in one program
(:mod:`vijax.infer.population`).
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from vijax.core import arguments
from vijax.infer import distributed
from vijax.objectives import gradient_estimator

__all__ = ["FitResult", "FitState", "NonFiniteError", "fit"]


class FitState(NamedTuple):
    """Everything a run needs to continue: pass it back as ``fit(..., state=state)``.

    A plain pytree of arrays (save it with :func:`vijax.infer.save_checkpoint`): replicated on
    every device for a ``mesh`` run, with a leading run axis on every leaf for a population.
    """

    params: Any
    opt_state: Any
    estimator_state: Any
    key: jax.Array
    step: jax.Array
    permutation: jax.Array
    bad_step: jax.Array  # first non-finite step, or -1


class FitResult(NamedTuple):
    """``params`` after the run, the objective value at every step, and the state to resume."""

    params: Any
    history: np.ndarray
    state: FitState


class NonFiniteError(FloatingPointError):
    """The objective or its gradient went non-finite; ``result`` holds the last good state."""

    def __init__(self, message: str, result: FitResult):
        super().__init__(message)
        self.result = result


def _floating(leaf) -> bool:
    return arguments.is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.floating)


def _finite_flags(args, data) -> list:
    """One on-device flag per floating array of ``args`` and ``data``: all values finite."""
    return [
        jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves((args, data)) if _floating(leaf)
    ]


def _check_finite_inputs(args, data, flags) -> None:
    """Refuse NaN / infinite inputs, naming the argument (``flags`` from :func:`_finite_flags`)."""
    flags = iter(np.asarray(flags).tolist())
    for where, tree in (("argument", args), ("data", data)):
        for index, leaf in enumerate(tree):
            for path, array in jax.tree_util.tree_leaves_with_path(leaf):
                if _floating(array) and not next(flags):
                    label = f"{where} {index}{jax.tree_util.keystr(path)}"
                    raise ValueError(f"fit: {label} contains NaN or infinite values")


_finite_flags_jit = jax.jit(_finite_flags)


def _finite(value, grads) -> jax.Array:
    """Whether ``value`` and every gradient entry are finite.

    One sum per leaf instead of an ``isfinite`` per entry: a NaN or an infinity anywhere makes
    the total non-finite (a finite total that overflows to ``inf`` is flagged too, rightly).
    """
    total = value + sum(jnp.sum(g) for g in jax.tree.leaves(grads))
    return jnp.isfinite(total)


def _data_key(key):
    """The key of the data permutations (distinct from every step key ``fold_in(key, t)``)."""
    return jax.random.fold_in(key, 2**31 - 1)


def _batch(data, permutation, position, batch_size):
    start = position * batch_size
    indices = jax.lax.dynamic_slice_in_dim(permutation, start, batch_size)
    return tuple(jnp.take(x, indices, axis=0) for x in data)


def _step(
    state, args, data, *, estimator, optimizer, batch_size, batch_sharding=None, permute=True
):
    """One optimizer step of one run: ``(state, args, data) -> (new state, objective value)``.

    ``batch_sharding`` (data-parallel runs) splits the minibatch over the devices;
    ``permute=False`` leaves drawing each epoch's permutation to the caller (populations).
    """
    step_key = jax.random.fold_in(state.key, state.step)
    batch, permutation = (), state.permutation
    if data:
        num_data = data[0].shape[0]
        epoch, position = jnp.divmod(state.step, num_data // batch_size)
        if permute:
            permutation = jax.lax.cond(
                position == 0,
                lambda: jax.random.permutation(
                    jax.random.fold_in(_data_key(state.key), epoch), num_data
                ),
                lambda: permutation,
            )
        batch = _batch(data, permutation, position, batch_size)
        if batch_sharding is not None:
            batch = distributed._constrain(batch, batch_sharding)
    value, grads, estimator_state = estimator.estimate(
        state.params, state.estimator_state, step_key, *args, *batch
    )
    updates, opt_state = optimizer.update(
        jax.tree.map(jnp.negative, grads), state.opt_state, state.params
    )
    # No select on the hot path: a non-finite step is only recorded; the host replays the
    # chunk up to it to recover the last good state (the loop is deterministic).
    finite = _finite(value, grads)
    new_state = FitState(
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        estimator_state=estimator_state,
        key=state.key,
        step=state.step + 1,
        permutation=permutation,
        bad_step=jnp.where(finite | (state.bad_step >= 0), state.bad_step, state.step),
    )
    return new_state, value


@functools.partial(
    jax.jit,
    static_argnames=("static", "objective", "optimizer", "chunk_size", "batch_size", "mesh"),
)
def _run_chunk(
    state, arrays, data, num_steps, *, static, objective, optimizer, chunk_size, batch_size, mesh
):
    with distributed._context(mesh):
        args = arguments.merge(arrays, static)
        step = functools.partial(
            _step,
            estimator=gradient_estimator(objective),
            optimizer=optimizer,
            batch_size=batch_size,
            batch_sharding=None if mesh is None else distributed._split_leading(mesh),
        )

        def body(i, carry):
            state, values = carry
            state, value = step(state, args, data)
            if mesh is not None:  # parameters and state stay replicated on every device
                state = distributed._constrain(state, distributed._replicated(mesh))
            return state, values.at[i].set(value)

        values = jnp.full((chunk_size,), jnp.nan)
        return jax.lax.fori_loop(0, num_steps, body, (state, values))


class _Pace:
    """Chooses chunk lengths so that chunks take about ``seconds`` each.

    The first chunks run 32 steps; the first one read also paid for compilation, so the speed
    is measured from the second one on.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.rate = None  # steps per second, from the chunks read so far
        self.last = None

    def record(self, count: int) -> None:
        now = time.perf_counter()
        if self.last is not None and count and now > self.last:
            self.rate = count / (now - self.last)
        self.last = now

    def next_count(self) -> int:
        return 32 if self.rate is None else max(1, int(self.rate * self.seconds))


def _progress_bar(total: int, enabled: bool, desc: str = "fit"):
    """A tqdm bar (a notebook widget where ipywidgets is installed, text otherwise)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.auto import tqdm

        # several hosts: one bar, on process 0
        shown = enabled and jax.process_index() == 0
        return tqdm(total=total, disable=not shown, desc=desc, unit="step")


def _as_typed_key(key) -> jax.Array:
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)
    raise ValueError(f"fit: key must be a jax.random.key, got {key!r}")


def _fresh_state(params, key, args, data, estimator, optimizer, batch_size) -> FitState:
    """One run's state before step 0: optimizer and estimator states initialized at ``params``
    (the estimator's from the first minibatch's shapes), data in its original order."""
    batch = tuple(x[:batch_size] for x in data) if data else ()
    permutation = jnp.arange(data[0].shape[0]) if data else jnp.zeros((0,), jnp.int32)
    return FitState(
        params=params,
        opt_state=optimizer.init(params),
        estimator_state=estimator.init(params, key, *args, *batch),
        key=key,
        step=jnp.zeros((), jnp.int32),
        permutation=permutation,
        bad_step=jnp.full((), -1, jnp.int32),
    )


@functools.partial(
    jax.jit, static_argnames=("static", "objective", "optimizer", "batch_size", "mesh")
)
def _initial_state(params, key, arrays, data, *, static, objective, optimizer, batch_size, mesh):
    """The state before step 0 and the inputs' finiteness flags (one compiled program, so a
    second ``fit`` neither traces the objective nor compiles anything)."""
    with distributed._context(mesh):
        args = arguments.merge(arrays, static)
        state = _fresh_state(
            params, key, args, data, gradient_estimator(objective), optimizer, batch_size
        )
        if mesh is not None:
            state = distributed._constrain(state, distributed._replicated(mesh))
        return state, _finite_flags(arrays, data)


def fit(
    objective: Callable,
    params: Any,
    optimizer: optax.GradientTransformation,
    key: jax.Array,
    *args,
    num_steps: int,
    data: tuple | None = None,
    batch_size: int | None = None,
    state: FitState | None = None,
    chunk_size: int = 4096,
    seconds_per_update: float = 0.25,
    progress: bool = True,
    mesh: Mesh | None = None,
) -> FitResult:
    """Maximize ``objective(params, key, *args)`` with ``optimizer`` for ``num_steps`` steps.

    Args:
      objective: an objective to maximize (``vj.elbo(...)``, ``vj.iwae(...)`` or your own).
        Keep the same objective and optimizer objects across calls to reuse the compilation.
      params: initial parameters (ignored when ``state`` is given).
      optimizer: an optax transformation (it minimizes; ``fit`` feeds it ``−ĝ``).
      key: a ``jax.random.key``; step ``t`` uses ``fold_in(key, t)``, so a resumed run draws
        what an uninterrupted one would.
      *args: the objective's arguments (arrays stay on the device).
      num_steps: steps to run in this call.
      data: optional tuple of arrays minibatched along their leading axis.
      batch_size: minibatch size (required with ``data``).
      state: a :class:`FitState` from an earlier call, to continue from it.
      chunk_size: the most steps one compiled chunk runs (its history buffer's length).
      seconds_per_update: chunks are sized from the measured speed so that the progress bar
        moves about this often (the step count of a chunk is an argument of the compiled
        program, so resizing compiles nothing).
      progress: show a tqdm progress bar (on process 0 only, with several hosts).
      mesh: a :class:`jax.sharding.Mesh` to train data-parallel on its devices (see
        :mod:`vijax.infer.distributed`): parameters and state replicated, each minibatch split
        over every mesh axis except ``"particles"``, whose devices split the objective's
        particles. Same batches and noise as on one device, so the same result up to the order
        of floating-point sums; a batch that does not divide evenly is padded by XLA. Arrays
        in ``args`` and ``data`` already sharded over the mesh keep their layout, the others
        are replicated. ``None`` (default): one device, the program unchanged.

    Returns:
      A :class:`FitResult` ``(params, history, state)``.

    Raises:
      ValueError: bad arguments, or NaN / infinite values in ``args`` or ``data``.
      NonFiniteError: the objective or its gradient became non-finite.

    Example:
        >>> import jax, jax.numpy as jnp, optax, numpyro.distributions as dist
        >>> import vijax as vj
        >>> def model(x):
        ...     mu = vj.sample("mu", dist.Normal(0.0, 10.0))
        ...     with vj.plate("data", x.shape[0]):
        ...         vj.sample("x", dist.Normal(mu, 1.0), obs=x)
        >>> family = vj.mean_field_normal(model)
        >>> x = jnp.arange(10.0)
        >>> result = vj.fit(vj.elbo(model, family), family.init(jax.random.key(0), x),
        ...                 optax.adam(0.1), jax.random.key(1), x, num_steps=2000,
        ...                 progress=False)
        >>> bool(abs(result.params["loc"]["mu"] - 4.4955) < 0.15)
        True

        Data parallel over every device (one here; see ``notebooks/07_scaling.ipynb``):

        >>> mesh = jax.make_mesh((jax.device_count(),), ("data",))
        >>> sharded = vj.fit(vj.elbo(model, family), family.init(jax.random.key(0), x),
        ...                  optax.adam(0.1), jax.random.key(1), x, num_steps=2000,
        ...                  progress=False, mesh=mesh)
        >>> bool(jnp.allclose(sharded.params["loc"]["mu"], result.params["loc"]["mu"]))
        True
    """
    data, batch_size = _check_arguments("fit", num_steps, chunk_size, optimizer, data, batch_size)
    arrays, static = arguments.split(args)
    if mesh is not None:
        mesh = distributed._normalize_mesh(mesh, "fit")
        everywhere = distributed._replicated(mesh)
        arrays = distributed._keep_or_place(arrays, mesh, everywhere)
        data = tuple(distributed._keep_or_place(list(data), mesh, everywhere))
        args = arguments.merge(arrays, static)
        if state is None:
            params = distributed._place_tree(params, everywhere)
            key = distributed._place(_as_typed_key(key), everywhere)
    if state is None:
        state, flags = _initial_state(
            params,
            _as_typed_key(key),
            arrays,
            data,
            static=static,
            objective=objective,
            optimizer=optimizer,
            batch_size=batch_size,
            mesh=mesh,
        )
    else:
        state = state._replace(bad_step=jnp.full((), -1, jnp.int32))
        if mesh is not None:
            state = distributed._place_tree(state, distributed._replicated(mesh))
        flags = _finite_flags_jit(arrays, data)
    _check_finite_inputs(args, data, flags)

    run = functools.partial(
        _run_chunk,
        static=static,
        objective=objective,
        optimizer=optimizer,
        chunk_size=chunk_size,
        batch_size=batch_size,
        mesh=mesh,
    )
    history: list[np.ndarray] = []
    bar = _progress_bar(num_steps, progress)
    done = 0
    pending = None  # (state before the chunk, state after, values, steps): read one chunk late

    def settle(before, after, values, count) -> FitState | None:
        """Record a finished chunk; on a non-finite step return the last good state."""
        values = np.asarray(values)[:count]
        bad_step = int(after.bad_step)
        if bad_step >= 0:
            good = bad_step - int(before.step)
            history.append(values[:good])
            good_state, _ = run(before, arrays, data, good)
            return good_state._replace(bad_step=after.bad_step)
        history.append(values)
        pace.record(count)
        bar.update(count)
        if count:
            bar.set_postfix(objective=f"{values[-1]:.4g}", refresh=False)
        return None

    pace = _Pace(seconds_per_update)
    stopped = None
    try:
        while done < num_steps and stopped is None:
            count = min(chunk_size, num_steps - done, pace.next_count())
            before = state
            state, values = run(state, arrays, data, count)
            if pending is not None:
                stopped = settle(*pending)
            pending = (before, state, values, count)
            done += count
        if pending is not None and stopped is None:
            stopped = settle(*pending)
    finally:
        bar.close()

    all_values = np.concatenate(history) if history else np.zeros((0,))
    if stopped is not None:
        bad_step = int(stopped.bad_step)
        result = FitResult(stopped.params, all_values, stopped)
        where = _non_finite_gradients(objective, stopped, args, data, batch_size, bad_step)
        raise NonFiniteError(
            f"fit: the objective or its gradient is not finite at step {bad_step}{where}; "
            f"training stopped with the parameters of step {bad_step} (see error.result)",
            result,
        )
    return FitResult(state.params, all_values, state)


def _check_arguments(caller, num_steps, chunk_size, optimizer, data, batch_size):
    """Validate the loop's arguments; returns ``(data as a tuple, batch_size or None)``."""
    if not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"{caller}: num_steps must be a non-negative int, got {num_steps!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{caller}: chunk_size must be a positive int, got {chunk_size!r}")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise ValueError(f"{caller}: optimizer must be an optax GradientTransformation")
    data = tuple(data) if data is not None else ()
    if not data:
        return (), None
    if batch_size is None or not 0 < batch_size <= data[0].shape[0]:
        raise ValueError(
            f"{caller}: batch_size must be in [1, {data[0].shape[0]}] with data, got {batch_size!r}"
        )
    lengths = {x.shape[0] for x in data}
    if len(lengths) != 1:
        raise ValueError(f"{caller}: data arrays have different leading lengths {sorted(lengths)}")
    return data, batch_size


def _non_finite_gradients(objective, state, args, data, batch_size, step) -> str:
    """Re-run the failing step once (outside the loop) to name what went non-finite."""
    try:
        estimator = gradient_estimator(objective)
        batch = ()
        if data:
            steps_per_epoch = data[0].shape[0] // batch_size
            epoch, position = divmod(step, steps_per_epoch)
            permutation = jax.random.permutation(
                jax.random.fold_in(_data_key(state.key), epoch), data[0].shape[0]
            )
            batch = _batch(data, permutation, position, batch_size)
        value, grads, _ = jax.jit(estimator.estimate)(
            state.params, state.estimator_state, jax.random.fold_in(state.key, step), *args, *batch
        )
    except Exception:  # diagnosis only; the NonFiniteError itself is what matters
        return ""
    bad = [
        jax.tree_util.keystr(path)
        for path, g in jax.tree_util.tree_leaves_with_path(grads)
        if not np.all(np.isfinite(np.asarray(g)))
    ]
    parts = [f" (objective value {float(value):.4g}"]
    if bad:
        parts.append(f"; non-finite gradient at params{', params'.join(bad)}")
    return "".join(parts) + ")"
