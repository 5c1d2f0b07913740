"""Loop a clip into one long recording, for soak tests of the app (docs/realtime.md).

    python assets/demo/loop_clip.py assets/demo/demo.mp4 /tmp/hour.mp4 --minutes 60

A clinician's session lasts an hour; the 16-second demo clip is too short to show a fault
that builds up (a leak, a counter that overflows, a reference dropped per frame). The
frames are decoded once and written again and again, so the output has the clip's own
size and rate and a header that states the full frame count.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2

FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".avi": "MJPG"}


def loop_clip(source: Path, out: Path, minutes: float) -> int:
    """Write ``source`` repeated until it lasts ``minutes``; returns the frames written."""
    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    if not frames:
        raise SystemExit(f"{source}: no frame can be decoded")
    suffix = out.suffix.lower()
    if suffix not in FOURCC_BY_SUFFIX:
        raise SystemExit(f"{out}: use .mp4 or .avi")
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*FOURCC_BY_SUFFIX[suffix]), fps, (w, h))
    if not writer.isOpened():
        raise SystemExit(f"{out}: OpenCV cannot write this video")
    total = math.ceil(minutes * 60 * fps)
    for i in range(total):
        writer.write(frames[i % len(frames)])
    writer.release()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the clip to loop")
    parser.add_argument("out", type=Path, help="the long recording to write (.mp4 or .avi)")
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the output (default 60)")
    args = parser.parse_args()
    n = loop_clip(args.source, args.out, args.minutes)
    print(f"wrote {args.out}: {n} frames", file=sys.stderr)


if __name__ == "__main__":
    main()
