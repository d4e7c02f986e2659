r"""Populations of runs: many fits in one compiled program.

:func:`fit_population` is :func:`vijax.fit` under ``vmap``: ``R`` runs, each

    φ^{(r)}_{t+1} = φ^{(r)}_t + optimizer_r(ĝ^{(r)}_t),   ĝ^{(r)}_t from key_r, args_r, data_r,

advance together, one step of all runs per iteration of the same compiled chunk (a
``fori_loop`` over steps whose body is the single-run step ``vmap``-ed over runs). Runs differ by
their key (seeds), and, as chosen with ``in_axes`` / ``data_axes`` / ``hyperparams``, by their
initial parameters, any argument of the objective (a β of a β-ELBO, a prior scale: pass it as an
argument), their dataset, or their optimizer's hyperparameters (``optax.inject_hyperparams``).
Run ``r`` of a population computes exactly what ``vj.fit`` computes for that run alone, with
the same key (``FitState`` slices are interchangeable: ``jax.tree.map(lambda x: x[r], state)``
continues with ``vj.fit(..., state=...)``).

**Groups.** What changes the program itself cannot be ``vmap``-ed: the number of particles (an
array shape), the objective, a site's gradient strategy. Pass one objective per group and each
run's group, ``fit_population((vj.iwae(m, f, 1), vj.iwae(m, f, 8)), ..., groups=[0, 1, 0, 1])``:
every group's step is ``vmap``-ed over its runs inside the same compiled loop, so a sweep over
``K`` (or ELBO vs IWAE vs DReG) is still one program, each run costing what its own objective
costs. The groups' baseline states must have one structure (reparameterized gradients have none).

**Non-finite runs.** A run whose objective or gradient goes non-finite is frozen at its last
good state (parameters, optimizer state and step stop changing; its history is NaN from that
step on), the others continue; at the end :class:`vijax.NonFiniteError` names the runs and
steps, with the whole population in ``error.result`` (``state.bad_step[r] >= 0`` marks them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from vijax.core import arguments
from vijax.infer import distributed
from vijax.infer.fit import (
    FitResult,
    FitState,
    NonFiniteError,
    _check_arguments,
    _check_finite_inputs,
    _data_key,
    _finite_flags,
    _finite_flags_jit,
    _fresh_state,
    _non_finite_gradients,
    _Pace,
    _progress_bar,
    _step,
)
from vijax.objectives import gradient_estimator

__all__ = ["fit_population"]

_CALLER = "fit_population"


def _leaf_axes(prefix: Any, tree: Any, label: str) -> list:
    """One run axis (``0`` or ``None``) per leaf of ``tree``, from a ``vmap``-style prefix."""
    marked = jax.tree.map(lambda a: -1 if a is None else a, prefix, is_leaf=lambda x: x is None)
    try:
        axes = jax.tree.leaves(jax.tree.broadcast(marked, tree))
    except ValueError:
        raise ValueError(
            f"{_CALLER}: {label} must be 0, None or a pytree prefix of its value, got {prefix!r}"
        ) from None
    if any(a not in (0, -1) for a in axes):
        raise ValueError(f"{_CALLER}: {label} may only hold 0 or None, got {prefix!r}")
    return [None if a == -1 else 0 for a in axes]


def _population_keys(keys) -> jax.Array:
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key) and keys.ndim == 1:
        return keys
    if keys.dtype == jnp.uint32 and keys.ndim == 2 and keys.shape[1] == 2:
        return jax.random.wrap_key_data(keys)
    raise ValueError(
        f"{_CALLER}: keys must be a 1-d array of jax.random keys, one per run "
        f"(e.g. jax.random.split(key, 64)), got {keys!r}"
    )


def _select(frozen, old, new):
    """Per run: ``old`` where ``frozen``, else ``new`` (leaves with a leading run axis)."""

    def one(o, n):
        return jnp.where(frozen.reshape(frozen.shape + (1,) * (n.ndim - 1)), o, n)

    return jax.tree.map(one, old, new)


def _fresh_permutations(state, data, data_axes, batch_size):
    """Each run's data order, renewed for the runs starting an epoch.

    Done outside the ``vmap`` of the step, so that the permutations are drawn only when some
    run starts an epoch (under ``vmap`` a per-run ``cond`` would draw them at every step).
    """
    num_data = next(x.shape[1] if a == 0 else x.shape[0] for x, a in zip(data, data_axes))
    epoch, position = jnp.divmod(state.step, num_data // batch_size)
    starting = position == 0

    def renew():
        def one(key, epoch):
            return jax.random.permutation(jax.random.fold_in(_data_key(key), epoch), num_data)

        fresh = jax.vmap(one)(state.key, epoch)
        return jnp.where(starting[:, None], fresh, state.permutation)

    return jax.lax.cond(jnp.any(starting), renew, lambda: state.permutation)


_STATIC = (
    "static",
    "objective",
    "groups",
    "optimizer",
    "batch_size",
    "arg_axes",
    "data_axes",
    "mesh",
)


def _by_group(steps, groups, state, arrays, data, arg_axes, data_axes):
    """``steps[g]`` (a function of ``(state, arrays, data)`` vmapped over runs) on group ``g``'s
    runs, every output put back in run order. ``groups=None``: one group, every run."""
    if groups is None:
        return steps[0](state, arrays, data)

    def rows(index):
        def take(x, axis):
            return x[index] if axis == 0 else x

        return (
            jax.tree.map(lambda x: x[index], state),
            [take(x, a) for x, a in zip(arrays, arg_axes)],
            tuple(take(x, a) for x, a in zip(data, data_axes)),
        )

    outputs = [step(*rows(np.asarray(index))) for step, index in zip(steps, groups)]
    structures = [jax.tree.structure(out) for out in outputs]
    shapes = [[jnp.shape(x)[1:] for x in jax.tree.leaves(out)] for out in outputs]
    if any(t != structures[0] or sh != shapes[0] for t, sh in zip(structures, shapes)):
        raise ValueError(
            f"{_CALLER}: the groups' objectives keep differently shaped baseline states, so "
            "their runs cannot share one population state; run them as separate populations "
            "(or give the groups the same gradient strategies)"
        )
    order = np.argsort(np.concatenate([np.asarray(index) for index in groups]), kind="stable")
    return jax.tree.map(lambda *parts: jnp.concatenate(parts)[order], *outputs)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _initial_population(
    params,
    keys,
    arrays,
    data,
    *,
    static,
    objective,
    groups,
    optimizer,
    batch_size,
    arg_axes,
    data_axes,
    mesh,
):
    """Every run's state before step 0 (``vmap`` of the single-run start) and input flags."""
    with distributed._context(mesh):

        def start(objective):
            estimator = gradient_estimator(objective)

            def one(pair, arrays, data):
                params, key = pair
                args = arguments.merge(list(arrays), static)
                return _fresh_state(params, key, args, data, estimator, optimizer, batch_size)

            return jax.vmap(one, in_axes=(0, list(arg_axes), tuple(data_axes)))

        starts = [start(o) for o in objective]
        state = _by_group(starts, groups, (params, keys), arrays, data, arg_axes, data_axes)
        if mesh is not None:
            state = distributed._constrain(state, distributed._split_leading(mesh))
        return state, _finite_flags(arrays, data)


