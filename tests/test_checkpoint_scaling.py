"""Checkpoints in every mode: a population, a data-parallel run, and two processes.

A run interrupted after a checkpoint and resumed must end where the uninterrupted run ends. On
one device and one process the loop is deterministic, so equality is exact. Across two
processes (two CPU devices each, through ``jax.distributed`` on localhost) the sharded run
adds its terms in another order than the one-device reference, so parameters are compared to
1e-5 (float32 differences seen: about 1e-7; a wrong batch, key or missing term moves them by
1e-2 or more); the resumed two-process run is compared with the uninterrupted two-process run
bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vijax as vj
from tests.test_scaling import COMMON, two_processes


def _goal_objective(w, key, goal):
    return -jnp.sum((w - goal) ** 2) + 0.3 * jax.random.normal(key)


GOALS = np.arange(8.0, dtype=np.float32).reshape(4, 2)
OPTIMIZER = optax.adam(0.1)


def _inputs():
    """The population's objective, shared start, optimizer, keys and per-run goals."""
    keys = jax.random.split(jax.random.key(3), 4)
    return (_goal_objective, np.zeros(2, np.float32), OPTIMIZER, keys, GOALS)


def _population(directory, num_steps, **kwargs):
    return vj.fit_population_with_checkpoints(
        *_inputs(), in_axes=(None, 0), num_steps=num_steps, directory=directory, every=15, **kwargs
    )


def _plain_population(num_steps):
    """The same population without checkpoints, on one device."""
    return vj.fit_population(*_inputs(), in_axes=(None, 0), num_steps=num_steps, progress=False)


def test_a_population_resumes_from_its_checkpoint_exactly(tmp_path, capsys):
    def scores(step, params):  # one number per run, and one for the population
        return {"distance": jnp.sum((params - GOALS) ** 2, axis=1), "worst": jnp.max(params)}

    whole = _population(tmp_path / "whole", 50, progress=False, on_checkpoint=scores)
    _population(tmp_path / "cut", 20, progress=False, on_checkpoint=scores)  # "killed" at 20
    resumed = _population(tmp_path / "cut", 50, resume=True, on_checkpoint=scores)

    assert resumed.resumed_from == 20
    assert resumed.history.shape == (4, 50) and np.all(np.isfinite(resumed.history))
    np.testing.assert_array_equal(resumed.history, whole.history)
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(whole.state)):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the same as the plain population (checkpoints change nothing)
    plain = _plain_population(50)
    np.testing.assert_array_equal(resumed.params, plain.params)
    # records: steps 15, 20 (the interrupted call's end), 30, 45, 50; per-run values per row
    np.testing.assert_array_equal(resumed.records["step"], [15, 20, 30, 45, 50])
    assert resumed.records["distance"].shape == (5, 4)
    assert resumed.records["worst"].shape == (5,)
    assert np.all(resumed.records["distance"][-1] < resumed.records["distance"][0])
    assert "(median)" in capsys.readouterr().err  # the bar shows the runs' median objective


def test_a_population_checkpoint_refuses_another_population(tmp_path):
    _population(tmp_path, 15, progress=False)
    with pytest.raises(ValueError, match="differently shaped"):
        vj.fit_population_with_checkpoints(
            _goal_objective,
            np.zeros(2, np.float32),
            OPTIMIZER,
            jax.random.split(jax.random.key(3), 3),  # 3 runs, not 4
            GOALS[:3],
            in_axes=(None, 0),
            num_steps=30,
            directory=tmp_path,
            every=15,
            resume=True,
            progress=False,
        )


