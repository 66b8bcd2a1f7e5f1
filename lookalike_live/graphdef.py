"""Read a frozen TensorFlow GraphDef (``.pb``) without TensorFlow.

A frozen graph is one protobuf message, ``tensorflow.GraphDef``; its weights are ``Const``
nodes whose ``value`` attribute holds a ``TensorProto``. This module decodes the protobuf wire
format directly (varints and length-delimited fields) and reads only the fields a frozen
inference graph uses:

- ``GraphDef``: ``node`` (1, repeated ``NodeDef``); ``versions``/``library`` are skipped.
- ``NodeDef``: ``name`` (1), ``op`` (2), ``input`` (3, repeated), ``device`` (4), ``attr``
  (5, ``map<string, AttrValue>``).
- ``AttrValue``: ``list`` (1), ``s`` (2), ``i`` (3), ``f`` (4), ``b`` (5), ``type`` (6),
  ``shape`` (7), ``tensor`` (8).
- ``TensorProto``: ``dtype`` (1), ``tensor_shape`` (2), ``tensor_content`` (4), ``float_val``
  (5), ``int_val`` (7), ``int64_val`` (10); ``TensorShapeProto``: ``dim`` (2: ``size`` 1),
  ``unknown_rank`` (3).

Why not the ``protobuf`` package: decoding needs TensorFlow's message definitions, which ship
only with TensorFlow (or TensorBoard), and the ``protobuf`` runtime's major version moves with
whatever else is installed (MediaPipe pins it). The wire format itself is stable and small; the
reader is ~150 lines, needs nothing but numpy, and reads the 94 MB FaceNet graph in well under
a second (tensor bytes are sliced, never copied field by field). The test suite checks it
against the ``protobuf`` runtime's own decoding of the same file.

Errors are :class:`~lookalike_live.errors.ModelFormatError` naming the byte offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelFormatError

# tensorflow/core/framework/types.proto DataType -> numpy
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    19: np.dtype("<f2"),  # DT_HALF
}


@dataclass(frozen=True)
class Shape:
    """A ``TensorShapeProto``: ``dims`` (-1 for an unknown size), or ``None`` for unknown rank."""

    dims: tuple[int, ...] | None


@dataclass
class Node:
    """One ``NodeDef``: its attributes decoded to Python values (``tensor`` -> numpy array)."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attr: dict[str, Any] = field(default_factory=dict)

    @property
    def data_inputs(self) -> list[str]:
        """Inputs without control dependencies (``^name``) and without output indices (``:0``)."""
        return [i.split(":")[0] for i in self.inputs if not i.startswith("^")]


class _Reader:
    """Protobuf wire format over one buffer: ``fields()`` yields (number, wire type, value)."""

    def __init__(self, buf: memoryview, origin: str, base: int = 0) -> None:
        self.buf = buf
        self.origin = origin
        self.base = base  # offset of buf in the file, for error messages

    def _fail(self, pos: int, what: str) -> ModelFormatError:
        return ModelFormatError(
            f"{self.origin} is not a TensorFlow GraphDef: {what} at byte {self.base + pos}"
        )

    def _varint(self, pos: int) -> tuple[int, int]:
        buf = self.buf
        result = shift = 0
        while True:
            if pos >= len(buf):
                raise self._fail(pos, "truncated varint")
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result, pos
            shift += 7
            if shift > 63:
                raise self._fail(pos, "varint longer than 10 bytes")

    def fields(self):  # noqa: ANN201 - a generator of (int, int, int | memoryview | _Reader offset)
        buf, pos, end = self.buf, 0, len(self.buf)
        while pos < end:
            key, pos = self._varint(pos)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise self._fail(pos, "field number 0")
            if wire == 0:
                value, pos = self._varint(pos)
                yield number, wire, value, pos
            elif wire == 2:
                length, pos = self._varint(pos)
                if pos + length > end:
                    raise self._fail(pos, f"field {number} of {length} bytes runs past the end")
                yield number, wire, buf[pos : pos + length], pos
                pos += length
            elif wire == 5:
                if pos + 4 > end:
                    raise self._fail(pos, "truncated 32-bit field")
                yield number, wire, buf[pos : pos + 4], pos
                pos += 4
            elif wire == 1:
                if pos + 8 > end:
                    raise self._fail(pos, "truncated 64-bit field")
                yield number, wire, buf[pos : pos + 8], pos
                pos += 8
            else:
                raise self._fail(pos, f"unsupported wire type {wire} (field {number})")

    def sub(self, view: memoryview, pos: int) -> _Reader:
        """A reader over a length-delimited field that starts at ``pos`` of this buffer."""
        return _Reader(view, self.origin, self.base + pos)

    def packed_varints(self, view: memoryview, pos: int) -> list[int]:
        reader, out, p = self.sub(view, pos), [], 0
        while p < len(view):
            value, p = reader._varint(p)
            out.append(value)
        return out


def _text(view: memoryview) -> str:
    return bytes(view).decode("utf-8", errors="replace")


