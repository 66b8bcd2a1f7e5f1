"""The README's "Results" section, written from one ``scripts/bench.py`` JSON.

:func:`render` turns the suite's JSON into Markdown: one table of headline figures, each next to
its in-run reference (bare model, exact search, no tracking, nearest-photo baseline), the
improvements study, peak memory per section and links to the plots; :func:`update_readme`
replaces the text between the two markers in README.md. Sections that did not run, or failed,
are said to be missing, never filled in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"

PLOT_TITLES = {
    "roc.png": "ROC: query vs gallery identity, nearest photo vs identity centroid, with and without flip TTA",
    "scores.png": "Genuine vs impostor scores with the calibrated threshold",
    "pca.png": "Embeddings of 20 identities, PCA 2-D",
    "latency.png": "Latency histograms: search (nq=1, nq=8), live frame time, detection",
    "scale.png": "Index build rate and peak memory against the number of photos (synthetic CelebA trees)",
    "monitor.png": "The monitor: frames analysed a second per camera and decision latency p95 against the cameras",
}


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def _ok(sections: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    sec = sections.get(name)
    return sec if isinstance(sec, dict) and "error" not in sec else None


def accuracy_by_model(acc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The accuracy section's results per model (a single-model section, as older runs wrote it, too)."""
    if "by_model" in acc:
        return {m: r for m, r in acc["by_model"].items() if isinstance(r, dict)}
    return {acc.get("model", "?"): acc}


#: how each match_by mode is named in the README's tables
MATCHING_SHOWN = {"centred": "gallery-centred identity centroid", "identity": "identity centroid", "face": "nearest photo"}


def _accuracy_rows(section: dict[str, Any]) -> list[str]:
    rows = []
    for model, acc in accuracy_by_model(section).items():
        if "top1" not in acc:
            rows.append(f"| Identification, {model} | not run: {str(acc.get('not_run', 'no figures'))[:90]} | | |")
            continue
        variants = {v["name"]: v for v in acc.get("variants", [])}
        base = variants.get("baseline")
        m = acc["matching"]
        what = MATCHING_SHOWN.get(m["match_by"], m["match_by"]) + (" + flip" if m["flip"] else "")
        ref = f"nearest photo: {_f(base['top1'])}" if base else "n/a"
        rows.append(f"| Identification top-1 ({model}, {acc['queries']} queries, {acc['identities']} identities) "
                    f"| {_f(acc['top1'])} ({what}) | {ref} | " + (
                    f"{acc['top1'] - base['top1']:+.3f}" if base else "n/a") + " |")
        if "tpir_at_fpir_0.01" in acc:
            ref = f"nearest photo: {_f(base['tpir_at_fpir_0.01'])}" if base and "tpir_at_fpir_0.01" in base else "n/a"
            rows.append(f"| Open-set TPIR at FPIR 1 %, {model} ({acc.get('nonmated', 0)} probes of absent people) "
                        f"| {_f(acc['tpir_at_fpir_0.01'])} | {ref} | "
                        + (f"{acc['tpir_at_fpir_0.01'] - base['tpir_at_fpir_0.01']:+.3f}" if base else "n/a") + " |")
        marked = acc.get("gallery_by_landmarks")
        if marked:
            rows.append(f"| Gallery placed by landmarks, {model} (a landmark file from our detector) | top-1 "
                        f"{_f(marked['top1'])}, TPIR@FPIR 1 % {_f(marked.get('tpir_at_fpir_0.01'))} | detected: top-1 "
                        f"{_f(acc['top1'])}, TPIR {_f(acc.get('tpir_at_fpir_0.01'))} | "
                        f"{marked['top1'] - acc['top1']:+.3f}, "
                        + (f"{marked['tpir_at_fpir_0.01'] - acc['tpir_at_fpir_0.01']:+.3f}"
                           if marked.get("tpir_at_fpir_0.01") is not None and "tpir_at_fpir_0.01" in acc else "n/a")
                        + " |")
        rows.append(f"| Calibrated threshold, {model} (FAR {acc['far']}) | {_f(acc['threshold'])} "
                    f"(TAR {_f(acc['tar_at_far'])}) | | |")
    return rows


