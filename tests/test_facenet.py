"""FaceNet (InceptionResnetV1) in PyTorch: checkpoint layout, loading, ONNX export, conversion.

Needs the export extra (torch, onnx); skipped without torch. No real weights are used: the
published checkpoint's layout is checked against an independent listing in
tests/data/facenet_vggface2_state_dict.txt, and numerics are checked on seeded random weights.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from lookalike_live import facenet, models  # noqa: E402
from lookalike_live.errors import ModelFormatError  # noqa: E402

pytestmark = pytest.mark.export

REPO = Path(__file__).resolve().parents[1]
LISTING = Path(__file__).parent / "data" / "facenet_vggface2_state_dict.txt"
RELEASE_SIZE = 111_898_327  # bytes of 20180402-114759-vggface2.pt (the spec's source.size)


def published_layout() -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every entry of the published checkpoint, in state-dict order."""
    rows = []
    for line in LISTING.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, dims = line.partition(" ")
        rows.append((name, tuple(int(d) for d in dims.split(",")) if dims.strip() else ()))
    return rows


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def faces(n: int, size: int = 160, seed: int = 0) -> np.ndarray:
    """float32 (n, 3, size, size) in [-1, 1]: what (x - 127.5) / 128 gives for uint8 pixels."""
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, size, size)).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> object:
    """One intra-op thread for torch in this module: on a small shared CPU (2 cores, other jobs
    running) torch's spinning OpenMP workers make a forward pass ~10x slower than one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def random_model() -> facenet.InceptionResnetV1:
    return facenet.randomize_(facenet.build_model(num_classes=0), seed=0)


@pytest.fixture(scope="module")
def random_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("facenet-onnx")
    path = facenet.export_random_onnx(folder / "facenet-random.onnx", seed=0)
    assert sorted(p.name for p in folder.iterdir()) == ["facenet-random.onnx"], "export left extra files"
    return path


@pytest.fixture(scope="module")
def vggface2_like_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with the published layout (8631 logits) and seeded random values."""
    model = facenet.randomize_(facenet.build_model(), seed=1)
    path = tmp_path_factory.mktemp("ckpt") / "random-vggface2.pt"
    torch.save(model.state_dict(), path)
    return path


# ---------------------------------------------------------------- checkpoint layout


def test_state_dict_matches_published_vggface2_checkpoint() -> None:
    expected = published_layout()
    got = [(k, tuple(v.shape)) for k, v in facenet.build_model().state_dict().items()]
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing and not extra, f"missing from model: {missing[:5]}; not in checkpoint: {extra[:5]}"
    assert [k for k, _ in got] == [k for k, _ in expected], "same entries, different state-dict order"


def test_published_listing_accounts_for_the_release_file_size() -> None:
    # The listing is transcribed by hand, so check it against a fact about the real file: its
    # tensor bytes must be the release size minus a zip/pickle overhead of well under 1 KB each.
    rows = published_layout()
    data = sum(math.prod(s) * (8 if n.endswith("num_batches_tracked") else 4) for n, s in rows)
    overhead = RELEASE_SIZE - data
    assert len(rows) == 716
    assert 0 < overhead < 400 * len(rows), f"tensor data {data} bytes vs release file {RELEASE_SIZE}"
    spec = models.get_spec("facenet-vggface2")
    assert spec.source.size == RELEASE_SIZE and spec.source.file == "20180402-114759-vggface2.pt"


def test_architecture_details() -> None:
    model = facenet.build_model()
    assert not model.training
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    assert len(norms) == 112 and {m.eps for m in norms} == {1e-3}
    assert [b.scale for b in model.repeat_1] == [0.17] * 5
    assert [b.scale for b in model.repeat_2] == [0.10] * 10
    assert [b.scale for b in model.repeat_3] == [0.20] * 5
    assert model.block8.scale == 1.0 and isinstance(model.block8.relu, torch.nn.Identity)
    assert model.last_linear.bias is None and model.logits.out_features == 8631
    assert facenet.build_model(num_classes=0).logits is None


