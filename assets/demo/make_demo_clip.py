"""Make the bundled demo clip from Kvasir-SEG TEST images with simulated endoscope motion.

Each still is filmed by a virtual camera that pans and zooms along a smooth random path,
with motion blur while it moves fast, slow changes of light (gain and gamma), and a short
cross-fade to the next image -- roughly what a withdrawal through the colon looks like.
Only test-split images are used (never training or validation ones), so the clip can
also be scored against the dataset's boxes (written beside it as JSON).

    python assets/demo/make_demo_clip.py --data ../shared/data/kvasir-seg --out assets/demo/demo.mp4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT, FPS = 800, 640, 25


def smooth_path(rng: np.random.Generator, n: int, keys: int = 4) -> np.ndarray:
    """``n`` values in [0, 1] following a smooth curve through ``keys`` random key points."""
    key_t = np.linspace(0, n - 1, keys)
    key_v = rng.random(keys)
    return np.interp(np.arange(n), key_t, key_v)


def film(image: np.ndarray, boxes: np.ndarray, frames: int, rng: np.random.Generator):
    """Frames of one still seen through a moving, zooming camera, and the boxes in each."""
    h, w = image.shape[:2]
    zoom = 1.0 + 0.45 * smooth_path(rng, frames)               # 1x .. 1.45x
    pan_x, pan_y = smooth_path(rng, frames), smooth_path(rng, frames)
    gain = 0.85 + 0.3 * smooth_path(rng, frames)
    gamma = 0.85 + 0.3 * smooth_path(rng, frames)
    previous = None
    for i in range(frames):
        cw, ch = w / zoom[i], h / zoom[i]
        # Keep the window's aspect ratio equal to the output's.
        if cw / ch > WIDTH / HEIGHT:
            cw = ch * WIDTH / HEIGHT
        else:
            ch = cw * HEIGHT / WIDTH
        x0, y0 = pan_x[i] * (w - cw), pan_y[i] * (h - ch)
        sx, sy = WIDTH / cw, HEIGHT / ch
        matrix = np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]])
        frame = cv2.warpAffine(image, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if previous is not None:
            speed = np.hypot(*(np.array([x0, y0]) - previous)) * sx
            if speed > 1.5:  # motion blur along the direction of travel
                k = int(min(15, speed)) | 1
                kernel = np.zeros((k, k), np.float32)
                kernel[k // 2, :] = 1.0 / k
                frame = cv2.filter2D(frame, -1, kernel)
        previous = np.array([x0, y0])
        lut = np.clip(255 * gain[i] * (np.arange(256) / 255) ** gamma[i], 0, 255).astype(np.uint8)
        frame = cv2.LUT(frame, lut)
        shown = boxes * [sx, sy, sx, sy] - [x0 * sx, y0 * sy, x0 * sx, y0 * sy]
        shown[:, [0, 2]] = shown[:, [0, 2]].clip(0, WIDTH)
        shown[:, [1, 3]] = shown[:, [1, 3]].clip(0, HEIGHT)
        yield frame, shown[(shown[:, 2] - shown[:, 0] > 4) & (shown[:, 3] - shown[:, 1] > 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/kvasir-seg", help="Kvasir-SEG folder")
    parser.add_argument("--out", default="assets/demo/demo.mp4")
    parser.add_argument("--images", type=int, default=8, help="test images to use")
    parser.add_argument("--seconds-each", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    root = Path(args.data)
    rng = np.random.default_rng(args.seed)
    test_ids = (root / "splits" / "test.txt").read_text().split()
    chosen = sorted(rng.choice(test_ids, args.images, replace=False).tolist())
    meta = json.loads((root / "kavsir_bboxes.json").read_text())
    out = Path(args.out)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    per_image = int(args.seconds_each * FPS)
    fade = FPS // 3
    truth, tail, index = [], None, 0
    for item in chosen:
        image = cv2.imread(str(root / "images" / f"{item}.jpg"), cv2.IMREAD_COLOR)
        boxes = np.array([[b["xmin"], b["ymin"], b["xmax"], b["ymax"]] for b in meta[item]["bbox"]], np.float64)
        for i, (frame, shown) in enumerate(film(image, boxes, per_image, rng)):
            if tail is not None and i < fade:  # cross-fade from the previous still
                a = (i + 1) / (fade + 1)
                frame = cv2.addWeighted(frame, a, tail, 1 - a, 0)
            writer.write(frame)
            truth.append({"frame": index, "image_id": item, "boxes": np.round(shown, 1).tolist()})
            index += 1
        tail = frame
    writer.release()
    out.with_suffix(".boxes.json").write_text(json.dumps({"source_images": chosen, "fps": FPS, "frames": truth}))
    print(f"wrote {out} ({index} frames, {index / FPS:.1f} s) from test images {chosen}")


if __name__ == "__main__":
    main()
