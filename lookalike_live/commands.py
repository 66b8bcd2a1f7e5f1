"""Subcommands beyond ``models``: embed, index, run, monitor, app, eval, bench."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cliutil import (
    Opt,
    annotations_opt,
    check_output_path,
    counting,
    dataset_opts,
    non_negative,
    quick_detect_opt,
)
from .cliutil import emit as _emit
from .cliutil import settings_from_args as _settings
from .config import Settings
from .errors import ConfigError, LookalikeError

log = logging.getLogger("lookalike_live")



def _summary_text(title: str) -> Callable[[dict[str, Any]], str]:
    def fmt(res: dict[str, Any]) -> str:
        lines = [title]
        for k, v in res.items():
            if isinstance(v, dict) and v:
                lines.append(f"  {k}: {len(v)}")
                lines.extend(f"    {kk}: {vv}" for kk, vv in list(v.items())[:20])
            elif isinstance(v, list):
                lines.append(f"  {k}: {len(v)}")
            else:
                lines.append(f"  {k}: {v}")
        return "\n".join(lines)

    return fmt


# --------------------------------------------------------------------------- embed
def cmd_embed(args: argparse.Namespace) -> int:
    from .analyzer import FaceAnalyzer
    from .jobs import embed_files

    settings = _settings(args)
    check_output_path("--out", args.out, ".npz")  # before the work, not after it
    with FaceAnalyzer.from_settings(settings) as analyzer:
        _, summary = embed_files(args.paths, analyzer, out=args.out, workers=args.workers,
                                 progress=not args.no_progress)
    _emit(args, summary, _summary_text(f"embedded {summary['faces']} faces from {summary['images']} images"))
    # the job did its work unless there were images and not one could be read
    return 1 if summary["images"] and len(summary["skipped"]) == summary["images"] else 0


def _register_embed(sub: argparse._SubParsersAction, model_opts: Opt, detector_opts: Opt, json_opt: Opt) -> None:
    p = sub.add_parser(
        "embed", help="embed every face of every image into an .npz",
        description="Detect, align and embed every face of every image (files or folders, recursively). "
        "Writes arrays paths, face_index, boxes (xyxy px), scores, quality, embeddings (N,D L2-normalised). "
        "Unreadable images are listed in the summary and skipped.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.npz", help="output file")
    p.add_argument("--workers", type=counting, default=2, help="image decoding threads (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    model_opts(p)
    detector_opts(p)
    json_opt(p)
    p.set_defaults(func=cmd_embed)



# --------------------------------------------------------------------------- index
def _open_gallery(settings: Settings, create: bool = False) -> Any:
    """The gallery the settings name; one that does not exist is created only for a build."""
    from .gallery import Gallery

    return Gallery.from_settings(settings, create=create)


def cmd_index_build(args: argparse.Namespace) -> int:
    from .datasets import open_dataset
    from .embed import create_embedder
    from .indexing import BuildOptions, DetectorConfig, build_index, parse_shard

    settings = _settings(args)
    shard = parse_shard(args.shard) if args.shard else None
    dataset = open_dataset(args.dataset, args.format, names_csv=args.names, annotations=args.annotations)
    log.info("%s: %d photos, %d identities%s", dataset.root, len(dataset), dataset.identities,
             f"; faces placed by {dataset.landmarks_file}" if dataset.landmarks_file else "")
    detector = DetectorConfig(settings.detector, min_score=settings.min_face_score,
                              small_faces=settings.small_faces, quick=args.quick_detect)
    opts = BuildOptions(batch_size=args.batch_size, insert_batch=args.insert_batch, workers=args.workers,
                        limit=args.limit, retry_skipped=args.retry_skipped, progress=not args.no_progress, shard=shard)
    # no spinning: the prepare workers need the cores whenever ONNX Runtime's threads are idle
    # (measured on 2 cores, FaceNet: 52-53 vs 44-49 img/s)
    embedder = create_embedder(settings.model, backend=settings.backend, flip_tta=settings.flip_tta, spin=False)
    with _open_gallery(settings, create=True) as gallery:
        try:
            summary = build_index(dataset, detector, embedder, gallery, opts).as_dict()
        finally:
            embedder.close()
    summary["annotations_skipped"] = list(dataset.problems)  # lines and folders the dataset could not use

    def human(r: dict[str, Any]) -> str:
        lines = [
            f"indexed {r['faces']} new faces from {r['processed']} photos in {r['seconds']} s "
            f"({r['images_per_second']} img/s); {r['already_indexed']} were already indexed",
            f"skipped {len(r['skipped'])} photos this run, {r['previously_skipped']} skipped in earlier runs",
        ]
        lines += [f"  {k}: {v}" for k, v in list(r["skipped"].items())[:20]]
        if r["aligned_by"]:
            lines.append("faces placed by " + ", ".join(f"{k}: {v}" for k, v in sorted(r["aligned_by"].items()))
                         + f" ({r['workers']} prepare workers)")
        if r["landmark_fallbacks"]:
            lines.append("detected instead of placed by landmarks: "
                         + ", ".join(f"{k}: {v}" for k, v in r["landmark_fallbacks"].items()))
        if r["shard"]:
            lines.append(f"shard {r['shard']}: when every shard is done, run `lookalike-live index centroids` once")
        if r["annotations_skipped"]:
            lines.append(f"{len(r['annotations_skipped'])} annotation lines or folders not used:")
            lines += [f"  {p}" for p in r["annotations_skipped"][:20]]
        g = r["gallery"]
        lines.append(f"gallery {g.get('uri')} / {g.get('collection')}: {g.get('faces')} faces, "
                     f"{g.get('identities')} identities")
        return "\n".join(lines)

    _emit(args, summary, human)
    return 0


def cmd_index_drop(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _open_gallery(settings) as gallery:
        stats = gallery.stats()
        if not stats.get("exists"):
            raise ConfigError(f"there is no collection {settings.collection!r} at {gallery.shown_uri}: nothing to drop")
        if not args.yes:
            raise ConfigError(f"this deletes {stats['faces']} faces of collection {settings.collection!r} at "
                              f"{gallery.shown_uri}: add --yes to do it")
        gallery.drop()
    out = {"dropped": settings.collection, "faces": stats["faces"], "uri": stats["uri"]}
    _emit(args, out, lambda r: f"dropped collection {r['dropped']} ({r['faces']} faces) at {r['uri']}")
    return 0


def cmd_index_centroids(args: argparse.Namespace) -> int:
    from .indexing import finish_gallery

    settings = _settings(args)
    with _open_gallery(settings) as gallery:
        t0 = time.perf_counter()
        finish_gallery(gallery)
        stats = gallery.stats()
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    _emit(args, stats, lambda r: f"made the centroids of {r.get('identities')} identities from {r.get('faces')} "
          f"faces in {r['seconds']} s ({r.get('uri')} / {r.get('collection')})")
    return 0


def cmd_index_stats(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _open_gallery(settings) as gallery:
        stats = gallery.stats()
    _emit(args, stats, lambda r: "\n".join(f"{k}: {v}" for k, v in r.items()))
    return 0


# --------------------------------------------------------------------------- match (photo mode)
def cmd_match(args: argparse.Namespace) -> int:
    from .analyzer import FaceAnalyzer
    from .card import CardFace, check_card_path, make_card, save_card
    from .events import match_record
    from .imageio import iter_image_files, read_image

    settings = _settings(args)
    photos = list(iter_image_files(args.paths))
    if args.card is not None:
        check_card_path(args.card)
        if len(photos) != 1:
            raise ConfigError(f"--card makes the card of one photo; {len(photos)} images were given "
                              "(run `match` once per photo)")
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    no_face: list[str] = []
    card_input: tuple[Any, list[CardFace], str] | None = None
    with _open_gallery(settings) as gallery, FaceAnalyzer.from_settings(settings) as analyzer:
        gallery.check_model(analyzer.spec.name, analyzer.embedder.dim, analyzer.spec.alignment.describe())
        for path in photos:
            try:
                image = read_image(path)
            except LookalikeError as exc:
                skipped[str(path)] = str(exc)
                log.warning("skipped %s", exc)
                continue
            res = analyzer.analyze(image)
            if not len(res.embeddings):
                no_face.append(str(path))
            k = max(args.top_k, 3 if args.card is not None else 1)
            hits = gallery.search(res.embeddings.vectors, k=k, with_thumbnails=args.card is not None) \
                if len(res.embeddings) else []
            faces: list[CardFace] = []
            for row, (det_i, matches) in enumerate(zip(res.embeddings.det_index, hits, strict=True)):
                best = matches[0] if matches else None
                strong = best is not None and best.score >= settings.threshold
                box = [round(float(v), 1) for v in res.detections.xyxy[det_i]]
                results.append({
                    "path": str(path), "face": row, "box": box,
                    "nearest": match_record(best),
                    "decision": ("match" if strong else "unknown") if best is not None else "no_gallery_match",
                    "match": best.name if strong and best is not None else None,
                    "score": round(best.score, 4) if best else None,
                    "top": [match_record(m) for m in matches[:args.top_k]],
                })
                if best is not None:
                    faces.append(CardFace(tuple(float(v) for v in res.detections.xyxy[det_i]),  # type: ignore[arg-type]
                                          tuple(matches), strong))
            card_input = (image, faces, Path(path).name)
    out: dict[str, Any] = {"faces": results, "no_face": no_face, "skipped": skipped, "threshold": settings.threshold}
    if args.card is not None:
        if card_input is None:
            raise ConfigError(f"no card written: {next(iter(skipped.values()), 'the photo could not be read')}")
        image, faces, name = card_input
        if not faces:
            raise ConfigError(f"no card written: no face found in {name}" if not results else
                              f"no card written: the gallery returned no match for the faces of {name} (is it empty?)")
        out["card"] = str(save_card(make_card(image, faces, title=name, threshold=settings.threshold), args.card))
        log.info("card saved: %s (%d faces)", out["card"], len(faces))

    def human(r: dict[str, Any]) -> str:
        lines = []
        for f in r["faces"]:
            near = f["nearest"]
            if near is None:
                label = "no match (empty gallery)"
            elif args.open_set and f["decision"] == "unknown":
                label = f"unknown (closest {near['name']} {near['score']:.2f})"
            else:
                label = f"{'looks like' if f['decision'] == 'match' else 'a bit like'} {near['name']}"
            lines.append(f"{f['path']} face {f['face']} {f['box']}: {label}  score={f['score']}")
        lines += [f"{p}: no face found" for p in r["no_face"]]
        lines += [f"skipped {k}: {v}" for k, v in r["skipped"].items()]
        if "card" in r:
            lines.append(f"card: {r['card']}")
        return "\n".join(lines) or "no faces found"

    _emit(args, out, human)
    return 1 if photos and len(skipped) == len(photos) else 0  # not one photo could be read


def register(sub: argparse._SubParsersAction, model_opts: Opt, detector_opts: Opt, gallery_opts: Opt,
             json_opt: Opt) -> None:
    _register_embed(sub, model_opts, detector_opts, json_opt)

    p = sub.add_parser("index", help="build the gallery from a face dataset; show its stats",
                       description="Build and inspect the face gallery in Milvus.")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    q = isub.add_parser(
        "build", help="detect, align and embed every photo of a dataset into Milvus (resumable)",
        description="Index a face dataset: one face per photo (the annotated one, else the largest), "
        "batched embedding, batched upserts with stable ids. Safe to interrupt and re-run: it resumes "
        "where it stopped and never duplicates. Unreadable photos and photos without a face are "
        "skipped, listed in the summary and remembered (use --retry-skipped to try them again).",
    )
    dataset_opts(q)
    q.add_argument("--names", type=Path, metavar="CSV", help="identity,name CSV (CelebA has no names)")
    q.add_argument("--limit", type=counting, help="index only the first N photos")
    q.add_argument("--batch-size", type=counting, default=32, help="faces per embedding batch (default 32)")
    q.add_argument("--insert-batch", type=counting, default=256, help="rows per Milvus upsert (default 256)")
    q.add_argument("--workers", type=non_negative, metavar="N",
                   help="processes that read, decode, align (and detect) photos beside the embedder; default: "
                   "the cores the embedder leaves (all but one with a GPU), at least 2; 0: in this process")
    q.add_argument("--shard", metavar="I/N",
                   help="build only part I of N (0 <= I < N) of the dataset, split by photo id, so N machines or "
                   "scheduler tasks (e.g. a Kubernetes indexed Job) fill one Milvus server together; afterwards "
                   "run `index centroids` once")
    q.add_argument("--retry-skipped", action="store_true", help="retry photos skipped by earlier runs")
    annotations_opt(q)
    quick_detect_opt(q)
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    model_opts(q)
    detector_opts(q)
    gallery_opts(q)
    json_opt(q)
    q.set_defaults(func=cmd_index_build)
    q = isub.add_parser("stats", help="faces, identities, model and index state of the gallery")
    gallery_opts(q)
    json_opt(q)
    q.set_defaults(func=cmd_index_stats)
    q = isub.add_parser("centroids", help="make the identity centroids (after a sharded build)",
                        description="Make each identity's centroid and representative face from the faces "
                        "collection, and the local index copy. `index build --shard I/N` leaves this to be run once "
                        "when every shard is done; an unsharded build does it itself.")
    gallery_opts(q)
    json_opt(q)
    q.set_defaults(func=cmd_index_centroids)
    q = isub.add_parser("drop", help="delete the gallery's collections and its local index cache",
                        description="Delete the faces and identities collections (and, for Milvus Lite, the local "
                        "index cache next to the file), e.g. to rebuild with another model. Asks for --yes.")
    q.add_argument("--yes", action="store_true", help="really delete (nothing is deleted without it)")
    gallery_opts(q)
    json_opt(q)
    q.set_defaults(func=cmd_index_drop)

    p = sub.add_parser(
        "match", help="photo mode: the nearest celebrity of every face in images",
        description="Detect every face in the images and print its nearest gallery matches. --json keys per "
        "face: nearest (the nearest celebrity, always), decision (match: at or above the threshold, else "
        "unknown), match (its name when decision is match, else null), score, top (the top-K).",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    p.add_argument("--top-k", type=int, default=3, help="matches per face (default 3)")
    p.add_argument("--threshold", type=float,
                   help="similarity at which a face \"looks like\" its nearest celebrity (below: \"a bit like\"; "
                   "default: the model's calibrated threshold)")
    p.add_argument("--open-set", action="store_true",
                   help="say \"unknown\" below the threshold instead of the nearest celebrity")
    p.add_argument("--card", type=Path, metavar="OUT.png",
                   help="save a shareable lookalike card of the photo (one photo only)")
    model_opts(p)
    detector_opts(p)
    gallery_opts(p)
    json_opt(p)
    p.set_defaults(func=cmd_match)

    register_eval(sub, model_opts, detector_opts, json_opt)
    register_bench(sub)


# --------------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.suite import execute

    return execute(args)


def register_bench(sub: argparse._SubParsersAction) -> None:
    from .bench.suite import EPILOG, add_arguments

    p = sub.add_parser(
        "bench", help="run the benchmarks (JSON): accuracy, detection, embedding, index build, search, live",
        description="Measure every stage next to its in-run reference (nearest-photo baseline, bare ONNX Runtime "
        "session, bare embedder, exact numpy search, no tracking) and print one JSON object; optionally the "
        "plots and the README's Results section (also scripts/bench.py).", epilog=EPILOG,
    )
    add_arguments(p)
    p.set_defaults(func=cmd_bench)


# --------------------------------------------------------------------------- eval
def _eval_inputs(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(settings, dataset, distractors or None, the gallery detector ``index build`` uses) of an
    ``eval identify`` / ``eval crops`` command line."""
    from .datasets import open_dataset
    from .indexing import gallery_detector

    settings = _settings(args)
    dataset = open_dataset(args.dataset, args.format, names_csv=None, annotations=getattr(args, "annotations", "off"))
    distractors = open_dataset(args.distractors, args.distractors_format) if args.distractors else None
    # gallery photos are prepared as `index build` prepares them, queries as the live app sees faces
    build_detector = gallery_detector(settings.detector, min_score=settings.min_face_score,
                                      small_faces=settings.small_faces, quick=args.quick_detect)
    return settings, dataset, distractors, build_detector