def _shape(r: _Reader) -> Shape:
    dims: list[int] = []
    unknown = False
    for number, wire, value, pos in r.fields():
        if number == 2 and wire == 2:  # Dim
            size = -1
            for n2, w2, v2, _ in r.sub(value, pos).fields():
                if n2 == 1 and w2 == 0:
                    size = v2 - (1 << 64) if v2 >= 1 << 63 else v2  # int64, -1 = unknown
            dims.append(size)
        elif number == 3 and wire == 0:
            unknown = bool(value)
    return Shape(None if unknown else tuple(dims))


def _tensor(r: _Reader) -> np.ndarray:
    dtype_code, shape, content = 0, Shape(()), None
    floats: list[float] = []
    ints: list[int] = []
    for number, wire, value, pos in r.fields():
        if number == 1 and wire == 0:
            dtype_code = value
        elif number == 2 and wire == 2:
            shape = _shape(r.sub(value, pos))
        elif number == 4 and wire == 2:
            content = value
        elif number == 5:  # float_val: packed (wire 2) or one fixed32 each (wire 5)
            floats.extend(struct.unpack(f"<{len(value) // 4}f", value))
        elif number in (7, 10):  # int_val / int64_val
            if wire == 2:
                ints.extend(r.packed_varints(value, pos))
            elif wire == 0:
                ints.append(value)
    dtype = DTYPES.get(dtype_code)
    if dtype is None:
        raise r._fail(0, f"tensor of unsupported dtype {dtype_code}")
    dims = shape.dims or ()
    if any(d < 0 for d in dims):
        raise r._fail(0, f"constant tensor with unknown dimension {dims}")
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if content is not None:
        array = np.frombuffer(content, dtype=dtype).copy()
    elif floats:
        array = np.asarray(floats, dtype=dtype)
    elif ints:
        array = np.asarray([i - (1 << 64) if i >= 1 << 63 else i for i in ints]).astype(dtype)
    else:
        array = np.zeros(1, dtype=dtype)
    if array.size == 1 and count != 1:  # TF stores a splat as one value
        array = np.full(count, array[0], dtype=dtype)
    if array.size != count:
        raise r._fail(0, f"tensor of shape {dims} holds {array.size} values")
    return array.reshape(dims)


def _attr_value(r: _Reader) -> Any:
    for number, wire, value, pos in r.fields():
        if number == 1 and wire == 2:  # ListValue: s=2, i=3 (packed), f=4 (packed)
            items: list[Any] = []
            sub = r.sub(value, pos)
            for n2, w2, v2, p2 in sub.fields():
                if n2 == 2 and w2 == 2:
                    items.append(_text(v2))
                elif n2 == 3:
                    items.extend(sub.packed_varints(v2, p2) if w2 == 2 else [v2])
                elif n2 == 4 and w2 == 2:
                    items.extend(struct.unpack(f"<{len(v2) // 4}f", v2))
            return items
        if number == 2 and wire == 2:
            return _text(value)
        if number in (3, 6) and wire == 0:
            return value
        if number == 4 and wire == 5:
            return struct.unpack("<f", value)[0]
        if number == 5 and wire == 0:
            return bool(value)
        if number == 7 and wire == 2:
            return _shape(r.sub(value, pos))
        if number == 8 and wire == 2:
            return _tensor(r.sub(value, pos))
    return None


def _node(r: _Reader) -> Node:
    node = Node(name="", op="")
    for number, wire, value, pos in r.fields():
        if wire != 2:
            continue
        if number == 1:
            node.name = _text(value)
        elif number == 2:
            node.op = _text(value)
        elif number == 3:
            node.inputs.append(_text(value))
        elif number == 5:  # map entry: key = 1, value = 2
            key, attr = "", None
            entry = r.sub(value, pos)
            for n2, w2, v2, p2 in entry.fields():
                if n2 == 1 and w2 == 2:
                    key = _text(v2)
                elif n2 == 2 and w2 == 2:
                    attr = _attr_value(entry.sub(v2, p2))
            node.attr[key] = attr
    if not node.name or not node.op:
        raise r._fail(0, "a node without a name or op")
    return node


def parse_graphdef(data: bytes | memoryview, origin: str = "graph") -> list[Node]:
    """Every node of a serialised ``GraphDef``, in file order (``Const`` values as numpy)."""
    reader = _Reader(memoryview(data), origin)
    nodes = [_node(reader.sub(value, pos)) for number, wire, value, pos in reader.fields() if number == 1 and wire == 2]
    if not nodes:
        raise ModelFormatError(f"{origin} is not a TensorFlow GraphDef: it holds no nodes")
    return nodes


def read_graphdef(path: str | Path) -> list[Node]:
    """:func:`parse_graphdef` of a ``.pb`` file; ModelFormatError when it cannot be read."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFormatError(f"cannot read TensorFlow graph {path}: {exc.strerror or exc}") from exc
    return parse_graphdef(data, str(path))
