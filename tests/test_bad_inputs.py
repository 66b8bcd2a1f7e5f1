"""Every command over a corpus of bad inputs (tests/bad_inputs.py, made here, nothing committed):
no traceback reaches the user, every skip has a reason, the exit code says whether the job did
its work, and a re-run finishes the job. Run as users run them: the CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import Case, make_image_corpus, make_video_corpus
from live_fixtures import LiveGallery, gallery_copy, live_gallery  # noqa: F401

MODEL = ["--model", "mobilefacenet", "--backend", "onnx"]


def _cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "lookalike_live.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def corpus(celeba_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Case]]:
    root = tmp_path_factory.mktemp("corpus") / "people"
    photos = sorted((celeba_dir / "Img" / "img_celeba").glob("*.jpg"))[:4]
    return root, make_image_corpus(root, photos)


@pytest.fixture
def env(model_store: Path, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "LOOKALIKE_MODELS_DIR": str(model_store), "LOOKALIKE_DATA_DIR": str(tmp_path / "data")}


def _reasons(skipped: dict[str, str], cases: list[Case]) -> dict[str, str]:
    """{case description: its skip reason} for the unreadable cases."""
    by_path = {str(c.path): c.what for c in cases}
    return {by_path[p]: why for p, why in skipped.items()}


def test_embed_over_the_corpus(corpus: tuple[Path, list[Case]], env: dict[str, str], tmp_path: Path) -> None:
    root, cases = corpus
    out = tmp_path / "faces.npz"
    proc = _cli(env, "embed", str(root), "--out", str(out), "--no-progress", "--json", *MODEL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    unreadable = {c.what for c in cases if not c.readable}
    reasons = _reasons(summary["skipped"], cases)
    assert set(reasons) == unreadable, reasons
    assert "empty file" in reasons["a zero-byte file"]
    assert "megapixels, more than the 150" in reasons["a PNG claiming 40000x40000 pixels"]
    assert all("not a readable image" in reasons[w] for w in ("a JPEG cut after 600 bytes", "a text file named .jpg"))
    assert summary["images"] == len(cases) and summary["faces"] >= 8  # the odd but readable ones have faces
    assert out.is_file() and not list(tmp_path.glob("*.part.npz"))


def test_embed_refuses_a_bad_out_before_any_work_and_a_broken_model_at_once(
        corpus: tuple[Path, list[Case]], env: dict[str, str], model_store: Path, tmp_path: Path) -> None:
    root, _ = corpus
    for out, why in ((tmp_path, "is a folder"), (tmp_path / "faces.txt", "must end in .npz"),
                     (Path("/proc/faces.npz"), "cannot write in its folder /proc")):  # writable to os.access as root
        proc = _cli(env, "embed", str(root), "--out", str(out), *MODEL)
        assert proc.returncode == 2 and why in proc.stderr, proc.stderr[-2000:]
    broken = tmp_path / "store"
    broken.mkdir()
    for f in model_store.iterdir():
        (broken / f.name).symlink_to(f)
    (broken / "mobilefacenet.onnx").unlink()
    (broken / "mobilefacenet.onnx").write_bytes((model_store / "mobilefacenet.onnx").read_bytes()[:100_000])
    proc = _cli({**env, "LOOKALIKE_MODELS_DIR": str(broken)}, "embed", str(root), "--out", str(tmp_path / "x.npz"), *MODEL)
    assert proc.returncode == 2 and "is not a valid ONNX model" in proc.stderr, proc.stderr[-2000:]
    assert "models fetch mobilefacenet" in proc.stderr and not (tmp_path / "x.npz").exists()


def test_index_build_over_the_corpus_and_its_rerun(corpus: tuple[Path, list[Case]], env: dict[str, str]) -> None:
    root, cases = corpus
    proc = _cli(env, "index", "build", "--dataset", str(root), "--format", "folders", "--no-progress", "--json", *MODEL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = json.loads(proc.stdout)
    reasons = {c.what: first["skipped"][str(c.path.relative_to(root))]
               for c in cases if str(c.path.relative_to(root)) in first["skipped"]}
    assert {c.what for c in cases if not c.readable} <= set(reasons), reasons
    assert reasons["a 1x1 PNG"] == "no face found"
    assert first["faces"] + len(first["skipped"]) == first["images"] == len(cases)
    again = json.loads(_cli(env, "index", "build", "--dataset", str(root), "--format", "folders", "--no-progress",
                            "--json", *MODEL).stdout)
    assert (again["faces"], again["processed"]) == (0, 0)  # the job is done: nothing is tried again
    assert again["already_indexed"] == first["faces"] and again["previously_skipped"] == len(first["skipped"])


def test_match_lists_every_photo_and_never_creates_a_gallery(corpus: tuple[Path, list[Case]], env: dict[str, str],
                                                             tmp_path: Path) -> None:
    root, cases = corpus
    missing = tmp_path / "nowhere" / "gallery.db"
    proc = _cli(env, "match", str(cases[0].path), "--milvus-uri", str(missing), *MODEL)
    assert proc.returncode == 2 and "there is no gallery at" in proc.stderr and "index build" in proc.stderr
    assert not missing.exists()
    db = tmp_path / "g.db"
    built = _cli(env, "index", "build", "--dataset", str(root), "--format", "folders", "--no-progress",
                 "--milvus-uri", str(db), *MODEL)
    assert built.returncode == 0, built.stderr[-2000:]
    proc = _cli(env, "match", str(root), "--json", "--milvus-uri", str(db), *MODEL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    matched = {f["path"] for f in out["faces"]}
    listed = matched | set(out["no_face"]) | set(out["skipped"])
    assert listed == {str(c.path) for c in cases}  # every photo is accounted for
    assert str(root / "person_b" / "one_pixel.png") in out["no_face"]
    proc = _cli(env, "match", str(root / "person_b" / "zero_bytes.jpg"), "--milvus-uri", str(db), *MODEL)
    assert proc.returncode == 1 and "empty file" in proc.stderr  # nothing could be read: the job did nothing


def test_run_over_broken_videos(hamilton_clip: Path, env: dict[str, str], gallery_copy: LiveGallery,  # noqa: F811
                                tmp_path: Path) -> None:
    from shutil import which

    if which("ffmpeg") is None:
        pytest.skip("ffmpeg not found: install the package 'ffmpeg'")
    videos = make_video_corpus(tmp_path / "videos", hamilton_clip)
    db = ["--milvus-uri", gallery_copy.uri]
    proc = _cli(env, "run", "--source", str(videos["truncated"]), "--headless", "--json", *db, *MODEL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 0 < json.loads(proc.stdout)["frames"] < 275  # it played until the cut
    for name in ("moov_less", "empty", "text"):
        proc = _cli(env, "run", "--source", str(videos[name]), "--headless", *db, *MODEL)
        assert proc.returncode == 2 and "cannot open video file" in proc.stderr, (name, proc.stderr[-2000:])


def test_eval_identify_over_the_corpus(corpus: tuple[Path, list[Case]], env: dict[str, str]) -> None:
    root, cases = corpus
    proc = _cli(env, "eval", "identify", "--dataset", str(root), "--format", "folders", "--gallery-per-id", "1",
                "--json", "--no-progress", *MODEL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    reasons = {c.what: res["skipped"][str(c.path.relative_to(root))]
               for c in cases if str(c.path.relative_to(root)) in res["skipped"]}
    assert {c.what for c in cases if not c.readable} <= set(reasons), reasons
    assert res["images"] == len(cases) and res["faces"] + len(res["skipped"]) == len(cases)


def test_monitor_over_broken_videos(hamilton_clip: Path, env: dict[str, str], gallery_copy: LiveGallery,  # noqa: F811
                                    tmp_path: Path) -> None:
    """Broken cameras beside a good one: the good one is monitored, each broken one is reported
    with its reason; when every camera is broken the exit code says the monitor did nothing."""
    from shutil import which

    if which("ffmpeg") is None:
        pytest.skip("ffmpeg not found: install the package 'ffmpeg'")
    videos = make_video_corpus(tmp_path / "videos", hamilton_clip)
    broken = [f"--camera={name}={videos[name]}" for name in ("moov_less", "empty", "text")]
    events = tmp_path / "events.jsonl"
    common = ["--events", str(events), "--duration", "4", "--json", "--milvus-uri", gallery_copy.uri, *MODEL]
    proc = _cli(env, "monitor", f"--camera=good={hamilton_clip}", *broken, *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    cams = summary["cameras"]
    assert cams["good"]["frames"] > 0 and summary["outputs_dropped"] == 0
    for name in ("moov_less", "empty", "text"):
        assert cams[name]["status"] == "error" and "cannot open video file" in cams[name]["error"], cams[name]
    assert not [line for line in proc.stderr.splitlines() if line.startswith(("[ WARN", "[mov,"))]  # native noise
    proc = _cli(env, "monitor", *broken, *common)
    assert proc.returncode == 1 and "no camera could be monitored" in proc.stderr, proc.stderr[-2000:]


def test_index_build_vggface2_layout_over_the_corpus(corpus: tuple[Path, list[Case]], env: dict[str, str],
                                                     tmp_path: Path) -> None:
    import shutil

    root, cases = corpus
    vgg = tmp_path / "vggface2"
    shutil.copytree(root, vgg / "train", symlinks=True)
    (vgg / "identity_meta.csv").write_bytes(b"Class_ID, Name, Sample_Num, Flag, Gender\n"
                                            b"person_a, \"Ada\\xff\", 2, 1, f\nbroken line\n")
    proc = _cli(env, "index", "build", "--dataset", str(vgg), "--format", "vggface2", "--no-progress", "--json", *MODEL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert res["faces"] + len(res["skipped"]) == res["images"] == len(cases)
    assert {c.what for c in cases if not c.readable} <= {
        c.what for c in cases if f"train/{c.path.relative_to(root)}" in res["skipped"]}


def test_every_readable_case_decodes_to_upright_bgr(corpus: tuple[Path, list[Case]]) -> None:
    from lookalike_live.errors import ImageReadError
    from lookalike_live.imageio import read_image

    root, cases = corpus
    upright = read_image(root / "person_b" / "grey.png").shape  # the same face, stored upright
    for case in cases:
        if not case.readable:
            with pytest.raises(ImageReadError):
                read_image(case.path)
            continue
        img = read_image(case.path)
        assert img.dtype.name == "uint8" and img.ndim == 3 and img.shape[2] == 3, case.what
    assert read_image(root / "person_b" / "exif_rotated.jpg").shape == upright  # stored on its side, shown upright