def _build_rows(build: dict[str, Any]) -> list[str]:
    rows = []
    for name, b in build.items():
        if not isinstance(b, dict) or "build_images_per_second" not in b:
            continue
        workers = f", {b['workers']} prepare worker{'s' if b.get('workers') != 1 else ''}" if "workers" in b else ""
        rows.append(f"| Index build, {name} ({b['photos']} photos{workers}; weights: {b['weights']}) "
                    f"| {_f(b['build_images_per_second'], 1)} img/s | bare embedder "
                    f"{_f(b['bare_embedder_images_per_second'], 1)} img/s | {_f(b['build_vs_bare'], 2)}x |")
    return rows


def _scale_rows(scale: dict[str, Any]) -> list[str]:
    rows = []
    for n, r in scale.get("by_size", {}).items():
        res = r.get("resume", {})
        rows.append(f"| Index build at scale, {scale.get('model')}, {int(n):,} synthetic photos "
                    f"| {_f(r['images_per_second'], 1)} img/s, peak RSS {_f(r['peak_rss_mb'], 0)} MB "
                    f"({_f(r['peak_rss_minus_vectors_mb'], 0)} MB without the {_f(r['vectors_mb'], 0)} MB of vectors, "
                    f"{_f(r.get('peak_rss_minus_gallery_mb'), 0)} MB without the gallery's rows), "
                    f"worker {_f(r['workers_peak_rss_mb'], 0)} MB, {_f(r['gallery_disk_mb'], 0)} MB on disk, search p50 "
                    f"{_f(r['search_p50_ms'], 2)} ms | killed at 50 %: resumed in {_f(res.get('resume_seconds'), 1)} s, "
                    f"{res.get('photos_read_again', 'n/a')} photos read again (insert batch {res.get('insert_batch')}) "
                    f"| same faces as uninterrupted: {'yes' if res.get('same_faces_as_uninterrupted') else 'no'} |")
    server = scale.get("milvus_server") or {}
    for n, r in server.items():
        if isinstance(r, dict) and "peak_rss_mb" in r:
            rows.append(f"| Same build into a Milvus server, {int(n):,} photos | {_f(r['images_per_second'], 1)} img/s, "
                        f"peak RSS {_f(r['peak_rss_mb'], 0)} MB (no database in the process), worker "
                        f"{_f(r['workers_peak_rss_mb'], 0)} MB | | |")
    if "skipped" in server:
        rows.append(f"| Same builds into a Milvus server | skipped: {str(server['skipped'])[:80]} | | |")
    return rows


