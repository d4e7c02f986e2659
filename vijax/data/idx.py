r"""The IDX file format (LeCun et al., the MNIST and Fashion-MNIST distribution format).

An IDX file is a header followed by the array, row-major, every number big-endian:

    bytes 0–1   zero
    byte  2     the element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     the number of dimensions d
    then        d sizes, each a big-endian uint32
    then        Π sizes elements of the element type

Files are often gzip-compressed (``*.gz``); :func:`read_idx` recognizes gzip by its magic bytes,
not by the file name. The reader checks the header and the length of the data, so a truncated
or foreign file is a ``ValueError`` naming the file rather than a misshapen array.

Example:
    >>> import numpy as np, tempfile, os
    >>> from vijax.data import read_idx, write_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny-idx3-ubyte.gz")
    >>> write_idx(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    >>> read_idx(path).shape
    (2, 3, 4)
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["read_idx", "write_idx"]

#: IDX type code → big-endian NumPy dtype
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise ValueError(f"read_idx: {str(path)!r} is a damaged gzip file ({error})") from None
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) into a NumPy array of its native type.

    Args:
      path: the file.

    Returns:
      An array with the file's shape and element type (native byte order).

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not IDX (bad magic bytes or type code), or its length disagrees
        with the sizes in its header (the message names the file).
    """
    path = Path(path)
    raw = _read_bytes(path)
    name = repr(str(path))
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"read_idx: {name} is not an IDX file (its first two bytes are not zero)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        raise ValueError(f"read_idx: {name} has unknown IDX element type 0x{code:02X}")
    if ndim == 0:
        raise ValueError(f"read_idx: {name} declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"read_idx: {name} is truncated inside its header")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"read_idx: {name} holds {len(raw) - header} data bytes, but its header declares "
            f"shape {shape} of {dtype.name} ({expected} bytes)"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    Args:
      path: the file to write.
      array: an array of uint8, int8, int16, int32, float32 or float64, with at least one axis.

    Raises:
      ValueError: the element type has no IDX code, or the array is a scalar.
    """
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_TYPES.items()}
    if array.dtype not in codes:
        raise ValueError(
            f"write_idx: array has dtype {array.dtype}; IDX stores {sorted(str(d) for d in codes)}"
        )
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"write_idx: array must have 1 to 255 axes, got shape {array.shape}")
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=IDX_TYPES[codes[array.dtype]]).tobytes()
    payload = header + body
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    with open(path, "wb") as handle:
        handle.write(payload)
