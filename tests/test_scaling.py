"""Scale: data-parallel fit on a device mesh, two processes on localhost, populations of runs.

The multi-device checks run in a child process started with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (the flag must be set before JAX starts,
and this process has already started it with one device); the child prints one JSON line that
the tests below read, each test checking its own part. The two-process test starts two more
children that talk through ``jax.distributed`` on localhost (gloo on CPU).

Tolerances: a sharded run adds the same terms in another order, so float32 results differ by
a few ulps per step; over 60 Adam steps of a logistic regression the largest parameter
difference seen was 1.2e-7 (history 1.1e-5 on values of about 40), so 1e-5 / 1e-4 leave two
orders of margin and still fail on any real difference (another batch, another key, a missing
gradient term: those move the parameters by 1e-2 or more). The linear-model checks use
integer data and power-of-two scales, where every sum is exact: equality is required.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import vijax as vj

ROOT = Path(__file__).resolve().parents[1]
FIT_MODULE = sys.modules["vijax.infer.fit"]

# A small Bayesian logistic regression with minibatches, written out (no auto-family), shared
# by the child processes (as source) and by this process.
COMMON = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np, optax
import numpyro.distributions as dist
import vijax as vj

N, F, B = 48, 5, 12
rng = np.random.default_rng(0)
X = rng.normal(size=(N, F)).astype(np.float32)
Y = (rng.random(N) < 1 / (1 + np.exp(-X @ np.linspace(-1, 1, F)))).astype(np.float32)


def model(x, y):
    w = vj.sample("w", dist.Normal(jnp.zeros(F), 1.0).to_event(1))
    with vj.plate("data", N, subsample_size=x.shape[0]):
        vj.sample("y", dist.Bernoulli(logits=x @ w), obs=y)


def family(params, x, y):
    scale = jnp.exp(params["log_scale"])
    vj.sample("w", dist.Normal(params["loc"], scale).to_event(1))


PARAMS = {"loc": np.zeros(F, np.float32), "log_scale": np.full(F, -1.0, np.float32)}
OBJECTIVE = vj.elbo(model, family, 4)
OPTIMIZER = optax.adam(0.05)


def fit(num_steps, batch_size=B, **kwargs):
    return vj.fit(OBJECTIVE, PARAMS, OPTIMIZER, jax.random.key(1), num_steps=num_steps,
                  data=(X, Y), batch_size=batch_size, progress=False, **kwargs)


def difference(a, b):
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
"""