def monitor_table(mon: dict[str, Any]) -> list[str]:
    """The ``monitor`` section as its own table: one row per (cameras, rate, detector) run."""
    if "runs" not in mon:
        return [f"The monitor section did not run: {str(mon.get('not_run', 'no figures'))[:100]}."]
    lines = [f"The monitor on {mon.get('cpus', '?')} cores ({mon.get('model')}, weights {mon.get('weights')}): N cameras "
             "from one loopback RTSP relay (the sample clip, 640x360 at 29.97 fps, the streams out of step unless "
             "marked), over "
             f"{_f(mon.get('seconds'), 0)} s after a {_f(mon.get('warmup_s'), 0)} s warm-up; decision latency over the "
             "whole run (p95: the worst camera's).", "",
             "| cameras | detect_fps | detector | analysed fps per camera min / median / max | min/max | "
             "skipped/s | drops/s | rate scale | decision p50 / p95 ms | CPU cores | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in mon["runs"]:
        det = r.get("detector", "default")
        det = ("full (default)" if det == "default" else det) + (", streams in step" if r.get("streams") == "in step" else "")
        lines.append(f"| {r['cameras']} | {r['detect_fps']} | {det} | "
                     f"{_f(r['fps_min'], 2)} / "
                     f"{_f(r['fps_median'], 2)} / {_f(r['fps_max'], 2)} | {_f(r['min_over_max'], 2)} | "
                     f"{_f(r['skipped_per_s'], 0)} | {_f(r['drops_per_s'], 1)} | {_f(r.get('rate_scale'), 2)} | "
                     f"{_f(r.get('decision_p50_ms'), 0)} / {_f(r.get('decision_p95_ms'), 0)} | {_f(r['cpu_cores'], 2)} | "
                     f"{_f(r['peak_rss_mb'], 0)} |")
    return lines


def _search_rows(search: dict[str, Any]) -> list[str]:
    rows = []
    for name, b in search.get("backends", {}).items():
        s = b.get("search") if isinstance(b, dict) else None
        if not s:
            rows.append(f"| Search, {name} | skipped: {str(b.get('skipped', 'no figures'))[:80]} | | |")
            continue
        size = f"{search['n']:,} x {search['dim']}"
        nq8 = s.get("nq8") or {}
        how = f" (HNSW ef {b['ef']})" if b.get("ef") else ""
        rows.append(f"| Search p50, {name}{how}, {size} | nq=1 {_f(s['nq1']['p50_ms'], 2)} ms, nq=8 "
                    f"{_f(nq8.get('p50_ms'), 2)} ms | exact numpy top-1 | recall@1 {_f(s['recall@1'])} |")
        sweep = b.get("search_by_ef") or {}
        if sweep:
            rows.append("| Same, by HNSW ef: nq=8 p50 (recall@1) | "
                        + ", ".join(f"ef {ef}: {_f((m.get('nq8') or {}).get('p50_ms'), 1)} ms ({_f(m['recall@1'])})"
                                    for ef, m in sweep.items())
                        + " | exact numpy top-1 | |")
        for key, what in (("search_centred", "Centred identity search p50 (live default)"),
                          ("search_identity", "Identity search p50")):
            si = b.get(key)
            if si:
                rows.append(f"| {what}, {name}, {b.get('centroids', '?'):,} centroids "
                            f"| nq=1 {_f(si['nq1']['p50_ms'], 2)} ms, nq=8 {_f((si.get('nq8') or {}).get('p50_ms'), 2)} ms "
                            f"| exact numpy over the centroids | recall@1 {_f(si['recall@1'])} |")
        native = b.get("lite_native_indexed")
        if native:
            rows.append(f"| Search p50, Milvus Lite's own search, {size} | nq=1 {_f(native['nq1']['p50_ms'], 1)} ms "
                        f"| the local index above | {_f(native['nq1']['p50_ms'] / max(s['nq1']['p50_ms'], 1e-9), 0)}x "
                        "slower |")
    return rows


def _live_rows(live: dict[str, Any]) -> list[str]:
    m = live.get("modes", {})
    if "tracking" not in m:
        return []
    t, n = m["tracking"], m.get("no-tracking")
    ref = f"every face every frame: {_f(n['fps'], 1)} fps" if n else "n/a"
    return [f"| Live, {live['model']} on the clip ({t['frames']} frames, {_f(t['faces_per_frame'], 2)} faces/frame) "
            f"| {_f(t['fps'], 1)} fps, {_f(t['embeddings_per_frame'], 3)} embeddings/frame | {ref} "
            f"| {_f(live.get('speedup'), 1)}x |"]


def _overlay_rows(ov: dict[str, Any]) -> list[str]:
    rows = []
    for c in ov.get("cases", []):
        if c["faces"] not in (1, 16):
            continue
        qt = f", Qt {_f(c['qt_ms'], 2)} ms" if "qt_ms" in c else ""
        ratio = c["headless_ms"] / c["cv2_reference_ms"] if c.get("cv2_reference_ms") else None
        rows.append(f"| Overlay, {c['faces']} face{'s' if c['faces'] > 1 else ''} at {c['size']} (layout + draw; "
                    f"{c['with_photo']} with photo) | headless {_f(c['headless_ms'], 2)} ms (layout "
                    f"{_f(c['layout_ms'], 2)}){qt} | OpenCV boxes + ASCII labels {_f(c['cv2_reference_ms'], 2)} ms "
                    f"| {_f(ratio, 1)}x the time |")
    return rows


def _detect_rows(det: dict[str, Any]) -> list[str]:
    d = det.get("detection", {})
    if "full" not in d:
        return []
    f, s = d["full"], d.get("short", {})
    return [f"| Detection, BlazeFace full range ({det['frame_size'][0]}x{det['frame_size'][1]}) "
            f"| {_f(f['ms_p50'], 2)} ms/frame p50, {_f(f['faces_per_frame'], 2)} faces/frame "
            f"| short range: {_f(s.get('ms_p50'), 2)} ms, {_f(s.get('faces_per_frame'), 2)} faces/frame | |"]


def _embed_rows(emb: dict[str, Any]) -> list[str]:
    rows = []
    for name, m in emb.get("models", {}).items():
        best = max((r for r in m.get("results", []) if "bare_img_s" in r), key=lambda r: r["batch"], default=None)
        if best:
            rows.append(f"| Embedding, {name} ({m.get('weights')}), batch {best['batch']} "
                        f"| {_f(best['embed_img_s'], 1)} img/s | bare ONNX Runtime session {_f(best['bare_img_s'], 1)} "
                        f"img/s | {_f(1 + best['overhead'], 3)}x the time |")
    return rows


def render(result: Mapping[str, Any], plots_dir: str | Path | None = None, readme_dir: str | Path | None = None
           ) -> str:
    """Markdown for README's Results section from the suite's JSON (``run_suite``'s dict)."""
    sections = result.get("sections", {})
    mach = result.get("machine", {})
    later = {n: t for n, t in result.get("section_started", {}).items() if n in sections}
    lines = [BEGIN,
             "<!-- generated by `scripts/bench.py --readme README.md`: edit lookalike_live/bench/report.py, "
             "not this text -->",
             f"Measured by `scripts/bench.py{' --quick' if result.get('quick') else ''}` on "
             f"{mach.get('cpus', '?')} CPU cores ({mach.get('processor', '?')}, {mach.get('platform', '?')}), "
             f"Python {mach.get('python', '?')}, ONNX Runtime {mach.get('onnxruntime', '?')} "
             f"({', '.join(mach.get('providers', []))}), started {result.get('started', '?')}. "
             "FaceNet runs with seeded random weights where its real weights are not installed: "
             "its speed is real, its accuracy is not measured.",
             *([f"Re-run later, on the same machine: {', '.join(f'{n} (started {t})' for n, t in later.items())}; "
                "each figure is still next to its own in-run reference."] if later else []),
             "",
             "| Stage | Figure | In-run reference | Ratio / difference |",
             "|---|---|---|---|"]
    builders = (("accuracy", _accuracy_rows), ("detect", _detect_rows), ("embed", _embed_rows),
                ("build", _build_rows), ("scale", _scale_rows), ("search", _search_rows), ("live", _live_rows), ("overlay", _overlay_rows))
    missing = []
    for name, fn in builders:
        sec = _ok(sections, name)
        if sec is None:
            missing.append(name if name not in sections else f"{name} (failed: {sections[name].get('error', '')[:80]})")
            continue
        lines.extend(fn(sec))
    mon = _ok(sections, "monitor")
    if mon is not None:
        lines += ["", *monitor_table(mon)]
    elif "monitor" in sections:
        missing.append(f"monitor (failed: {sections['monitor'].get('error', '')[:80]})")
    else:
        missing.append("monitor")
    acc = _ok(sections, "accuracy")
    for model, res in (accuracy_by_model(acc) if acc else {}).items():
        if not res.get("variants"):
            continue
        lines += ["", f"Improvements for {model}, each scored on the same embeddings (kept in the app: gallery-centred "
                  "identity matching; flip TTA is an option, off by default):", "",
                  "| Variant | flip TTA | match by | quality-weighted | top-1 | top-5 | TPIR@FPIR 1 % | TPIR@FPIR 10 % |",
                  "|---|---|---|---|---|---|---|---|"]
        for v in res["variants"]:
            lines.append(f"| {v['name']} | {'yes' if v['flip'] else 'no'} | {v['match_by']} | "
                         f"{'yes' if v['quality_weighted'] else 'no'} | {_f(v['top1'])} | {_f(v['top5'])} | "
                         f"{_f(v.get('tpir_at_fpir_0.01'))} | {_f(v.get('tpir_at_fpir_0.1'))} |")
    peaks = {n: s.get("peak_rss_mb") for n, s in sections.items() if isinstance(s, dict) and s.get("peak_rss_mb")}
    if peaks:
        lines += ["", "Peak memory (resident set of the process that ran each section): "
                  + ", ".join(f"{n} {_f(v, 0)} MB" for n, v in peaks.items()) + "."]
    if missing:
        lines += ["", "Not in this run: " + ", ".join(missing) + "."]
    if plots_dir is not None:
        folder = Path(plots_dir)
        base = Path(readme_dir) if readme_dir is not None else Path.cwd()
        shown = [(name, title) for name, title in PLOT_TITLES.items() if (folder / name).is_file()]
        if shown:
            lines += ["", "Plots from this run (written next to the JSON; not kept in git, `make results` "
                      "makes them):", ""]
            for name, title in shown:
                rel = os.path.relpath(folder / name, base)
                lines.append(f"![{title}]({rel})")
    lines.append(END)
    return "\n".join(lines)


def update_readme(readme: str | Path, markdown: str) -> bool:
    """Replace the text between :data:`BEGIN` and :data:`END` in ``readme`` (inclusive). Returns
    whether the file changed. Raises ValueError when the markers are missing."""
    path = Path(readme)
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path} has no {BEGIN} ... {END} block to replace")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + markdown + tail
    if new == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    tmp.replace(path)
    return True