def _eval_set_opts(p: argparse.ArgumentParser, gallery_per_id: int) -> None:
    dataset_opts(p)
    p.add_argument("--gallery-per-id", type=counting, default=gallery_per_id,
                   help=f"gallery photos per identity (default {gallery_per_id})")
    p.add_argument("--limit", type=counting, help="only the first N photos")
    p.add_argument("--distractors", type=Path, metavar="DIR",
                   help="photos of people absent from the gallery (open set): adds TPIR at FPIR 1%% and 10%%")
    p.add_argument("--distractors-format", choices=("celeba", "folders", "vggface2"), default="folders",
                   help="layout of --distractors (default folders: one folder per person)")
    p.add_argument("--holdout-ids", type=int, default=0, metavar="N",
                   help="use the last N identities of --dataset as distractors instead of gallery identities")


def cmd_eval(args: argparse.Namespace) -> int:
    from .analyzer import FaceAnalyzer
    from .evaluation import evaluate_dataset

    settings, dataset, distractors, build_detector = _eval_inputs(args)
    # the eval embeds each face and its mirror image itself: flip TTA is a scoring choice here
    with FaceAnalyzer.from_settings(settings.replace(flip_tta=False)) as analyzer, build_detector:
        try:
            res = evaluate_dataset(dataset, analyzer, gallery_per_id=args.gallery_per_id, limit=args.limit,
                                   far=args.far, progress=not args.no_progress, distractors=distractors,
                                   holdout_ids=args.holdout_ids, flip=settings.flip_tta, match_by=settings.match_by,
                                   quality_weighted=args.quality_weighted, study=args.study, plots=args.plots,
                                   gallery_detector=build_detector)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    if args.save_threshold:
        import time

        from .config import save_calibrated_threshold

        res["saved_to"] = str(save_calibrated_threshold(
            res["model"], res["threshold"], far=res["far"], tar=res["tar_at_far"], dataset=str(args.dataset),
            queries=res["queries"], match_by=settings.match_by, flip_tta=settings.flip_tta,
            measured=time.strftime("%Y-%m-%d")))

    def human(r: dict[str, Any]) -> str:
        m = r["matching"]
        lines = [f"{r['model']} on {r['dataset']}: {r['faces']} faces of {r['identities']} identities "
                 f"({r['gallery']} gallery, {r['queries']} queries"
                 + (f", {r['nonmated']} non-mated probes" if r.get("nonmated") else "") + ")",
                 f"matching by {m['match_by']}{', flip TTA' if m['flip'] else ''}"
                 f"{', quality-weighted' if m['quality_weighted'] else ''}: "
                 f"top-1 {r['top1']:.3f}  top-5 {r['top5']:.3f}  photo-pair ROC AUC {r['roc_auc']:.4f}"]
        if "tpir_at_fpir_0.01" in r:
            lines.append(f"open set: TPIR {r['tpir_at_fpir_0.01']:.3f} at FPIR 1%, "
                         f"{r['tpir_at_fpir_0.1']:.3f} at FPIR 10%")
        lines.append(f"threshold at FAR {r['far']}: {r['threshold']:.3f} (TAR {r['tar_at_far']:.3f}); "
                     f"{len(r['skipped'])} photos skipped; {r['images_per_second']} img/s")
        for v in r.get("variants", []):
            lines.append(f"  {v['name']:<26} top-1 {v['top1']:.3f}  top-5 {v['top5']:.3f}"
                         + (f"  TPIR@1% {v['tpir_at_fpir_0.01']:.3f}  TPIR@10% {v['tpir_at_fpir_0.1']:.3f}"
                            if "tpir_at_fpir_0.01" in v else ""))
        if r.get("plots"):
            lines.append("plots: " + ", ".join(r["plots"]))
        if r.get("saved_to"):
            lines.append(f"threshold saved to {r['saved_to']}")
        return "\n".join(lines)

    _emit(args, res, human)
    return 0