@functools.partial(jax.jit, static_argnames=(*_STATIC, "chunk_size"))
def _run_population_chunk(
    state,
    arrays,
    data,
    num_steps,
    *,
    static,
    objective,
    groups,
    optimizer,
    chunk_size,
    batch_size,
    arg_axes,
    data_axes,
    mesh,
):
    with distributed._context(mesh):

        def vmapped(objective):
            estimator = gradient_estimator(objective)

            def one(state, arrays, data):
                args = arguments.merge(list(arrays), static)
                return _step(
                    state,
                    args,
                    data,
                    estimator=estimator,
                    optimizer=optimizer,
                    batch_size=batch_size,
                    permute=False,
                )

            return jax.vmap(one, in_axes=(0, list(arg_axes), tuple(data_axes)))

        steps = [vmapped(o) for o in objective]

        def step(state, arrays, data):
            return _by_group(steps, groups, state, arrays, data, arg_axes, data_axes)

        def body(i, carry):
            state, values = carry
            current = state
            if data:
                current = state._replace(
                    permutation=_fresh_permutations(state, data, data_axes, batch_size)
                )
            new, value = step(current, arrays, data)
            frozen = new.bad_step >= 0  # went non-finite now or earlier: keep the last good state
            new = FitState(
                params=_select(frozen, state.params, new.params),
                opt_state=_select(frozen, state.opt_state, new.opt_state),
                estimator_state=_select(frozen, state.estimator_state, new.estimator_state),
                key=state.key,
                step=jnp.where(frozen, state.step, new.step),
                permutation=_select(frozen, state.permutation, new.permutation),
                bad_step=new.bad_step,
            )
            if mesh is not None:
                new = distributed._constrain(new, distributed._split_leading(mesh))
            return new, values.at[i].set(jnp.where(frozen, jnp.nan, value))

        values = jnp.full((chunk_size, state.step.shape[0]), jnp.nan)
        state, values = jax.lax.fori_loop(0, num_steps, body, (state, values))
        bad_steps = state.bad_step
        if mesh is not None:  # what the host reads, on every process
            everywhere = distributed._replicated(mesh)
            values, bad_steps = distributed._constrain((values, bad_steps), everywhere)
        return state, values, bad_steps


