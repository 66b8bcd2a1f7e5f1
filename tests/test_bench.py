"""The benchmark suite end to end (real models, real data): one command gives the JSON, the plots
and the README's Results section."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from lookalike_live.bench.report import BEGIN, END, render, update_readme

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_writes_json_plots_and_readme_results(tmp_path: Path, model_store: Path, celeba_dir: Path,
                                                    hamilton_clip: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Results\n\n{BEGIN}\nold text\n{END}\n\n## After\nkept\n")
    out, plots = tmp_path / "res" / "bench.json", tmp_path / "res"
    env = {**os.environ, "LOOKALIKE_MODELS_DIR": str(model_store)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--quick", "--sections", "accuracy", "detect", "overlay",
         "--out", str(out), "--plots", str(plots), "--readme", str(readme)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert json.loads(proc.stdout) == res
    section, det = res["sections"]["accuracy"], res["sections"]["detect"]
    # each section ran in its own process and reports its own peak memory
    assert section["peak_rss_mb"] > 50 and det["peak_rss_mb"] > 50 and res["peak_rss_mb"] >= section["peak_rss_mb"]
    # real FaceNet is not in this store: said so, never filled in
    assert section["by_model"]["facenet-casia-webface"]["not_run"].startswith("not installed")
    acc = section["by_model"]["mobilefacenet"]
    assert acc["model"] == "mobilefacenet" and acc["queries"] > 200 and acc["nonmated"] > 150
    assert {v["name"] for v in acc["variants"]} >= {"baseline", "all"}
    assert det["detection"]["full"]["ms_p50"] > 0 and len(det["detection"]["full"]["samples_ms"]) == 60
    for name in ("roc.png", "scores.png", "pca.png", "latency.png"):
        img = cv2.imread(str(plots / name))
        assert img is not None and img.std() > 10, name
    text = readme.read_text()
    assert "old text" not in text and text.endswith("## After\nkept\n") and text.count(BEGIN) == 1
    assert f"{acc['top1']:.3f}" in text and f"{acc['tpir_at_fpir_0.01']:.3f}" in text
    assert "| Identification, facenet-casia-webface | not run: not installed" in text
    assert f"{det['detection']['full']['ms_p50']:.2f} ms/frame" in text
    assert "Not in this run: embed, build, scale, search, live, monitor." in text
    ov = res["sections"]["overlay"]["cases"]
    assert [(c["size"], c["faces"]) for c in ov] == [(s, n) for s in ("640x360", "1280x720") for n in (1, 4, 16)]
    assert all(c["headless_ms"] > 0 and c["qt_ms"] > 0 and c["cv2_reference_ms"] > 0 for c in ov)
    assert ov[0]["with_photo"] == 1 and "| Overlay, 16 faces at 640x360" in text
    assert "![Latency histograms" in text and "(res/latency.png)" in text
    # the README can be rewritten from the JSON alone, and then nothing changes
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--from-json", str(out),
                           "--readme", str(readme)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert readme.read_text() == text and "unchanged" in proc.stderr


@pytest.mark.slow
def test_monitor_bench_measures_two_cameras_from_one_relay(tmp_path: Path, model_store: Path, hamilton_clip: Path,
                                                         shared_models: Path) -> None:
    """The monitor section, smallest: one loopback relay serving two paths, two cameras at 5 fps."""
    from rtsp_server import missing_tools

    from lookalike_live.bench import monitor

    if missing_tools():
        pytest.skip(missing_tools())
    res = monitor.run(hamilton_clip, model="mobilefacenet", store=model_store, shared_models=shared_models,
                      cameras=(2,), rates=(5.0,), warmup=4.0, seconds=5.0, plots_dir=tmp_path)
    (run,) = res["runs"]
    assert run["cameras"] == 2 and set(run["per_camera_fps"]) == {"cam0", "cam1"}  # both paths played
    assert run["streams"] == "out of step"
    assert 4.0 <= run["fps_min"] <= run["fps_max"] <= 5.6, run  # 5 a second each
    assert 40 < run["skipped_per_s"] < 60  # the other ~25 of 30 frames a second, of each of the 2 cameras
    assert run["cpu_cores"] > 0 and run["peak_rss_mb"] > 100 and run["decision_p95_ms"] is not None
    img = cv2.imread(res["plot"])
    assert img is not None and img.std() > 10
    md = render({"machine": {}, "sections": {"monitor": res}})
    assert "| 2 | 5.0 | full (default) |" in md


def test_report_names_failed_and_missing_sections(tmp_path: Path) -> None:
    result = {"machine": {"cpus": 2, "processor": "x86_64", "platform": "Linux", "python": "3.11"},
              "started": "today",
              "sections": {"search": {"error": "GalleryUnavailableError: cannot reach Milvus"},
                           "live": {"model": "m", "modes": {"tracking": {
                               "frames": 10, "fps": 50.0, "faces_per_frame": 1.0, "embeddings_per_frame": 0.1}},
                               "peak_rss_mb": 321.0}}}
    md = render(result)
    assert md.startswith(BEGIN) and md.endswith(END)
    assert "search (failed: GalleryUnavailableError: cannot reach Milvus)" in md and "accuracy" in md
    assert "| 50.0 fps" in md and "n/a" in md and "live 321 MB" in md
    readme = tmp_path / "R.md"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="results:begin"):
        update_readme(readme, md)
