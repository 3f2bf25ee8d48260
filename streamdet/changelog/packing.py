"""State values as JSON plus raw bytes, and back: what a changelog record's body holds (codec.py frames it).

A value is any nesting of dicts, lists, tuples, Sources, scalars and numpy arrays. Arrays go to a block of raw bytes
(the JSON names dtype, shape and offset), shrunk where exactly reversible: a ring's unwritten zero rows are trimmed,
short decimals become small integers (time series as steps), a list of equal tuples (a window's record sources)
becomes columns. The packer and its exact inverse are kept side by side, so that a change to one is seen next to
the other.
"""

from __future__ import annotations

import base64
import math
from itertools import repeat
from typing import Any, Optional

import numpy as np

from ..types import Source

_PLAIN = frozenset({str, int, float, bool, type(None)})
_ROWS = frozenset({tuple, Source})  # what a packed column's rows may be
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
MAX_DECIMALS = 6  # decimal places tried for float arrays
_SCALES = 10.0 ** np.arange(MAX_DECIMALS + 1)  # [K], exact powers of ten
_DECIMAL_LIMITS = {np.dtype(np.float32): 2.0 ** 24, np.dtype(np.float64): 2.0 ** 53}  # integers exact as floats
_BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}
_LAST_DECIMALS: dict[tuple, int] = {}  # (key, dtype, ndim) -> decimal places of the last such array packed
_NARROW = [(t, np.iinfo(t).min, np.iinfo(t).max) for t in (np.int8, np.int16, np.int32)]
_UINTS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}  # itemsize -> the unsigned view of its bits


class Packer:
    """JSON-able form of a state value; numpy arrays and integer columns go to `blobs` as raw bytes."""

    def __init__(self):
        self.blobs: list[bytes] = []
        self.size = 0

    def blob(self, array: np.ndarray) -> list:
        data = np.ascontiguousarray(array)
        self.blobs.append(data.tobytes())
        self.size += data.nbytes
        return [data.dtype.str, list(data.shape), self.size - data.nbytes]

    def steps(self, ints: np.ndarray) -> list:
        """A 1-D int64 series as [first value, blob of the differences in the narrowest integer type]: offsets,
        timestamps and decimal time series move in small steps, which take a byte or two each."""
        steps = ints[1:] - ints[:-1]
        return [int(ints[0]) if ints.size else 0, self.blob(_narrow(steps))]

    def decimal(self, array: np.ndarray, name: Any = "") -> Optional[dict]:
        """A float array whose values are all short decimals (as metrics and timestamps parsed from JSON usually are)
        as integers times 10^-k, checked to give back the very same bits: small integers compress to about half the
        bytes of their float form. Time series (1-D) are stored as steps, tables transposed (per channel). `name`
        (the array's key) keeps the places found for one kind of array (timestamps) from being tried first on
        another (a threshold's peaks, seldom decimals)."""
        bits = _BITS.get(array.dtype)
        if bits is None or array.size < 4 or array.ndim > 2:
            return None
        flat, role = array.reshape(-1), (name, array.dtype.str, array.ndim)
        with np.errstate(over="ignore", invalid="ignore"):  # huge or non-finite values are simply not decimals
            k = _LAST_DECIMALS.get(role)  # the places the last array of this kind had: usually right, and cheap
            wide = _exact_decimals(flat, k, bits) if k is not None else None
            if wide is None:
                k = _decimals(flat[:16], bits)  # found on a sample, then checked on all values
                wide = _exact_decimals(flat, k, bits) if k is not None else None
                if wide is None:
                    return None
        while k:  # fewer places do when every integer is a multiple of 10 (the last array of this kind needed more)
            tenth = wide / 10  # exact for multiples of 10 (integers below 2^53); the rest get a fraction
            if not (np.rint(tenth) == tenth).all():  # (a float modulo took half of a window's packing time)
                break
            wide, k = tenth, k - 1
        _LAST_DECIMALS[role] = k
        ints = wide.astype(np.int64)
        stored = self.steps(ints) if array.ndim == 1 else self.blob(_narrow(ints.reshape(array.shape).T))
        return {"__q__": [array.dtype.str, list(array.shape), k, stored]}

    def pack(self, value: Any, name: Any = "") -> Any:
        kind = type(value)
        if kind is str or kind is bool or value is None:
            return value
        if kind is int:
            return value if _INT64[0] <= value <= _INT64[1] else {"__i__": str(value)}  # JSON numbers are 64-bit
        if kind is float:
            return value if math.isfinite(value) else {"__f__": repr(value)}
        if kind is dict:
            return {str(k): self.pack(v, k) for k, v in value.items()}
        if kind is np.ndarray:
            rows = _rows_before_zero_tail(value)
            if rows < len(value):  # a ring not yet filled: its unwritten slots are zeros, rebuilt on decoding
                return {"__z__": [len(value), self.pack(value[:rows], name)]}
            return self.decimal(value, name) or {"__b__": self.blob(value)}
        if kind is list:
            columns = self._columns(value) if value else None
            return {"__tc__": columns} if columns is not None else [self.pack(v) for v in value]
        if kind is tuple:
            return {"__t__": [self.pack(v) for v in value]}
        if kind is Source:
            return {"__s__": [self.pack(v) for v in value]}
        if isinstance(value, (float, np.floating)) and not math.isfinite(value):
            return {"__f__": repr(float(value))}
        if isinstance(value, np.integer):
            return self.pack(int(value))
        if isinstance(value, np.floating):
            return float(value)
        return value

    def _columns(self, rows: list) -> Optional[dict]:
        """A list of tuples of equal width (or None), all members plain and finite, as columns (a window's record
        sources: topic, partition, offset, timestamp): a constant column is one value, an integer column its
        steps. None for any other list."""
        present = [row for row in rows if row is not None]
        if not set(map(type, present)) <= _ROWS or len(set(map(len, present))) > 1:  # (C loops: a window has 100)
            return None
        columns = list(zip(*present))
        kinds = [set(map(type, column)) for column in columns]
        if any(not types <= _PLAIN or (float in types and not all(
                math.isfinite(v) for v in column if type(v) is float)) for column, types in zip(columns, kinds)):
            return None
        packed = []
        for column, types in zip(columns, kinds):
            if len(types) == 1 and column.count(column[0]) == len(column):
                packed.append({"k": self.pack(column[0])})
            elif types == {int} and _INT64[0] <= min(column) and max(column) <= _INT64[1]:
                packed.append({"s": self.steps(np.array(column, dtype=np.int64))})
            else:
                packed.append({"l": [self.pack(v) for v in column]})
        tail = _none_tail(rows)
        inner = len(rows) - len(present) - tail  # Nones before the trailing ones
        return {"n": len(rows), "none": [k for k, row in enumerate(rows) if row is None][:inner] if inner else [],
                "tail": tail, "cols": packed}


