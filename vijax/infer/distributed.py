r"""Devices, hosts and meshes: how :func:`vijax.fit` and :func:`vijax.fit_population` spread work.

Both drivers take ``mesh=``, a :class:`jax.sharding.Mesh`, and leave the partitioning to XLA
(``jax.sharding.NamedSharding`` and ``with_sharding_constraint`` inside the compiled chunk; no
hand-written communication):

- **Data parallel** (``vj.fit(..., mesh=mesh)``): parameters, optimizer and baseline state, the
  key and the data order are replicated on every device; each step's minibatch (the rows the
  permutation picks) is split along the mesh's *data axes*, every axis except ``"particles"``.
  The objective is still the global-batch objective, so each device computes the terms of its
  rows and XLA's partitioner adds the per-device partial gradients with one all-reduce,

      ĝ = Σ_d ĝ_d,    ĝ_d = ∇_φ [terms of device d's rows] (+ the global terms, once),

  i.e. the average of the per-device gradients of minibatch objectives each scaled as the whole
  batch. The run draws the same batches and the same noise as on one device (random bits are
  generated shard by shard with ``jax_threefry_partitionable``), so it matches a one-device
  run up to the order of floating-point sums. A batch that does not divide evenly over the
  devices is padded by XLA inside the program (its last shards are shorter), with the same result.
- **Particles** (a mesh axis named ``"particles"``): every outermost particle block of the
  objective (``vj.particle_mean``, ``vj.particle_log_mean_exp``, hence ``vj.elbo(..., K)``,
  ``vj.iwae`` ...) splits its ``K`` particles over that axis.
- **Populations** (``vj.fit_population(..., mesh=mesh)``): independent runs are split over the
  data axes (no communication at all).

Data and arguments stay where you put them: an array already sharded over the mesh keeps its
sharding (pass a large dataset as ``jax.device_put(x, NamedSharding(mesh, P("data")))``, one part
per device; XLA then fetches each step's rows from their owners), any other array is replicated.

**Several hosts** (multi-controller JAX). Start the same script on every host; each calls
:func:`jax.distributed.initialize` before anything else touches JAX, builds one mesh over
``jax.devices()`` (all hosts' devices), and calls ``vj.fit`` with the same arguments and key.
Each process either holds the whole dataset (numpy arrays, identical everywhere: replicated),
or only its own rows, assembled into one global array::

    # launch: python train.py <process_id>   (on each of 2 hosts, or twice on localhost)
    import sys, jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    jax.distributed.initialize("host0:12355", num_processes=2, process_id=int(sys.argv[1]))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), my_rows)
    result = vj.fit(objective, params, optimizer, jax.random.key(0), num_steps=1000,
                    data=(x,), batch_size=256, mesh=mesh)

On CPU the processes talk through gloo (``jax_cpu_collectives_implementation``, JAX's default);
on GPU and TPU through the platform's collectives. Every process gets the same replicated
parameters and history; only process 0 draws the progress bar.
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from vijax.objectives.expectation import PARTICLE_MESH_AXIS

__all__ = ["PARTICLE_MESH_AXIS"]


def _normalize_mesh(mesh: Any, caller: str) -> Mesh:
    """``mesh`` with every axis in ``Auto`` mode (the mode in which XLA partitions the program).

    ``jax.make_mesh`` builds ``Explicit`` axes by default, where sharding is part of an array's
    type; the fit loop lets XLA propagate shardings instead, so it uses the same devices and
    axis names in ``Auto`` mode.
    """
    if not isinstance(mesh, Mesh):
        raise ValueError(
            f"{caller}: mesh must be a jax.sharding.Mesh (e.g. "
            f"jax.make_mesh((jax.device_count(),), ('data',))), got {mesh!r}"
        )
    if all(kind == AxisType.Auto for kind in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def _data_axes(mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes that split the batch (or the runs of a population): all but particles."""
    return tuple(name for name in mesh.axis_names if name != PARTICLE_MESH_AXIS)


def _data_devices(mesh: Mesh) -> int:
    """How many ways the data axes split an array."""
    return int(np.prod([mesh.shape[name] for name in _data_axes(mesh)], dtype=int))


def _replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def _split_leading(mesh: Mesh) -> NamedSharding:
    """The leading axis split over the data axes (replicated when there are none)."""
    axes = _data_axes(mesh)
    return NamedSharding(mesh, PartitionSpec(axes) if axes else PartitionSpec())


def _context(mesh: Mesh | None):
    """While tracing: make ``mesh`` the ambient mesh (read by the particle blocks)."""
    if mesh is None:
        return contextlib.nullcontext()
    return jax.sharding.use_abstract_mesh(mesh.abstract_mesh)


def _constrain(tree: Any, sharding: NamedSharding) -> Any:
    """``with_sharding_constraint`` on every leaf of ``tree``."""
    return jax.tree.map(lambda leaf: jax.lax.with_sharding_constraint(leaf, sharding), tree)


def _is_key(leaf) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _place(leaf: Any, sharding: NamedSharding) -> jax.Array:
    """``leaf`` as a global array with ``sharding``.

    One process: ``jax.device_put``. Several processes: built from this process's copy of the
    whole value (every process must pass the same value), as ``device_put`` cannot target
    devices of other processes.
    """
    if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
        return leaf
    if jax.process_count() == 1:
        return jax.device_put(leaf, sharding)
    if _is_key(leaf):
        data = _place(jax.random.key_data(leaf), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return jax.device_put(leaf, sharding)  # already global: a reshard
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _on_mesh(leaf: Any, mesh: Mesh) -> NamedSharding | None:
    """``leaf``'s sharding translated to ``mesh`` when it already lies on ``mesh``'s devices."""
    sharding = getattr(leaf, "sharding", None)
    if not isinstance(sharding, NamedSharding):
        return None
    other = sharding.mesh
    same = (
        other.axis_names == mesh.axis_names
        and other.devices.shape == mesh.devices.shape
        and all(a.id == b.id for a, b in zip(other.devices.flat, mesh.devices.flat))
    )
    if not same:
        return None
    return NamedSharding(mesh, sharding.spec)


def _place_tree(tree: Any, sharding: NamedSharding) -> Any:
    """Every leaf of ``tree`` with ``sharding``."""
    return jax.tree.map(lambda leaf: _place(leaf, sharding), tree)


def _keep_or_place(leaves: list, mesh: Mesh, default: NamedSharding) -> list:
    """Leaves already sharded over ``mesh`` keep their layout; the others get ``default``."""
    return [_place(leaf, _on_mesh(leaf, mesh) or default) for leaf in leaves]
