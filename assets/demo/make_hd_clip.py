"""Make a 1920x1080, 60 fps recording from the demo clip, for the HD checks of the app
(docs/realtime.md): endoscopes deliver 1080p at 50/60 fps.

    python assets/demo/make_hd_clip.py assets/demo/demo.mp4 /tmp/hd60.mp4 --seconds 20

Each 800x640 frame is enlarged to 1080 lines and centred between black side borders (as
endoscope video sits in its frame), and the 25 fps clip is resampled in time to 60 fps
(each output frame shows the source frame of its moment; the clip loops if the output is
longer). The pictures are the demo clip's: a detector sees the same polyps at HD size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".avi": "MJPG"}


def letterbox_hd(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    scale = min(w / frame.shape[1], h / frame.shape[0])
    resized = cv2.resize(frame, (round(frame.shape[1] * scale), round(frame.shape[0] * scale)),
                         interpolation=cv2.INTER_CUBIC)
    out = np.zeros((h, w, 3), np.uint8)
    y, x = (h - resized.shape[0]) // 2, (w - resized.shape[1]) // 2
    out[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return out


def make_hd_clip(source: Path, out: Path, seconds: float, fps: float = 60.0, size: tuple[int, int] = (1920, 1080)) -> int:
    cap = cv2.VideoCapture(str(source))
    source_fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while (ok_frame := cap.read())[0]:
        frames.append(ok_frame[1])
    cap.release()
    if not frames:
        raise SystemExit(f"{source}: no frame can be decoded")
    if out.suffix.lower() not in FOURCC_BY_SUFFIX:
        raise SystemExit(f"{out}: use .mp4 or .avi")
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*FOURCC_BY_SUFFIX[out.suffix.lower()]), fps, size)
    count = round(seconds * fps)
    cache: dict[int, np.ndarray] = {}
    for i in range(count):
        k = int(i / fps * source_fps) % len(frames)
        if k not in cache:
            cache = {k: letterbox_hd(frames[k], size)}
        writer.write(cache[k])
    writer.release()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path, help=".mp4 (MPEG-4) or .avi (Motion-JPEG)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length (default 20 s: 1200 frames at 60 fps)")
    parser.add_argument("--fps", type=float, default=60.0)
    args = parser.parse_args()
    print(f"wrote {make_hd_clip(args.source, args.out, args.seconds, args.fps)} frames to {args.out}")


if __name__ == "__main__":
    main()