FOUR_DEVICES = r"""
import re
import tempfile
from vijax.core import arguments
from vijax.infer import distributed, load_checkpoint, save_checkpoint
fit_module = sys.modules["vijax.infer.fit"]
assert jax.device_count() == 4, jax.devices()
out = {}

# 1. data x particles: a (2, 2) mesh splits each minibatch and the 4 particles
mesh = jax.make_mesh((2, 2), ("data", "particles"))
single, sharded = fit(60), fit(60, mesh=mesh)
out["sharded"] = {
    "params": difference(single.params, sharded.params),
    "history": float(np.max(np.abs(single.history - sharded.history))),
    "history_scale": float(np.max(np.abs(single.history))),
    "replicated": all(x.sharding.is_fully_replicated for x in jax.tree.leaves(sharded.params)),
    "devices": len(jax.tree.leaves(sharded.params)[0].sharding.device_set),
}
auto = distributed._normalize_mesh(mesh, "test")
data = tuple(distributed._place(a, distributed._replicated(auto)) for a in (X, Y))
hlo = fit_module._run_chunk.lower(
    sharded.state, [], data, 3, static=arguments.split(())[1], objective=OBJECTIVE,
    optimizer=OPTIMIZER, chunk_size=8, batch_size=B, mesh=auto).compile().as_text()
shapes = set(re.findall(r"f(?:32|64)\[([\d,]+)\]", hlo))
out["hlo"] = {"all_reduce": hlo.count("all-reduce"),
              "local_logits": bool({"6,2", "2,6"} & shapes),
              "global_logits": bool({"12,4", "4,12"} & shapes)}

# 2. a batch that does not divide over the devices: 10 rows on 4 devices
data_mesh = jax.make_mesh((4,), ("data",))
out["uneven"] = difference(fit(40, batch_size=10).params,
                           fit(40, batch_size=10, mesh=data_mesh).params)

# 3. data already split over the devices stays split; same batches, same result
rows = jax.sharding.NamedSharding(data_mesh, jax.sharding.PartitionSpec("data"))
split = vj.fit(OBJECTIVE, PARAMS, OPTIMIZER, jax.random.key(1), num_steps=60,
               data=(jax.device_put(X, rows), jax.device_put(Y, rows)), batch_size=B,
               progress=False, mesh=data_mesh)
out["split_data"] = difference(single.params, split.params)

# 4. a linear objective: gradient (N/B) sum_batch x, integer data, sgd at lr 1/16: exact
def linear_objective(num):
    def linear(w, key, x):
        return jnp.sum(x @ w) * (num / x.shape[0])
    return linear
for num, batch in ((32, 8), (40, 10)):
    linear = linear_objective(num)
    xs = np.random.default_rng(num).integers(-4, 5, size=(num, 3)).astype(np.float32)
    runs = [vj.fit(linear, np.zeros(3, np.float32), optax.sgd(1 / 16), jax.random.key(0),
                   num_steps=2 * num // batch, data=(xs,), batch_size=batch,
                   progress=False, mesh=m) for m in (None, data_mesh)]
    # two epochs: every datum enters twice, each time with weight N/B
    expected = 2 * (num / batch) * xs.sum(axis=0) / 16
    out[f"linear_{batch}"] = {
        "single": np.asarray(runs[0].params).tolist(),
        "sharded": np.asarray(runs[1].params).tolist(),
        "expected": expected.tolist(),
        "history_equal": bool(np.array_equal(runs[0].history, runs[1].history)),
    }

# 5. a checkpoint of a sharded run resumes it exactly
part = fit(30, mesh=mesh)
folder = save_checkpoint(tempfile.mkdtemp(), part.state, step=30)
loaded = load_checkpoint(folder, like=part.state).state
rest = vj.fit(OBJECTIVE, None, OPTIMIZER, jax.random.key(1), num_steps=30, data=(X, Y),
              batch_size=B, progress=False, mesh=mesh, state=loaded)
out["checkpoint"] = difference(rest.params, sharded.params)

# 6. a population split over the 4 devices equals the same population on one device
def target(w, key, goal):
    return -jnp.sum((w - goal) ** 2) + 0.1 * jax.random.normal(key)
goals = np.arange(8.0, dtype=np.float32).reshape(4, 2)
keys = jax.random.split(jax.random.key(2), 4)
pops = [vj.fit_population(target, np.zeros(2, np.float32), optax.adam(0.1), keys, goals,
                          num_steps=50, in_axes=(None, 0), progress=False, mesh=m)
        for m in (None, data_mesh)]
out["population"] = {
    "params": difference(pops[0].params, pops[1].params),
    "history": float(np.max(np.abs(pops[0].history - pops[1].history))),
    "devices": len(pops[1].params.sharding.device_set),
    "split": not pops[1].params.sharding.is_fully_replicated,
}
try:
    vj.fit_population(target, np.zeros(2, np.float32), optax.adam(0.1), keys[:3], goals[:3],
                      num_steps=1, in_axes=(None, 0), progress=False, mesh=data_mesh)
    out["population_uneven"] = ""
except ValueError as error:
    out["population_uneven"] = str(error)
print("RESULT " + json.dumps(out))
"""

WORKER = r"""
process = int(sys.argv[1])
jax.distributed.initialize(f"localhost:{sys.argv[2]}", num_processes=2, process_id=process)
mesh = jax.make_mesh((jax.device_count(),), ("data",))
rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
mine = slice(process * N // 2, (process + 1) * N // 2)  # each process holds half the rows
x = jax.make_array_from_process_local_data(rows, X[mine])
y = jax.make_array_from_process_local_data(rows, Y[mine])
result = vj.fit(OBJECTIVE, PARAMS, OPTIMIZER, jax.random.key(1), num_steps=40, data=(x, y),
                batch_size=B, progress=process == 0, mesh=mesh)
print("RESULT " + json.dumps({
    "devices": jax.device_count(), "processes": jax.process_count(),
    "params": {k: np.asarray(v).tolist() for k, v in result.params.items()},
    "history": np.asarray(result.history).tolist()}), flush=True)
jax.distributed.shutdown()
"""


