"""Cut the faces of a video into photos: people absent from a gallery, for open-set evaluation.

    python scripts/video_faces.py VIDEO OUT [--every 5] [--min-side 40] [--context 3]   (or python -m lookalike_live.video_faces)
    lookalike-live eval identify --dataset DIR --distractors OUT ...

Every ``--every``-th frame is searched with the full-range detector (as the live app searches
frames); each face of at least ``--min-side`` pixels is written as ``OUT/<video name>/<frame>_<k>.jpg``:
the frame around that face (``--context`` times its box) with the rest of the frame and every other
face greyed out, so ``eval`` (which takes the largest face of a photo) sees that face as the live
app saw it. A face the detector misses in a frame is not greyed out, so a photo is written only
when the detector, run again on the photo, finds the intended face as its largest one; the others
are counted as left out. Faces of one person repeat across frames; the counts are logged.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)


def face_photos(video: Path, out: Path, every: int = 5, min_side: float = 40.0, cover: float = 1.3,
                context: float = 3.0) -> tuple[int, int]:
    """Write the photos; (frames searched, photos written)."""
    from lookalike_live.detect import FaceDetector
    from lookalike_live.errors import SourceError
    from lookalike_live.prepare import choose_face
    from lookalike_live.tracking import iou_matrix

    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SourceError(f"cannot open video {video}: check the path and that ffmpeg can play it")
    folder = out / video.stem
    folder.mkdir(parents=True, exist_ok=True)
    searched = written = left_out = 0
    with FaceDetector("full", running_mode="image") as det:
        index = -1
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            index += 1
            if index % every:
                continue
            searched += 1
            dets = det.detect(frame)
            h, w = frame.shape[:2]
            boxes, kept = _grown(dets, cover, w, h), _grown(dets, context, w, h)
            for k in range(len(dets)):
                if dets.side[k] < min_side:
                    continue
                photo = np.full_like(frame, 128)  # grey but the face's surroundings ...
                x0, y0, x1, y1 = kept[k]
                photo[y0:y1, x0:x1] = frame[y0:y1, x0:x1]
                for j, (x0, y0, x1, y1) in enumerate(boxes):  # ... and the other faces greyed out,
                    if j != k:
                        photo[y0:y1, x0:x1] = 128
                x0, y0, x1, y1 = boxes[k]  # not where they overlap this face
                photo[y0:y1, x0:x1] = frame[y0:y1, x0:x1]
                again = det.detect(photo)
                if not len(again) or iou_matrix(again.xyxy[[choose_face(again, None)]], dets.xyxy[[k]])[0, 0] < 0.5:
                    left_out += 1  # the photo would show eval another face, or none
                    log.debug("frame %d face %d (%.0f px, score %.2f): found again %d faces", index, k, dets.side[k], dets.score[k], len(again))
                    continue
                cv2.imwrite(str(folder / f"{index:06d}_{k}.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 95])
                written += 1
    cap.release()
    if left_out:
        log.info("left out %d faces the detector did not find again as the largest face of their photo", left_out)
    return searched, written


def _grown(dets, scale: float, w: int, h: int) -> np.ndarray:
    """Each face's square box grown ``scale`` times about its centre, in whole pixels inside the frame."""
    c, half = (dets.xyxy[:, :2] + dets.xyxy[:, 2:]) / 2, dets.side[:, None] * scale / 2
    return np.concatenate([c - half, c + half], axis=1).round().astype(int).clip(0, [w, h, w, h])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Then: lookalike-live eval identify --dataset DIR --distractors OUT")
    p.add_argument("video", type=Path, help="a video file")
    p.add_argument("out", type=Path, help="folder for the photos (one sub-folder named after the video)")
    p.add_argument("--every", type=int, default=5, help="search every N-th frame (default 5)")
    p.add_argument("--min-side", type=float, default=40.0, help="leave out faces smaller than this many pixels (default 40)")
    p.add_argument("--context", type=float, default=3.0,
                   help="keep this many times the face's box around it, grey the rest of the frame (default 3)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from lookalike_live.errors import LookalikeError
    from lookalike_live.quiet import filter_native_stderr

    filter_native_stderr()
    try:
        searched, written = face_photos(args.video, args.out, max(1, args.every), args.min_side,
                                        context=args.context)
    except LookalikeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("%d face photos from %d frames of %s in %s", written, searched, args.video, args.out / args.video.stem)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