def cmd_eval_crops(args: argparse.Namespace) -> int:
    from .analyzer import FaceAnalyzer
    from .crop_study import crop_study

    settings, dataset, distractors, build_detector = _eval_inputs(args)
    with FaceAnalyzer.from_settings(settings.replace(flip_tta=False)) as analyzer, build_detector:
        try:
            res = crop_study(dataset, analyzer, build_detector, gallery_per_id=args.gallery_per_id,
                             holdout_ids=args.holdout_ids, distractors=distractors, limit=args.limit,
                             match_by=settings.match_by, progress=not args.no_progress)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def human(r: dict[str, Any]) -> str:
        lines = [f"{r['model']} on {r['dataset']}: {r['gallery']} gallery photos, {r['queries']} queries, "
                 f"{r['nonmated']} non-mated probes; matching by {r['match_by']}; {len(r['skipped'])} photos skipped",
                 f"{'crop':<30} {'flip':<5} {'top-1':>6} {'top-5':>6} {'TPIR@1%':>8} {'TPIR@10%':>9}"]
        for v in r["variants"]:
            mark = " <- best" if v["name"] == r["best"] and not v["flip"] else (
                " <- the spec's" if v["name"] == r["current"] and not v["flip"] else "")
            lines.append(f"{v['name']:<30} {'yes' if v['flip'] else 'no':<5} {v['top1']:>6.3f} {v['top5']:>6.3f} "
                         f"{v.get('tpir_at_fpir_0.01', float('nan')):>8.3f} {v.get('tpir_at_fpir_0.1', float('nan')):>9.3f}"
                         + mark)
        return "\n".join(lines)

    _emit(args, res, human)
    return 0