def _environment(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _result(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result from the child process:\n{output[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def _four_device_checks() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", COMMON + FOUR_DEVICES],
        env=_environment(4),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return _result(done.stdout)


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory) -> dict:
    """Run the multi-device checks once, in a child process with 4 CPU devices.

    Under pytest-xdist every worker that runs one of these tests asks for the fixture; the
    first computes it and leaves the result in the session's shared temporary folder.
    """
    folder = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = folder.parent  # shared by this session's workers
    shared = folder / "test_scaling_four_devices.json"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if shared.is_file():
            return json.loads(shared.read_text())
        result = _four_device_checks()
        shared.write_text(json.dumps(result))
        return result


def test_sharded_fit_equals_the_single_device_fit(four_devices):
    sharded = four_devices["sharded"]
    assert sharded["params"] < 1e-5
    assert sharded["history"] < 1e-4 * sharded["history_scale"]
    assert sharded["replicated"] and sharded["devices"] == 4
    # user-sharded data (one quarter per device) draws the same batches
    assert four_devices["split_data"] < 1e-5
    # a sharded state saved and loaded resumes the run exactly
    assert four_devices["checkpoint"] < 1e-5


def test_the_program_is_really_split_over_batch_and_particles(four_devices):
    hlo = four_devices["hlo"]
    # each device computes a (6 rows x 2 particles) block of the 12 x 4 logits, and the
    # partial gradients meet in all-reduces
    assert hlo["local_logits"] and not hlo["global_logits"]
    assert hlo["all_reduce"] >= 1


def test_gradient_averaging_is_exact_on_a_linear_model(four_devices):
    # (N/B) Σ_batch x is the average over devices of each device's (N/(B/D)) Σ_rows x; with
    # integers and power-of-two scales every order of summation gives the same bits
    for batch in (8, 10):
        run = four_devices[f"linear_{batch}"]
        np.testing.assert_array_equal(run["sharded"], run["single"])
        np.testing.assert_array_equal(run["sharded"], run["expected"])
        assert run["history_equal"]


def test_uneven_batches_are_padded_and_give_the_same_result(four_devices):
    # 10 rows over 4 devices (3, 3, 3, 1 after XLA's padding); the 10-row linear run above is
    # exact as well
    assert four_devices["uneven"] < 1e-5


def test_population_split_over_devices_equals_the_one_device_population(four_devices):
    population = four_devices["population"]
    assert population["split"] and population["devices"] == 4
    assert population["params"] < 1e-6 and population["history"] < 1e-5
    # 3 runs cannot be split over 4 devices: refused, naming the argument
    assert "keys" in four_devices["population_uneven"]
    assert "multiple of the 4 devices" in four_devices["population_uneven"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def two_processes(source: str, *args: str) -> list[tuple[dict, str]]:
    """Run ``source`` as processes 0 and 1 of a ``jax.distributed`` job on localhost (two CPU
    devices each); ``[(result, stderr)]`` per process. ``sys.argv``: process, port, *args."""
    port = str(_free_port())
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", source, str(process), port, *args],
            env=_environment(2),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for process in (0, 1)
    ]
    outputs = []
    try:
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=420)
            assert worker.returncode == 0, stderr[-4000:]
            outputs.append((_result(stdout), stderr))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    return outputs


def test_two_processes_on_localhost_train_one_model_together():
    (first, bar), (second, quiet) = two_processes(COMMON + WORKER)
    assert first["processes"] == 2 and first["devices"] == 4
    # both processes hold the same (replicated) parameters and history
    assert first["params"] == second["params"] and first["history"] == second["history"]
    assert "fit:" in bar and "fit:" not in quiet  # one progress bar, on process 0
    # and they are the parameters of the same fit on one device (same batches and noise)
    namespace: dict = {}
    exec(COMMON, namespace)
    reference = namespace["fit"](40)
    for name, value in reference.params.items():
        np.testing.assert_allclose(first["params"][name], np.asarray(value), atol=1e-5)
    np.testing.assert_allclose(first["history"], reference.history, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Populations (one device: this process)


N_DATA = 30


def _pop_model(x):
    mu = vj.sample("mu", dist.Normal(0.0, 1.0))
    with vj.plate("data", N_DATA, subsample_size=x.shape[0]):
        vj.sample("x", dist.Normal(mu, 1.0), obs=x)


def _pop_family(params, x):
    vj.sample("mu", dist.Normal(params["loc"], jnp.exp(params["log_scale"])))


POP_OBJECTIVE = vj.elbo(_pop_model, _pop_family, 2, analytic_kl=False)
POP_OPTIMIZER = optax.inject_hyperparams(optax.adam)(learning_rate=0.05)


def _pop_inputs():
    runs = 3
    keys = jax.random.split(jax.random.key(7), runs)
    datasets = jnp.asarray(
        np.random.default_rng(3).normal(size=(runs, N_DATA)) + np.arange(runs)[:, None],
        jnp.float32,
    )
    params = {"loc": jnp.array([0.0, 0.5, -0.5]), "log_scale": jnp.full(runs, -1.0)}
    return keys, datasets, params, jnp.array([0.02, 0.1, 0.05])


def _run(tree, r):
    return jax.tree.map(lambda leaf: leaf[r], tree)


def test_population_equals_the_same_runs_done_one_by_one(capsys):
    keys, datasets, params, rates = _pop_inputs()
    common = dict(num_steps=45, batch_size=6, chunk_size=16)
    population = vj.fit_population(
        POP_OBJECTIVE,
        params,
        POP_OPTIMIZER,
        keys,
        in_axes=(0,),
        data=(datasets,),
        data_axes=0,
        hyperparams={"learning_rate": rates},
        progress=True,
        **common,
    )
    assert "fit_population" in capsys.readouterr().err  # the progress bar ran
    assert population.history.shape == (3, 45)
    assert population.state.step.tolist() == [45, 45, 45]
    # run 1 alone, with its own optimizer built for its learning rate
    alone = vj.fit(
        POP_OBJECTIVE,
        _run(params, 1),
        optax.inject_hyperparams(optax.adam)(learning_rate=rates[1]),
        keys[1],
        data=(datasets[1],),
        progress=False,
        **common,
    )
    # every run alone, continued from its slice of the population's start state
    start = vj.fit_population(
        POP_OBJECTIVE,
        params,
        POP_OPTIMIZER,
        keys,
        num_steps=0,
        in_axes=(0,),
        data=(datasets,),
        data_axes=0,
        batch_size=6,
        hyperparams={"learning_rate": rates},
        progress=False,
    ).state
    singles = [
        vj.fit(
            POP_OBJECTIVE,
            None,
            POP_OPTIMIZER,
            keys[r],
            data=(datasets[r],),
            state=_run(start, r),
            progress=False,
            **common,
        )
        for r in range(3)
    ]
    for r, single in enumerate([*singles[:1], alone, *singles[2:]]):
        for a, b in zip(
            jax.tree.leaves(single.params), jax.tree.leaves(_run(population.params, r))
        ):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(single.history, population.history[r], rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(singles[1].params), jax.tree.leaves(alone.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # the runs differ (different data, rates, keys): the test compares something
    assert len({round(float(v), 3) for v in population.params["loc"]}) == 3


def test_population_shares_arguments_and_varies_one_of_them():
    # a β-weighted objective: β is an argument, one value per run; the rest is shared
    def beta_objective(w, key, beta, centre):
        noise = jax.random.normal(key)
        return -beta * (w - centre) ** 2 - (w + noise) ** 2

    betas = jnp.array([0.5, 1.0, 3.0, 9.0])
    keys = jax.random.split(jax.random.key(0), 4)
    result = vj.fit_population(
        beta_objective,
        jnp.array(0.0),
        optax.adam(optax.cosine_decay_schedule(0.1, 2000, alpha=1e-3)),
        keys,
        betas,
        jnp.array(2.0),
        num_steps=2000,
        in_axes=(None, 0, None),
        progress=False,
    )
    # maximizer of E[-β(w-2)² - (w+ε)²] is 2β / (β + 1)
    np.testing.assert_allclose(result.params, 2 * betas / (betas + 1), atol=0.03)


def test_population_reports_the_runs_that_went_non_finite():
    def objective(params, key):  # sqrt(1 − w): NaN (and its gradient) once w passes 1
        return -((params - 0.5) ** 2) + jnp.sqrt(1.0 - params) + 0.0 * jax.random.normal(key)

    rates = jnp.array([0.01, 2.0, 0.1, 1.5])
    keys = jax.random.split(jax.random.key(0), 4)
    optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=0.01)
    with pytest.raises(vj.NonFiniteError, match=r"runs? 1 at step 1, run 3 at step \d") as info:
        vj.fit_population(
            objective,
            jnp.array(0.0),
            optimizer,
            keys,
            num_steps=200,
            hyperparams={"learning_rate": rates},
            chunk_size=64,
            progress=False,
        )
    result = info.value.result
    bad = result.state.bad_step.tolist()
    assert bad[0] == -1 and bad[2] == -1 and bad[1] == 1 and bad[3] > 1
    assert "2 of 4 runs" in str(info.value)
    # the good runs finished; the bad ones are frozen at their last good state ...
    assert result.state.step.tolist() == [200, 1, 200, bad[3]]
    assert np.all(np.isfinite(result.params))
    assert np.all(np.isfinite(result.history[[0, 2]]))
    assert np.all(np.isnan(result.history[1, 1:])) and np.isfinite(result.history[1, 0])
    # ... which is the state a single fit of that run stops with
    with pytest.raises(vj.NonFiniteError) as single:
        vj.fit(
            objective,
            jnp.array(0.0),
            optax.inject_hyperparams(optax.sgd)(learning_rate=rates[3]),
            keys[3],
            num_steps=200,
            progress=False,
        )
    alone = single.value.result
    assert int(alone.state.bad_step) == bad[3]
    np.testing.assert_allclose(alone.params, result.params[3], rtol=1e-6)
    np.testing.assert_allclose(alone.history, result.history[3, : bad[3]], rtol=1e-6)


def test_population_state_is_a_plain_pytree_that_checkpoints_and_resumes(tmp_path):
    checkpoint = pytest.importorskip("vijax.infer.checkpoint")
    keys, datasets, params, _ = _pop_inputs()
    common = dict(
        in_axes=(0,),
        data=(datasets,),
        data_axes=0,
        batch_size=6,
        chunk_size=16,
        progress=False,
    )
    whole = vj.fit_population(POP_OBJECTIVE, params, POP_OPTIMIZER, keys, num_steps=40, **common)
    part = vj.fit_population(POP_OBJECTIVE, params, POP_OPTIMIZER, keys, num_steps=25, **common)
    folder = checkpoint.save_checkpoint(tmp_path, part.state, step=25)
    loaded = checkpoint.load_checkpoint(folder, like=part.state).state
    rest = vj.fit_population(
        POP_OBJECTIVE, None, POP_OPTIMIZER, keys, num_steps=15, state=loaded, **common
    )
    for a, b in zip(jax.tree.leaves(rest.params), jax.tree.leaves(whole.params)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        np.concatenate([part.history, rest.history], axis=1), whole.history
    )


def test_population_arguments_are_checked_and_named():
    keys, datasets, params, rates = _pop_inputs()
    base = dict(num_steps=1, data=(datasets,), data_axes=0, batch_size=6, progress=False)
    with pytest.raises(ValueError, match="in_axes"):
        vj.fit_population(POP_OBJECTIVE, params, POP_OPTIMIZER, keys, in_axes=(0, 0), **base)
    with pytest.raises(ValueError, match=r"params has in_axes 0"):
        vj.fit_population(POP_OBJECTIVE, _run(params, 0), POP_OPTIMIZER, keys, in_axes=(0,), **base)
    with pytest.raises(ValueError, match=r"hyperparams\['learning_rate'\].*inject_hyperparams"):
        vj.fit_population(
            POP_OBJECTIVE,
            params,
            optax.adam(0.1),
            keys,
            in_axes=(0,),
            hyperparams={"learning_rate": rates},
            **base,
        )
    with pytest.raises(ValueError, match=r"hyperparams\['learning_rate'\] must hold one value"):
        vj.fit_population(
            POP_OBJECTIVE,
            params,
            POP_OPTIMIZER,
            keys,
            in_axes=(0,),
            hyperparams={"learning_rate": rates[:2]},
            **base,
        )
    with pytest.raises(ValueError, match="data 0 has data_axes 0"):
        vj.fit_population(
            POP_OBJECTIVE,
            params,
            POP_OPTIMIZER,
            keys,
            in_axes=(0,),
            **{**base, "data": (datasets[0],)},
        )
    with pytest.raises(ValueError, match="keys"):
        vj.fit_population(POP_OBJECTIVE, params, POP_OPTIMIZER, jax.random.key(0), **base)
    with pytest.raises(ValueError, match="mesh"):
        vj.fit(
            POP_OBJECTIVE,
            _run(params, 0),
            POP_OPTIMIZER,
            keys[0],
            num_steps=1,
            data=(datasets[0],),
            batch_size=6,
            mesh="all devices",
        )


# ----------------------------------------------------------------------------------------------
# The one-device program is untouched


def test_the_one_device_chunk_has_no_sharding_and_the_mesh_chunk_does():
    from vijax.core import arguments
    from vijax.infer import distributed

    keys, datasets, params, _ = _pop_inputs()
    x = datasets[0]
    state = vj.fit(
        POP_OBJECTIVE,
        _run(params, 0),
        POP_OPTIMIZER,
        keys[0],
        num_steps=0,
        data=(x,),
        batch_size=6,
        progress=False,
    ).state
    static = arguments.split(())[1]

    def jaxpr(mesh):
        def chunk(state, data):
            return FIT_MODULE._run_chunk(
                state,
                [],
                data,
                3,
                static=static,
                objective=POP_OBJECTIVE,
                optimizer=POP_OPTIMIZER,
                chunk_size=8,
                batch_size=6,
                mesh=mesh,
            )

        return str(jax.make_jaxpr(chunk)(state, (x,)))

    mesh = distributed._normalize_mesh(jax.make_mesh((1,), ("data",)), "test")
    assert "sharding_constraint" not in jaxpr(None)
    assert "sharding_constraint" in jaxpr(mesh)