def _set_hyperparams(opt_state, hyperparams: dict, num_runs: int):
    """Write per-run values into an ``optax.inject_hyperparams`` state."""

    def injected(path, value) -> bool:
        return any(getattr(k, "name", getattr(k, "key", None)) == "hyperparams" for k in path)

    for name, values in hyperparams.items():
        label = f"hyperparams[{name!r}]"
        try:
            current = optax.tree_utils.tree_get(opt_state, name, filtering=injected)
        except KeyError:
            current = None
        if current is None:
            raise ValueError(
                f"{_CALLER}: {label} is not a hyperparameter of the optimizer's state; build "
                f"the optimizer with optax.inject_hyperparams, e.g. "
                f"optax.inject_hyperparams(optax.adam)({name}=...)"
            )
        values = jnp.asarray(values, dtype=current.dtype)
        if values.shape != current.shape:
            raise ValueError(
                f"{_CALLER}: {label} must hold one value per run, shape {current.shape} "
                f"({num_runs} runs), got shape {values.shape}"
            )
        if isinstance(getattr(current, "sharding", None), NamedSharding):
            values = distributed._place(values, current.sharding)
        opt_state = optax.tree_utils.tree_set(opt_state, injected, **{name: values})
    return opt_state


def _check_data(data: tuple, data_axes, batch_size, num_runs: int):
    """``(data_axes as a tuple, batch_size)`` after checking lengths (per-run data: axis 1)."""
    if data_axes is None or data_axes == 0:
        data_axes = (data_axes,) * len(data)
    data_axes = tuple(data_axes)
    if len(data_axes) != len(data) or any(a not in (0, None) for a in data_axes):
        raise ValueError(
            f"{_CALLER}: data_axes must be 0, None or one of them per data array "
            f"({len(data)} arrays), got {data_axes!r}"
        )
    for index, (x, a) in enumerate(zip(data, data_axes)):
        if a == 0 and (x.ndim < 2 or x.shape[0] != num_runs):
            raise ValueError(
                f"{_CALLER}: data {index} has data_axes 0, so its shape must start with "
                f"({num_runs} runs, data length), got {x.shape}"
            )
    lengths = {x.shape[1] if a == 0 else x.shape[0] for x, a in zip(data, data_axes)}
    if len(lengths) != 1:
        raise ValueError(f"{_CALLER}: data arrays have different data lengths {sorted(lengths)}")
    (num_data,) = lengths
    if batch_size is None or not 0 < batch_size <= num_data:
        raise ValueError(
            f"{_CALLER}: batch_size must be in [1, {num_data}] with data, got {batch_size!r}"
        )
    return data_axes, batch_size