def test_forward_shapes_and_unit_norm(random_model: facenet.InceptionResnetV1) -> None:
    x = torch.from_numpy(faces(3))
    with torch.no_grad():
        assert random_model.features(x).shape == (3, 1792, 3, 3)
        emb = random_model(x)
    assert emb.shape == (3, 512) and emb.dtype == torch.float32
    np.testing.assert_allclose(emb.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_random_weights_are_seeded_and_input_dependent() -> None:
    a = facenet.randomize_(facenet.build_model(num_classes=0), seed=3).state_dict()
    b = facenet.randomize_(facenet.build_model(num_classes=0), seed=3).state_dict()
    c = facenet.randomize_(facenet.build_model(num_classes=0), seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv2d_1a.conv.weight"], c["conv2d_1a.conv.weight"])
    # BatchNorm statistics are not the (0, 1) defaults
    assert a["repeat_2.0.branch0.bn.running_mean"].abs().max() > 0.05
    assert (a["repeat_2.0.branch0.bn.running_var"] - 1).abs().max() > 0.05


# ---------------------------------------------------------------- ONNX


def test_onnx_matches_pytorch_and_has_dynamic_batch(
    random_model: facenet.InceptionResnetV1, random_onnx: Path
) -> None:
    sess = session(random_onnx)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, out.name) == ("input", "embedding")
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 160, 160]
    assert isinstance(out.shape[0], str) and out.shape[1] == 512

    x = faces(4)
    (got,) = sess.run(None, {"input": x})
    with torch.no_grad():
        ref = random_model(torch.from_numpy(x)).numpy()
    assert got.shape == (4, 512) and got.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    # the check means something: different faces give clearly different embeddings
    cos = got @ got.T
    assert cos[~np.eye(4, dtype=bool)].max() < 0.99

    for n in (1, 7):
        xn = faces(n, seed=n)
        (yn,) = sess.run(None, {"input": xn})
        with torch.no_grad():
            rn = random_model(torch.from_numpy(xn)).numpy()
        assert yn.shape == (n, 512)
        assert np.abs(yn - rn).max() <= 1e-4


def test_onnx_graph_is_one_self_contained_file(random_onnx: Path) -> None:
    import onnx

    proto = onnx.load(str(random_onnx), load_external_data=False)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer), (
        "weights must live inside the .onnx file"
    )
    assert 80e6 < random_onnx.stat().st_size < 100e6


def test_verify_onnx_detects_a_different_model(random_onnx: Path) -> None:
    other = facenet.randomize_(facenet.build_model(num_classes=0), seed=5)
    with pytest.raises(ModelFormatError, match="disagree"):
        facenet.verify_onnx(other, random_onnx, batch_sizes=(2,))


def test_export_rejects_tiny_inputs(tmp_path: Path, random_model: facenet.InceptionResnetV1) -> None:
    with pytest.raises(ValueError, match="75x75"):
        facenet.export_onnx(random_model, tmp_path / "x.onnx", size=64)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_dynamo_exporter_also_works(tmp_path: Path, random_model: facenet.InceptionResnetV1) -> None:
    pytest.importorskip("onnxscript")
    path = facenet.export_onnx(random_model, tmp_path / "dynamo.onnx", exporter="dynamo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynamo.onnx"]
    assert facenet.verify_onnx(random_model, path, batch_sizes=(1, 7)) <= 1e-4


# ---------------------------------------------------------------- checkpoints


def test_load_checkpoint_round_trip(vggface2_like_checkpoint: Path) -> None:
    model = facenet.load_checkpoint(vggface2_like_checkpoint)
    assert not model.training and model.num_classes == 8631
    saved = torch.load(vggface2_like_checkpoint, weights_only=True)
    loaded = model.state_dict()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)


def test_load_checkpoint_tolerates_missing_batch_counters_and_dataparallel_prefix(tmp_path: Path) -> None:
    state = facenet.build_model(num_classes=10).state_dict()
    state = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pt")
    assert facenet.load_checkpoint(tmp_path / "old.pt").num_classes == 10