def _exact_decimals(flat: np.ndarray, k: int, bits: type) -> Optional[np.ndarray]:
    """flat * 10^k as integer-valued float64 when that gives back every value bit for bit (as decoding will: the
    integers come back as float64, where -0.0 is +0.0), else None."""
    wide = np.rint(flat.astype(np.float64) * _SCALES[k]) + 0.0  # + 0.0 turns -0.0 into 0.0, as int64 would
    if not np.abs(wide).max() < _DECIMAL_LIMITS[flat.dtype]:  # NaN fails this too
        return None
    if not ((wide / _SCALES[k]).astype(flat.dtype).view(bits) == flat.view(bits)).all():
        return None
    return wide


def _decimals(sample: np.ndarray, bits: type) -> Optional[int]:
    """The fewest decimal places that give back every value of `sample` exactly (None: more than MAX_DECIMALS)."""
    back = (np.rint(sample.astype(np.float64)[:, None] * _SCALES) / _SCALES).astype(sample.dtype)  # [n, K]
    exact = (back.view(bits) == sample.view(bits)[:, None]).all(axis=0)  # [K]
    return int(exact.argmax()) if exact.any() else None


def _rows_before_zero_tail(array: np.ndarray) -> int:
    """len(array) less its trailing rows (axis 0) whose bits are all zero (so -0.0 and NaN are kept)."""
    if array.ndim == 0 or len(array) < 4 or array.dtype.kind not in "fiub" or array.dtype.itemsize not in _UINTS:
        return len(array)
    bits = np.ascontiguousarray(array).view(_UINTS[array.dtype.itemsize]).reshape(len(array), -1)
    if bits[-1].any():  # the common case (a full ring, a threshold's values): one row looked at
        return len(array)
    written = np.flatnonzero(bits.any(axis=1))
    return int(written[-1]) + 1 if written.size else 0