def _check_groups(objective, groups, num_runs: int):
    """``(objectives, each group's runs or None, each run's group)`` after checking them."""
    if callable(objective):
        if groups is not None:
            raise ValueError(
                f"{_CALLER}: groups needs one objective per group (a sequence of objectives), "
                f"got a single objective"
            )
        return (objective,), None, np.zeros(num_runs, int)
    objectives = tuple(objective) if isinstance(objective, list | tuple) else None
    if not objectives or not all(callable(o) for o in objectives):
        raise ValueError(
            f"{_CALLER}: objective must be an objective or a sequence of objectives, got "
            f"{objective!r}"
        )
    if groups is None:
        raise ValueError(
            f"{_CALLER}: with {len(objectives)} objectives, groups must give each run's "
            f"objective ({num_runs} ints in [0, {len(objectives)}))"
        )
    group_of = np.asarray(groups)
    if (
        group_of.shape != (num_runs,)
        or not np.issubdtype(group_of.dtype, np.integer)
        or group_of.min() < 0
        or group_of.max() >= len(objectives)
    ):
        raise ValueError(
            f"{_CALLER}: groups must hold {num_runs} ints (one per run) in "
            f"[0, {len(objectives)}), got {groups!r}"
        )
    unused = sorted(set(range(len(objectives))) - set(group_of.tolist()))
    if unused:
        raise ValueError(f"{_CALLER}: no run uses objective(s) {unused} (groups={groups!r})")
    members = tuple(tuple(np.flatnonzero(group_of == g).tolist()) for g in range(len(objectives)))
    return objectives, members, group_of


def _per_run(arrays: list, axes, r: int) -> list:
    return [x[r] if a == 0 else x for x, a in zip(arrays, axes)]