def register_eval(sub: argparse._SubParsersAction, model_opts: Opt, detector_opts: Opt, json_opt: Opt) -> None:
    e = sub.add_parser("eval", help="recognition accuracy of a model on a labelled face dataset",
                       description="Measure how right a model is on labelled photos.")
    esub = e.add_subparsers(dest="eval_command", metavar="ACTION", required=True)
    p = esub.add_parser(
        "identify", help="identification: top-1/top-5, open-set TPIR at FPIR, threshold at a FAR",
        description="Embed one face per photo; per identity the first photos form the gallery and the rest "
        "query it: top-1/top-5 identification (exact cosine search, matching as --match-by says), "
        "photo-pair ROC AUC, the similarity threshold at a target false-accept rate (a good --threshold "
        "for the live overlay) and, with distractors, open-set TPIR at FPIR 1% and 10%. Gallery photos are "
        "prepared as `index build` prepares them, queries as the live app sees faces. JSON keys: top1, "
        "top5, tpir_at_fpir_0.01, tpir_at_fpir_0.1, threshold, queries, gallery, undetected, and more.",
    )
    _eval_set_opts(p, gallery_per_id=7)
    p.add_argument("--far", type=float, default=0.01, help="false-accept rate for the threshold (default 0.01)")
    p.add_argument("--quality-weighted", action="store_true",
                   help="with --match-by identity: weight each gallery photo by its face quality in the centroid")
    p.add_argument("--study", action="store_true",
                   help="also score every improvement (flip TTA, identity centroids, quality weighting) on the "
                   "same embeddings: the JSON key 'variants'")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write ROC, score histogram and PCA map PNGs here")
    p.add_argument("--save-threshold", action="store_true",
                   help="remember the threshold for this model: the app, run and monitor use it unless a flag, "
                   "LOOKALIKE_THRESHOLD or the config file sets one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    annotations_opt(p)
    quick_detect_opt(p)
    model_opts(p)
    detector_opts(p)
    json_opt(p)
    p.set_defaults(func=cmd_eval)

    p = esub.add_parser(
        "crops", help="which face crop suits the model best: box margins, aspect, centring, 5-point template",
        description="Detect each face once, cut every crop variant from it (the detector's box with margins "
        "0.1-0.5, the box's own aspect, a square centred on the eyes, nose and mouth, a 5-point similarity "
        "alignment at three scales), embed them all and score each as `eval identify` does (top-1, top-5, "
        "TPIR at FPIR 1%% and 10%%, with and without flip TTA). The best crop is what a model spec's "
        "[alignment] should say. JSON keys: variants, best, current.",
    )
    _eval_set_opts(p, gallery_per_id=8)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    quick_detect_opt(p)
    model_opts(p)
    detector_opts(p)
    json_opt(p)
    p.set_defaults(func=cmd_eval_crops)

    p = esub.add_parser(
        "verify", help="face verification on LFW-format pairs: 10-fold accuracy, ROC AUC, TAR at FAR",
        description="Score every pair of pairs.txt (LFW format: a 'FOLDS N' header, then per fold N "
        "'name i j' same-person and N 'name1 i name2 j' different-person lines; images are "
        "DIR/name/name_%%04d.jpg) by the cosine similarity of the largest face of each image.",
    )
    p.add_argument("--pairs", type=Path, required=True, metavar="FILE", help="LFW-format pairs file")
    p.add_argument("--images", type=Path, required=True, metavar="DIR", help="folder of name/name_0001.jpg images")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    model_opts(p)
    detector_opts(p)
    json_opt(p)
    p.set_defaults(func=cmd_eval_verify)


def cmd_eval_verify(args: argparse.Namespace) -> int:
    from .analyzer import FaceAnalyzer
    from .evaluation import parse_lfw_pairs, verify_pairs

    if not args.pairs.is_file():
        raise ConfigError(f"pairs file not found: {args.pairs}")
    if not args.images.is_dir():
        raise ConfigError(f"images folder not found: {args.images}")
    folds = parse_lfw_pairs(args.pairs, args.images)
    settings = _settings(args)
    with FaceAnalyzer.from_settings(settings) as analyzer:
        try:
            res = verify_pairs(folds, analyzer, progress=not args.no_progress)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def human(r: dict[str, Any]) -> str:
        return (f"{r['pairs']} pairs in {r['folds']} folds ({r['left_out_pairs']} left out: unreadable or no face)\n"
                f"accuracy {r['accuracy']:.4f} +- {r['accuracy_std']:.4f} at threshold {r['threshold']:.3f}; "
                f"ROC AUC {r['roc_auc']:.4f}; TAR {r['tar_at_far_0.001']:.3f} at FAR 1e-3, "
                f"{r['tar_at_far_0.01']:.3f} at FAR 1e-2")

    _emit(args, res, human)
    return 0