def _none_tail(rows: list) -> int:
    """How many rows at the end of `rows` are None (the unwritten slots of a ring's sources)."""
    n = len(rows)
    while n and rows[n - 1] is None:
        n -= 1
    return len(rows) - n


def _zero_padded(packed: list, blobs: memoryview) -> np.ndarray:
    """Inverse of the trailing zero rows' trim."""
    head = unpack(packed[1], blobs)
    out = np.zeros((int(packed[0]),) + head.shape[1:], dtype=head.dtype)
    out[:len(head)] = head
    return out


def _narrow(ints: np.ndarray) -> np.ndarray:
    """The smallest signed integer type that holds every value."""
    if not ints.size:
        return ints.astype(np.int8)
    lo, hi = ints.min(), ints.max()
    for dtype, low, high in _NARROW:
        if low <= lo and hi <= high:
            return ints.astype(dtype)
    return ints


def _unsteps(packed: list, blobs: memoryview, count: int) -> np.ndarray:
    """Inverse of Packer.steps: int64 [count]."""
    out = np.empty(count, dtype=np.int64)
    if count:
        out[0] = packed[0]
        np.cumsum(_array(packed[1], blobs), out=out[1:], dtype=np.int64)
        out[1:] += packed[0]
    return out


def _from_ints(ints: np.ndarray, k: int, dtype: np.dtype) -> np.ndarray:
    return (ints.astype(np.float64) / _SCALES[k]).astype(dtype)


def _decimal_array(packed: list, blobs: memoryview) -> np.ndarray:
    dtype, shape, k, stored = np.dtype(packed[0]), tuple(packed[1]), int(packed[2]), packed[3]
    ints = _unsteps(stored, blobs, shape[0]) if len(shape) == 1 else _array(stored, blobs).T
    return np.ascontiguousarray(_from_ints(ints, k, dtype))


def _array(ref: list, blobs: memoryview) -> np.ndarray:
    dtype, shape, offset = np.dtype(ref[0]), tuple(ref[1]), int(ref[2])
    count = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(blobs, dtype=dtype, count=count, offset=offset).reshape(shape).copy()


def _unpack_columns(packed: dict, blobs: memoryview) -> list:
    n, missing = packed["n"], set(packed["none"])
    missing.update(range(n - packed.get("tail", 0), n))  # the trailing Nones (records before "tail" list them all)
    columns = []
    for column in packed["cols"]:
        if "k" in column:
            columns.append([unpack(column["k"], blobs)] * (n - len(missing)))
        elif "s" in column:
            columns.append(_unsteps(column["s"], blobs, n - len(missing)).tolist())
        else:
            columns.append(unpack(column["l"], blobs))
    rows = zip(*columns) if columns else iter([()] * (n - len(missing)))
    if len(columns) == len(Source._fields):  # a window's record sources (types.Source), made the fast way
        rows = map(tuple.__new__, repeat(Source), rows)
    if not missing:
        return list(rows)
    rows = iter(rows)
    return [None if k in missing else next(rows) for k in range(n)]


def unpack(value: Any, blobs: memoryview | None) -> Any:
    """Inverse of Packer.pack (blobs None: format 1, whose arrays are base64 strings under __nd__)."""
    kind = type(value)
    if kind is dict:
        if len(value) == 1:
            tag = next(iter(value))
            if tag in _TAGS:
                return _TAGS[tag](value[tag], blobs)
        return {k: unpack(v, blobs) if type(v) in _NESTED else v for k, v in value.items()}
    if kind is list:
        return [unpack(v, blobs) if type(v) in _NESTED else v for v in value]
    return value


_NESTED = (dict, list)


def _legacy_array(packed: list, blobs) -> np.ndarray:
    dtype, shape, data = packed
    return np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype)).reshape(shape).copy()


_TAGS = {
    "__b__": _array,
    "__z__": _zero_padded,
    "__q__": _decimal_array,
    "__tc__": _unpack_columns,
    "__nd__": _legacy_array,
    "__t__": lambda items, blobs: tuple(unpack(v, blobs) for v in items),
    "__s__": lambda items, blobs: Source(*(unpack(v, blobs) for v in items)),
    "__tl__": lambda rows, blobs: [None if v is None else Source(*v) if len(v) == 4 else tuple(v) for v in rows],
    "__f__": lambda text, blobs: float(text),
    "__i__": lambda text, blobs: int(text),
}
