"""Splitting a program's arguments into traced arrays and static Python values.

Programs take data arrays and, sometimes, Python values that shape the computation (a number of
classes, a flag, ``None`` for an unobserved ``y``). Under ``jit`` the arrays are traced and the
Python values must stay static, so the drivers pass the two parts separately; the static part
is hashable and keys the compilation cache.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = ["Static", "is_array", "merge", "split"]


def is_array(leaf: Any) -> bool:
    """Whether ``leaf`` is an array (traced under ``jit``) rather than a static value."""
    return isinstance(leaf, jax.Array | np.ndarray | np.generic)


class Static(NamedTuple):
    """The hashable, non-array part of a pytree of arguments."""

    treedef: Any
    values: tuple  # the non-array leaves, ``None`` where an array goes


def split(tree: Any) -> tuple[list, Static]:
    """``tree`` → (array leaves, static part)."""
    leaves, treedef = jax.tree.flatten(tree)
    arrays = [leaf for leaf in leaves if is_array(leaf)]
    static = tuple(None if is_array(leaf) else leaf for leaf in leaves)
    return arrays, Static(treedef, static)


def merge(arrays: list, static: Static) -> Any:
    """Inverse of :func:`split`."""
    arrays = iter(arrays)
    leaves = [next(arrays) if value is None else value for value in static.values]
    return jax.tree.unflatten(static.treedef, leaves)
