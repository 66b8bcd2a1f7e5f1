"""An independent oracle for frozen TensorFlow graphs: parse with the ``protobuf`` runtime, run
with numpy (float64).

Nothing here comes from the product: the GraphDef is decoded by Google's protobuf runtime with
message types declared below from TensorFlow's own ``.proto`` field numbers (graph.proto,
node_def.proto, attr_value.proto, tensor.proto, tensor_shape.proto), not by
``lookalike_live.graphdef``; the ops are written from TensorFlow's documented semantics (NHWC,
SAME padding split as TensorFlow splits it, inference-mode FusedBatchNorm), not from the
PyTorch network. The product's ONNX and PyTorch module must agree with what this runs.
"""

from __future__ import annotations

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _message(file: descriptor_pb2.FileDescriptorProto, name: str, fields: list[tuple], nested=()):  # type: ignore[no-untyped-def]
    msg = file.message_type.add() if not isinstance(file, descriptor_pb2.DescriptorProto) else file.nested_type.add()
    msg.name = name
    for fname, number, ftype, label, type_name in fields:
        f = msg.field.add()
        f.name, f.number, f.type, f.label = fname, number, ftype, label
        if type_name:
            f.type_name = type_name
    for build in nested:
        build(msg)
    return msg


def _graphdef_class():  # type: ignore[no-untyped-def]
    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    fdp = descriptor_pb2.FileDescriptorProto(name="oracle_tf_graph.proto", package="oracle", syntax="proto3")

    def dim(m: descriptor_pb2.DescriptorProto) -> None:
        _message(m, "Dim", [("size", 1, _F.TYPE_INT64, opt, None), ("name", 2, _F.TYPE_STRING, opt, None)])

    _message(fdp, "TensorShapeProto", [("dim", 2, _F.TYPE_MESSAGE, rep, ".oracle.TensorShapeProto.Dim"),
                                       ("unknown_rank", 3, _F.TYPE_BOOL, opt, None)], nested=[dim])
    _message(fdp, "TensorProto", [
        ("dtype", 1, _F.TYPE_INT32, opt, None), ("tensor_shape", 2, _F.TYPE_MESSAGE, opt, ".oracle.TensorShapeProto"),
        ("version_number", 3, _F.TYPE_INT32, opt, None), ("tensor_content", 4, _F.TYPE_BYTES, opt, None),
        ("float_val", 5, _F.TYPE_FLOAT, rep, None), ("double_val", 6, _F.TYPE_DOUBLE, rep, None),
        ("int_val", 7, _F.TYPE_INT32, rep, None), ("int64_val", 10, _F.TYPE_INT64, rep, None),
    ])

    def list_value(m: descriptor_pb2.DescriptorProto) -> None:
        _message(m, "ListValue", [("s", 2, _F.TYPE_BYTES, rep, None), ("i", 3, _F.TYPE_INT64, rep, None),
                                  ("f", 4, _F.TYPE_FLOAT, rep, None), ("b", 5, _F.TYPE_BOOL, rep, None),
                                  ("type", 6, _F.TYPE_INT32, rep, None)])

    _message(fdp, "AttrValue", [
        ("list", 1, _F.TYPE_MESSAGE, opt, ".oracle.AttrValue.ListValue"), ("s", 2, _F.TYPE_BYTES, opt, None),
        ("i", 3, _F.TYPE_INT64, opt, None), ("f", 4, _F.TYPE_FLOAT, opt, None), ("b", 5, _F.TYPE_BOOL, opt, None),
        ("type", 6, _F.TYPE_INT32, opt, None), ("shape", 7, _F.TYPE_MESSAGE, opt, ".oracle.TensorShapeProto"),
        ("tensor", 8, _F.TYPE_MESSAGE, opt, ".oracle.TensorProto"),
    ], nested=[list_value])

    def attr_entry(m: descriptor_pb2.DescriptorProto) -> None:
        entry = _message(m, "AttrEntry", [("key", 1, _F.TYPE_STRING, opt, None),
                                          ("value", 2, _F.TYPE_MESSAGE, opt, ".oracle.AttrValue")])
        entry.options.map_entry = True

    _message(fdp, "NodeDef", [
        ("name", 1, _F.TYPE_STRING, opt, None), ("op", 2, _F.TYPE_STRING, opt, None),
        ("input", 3, _F.TYPE_STRING, rep, None), ("device", 4, _F.TYPE_STRING, opt, None),
        ("attr", 5, _F.TYPE_MESSAGE, rep, ".oracle.NodeDef.AttrEntry"),
    ], nested=[attr_entry])
    _message(fdp, "GraphDef", [("node", 1, _F.TYPE_MESSAGE, rep, ".oracle.NodeDef")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("oracle.GraphDef"))


GraphDef = _graphdef_class()
_NP = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}


def tensor_value(t) -> np.ndarray:  # type: ignore[no-untyped-def]
    dtype = _NP[t.dtype]
    shape = [d.size for d in t.tensor_shape.dim]
    if t.tensor_content:
        arr = np.frombuffer(t.tensor_content, dtype=dtype)
    else:
        vals = list(t.float_val) or list(t.double_val) or list(t.int_val) or list(t.int64_val) or [0]
        arr = np.asarray(vals, dtype=dtype)
        if arr.size == 1:
            arr = np.full(int(np.prod(shape)) if shape else 1, arr[0], dtype=dtype)
    return arr.reshape(shape)