WORKER = r"""
import tempfile
from vijax.infer import latest_checkpoint
process, folder = int(sys.argv[1]), sys.argv[3]
jax.distributed.initialize(f"localhost:{sys.argv[2]}", num_processes=2, process_id=process)
mesh = jax.make_mesh((jax.device_count(),), ("data",))
out = {"devices": jax.device_count(), "processes": jax.process_count()}

# 1. data parallel over both processes' devices: killed after 20 steps, resumed to 40
def checkpointed(num_steps, directory, **kwargs):
    return vj.fit_with_checkpoints(OBJECTIVE, PARAMS, OPTIMIZER, jax.random.key(1),
                                   num_steps=num_steps, data=(X, Y), batch_size=B, mesh=mesh,
                                   directory=directory, every=10, progress=process == 0,
                                   **kwargs)
whole = checkpointed(40, f"{folder}/fit_whole")
checkpointed(20, f"{folder}/fit_cut")
resumed = checkpointed(40, f"{folder}/fit_cut", resume=True)
out["fit"] = {
    "resumed_from": resumed.resumed_from,
    "params": {k: np.asarray(v).tolist() for k, v in resumed.params.items()},
    "same_as_whole": difference(resumed.params, whole.params) == 0.0
                     and bool(np.array_equal(resumed.history, whole.history)),
    "history": np.asarray(resumed.history).tolist(),
}

# 2. a population whose 4 runs are split over the 4 devices of the two processes
def goal(w, key, target):
    return -jnp.sum((w - target) ** 2) + 0.3 * jax.random.normal(key)
GOALS = np.arange(8.0, dtype=np.float32).reshape(4, 2)
def population(num_steps, directory, **kwargs):
    return vj.fit_population_with_checkpoints(
        goal, np.zeros(2, np.float32), optax.adam(0.1), jax.random.split(jax.random.key(3), 4),
        GOALS, in_axes=(None, 0), num_steps=num_steps, directory=directory, every=15,
        mesh=mesh, progress=False, **kwargs)
population(20, f"{folder}/population")
pop = population(50, f"{folder}/population", resume=True)
newest = latest_checkpoint(f"{folder}/population")
saved = vj.load_checkpoint(newest, like=jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), pop.state)).state
out["population"] = {
    "resumed_from": pop.resumed_from,
    "split": not pop.params.sharding.is_fully_replicated,
    "saved_params": np.asarray(saved.params).tolist(),  # gathered from both processes
    "history": np.asarray(pop.history).tolist(),
}

# 3. a folder that only this process sees: both processes refuse (none waits forever)
try:
    vj.fit_with_checkpoints(OBJECTIVE, PARAMS, OPTIMIZER, jax.random.key(1), num_steps=10,
                            data=(X, Y), batch_size=B, mesh=mesh, every=10, progress=False,
                            directory=f"{folder}/fit_cut" if process == 0 else tempfile.mkdtemp(),
                            resume=True)
    out["unshared"] = ""
except ValueError as error:
    out["unshared"] = str(error)
print("RESULT " + json.dumps(out), flush=True)
jax.distributed.shutdown()
"""


@pytest.mark.slow
def test_two_processes_checkpoint_and_resume_a_sharded_fit_and_a_population(tmp_path):
    (first, bar), (second, quiet) = two_processes(COMMON + WORKER, str(tmp_path))
    assert first["processes"] == 2 and first["devices"] == 4
    assert first["fit"] == second["fit"] and first["population"] == second["population"]
    assert "fit:" in bar and "fit:" not in quiet  # one progress bar, on process 0

    # the resumed sharded run is the uninterrupted one, bit for bit, and the one-device fit
    fit = first["fit"]
    assert fit["resumed_from"] == 20 and fit["same_as_whole"]
    namespace: dict = {}
    exec(COMMON, namespace)
    reference = namespace["fit"](40)
    for name, value in reference.params.items():
        np.testing.assert_allclose(fit["params"][name], np.asarray(value), atol=1e-5)
    np.testing.assert_allclose(fit["history"], reference.history, rtol=1e-4)

    # the population checkpoint holds every run (gathered across processes) and the resumed
    # population equals the one-device population
    population = first["population"]
    assert population["resumed_from"] == 20 and population["split"]
    plain = _plain_population(50)
    np.testing.assert_allclose(population["saved_params"], plain.params, atol=1e-6)
    np.testing.assert_allclose(population["history"], plain.history, atol=1e-5)

    # a checkpoint folder that only one process sees is refused by both, naming what each saw
    for out in (first, second):
        assert "process 0: step 40" in out["unshared"] and "process 1: none" in out["unshared"]