def fit_population(
    objective: Callable | tuple,
    params: Any,
    optimizer: optax.GradientTransformation,
    keys: jax.Array,
    *args,
    num_steps: int,
    in_axes: tuple | None = None,
    data: tuple | None = None,
    data_axes: Any = None,
    batch_size: int | None = None,
    hyperparams: dict | None = None,
    groups: Any = None,
    state: FitState | None = None,
    mesh: Mesh | None = None,
    chunk_size: int = 4096,
    seconds_per_update: float = 0.25,
    progress: bool = True,
) -> FitResult:
    r"""Train ``len(keys)`` runs of ``objective`` together, in one compiled program.

    Run ``r`` is the fit ``vj.fit(objective, params_r, optimizer_r, keys[r], *args_r,
    data=data_r, batch_size=batch_size)``; the population ``vmap``-s that fit's step over runs
    (see :mod:`vijax.infer.population`), so its results equal the runs done one by one.

    Args:
      objective: an objective to maximize, as for :func:`vijax.fit`; or a sequence of
        objectives, one per group of runs (with ``groups``).
      params: initial parameters: shared by every run, or with a leading run axis where
        ``in_axes[0]`` says 0 (e.g. ``jax.vmap(family.init, (0, None))(keys, x)``).
      optimizer: an optax transformation; with ``hyperparams``, one made by
        ``optax.inject_hyperparams``.
      keys: one ``jax.random.key`` per run (``jax.random.split(key, R)``): the population size.
      *args: the objective's arguments, shared or per run (``in_axes``).
      num_steps: steps every run takes in this call.
      in_axes: like ``jax.vmap``'s, for ``(params, *args)``: ``0`` where the value carries a
        leading run axis, ``None`` where all runs share it (pytree prefixes allowed). ``None``
        (default): everything shared, the runs differ by key only.
      data: optional tuple of arrays minibatched along their data axis.
      data_axes: ``0`` / ``None`` (all data arrays) or one per array: ``0`` for a per-run
        dataset of shape ``(R, N, ...)``, ``None`` for one dataset ``(N, ...)`` shared by all.
        Each run draws its own data order from its key.
      batch_size: minibatch size (required with ``data``).
      hyperparams: per-run optimizer hyperparameters, ``{"learning_rate": lrs}`` with ``lrs``
        of shape ``(R,)``, written into the ``optax.inject_hyperparams`` state.
      groups: with a sequence of objectives, each run's group: ``R`` ints, run ``r`` is
        trained by ``objective[groups[r]]`` (e.g. a sweep over the number of particles).
      state: the :class:`vijax.FitState` of an earlier population (leading run axis on every
        leaf) to continue from.
      mesh: a :class:`jax.sharding.Mesh`: the runs are split over its devices (every axis
        but ``"particles"``, which splits each run's particles); ``R`` must be a multiple of
        their number.
      chunk_size, seconds_per_update, progress: as for :func:`vijax.fit` (the bar shows the
        median objective over runs).

    Returns:
      A :class:`vijax.FitResult`: ``params`` and every ``state`` leaf with a leading run axis,
      ``history`` of shape ``(R, num_steps)``.

    Raises:
      ValueError: bad arguments (named), or NaN / infinite values in ``args`` or ``data``.
      NonFiniteError: after the run, if some runs went non-finite (they are frozen at their
        last good state, the others finish); the message names the runs and steps, and
        ``error.result`` holds the whole population.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import vijax as vj
        >>> def objective(w, key, target):  # maximized at w = target
        ...     return -jnp.sum((w - target) ** 2) + 0.0 * jax.random.normal(key)
        >>> optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
        >>> keys = jax.random.split(jax.random.key(0), 3)
        >>> result = vj.fit_population(objective, jnp.zeros(2), optimizer, keys,
        ...     jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), num_steps=100,
        ...     in_axes=(None, 0), hyperparams={"learning_rate": jnp.array([0.1, 0.2, 0.3])},
        ...     progress=False)
        >>> result.history.shape  # one history per run
        (3, 100)
        >>> bool(jnp.allclose(result.params, jnp.array([[1, 2], [3, 4], [5, 6.0]]), atol=1e-3))
        True
    """
    _check_arguments(_CALLER, num_steps, chunk_size, optimizer, None, None)
    keys = _population_keys(keys) if state is None else state.key
    num_runs = keys.shape[0]
    objectives, members, group_of = _check_groups(objective, groups, num_runs)
    if in_axes is None:
        in_axes = (None,) * (1 + len(args))
    if not isinstance(in_axes, tuple | list) or len(in_axes) != 1 + len(args):
        raise ValueError(
            f"{_CALLER}: in_axes must be a tuple with one entry for params and one per "
            f"argument ({1 + len(args)} entries), got {in_axes!r}"
        )
    leaves = jax.tree.leaves(args)
    leaf_axes = _leaf_axes(tuple(in_axes[1:]), tuple(args), "in_axes")
    arrays, static = arguments.split(args)
    arg_axes = []
    for index, (leaf, axis) in enumerate(zip(leaves, leaf_axes)):
        if axis == 0 and not arguments.is_array(leaf):
            raise ValueError(f"{_CALLER}: in_axes marks a non-array argument leaf ({leaf!r})")
        if axis == 0 and (leaf.ndim == 0 or leaf.shape[0] != num_runs):
            raise ValueError(
                f"{_CALLER}: argument leaf {index} has in_axes 0, so its leading axis must be "
                f"the {num_runs} runs, got shape {leaf.shape}"
            )
        if arguments.is_array(leaf):
            arg_axes.append(axis)
    arg_axes = tuple(arg_axes)
    data = tuple(data) if data is not None else ()
    if data:
        data_axes, batch_size = _check_data(data, data_axes, batch_size, num_runs)
    else:
        data_axes, batch_size = (), None

    run_sharding = None
    if mesh is not None:
        mesh = distributed._normalize_mesh(mesh, _CALLER)
        devices = distributed._data_devices(mesh)
        if num_runs % devices:
            raise ValueError(
                f"{_CALLER}: the population size ({num_runs} keys) must be a multiple of the "
                f"{devices} devices that split the runs over mesh axes "
                f"{distributed._data_axes(mesh)}"
            )
        run_sharding = distributed._split_leading(mesh)
        everywhere = distributed._replicated(mesh)
        arrays = [
            distributed._place(x, run_sharding)
            if a == 0
            else distributed._keep_or_place([x], mesh, everywhere)[0]
            for x, a in zip(arrays, arg_axes)
        ]
        data = tuple(
            distributed._place(x, run_sharding)
            if a == 0
            else distributed._keep_or_place([x], mesh, everywhere)[0]
            for x, a in zip(data, data_axes)
        )
    compiled = dict(
        static=static,
        objective=objectives,
        groups=members,
        optimizer=optimizer,
        batch_size=batch_size,
        arg_axes=arg_axes,
        data_axes=data_axes,
        mesh=mesh,
    )

    if state is None:
        params_axes = _leaf_axes(in_axes[0], params, "in_axes[0] (params)")
        flat, params_tree = jax.tree.flatten(params)
        for leaf, axis in zip(flat, params_axes):
            if axis == 0 and (jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != num_runs):
                raise ValueError(
                    f"{_CALLER}: params has in_axes 0, so its leaves must lead with the "
                    f"{num_runs} runs, got shape {jnp.shape(leaf)}"
                )
        flat = [
            leaf if axis == 0 else jnp.broadcast_to(leaf, (num_runs, *jnp.shape(leaf)))
            for leaf, axis in zip(flat, params_axes)
        ]
        params = jax.tree.unflatten(params_tree, flat)
        if run_sharding is not None:
            params = distributed._place_tree(params, run_sharding)
            keys = distributed._place(keys, run_sharding)
        state, flags = _initial_population(params, keys, arrays, data, **compiled)
    else:
        state = state._replace(bad_step=jnp.full((num_runs,), -1, jnp.int32))
        if run_sharding is not None:
            state = distributed._place_tree(state, run_sharding)
        flags = _finite_flags_jit(arrays, data)
    _check_finite_inputs(args, data, flags)
    if hyperparams:
        state = state._replace(
            opt_state=_set_hyperparams(state.opt_state, dict(hyperparams), num_runs)
        )

    run = functools.partial(_run_population_chunk, chunk_size=chunk_size, **compiled)
    history: list[np.ndarray] = []
    bar = _progress_bar(num_steps, progress, desc=_CALLER)
    pace = _Pace(seconds_per_update)
    done, pending, all_bad = 0, None, False
    bad_steps = np.full((num_runs,), -1)  # a new or resumed population starts clean (host side)

    def settle(values, bad_steps, count) -> bool:
        """Record a finished chunk; whether every run has gone non-finite."""
        values = np.asarray(values)[:count]
        history.append(values)
        pace.record(count)
        bar.update(count)
        if count and np.isfinite(values[-1]).any():
            bar.set_postfix(objective=f"{np.nanmedian(values[-1]):.4g} (median)", refresh=False)
        return bool(np.all(np.asarray(bad_steps) >= 0))

    try:
        while done < num_steps and not all_bad:
            count = min(chunk_size, num_steps - done, pace.next_count())
            state, values, bad_steps = run(state, arrays, data, count)
            if pending is not None:
                all_bad = settle(*pending)
            pending = (values, bad_steps, count)
            done += count
        if pending is not None:
            all_bad = settle(*pending)
    finally:
        bar.close()

    steps = sum(len(v) for v in history)
    all_values = np.concatenate(history).T if history else np.zeros((num_runs, 0))
    if steps < num_steps:  # every run stopped early: the rest of the history is NaN
        all_values = np.pad(all_values, ((0, 0), (0, num_steps - steps)), constant_values=np.nan)
    result = FitResult(state.params, all_values, state)
    bad = np.asarray(bad_steps)
    failed = [int(r) for r in np.flatnonzero(bad >= 0)]
    if failed:
        first = failed[0]
        where = _non_finite_gradients(
            objectives[group_of[first]],
            jax.tree.map(lambda x: x[first], state),
            arguments.merge(_per_run(arrays, arg_axes, first), static),
            tuple(_per_run(list(data), data_axes, first)),
            batch_size,
            int(bad[first]),
        )
        shown = ", ".join(f"run {r} at step {int(bad[r])}" for r in failed[:10])
        more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
        raise NonFiniteError(
            f"{_CALLER}: the objective or its gradient went non-finite in {len(failed)} of "
            f"{num_runs} runs ({shown}{more}); run {first}{where or ''}. Those runs are frozen "
            "at their last good state (history NaN from then on), the others ran to the end; "
            "see error.result (state.bad_step >= 0 marks the failed runs)",
            result,
        )
    return result