def _same_pads(size: int, k: int, stride: int) -> tuple[int, int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2, out


def _pad_for(x: np.ndarray, kh: int, kw: int, strides, padding: str, value: float = 0.0) -> np.ndarray:  # type: ignore[no-untyped-def]
    if padding == "VALID":
        return x
    t, b, _ = _same_pads(x.shape[1], kh, strides[1])
    left, right, _ = _same_pads(x.shape[2], kw, strides[2])
    return np.pad(x, ((0, 0), (t, b), (left, right), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    """(N, Ho, Wo, C, kh, kw) view of every kh x kw window at the given strides."""
    v = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    return v[:, ::sh, ::sw]


def conv2d(x: np.ndarray, w: np.ndarray, strides, padding: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    kh, kw, _, _ = w.shape
    win = _windows(_pad_for(x, kh, kw, strides, padding), kh, kw, strides[1], strides[2])
    return np.einsum("nhwcij,ijco->nhwo", win, w, optimize=True)


def pool(x: np.ndarray, ksize, strides, padding: str, kind: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    kh, kw = ksize[1], ksize[2]
    if kind == "max":
        win = _windows(_pad_for(x, kh, kw, strides, padding, -np.inf), kh, kw, strides[1], strides[2])
        return win.max(axis=(4, 5))
    if padding != "VALID":
        raise NotImplementedError("AvgPool with SAME padding")
    return _windows(x, kh, kw, strides[1], strides[2]).mean(axis=(4, 5))


class Oracle:
    """Runs a frozen graph (bytes of a GraphDef) on NHWC float input, one node at a time."""

    def __init__(self, data: bytes) -> None:
        graph = GraphDef()
        graph.ParseFromString(data)
        self.graph = graph
        self.nodes = {n.name: n for n in graph.node}
        self.consts = {n.name: tensor_value(n.attr["value"].tensor) for n in graph.node if n.op == "Const"}

    def run(self, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        values: dict[str, np.ndarray] = {k: np.asarray(v, np.float64) for k, v in feeds.items()}

        def inputs(node) -> list[str]:  # type: ignore[no-untyped-def]
            return [i.split(":")[0] for i in node.input if not i.startswith("^")]

        order: list[str] = []
        seen: set[str] = set()
        stack = [(output, False)]
        while stack:  # iterative post-order (the graph is ~800 nodes deep)
            name, done = stack.pop()
            if done:
                order.append(name)
                continue
            if name in seen:
                continue
            seen.add(name)
            stack.append((name, True))
            stack.extend((i, False) for i in reversed(inputs(self.nodes[name])) if i not in seen)
        for name in order:
            if name in values:
                continue
            node = self.nodes[name]
            args = [values[i] for i in inputs(node)]
            values[name] = self._op(node, args)
        return values[output]

    def _op(self, node, a: list) -> np.ndarray:  # type: ignore[no-untyped-def]
        op, attr = node.op, node.attr
        if op == "Const":
            return self.consts[node.name].astype(np.float64) if self.consts[node.name].dtype.kind == "f" \
                else self.consts[node.name]
        if op == "Placeholder":
            raise KeyError(f"no value fed for placeholder {node.name!r}")
        if op == "Identity":
            return a[0]
        if op == "Conv2D":
            return conv2d(a[0], a[1], list(attr["strides"].list.i), attr["padding"].s.decode())
        if op in ("BiasAdd", "Add"):
            return a[0] + a[1]
        if op == "Mul":
            return a[0] * a[1]
        if op == "Relu":
            return np.maximum(a[0], 0)
        if op == "ConcatV2":
            return np.concatenate(a[:-1], axis=int(a[-1]))
        if op in ("MaxPool", "AvgPool"):
            return pool(a[0], list(attr["ksize"].list.i), list(attr["strides"].list.i), attr["padding"].s.decode(),
                        "max" if op == "MaxPool" else "avg")
        if op == "Reshape":
            return a[0].reshape([int(d) for d in a[1]])
        if op == "MatMul":
            x, w = a
            if attr["transpose_a"].b:
                x = x.T
            if attr["transpose_b"].b:
                w = w.T
            return x @ w
        if op == "FusedBatchNorm":
            if attr["is_training"].b:
                raise NotImplementedError("FusedBatchNorm in training mode")
            x, scale, offset, mean, var = a
            return (x - mean) / np.sqrt(var + attr["epsilon"].f) * scale + offset
        if op == "Square":
            return a[0] * a[0]
        if op == "Sum":
            axis = tuple(int(i) for i in np.atleast_1d(a[1]))
            return a[0].sum(axis=axis, keepdims=bool(attr["keep_dims"].b))
        if op == "Maximum":
            return np.maximum(a[0], a[1])
        if op == "Rsqrt":
            return 1.0 / np.sqrt(a[0])
        raise NotImplementedError(f"op {op} (node {node.name!r})")


def embed(oracle: Oracle, faces_rgb: np.ndarray) -> np.ndarray:
    """(N, 160, 160, 3) uint8 RGB crops -> (N, 512) float64 embeddings, one image at a time (the
    graph's batch is 1), normalised as FaceNet's fixed standardisation: (x - 127.5) / 128."""
    out = []
    for face in faces_rgb:
        x = (face.astype(np.float64)[None] - 127.5) / 128.0
        out.append(oracle.run({"input": x}, "embeddings")[0])
    return np.asarray(out)
