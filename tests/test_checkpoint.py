"""Checkpoints: exact round trips, atomic writes, refusing the wrong model, and runs that are
killed and resumed ending bit-identical to uninterrupted ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vijax as vj
from vijax.data import digits, dynamic_binarization
from vijax.infer import (
    fit_with_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from vijax.models import vae

ROOT = Path(__file__).resolve().parents[1]
IMAGES = digits()[0][:100]
OPTIMIZER = optax.adam(3e-3)


def tiny_discrete_vae(num_data=100, hidden=(16,), dim=3):
    """A Bernoulli-latent VAE whose site runs on the score function with a running-mean
    baseline (so the fit state carries baseline state too), on dynamically binarized data."""
    model = vae.mlp_vae((8, 8), vae.bernoulli(dim), hidden=hidden, num_data=num_data)
    family = vj.with_estimators(model.family, {"z": vj.score_function(vj.running_mean(0.9))})
    objective = dynamic_binarization(vj.elbo(model.model, family))
    return model, objective


MODEL, OBJECTIVE = tiny_discrete_vae()
PARAMS = MODEL.init(jax.random.key(0))


def _fit_state(num_steps=0):
    return vj.fit(
        OBJECTIVE,
        PARAMS,
        OPTIMIZER,
        jax.random.key(1),
        data=(IMAGES,),
        batch_size=20,
        num_steps=num_steps,
        progress=False,
    ).state


def _assert_trees_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(leaves_a, leaves_b):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert x.dtype == y.dtype


def test_a_fit_state_round_trips_exactly(tmp_path):
    state = _fit_state(7)
    folder = save_checkpoint(tmp_path, state, step=7, extras={"history": np.arange(3.0)})
    assert folder.name == "step_000000007"
    loaded = load_checkpoint(tmp_path, like=_fit_state(0))
    assert loaded.step == 7 and loaded.path == folder
    _assert_trees_equal(loaded.state, state)
    assert jax.dtypes.issubdtype(loaded.state.key.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(loaded.extras["history"], np.arange(3.0))
    # the file holds no pickle: it is msgpack, and the description is plain JSON
    info = json.loads((folder / "checkpoint.json").read_text())
    assert info["format"] == "vijax-checkpoint-1" and info["step"] == 7


def test_a_checkpoint_of_a_different_model_shape_is_refused(tmp_path):
    save_checkpoint(tmp_path, _fit_state(0), step=0)
    wider, wider_objective = tiny_discrete_vae(hidden=(32,))
    like = vj.fit(
        wider_objective,
        wider.init(jax.random.key(0)),
        OPTIMIZER,
        jax.random.key(1),
        data=(IMAGES,),
        batch_size=20,
        num_steps=0,
        progress=False,
    ).state
    with pytest.raises(ValueError, match="differently shaped model") as info:
        load_checkpoint(tmp_path, like=like)
    message = str(info.value)
    assert "['layers'][0]" in message and "(16,) in the checkpoint but float32(32,)" in message
    with pytest.raises(ValueError, match="different model or optimizer: its leaves differ"):
        load_checkpoint(tmp_path, like={"w": jnp.zeros(3)})


def test_metadata_mismatch_is_refused_naming_the_setting(tmp_path):
    save_checkpoint(tmp_path, {"w": jnp.zeros(2)}, step=1, metadata={"latent_dim": 8, "lr": 0.1})
    loaded = load_checkpoint(tmp_path, like={"w": jnp.zeros(2)}, metadata={"latent_dim": 8})
    assert loaded.metadata == {"latent_dim": 8, "lr": 0.1}
    with pytest.raises(ValueError, match="latent_dim=8 there vs 16 here"):
        load_checkpoint(tmp_path, like={"w": jnp.zeros(2)}, metadata={"latent_dim": 16})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "empty", like={"w": jnp.zeros(2)})


def test_writes_are_atomic_and_old_checkpoints_survive_a_crash(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"w": jnp.ones(2)}, step=5)
    # a crash between writing the files and renaming the folder into place
    real_replace = os.replace

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, {"w": jnp.full(2, 9.0)}, step=6)
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000005"]
    # a half-written folder left by a killed process is never taken for a checkpoint
    (tmp_path / ".tmp-step_000000009-dead").mkdir()
    (tmp_path / "step_000000010").mkdir()  # no files: incomplete
    assert latest_checkpoint(tmp_path).name == "step_000000005"
    loaded = load_checkpoint(tmp_path, like={"w": jnp.zeros(2)})
    np.testing.assert_array_equal(loaded.state["w"], [1.0, 1.0])
    # keep prunes the oldest complete checkpoints
    for step in (6, 7, 8):
        save_checkpoint(tmp_path, {"w": jnp.zeros(2)}, step=step, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("step_0"))
    assert names == ["step_000000007", "step_000000008", "step_000000010"]


def _record_seen(step, params):
    return {"seen": step}


def _run(directory, num_steps, *, resume=False, on_checkpoint=None):
    return fit_with_checkpoints(
        OBJECTIVE,
        PARAMS,
        OPTIMIZER,
        jax.random.key(1),
        num_steps=num_steps,
        directory=directory,
        every=20,
        data=(IMAGES,),
        batch_size=20,
        metadata={"model": "tiny"},
        resume=resume,
        on_checkpoint=on_checkpoint,
        progress=False,
    )


def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    whole = _run(tmp_path / "whole", 60)

    def kill_at_40(step, params):
        if step == 40:  # dies after step 40, before its checkpoint: step 20 is the newest
            raise KeyboardInterrupt("killed")
        return {"seen": step}

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", 60, on_checkpoint=kill_at_40)
    assert latest_checkpoint(tmp_path / "killed").name == "step_000000020"
    with pytest.raises(ValueError, match="already holds checkpoints"):
        _run(tmp_path / "killed", 60)
    resumed = _run(tmp_path / "killed", 60, resume=True, on_checkpoint=_record_seen)
    assert resumed.resumed_from == 20
    _assert_trees_equal(resumed.state, whole.state)
    np.testing.assert_array_equal(resumed.history, whole.history)
    assert resumed.history.shape == (60,)
    np.testing.assert_array_equal(resumed.records["seen"], [20, 40, 60])
    with pytest.raises(ValueError, match="model='tiny' there vs 'other' here"):
        fit_with_checkpoints(
            OBJECTIVE,
            PARAMS,
            OPTIMIZER,
            jax.random.key(1),
            num_steps=80,
            directory=tmp_path / "killed",
            data=(IMAGES,),
            batch_size=20,
            metadata={"model": "other"},
            resume=True,
            progress=False,
        )


def test_non_finite_training_stops_and_keeps_its_checkpoints(tmp_path):
    _run(tmp_path, 20)
    before = (tmp_path / "step_000000020" / "state.msgpack").read_bytes()
    with pytest.raises(vj.NonFiniteError, match=r"newest checkpoint, .*step_000000020.* intact"):
        fit_with_checkpoints(
            OBJECTIVE,
            PARAMS,
            optax.adam(1e30),  # the first update throws the parameters to overflow
            jax.random.key(1),
            num_steps=60,
            directory=tmp_path,
            every=20,
            data=(IMAGES,),
            batch_size=20,
            resume=True,
            progress=False,
        )
    assert latest_checkpoint(tmp_path).name == "step_000000020"
    assert (tmp_path / "step_000000020" / "state.msgpack").read_bytes() == before


KILLED_SCRIPT = """
import jax, sys
sys.path.insert(0, {root!r})
from tests.test_checkpoint import _run
_run({directory!r}, 100_000)
"""


@pytest.mark.slow
def test_a_process_killed_by_sigkill_resumes_bit_identically(tmp_path):
    directory = tmp_path / "run"
    script = KILLED_SCRIPT.format(root=str(ROOT), directory=str(directory))
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            newest = latest_checkpoint(directory)
            if newest is not None and int(newest.name[5:]) >= 40:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the child process wrote no checkpoint (exit code {process.poll()})")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed_at = int(latest_checkpoint(directory).name[5:])
    total = killed_at + 20
    resumed = _run(directory, total, resume=True)
    assert resumed.resumed_from == killed_at
    whole = _run(tmp_path / "whole", total)
    _assert_trees_equal(resumed.state, whole.state)
    np.testing.assert_array_equal(resumed.history, whole.history)