def test_wrong_shape_names_the_tensor(tmp_path: Path) -> None:
    state = facenet.build_model().state_dict()
    state["repeat_2.3.branch1.1.conv.weight"] = torch.zeros(128, 128, 7, 1)  # 7x1 where 1x7 belongs
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ModelFormatError) as info:
        facenet.load_checkpoint(tmp_path / "bad.pt")
    msg = str(info.value)
    assert "repeat_2.3.branch1.1.conv.weight: checkpoint (128, 128, 7, 1) vs model (128, 128, 1, 7)" in msg
    assert "shape mismatches (1)" in msg and "20180402-114759-vggface2.pt" in msg


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    state = facenet.build_model().state_dict()
    del state["mixed_7a.branch2.2.bn.running_var"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(ModelFormatError, match=r"missing keys \(1\): mixed_7a\.branch2\.2\.bn\.running_var"):
        facenet.load_checkpoint(tmp_path / "missing.pt")

    state = facenet.build_model().state_dict()
    state["conv2d_1a.conv.bias"] = torch.zeros(32)
    with pytest.raises(ModelFormatError, match=r"unexpected keys \(1\): conv2d_1a\.conv\.bias"):
        facenet.load_state_dict(facenet.build_model(), state)

    renamed = {k.replace("conv2d_", "Conv2d_"): v for k, v in facenet.build_model().state_dict().items()}
    with pytest.raises(
        ModelFormatError, match=r"missing keys \(\d+\): conv2d_1a\.conv\.weight, .*\(\+\d+ more\)"
    ):
        facenet.load_state_dict(facenet.build_model(), renamed)


def test_unreadable_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFormatError, match="weights_only"):
        facenet.load_checkpoint(tmp_path / "junk.pt")

    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled-module.pt")  # a whole module, not a state dict
    with pytest.raises(ModelFormatError, match="cannot read FaceNet checkpoint"):
        facenet.load_checkpoint(tmp_path / "pickled-module.pt")

    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ModelFormatError, match="not a state dict"):
        facenet.load_checkpoint(tmp_path / "list.pt")

    with pytest.raises(ModelFormatError, match="does not exist"):
        facenet.load_checkpoint(tmp_path / "absent.pt")


# ---------------------------------------------------------------- models.convert end to end


def test_models_convert_end_to_end(tmp_path: Path, vggface2_like_checkpoint: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    shutil.copyfile(vggface2_like_checkpoint, store / "20180402-114759-vggface2.pt")

    out = models.convert("facenet-vggface2", store=store)

    assert out == store / "facenet-vggface2.onnx" and out.is_file()
    assert sorted(p.name for p in store.iterdir()) == ["20180402-114759-vggface2.pt", "facenet-vggface2.onnx"]
    spec, path = models.require("facenet-vggface2", store=store)
    assert path == out
    sess = session(out)
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["embedding"]
    # the checkpoint has the 8631-class logits layer; only the embedding graph is exported
    import onnx

    proto = onnx.load(str(out))
    assert all(8631 not in init.dims for init in proto.graph.initializer)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    reference = facenet.load_checkpoint(vggface2_like_checkpoint)
    for n in (1, 5):
        x = faces(n, seed=10 + n)
        (emb,) = sess.run(["embedding"], {"input": x})
        assert emb.shape == (n, spec.dim) == (n, 512)
        with torch.no_grad():
            assert np.abs(emb - reference(torch.from_numpy(x)).numpy()).max() <= 1e-4


def test_models_convert_rejects_a_foreign_checkpoint_and_leaves_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    torch.save({"fc.weight": torch.zeros(4, 4)}, store / "20180402-114759-vggface2.pt")
    with pytest.raises(ModelFormatError, match=r"missing keys \(\d+\): conv2d_1a"):
        models.convert("facenet-vggface2", store=store)
    assert sorted(p.name for p in store.iterdir()) == ["20180402-114759-vggface2.pt"]


# ---------------------------------------------------------------- import hygiene


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_without_torch_the_import_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from lookalike_live.errors import ModelFormatError\n"
        "try:\n    import lookalike_live.facenet\n"
        "except ImportError as exc:\n"
        "    assert isinstance(exc, ModelFormatError), type(exc)\n"
        "    print(exc)\n"
        "else:\n    raise SystemExit('imported without torch')\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    assert "pip install 'lookalike-live[export]'" in result.stdout


def test_models_module_does_not_import_torch() -> None:
    result = _run_python(
        "import sys, lookalike_live.models, lookalike_live.types; print('torch' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
