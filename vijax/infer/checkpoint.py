r"""Checkpoints: save a run's state and resume it exactly.

A checkpoint is a folder ``step_000001200/`` holding

- ``state.msgpack``: every array leaf of the state (a :class:`vijax.FitState`: parameters,
  optimizer state, baseline state, key, step, data permutation; or any pytree), keyed by its
  path in the tree, plus free-form ``extras`` (a loss history, say), in flax's msgpack format
  (``flax.serialization``; loading never unpickles anything);
- ``checkpoint.json``: the step, each leaf's path, shape and dtype, and the caller's
  ``metadata`` (a run configuration).

**Atomic writes.** A checkpoint is written into a hidden temporary folder next to its final
place and renamed into place when complete, so a run killed while writing leaves the previous
checkpoints intact and no half-written ``step_*`` folder (:func:`latest_checkpoint` ignores the
temporary ones).

**Exact resume.** Typed PRNG keys are stored as their key data and implementation name, and all
arrays bit for bit, so ``vj.fit(..., state=load_checkpoint(...).state)`` continues exactly as the
run that wrote it would have (:func:`vijax.fit` draws step ``t``'s randomness from
``fold_in(key, t)`` and the data order from the saved key and permutation).

**Every mode.** :func:`fit_with_checkpoints` takes ``mesh=`` (data parallel, one host or
several: process 0 writes, every process resumes from the same checkpoint) and
:func:`fit_population_with_checkpoints` checkpoints a whole population (every run's state,
gathered from every device and host).

**Refusing the wrong model.** :func:`load_checkpoint` takes the state it will replace (``like``,
e.g. ``vj.fit(..., num_steps=0).state``) and refuses a checkpoint whose leaves differ in path,
shape or dtype, naming the first differences, and (when asked) one whose metadata differs.

Example:
    >>> import jax, jax.numpy as jnp, tempfile
    >>> from vijax.infer import load_checkpoint, save_checkpoint
    >>> state = {"w": jnp.arange(3.0), "key": jax.random.key(0)}
    >>> folder = save_checkpoint(tempfile.mkdtemp(), state, step=10)
    >>> restored = load_checkpoint(folder, like=state)
    >>> restored.step, restored.state["w"].tolist()
    (10, [0.0, 1.0, 2.0])
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from vijax.infer.fit import FitResult, NonFiniteError, fit
from vijax.infer.population import fit_population

__all__ = [
    "Checkpoint",
    "CheckpointedFit",
    "fit_population_with_checkpoints",
    "fit_with_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT = "vijax-checkpoint-1"
STATE_FILE = "state.msgpack"
INFO_FILE = "checkpoint.json"
_STEP_FOLDER = re.compile(r"^step_(\d+)$")
_TEMPORARY_PREFIX = ".tmp-"
_SHOWN = 5  # differences named in an error message


class Checkpoint(NamedTuple):
    """A loaded checkpoint: the state, its extras and metadata, its step and folder."""

    state: Any
    extras: dict
    metadata: dict
    step: int
    path: Path


def _is_key(leaf) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _leaves(tree) -> tuple[list[tuple[str, Any]], Any]:
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in with_paths], treedef


def _describe(leaf) -> dict:
    if _is_key(leaf):
        return {"shape": list(jnp.shape(leaf)), "dtype": str(leaf.dtype)}
    dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
    return {"shape": list(np.shape(leaf)), "dtype": str(dtype)}


def _host(leaf) -> np.ndarray:
    """A numpy copy of ``leaf``, gathered from every process when it is split over hosts.

    Collective for such leaves (``process_allgather``): every process must take part.
    """
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(leaf)


def _folder_name(step: int) -> str:
    return f"step_{step:09d}"


def _check_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"save_checkpoint: step must be a non-negative int, got {step!r}")
    return int(step)


def save_checkpoint(
    directory: str | os.PathLike,
    state: Any,
    *,
    step: int,
    extras: dict | None = None,
    metadata: dict | None = None,
    keep: int | None = 3,
) -> Path:
    """Write ``state`` as checkpoint ``directory/step_<step>/``, atomically.

    Args:
      directory: the folder of the run's checkpoints (created if needed).
      state: a pytree of arrays (a :class:`vijax.FitState`, parameters, ...).
      step: the step the state is at (names the folder).
      extras: a flat dict of arrays kept with the state but not checked on load (histories).
      metadata: a JSON-serializable dict (the run's configuration), returned on load and
        compared there when asked.
      keep: keep only the newest ``keep`` checkpoints of ``directory`` (``None``: all).

    With several processes (multi-host JAX) every process calls this with the same state:
    leaves split over hosts (a population's runs) are gathered from all of them, process 0
    writes, and every process returns once the checkpoint is complete.

    Returns:
      The checkpoint's folder.
    """
    step = _check_step(step)
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"save_checkpoint: keep must be a positive int or None, got {keep!r}")
    metadata = dict(metadata or {})
    try:
        json.dumps(metadata)
    except TypeError as error:
        raise ValueError(f"save_checkpoint: metadata must be JSON-serializable ({error})") from None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    leaves, _ = _leaves(state)
    arrays, described = {}, []
    for path, leaf in leaves:
        described.append({"path": path, **_describe(leaf)})
        if _is_key(leaf):
            arrays[path] = _host(jax.random.key_data(leaf))
            described[-1]["key_impl"] = str(jax.random.key_impl(leaf))
        else:
            arrays[path] = _host(leaf)
    extra_arrays = {str(name): _host(value) for name, value in (extras or {}).items()}
    final = directory / _folder_name(step)
    if jax.process_index() != 0:  # several hosts: process 0 writes, the others wait for it
        multihost_utils.sync_global_devices(f"vijax checkpoint {final}")
        return final
    payload = serialization.msgpack_serialize({"state": arrays, "extras": extra_arrays})
    info = {"format": FORMAT, "step": step, "leaves": described, "metadata": metadata}

    temporary = directory / f"{_TEMPORARY_PREFIX}{final.name}-{uuid.uuid4().hex}"
    temporary.mkdir()
    try:
        for name, content in ((STATE_FILE, payload), (INFO_FILE, json.dumps(info, indent=1))):
            mode = "wb" if isinstance(content, bytes) else "w"
            with open(temporary / name, mode) as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        if final.exists():  # re-saving a step: move the old one aside, then replace it
            old = directory / f"{_TEMPORARY_PREFIX}old-{final.name}-{uuid.uuid4().hex}"
            os.replace(final, old)
            os.replace(temporary, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if keep is not None:
        for stale in _checkpoints(directory)[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"vijax checkpoint {final}")
    return final


def _checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoint folders of ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for child in directory.iterdir():
        match = _STEP_FOLDER.match(child.name)
        if match and (child / STATE_FILE).is_file() and (child / INFO_FILE).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder in ``directory``, or ``None``."""
    found = _checkpoints(Path(directory))
    return found[-1] if found else None


def _mismatch(path: Path, stored: list[dict], expected: list[tuple[str, Any]]) -> str | None:
    stored_by_path = {entry["path"]: entry for entry in stored}
    expected_by_path = {p: _describe(leaf) for p, leaf in expected}
    missing = [p for p in expected_by_path if p not in stored_by_path]
    unexpected = [p for p in stored_by_path if p not in expected_by_path]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[:_SHOWN]}")
        if unexpected:
            parts.append(f"not in this state {unexpected[:_SHOWN]}")
        return (
            f"load_checkpoint: {str(path)!r} was written for a different model or optimizer: "
            f"its leaves differ ({'; '.join(parts)})"
        )
    for p, want in expected_by_path.items():
        have = stored_by_path[p]
        if list(have["shape"]) != want["shape"] or have["dtype"] != want["dtype"]:
            return (
                f"load_checkpoint: {str(path)!r} was written for a differently shaped model: "
                f"{p} is {have['dtype']}{tuple(have['shape'])} in the checkpoint but "
                f"{want['dtype']}{tuple(want['shape'])} here"
            )
    return None


def load_checkpoint(
    path: str | os.PathLike, like: Any, *, metadata: dict | None = None
) -> Checkpoint:
    """Load a checkpoint into the structure of ``like``.

    Args:
      path: a checkpoint folder, or a folder of checkpoints (its newest is loaded).
      like: a state of the expected structure, shapes and dtypes (arrays or
        ``jax.ShapeDtypeStruct``; e.g. ``vj.fit(..., num_steps=0).state``).
      metadata: when given, every key of it must equal the checkpoint's metadata.

    Returns:
      A :class:`Checkpoint`.

    Raises:
      FileNotFoundError: no checkpoint at ``path``.
      ValueError: the checkpoint's leaves differ from ``like``'s (paths, shapes, dtypes), its
        metadata differs from ``metadata``, or it is not a vijax checkpoint.
    """
    path = Path(path)
    if not (path / INFO_FILE).is_file():
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"load_checkpoint: no checkpoint in {str(path)!r}")
        path = latest
    try:
        info = json.loads((path / INFO_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"load_checkpoint: {str(path)!r} is unreadable ({error})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"load_checkpoint: {str(path)!r} is not a {FORMAT} checkpoint")
    stored_metadata = info.get("metadata", {})
    if metadata is not None:
        differ = {
            k: (stored_metadata.get(k), v)
            for k, v in metadata.items()
            if stored_metadata.get(k) != v
        }
        if differ:
            shown = ", ".join(
                f"{k}={old!r} there vs {new!r} here" for k, (old, new) in list(differ.items())
            )
            raise ValueError(
                f"load_checkpoint: {str(path)!r} was written with a different configuration: "
                f"{shown}"
            )
    expected, treedef = _leaves(like)
    problem = _mismatch(path, info["leaves"], expected)
    if problem:
        raise ValueError(problem)
    payload = serialization.msgpack_restore((path / STATE_FILE).read_bytes())
    arrays = payload.get("state", {})
    impls = {entry["path"]: entry.get("key_impl") for entry in info["leaves"]}
    leaves = []
    for p, _ in expected:
        if p not in arrays:
            raise ValueError(f"load_checkpoint: {str(path)!r} lacks the data of leaf {p}")
        value = arrays[p]
        if impls.get(p):
            leaves.append(jax.random.wrap_key_data(jnp.asarray(value), impl=impls[p]))
        else:
            leaves.append(jnp.asarray(value))
    state = jax.tree_util.tree_unflatten(treedef, leaves)
    extras = {name: np.asarray(value) for name, value in payload.get("extras", {}).items()}
    return Checkpoint(state, extras, stored_metadata, int(info["step"]), path)


class CheckpointedFit(NamedTuple):
    """The result of :func:`fit_with_checkpoints`.

    ``params``, ``history`` and ``state`` as in :class:`vijax.FitResult` (``history`` covers
    every step since step 0, resumed runs included); ``records`` holds the values that
    ``on_checkpoint`` returned at each checkpoint (``records["step"]`` their steps);
    ``resumed_from`` is the step the run resumed from (``None``: a fresh start).
    """

    params: Any
    history: np.ndarray
    state: Any
    records: dict
    resumed_from: int | None


def _progress(total: int, initial: int, enabled: bool):
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.auto import tqdm

        enabled = enabled and jax.process_index() == 0  # one bar, not one per host
        return tqdm(total=total, initial=initial, disable=not enabled, desc="fit", unit="step")


def _check_counts(caller: str, every, num_steps) -> None:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"{caller}: every must be a positive int, got {every!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"{caller}: num_steps must be a non-negative int, got {num_steps!r}")


def _agreed_newest(directory: Path, caller: str) -> Path | None:
    """The newest checkpoint, checked to be the one every process sees (collective)."""
    newest = latest_checkpoint(directory)
    if jax.process_count() == 1:
        return newest
    mine = -1 if newest is None else int(_STEP_FOLDER.match(newest.name).group(1))
    seen = np.asarray(multihost_utils.process_allgather(np.array([mine], np.int64))).ravel()
    if len(set(seen.tolist())) > 1:
        shown = ", ".join(
            f"process {i}: {'none' if int(v) < 0 else f'step {int(v)}'}" for i, v in enumerate(seen)
        )
        raise ValueError(
            f"{caller}: the processes see different newest checkpoints in {str(directory)!r} "
            f"({shown}); with several processes the checkpoint folder must be one that every "
            "process reads (a shared filesystem)"
        )
    return newest


def _record(records: dict, step: int, values: dict) -> dict:
    """``records`` with one more checkpoint's values (each name: shape ``(checkpoints, ...)``)."""
    values = {**dict(values or {}), "step": step}
    out = dict(records)
    for name, value in values.items():
        value = np.asarray(value, np.float64)
        old = out.get(name, np.zeros((0, *value.shape)))
        out[name] = np.concatenate([old.reshape((-1, *value.shape)), value[None]])
    return out


def _run_with_checkpoints(
    caller: str,
    segment,
    state: Any,
    empty_history: np.ndarray,
    *,
    num_steps: int,
    directory,
    every: int,
    metadata: dict | None,
    resume: bool,
    keep: int | None,
    on_checkpoint,
    progress: bool,
) -> CheckpointedFit:
    """The segment loop shared by :func:`fit_with_checkpoints` and its population form.

    ``segment(state, count)`` runs ``count`` more steps (a :class:`vijax.FitResult`); the
    history's last axis counts steps (``(steps,)`` for one run, ``(runs, steps)`` for a
    population).
    """
    directory = Path(directory)
    history, records, resumed_from = empty_history, {}, None
    newest = _agreed_newest(directory, caller)
    if newest is not None and not resume:
        raise ValueError(
            f"{caller}: {str(directory)!r} already holds checkpoints (newest: "
            f"{newest.name}); pass resume=True to continue that run, or another directory"
        )
    if newest is not None:
        loaded = load_checkpoint(newest, like=state, metadata=metadata)
        state, resumed_from = loaded.state, loaded.step
        history = loaded.extras.get("history", history)
        records = {
            name[len("record/") :]: value
            for name, value in loaded.extras.items()
            if name.startswith("record/")
        }
    step = resumed_from or 0
    bar = _progress(num_steps, min(step, num_steps), progress)
    try:
        while step < num_steps:
            count = min(every - step % every, num_steps - step)
            try:
                result = segment(state, count)
            except NonFiniteError as error:
                where = latest_checkpoint(directory)
                kept = (
                    f"the newest checkpoint, {str(where)!r}, is intact"
                    if where
                    else "no checkpoint had been written yet"
                )
                partial = np.concatenate([history, error.result.history], axis=-1)
                raise NonFiniteError(
                    f"{error}; {kept}",
                    FitResult(error.result.params, partial, error.result.state),
                ) from None
            values = np.asarray(result.history, np.float32)
            history = np.concatenate([history, values], axis=-1)
            state, step = result.state, step + count
            bar.update(count)
            if values.shape[-1]:
                shown = float(np.nanmedian(values[..., -1]))
                label = " (median)" if values.ndim > 1 else ""
                bar.set_postfix(objective=f"{shown:.4g}{label}", refresh=False)
            if on_checkpoint is not None:
                records = _record(records, step, on_checkpoint(step, result.params))
            extras = {"history": history, **{f"record/{n}": v for n, v in records.items()}}
            save_checkpoint(
                directory, state, step=step, extras=extras, metadata=metadata, keep=keep
            )
    finally:
        bar.close()
    return CheckpointedFit(state.params, history, state, records, resumed_from)


def fit_with_checkpoints(
    objective,
    params: Any,
    optimizer,
    key: jax.Array,
    *args,
    num_steps: int,
    directory: str | os.PathLike,
    every: int = 1000,
    data: tuple | None = None,
    batch_size: int | None = None,
    mesh: Mesh | None = None,
    metadata: dict | None = None,
    resume: bool = False,
    keep: int | None = 3,
    on_checkpoint=None,
    progress: bool = True,
) -> CheckpointedFit:
    """:func:`vijax.fit` in segments of ``every`` steps, with a checkpoint after each.

    A run killed at any point and started again with ``resume=True`` continues from its newest
    checkpoint and ends bit-identical to a run that was never interrupted (same arguments): the
    fit loop's randomness and data order depend only on the key and the step, both saved.

    With ``mesh`` the run is data parallel (as :func:`vijax.fit`), on one host or several: every
    process calls this function with the same arguments and ``directory`` (a folder all of them
    read, e.g. a shared filesystem); process 0 writes the checkpoints, every process resumes
    from the same one (a process that sees another newest checkpoint is refused), and only
    process 0 shows the progress bar.

    Args:
      objective, params, optimizer, key, *args, data, batch_size, mesh: as for
        :func:`vijax.fit`.
      num_steps: the run's total number of steps (counted from step 0, across resumes).
      directory: the run's checkpoint folder.
      every: steps between checkpoints (the last one is at ``num_steps``).
      metadata: the run's configuration (JSON): saved, and on resume compared key by key
        (a different configuration is refused with a ``ValueError``).
      resume: continue from the newest checkpoint in ``directory``; without it a folder that
        already holds checkpoints is refused (so nothing is overwritten by mistake).
      keep: checkpoints kept (the newest ones).
      on_checkpoint: ``fn(step, params) -> dict[str, float]``, called before each checkpoint
        (validation scores, say); its values are saved and returned in ``records``.
      progress: one progress bar over the whole run.

    Raises:
      NonFiniteError: as :func:`vijax.fit`; its message says which checkpoint is the newest
        (checkpoints are only written for finite states, so none is lost or damaged).

    Example:
        >>> import jax, jax.numpy as jnp, optax, tempfile
        >>> import vijax as vj
        >>> def objective(w, key):
        ...     return -jnp.sum((w - 3.0) ** 2) + 0.0 * jax.random.normal(key)
        >>> folder = tempfile.mkdtemp()
        >>> run = vj.fit_with_checkpoints(objective, jnp.zeros(2), optax.sgd(0.1),
        ...     jax.random.key(0), num_steps=50, directory=folder, every=20, progress=False)
        >>> sorted(p.name for p in vj.infer.latest_checkpoint(folder).parent.iterdir())
        ['step_000000020', 'step_000000040', 'step_000000050']
    """
    caller = "fit_with_checkpoints"
    _check_counts(caller, every, num_steps)
    common = dict(data=data, batch_size=batch_size, mesh=mesh, progress=False)
    state = fit(objective, params, optimizer, key, *args, num_steps=0, **common).state

    def segment(state, count):
        return fit(objective, None, optimizer, key, *args, num_steps=count, state=state, **common)

    return _run_with_checkpoints(
        caller,
        segment,
        state,
        np.zeros((0,), np.float32),
        num_steps=num_steps,
        directory=directory,
        every=every,
        metadata=metadata,
        resume=resume,
        keep=keep,
        on_checkpoint=on_checkpoint,
        progress=progress,
    )


def fit_population_with_checkpoints(
    objective,
    params: Any,
    optimizer,
    keys: jax.Array,
    *args,
    num_steps: int,
    directory: str | os.PathLike,
    every: int = 1000,
    in_axes: tuple | None = None,
    data: tuple | None = None,
    data_axes: Any = None,
    batch_size: int | None = None,
    hyperparams: dict | None = None,
    mesh: Mesh | None = None,
    metadata: dict | None = None,
    resume: bool = False,
    keep: int | None = 3,
    on_checkpoint=None,
    progress: bool = True,
) -> CheckpointedFit:
    """:func:`vijax.fit_population` in segments of ``every`` steps, a checkpoint after each.

    The checkpoint holds the whole population's state (every leaf with its leading run axis,
    gathered from every device and host), so a killed population resumes bit-identically, as
    :func:`fit_with_checkpoints` does for one run. With several processes (a ``mesh`` over
    several hosts) every process calls this with the same arguments and a ``directory`` all of
    them read; process 0 writes.

    Args:
      objective, params, optimizer, keys, *args, in_axes, data, data_axes, batch_size,
        hyperparams, mesh: as for :func:`vijax.fit_population`.
      num_steps, directory, every, metadata, resume, keep, progress: as for
        :func:`fit_with_checkpoints`.
      on_checkpoint: ``fn(step, params) -> dict``, ``params`` with the run axis; a value may
        be a number or one number per run (``records[name]`` then has shape
        ``(checkpoints, runs)``).

    Returns:
      A :class:`CheckpointedFit` whose ``history`` has shape ``(runs, num_steps)``.

    Raises:
      NonFiniteError: as :func:`vijax.fit_population` (some runs went non-finite during a
        segment); the newest checkpoint, written before that segment, is intact.

    Example:
        >>> import jax, jax.numpy as jnp, optax, tempfile
        >>> import vijax as vj
        >>> def objective(w, key, target):
        ...     return -jnp.sum((w - target) ** 2) + 0.0 * jax.random.normal(key)
        >>> keys = jax.random.split(jax.random.key(0), 3)
        >>> run = vj.infer.fit_population_with_checkpoints(objective, jnp.zeros(()),
        ...     optax.sgd(0.1), keys, jnp.array([1.0, 2.0, 3.0]), in_axes=(None, 0),
        ...     num_steps=60, every=25, directory=tempfile.mkdtemp(), progress=False)
        >>> run.history.shape, [round(float(w), 3) for w in run.params]
        ((3, 60), [1.0, 2.0, 3.0])
    """
    caller = "fit_population_with_checkpoints"
    _check_counts(caller, every, num_steps)
    common = dict(
        in_axes=in_axes,
        data=data,
        data_axes=data_axes,
        batch_size=batch_size,
        hyperparams=hyperparams,
        mesh=mesh,
        progress=False,
    )
    start = fit_population(objective, params, optimizer, keys, *args, num_steps=0, **common)

    def segment(state, count):
        return fit_population(
            objective, None, optimizer, None, *args, num_steps=count, state=state, **common
        )

    return _run_with_checkpoints(
        caller,
        segment,
        start.state,
        np.zeros((start.history.shape[0], 0), np.float32),
        num_steps=num_steps,
        directory=directory,
        every=every,
        metadata=metadata,
        resume=resume,
        keep=keep,
        on_checkpoint=on_checkpoint,
        progress=progress,
    )
