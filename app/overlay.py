"""Drawing detections and the heads-up display onto frames (OpenCV, no Qt).

The overlay never alters the image outside what it draws: box outlines, their labels, the
alert marker and the HUD panel. Everything else stays bit-identical to the input, so a
clinician sees the tissue exactly as the endoscope delivered it. ``drawn_regions`` gives
the rectangles the overlay may touch, for tests and for anyone auditing that promise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from engine.detections import Detections

BOX_COLOUR = (0, 255, 255)      # yellow (BGR): visible on red-pink mucosa
ALERT_COLOUR = (0, 200, 255)
HUD_BG = (20, 20, 20)
HUD_FG = (235, 235, 235)
FONT = cv2.FONT_HERSHEY_SIMPLEX


BOX_SHAPES = ("corners", "box")  # in the order the settings offer them


@dataclass(frozen=True)
class OverlayStyle:
    """How boxes are drawn into frames (recordings, snapshots, exported clips): the same
    shape, colour and thickness the user chose for the window (``app.gui.display.canvas``),
    rasterised at frame resolution."""

    thickness: int = 2
    font_scale: float = 0.5
    show_scores: bool = True
    hud: bool = True
    alert: bool = True
    shape: str = "box"                         # "box" or "corners" (brackets that leave the polyp clear)
    colour: tuple[int, int, int] = BOX_COLOUR  # BGR
    corner_fraction: float = 0.25              # a bracket's arm, as a share of the box's shorter side

    def __post_init__(self) -> None:
        if self.shape not in BOX_SHAPES:
            raise ValueError(f"box shape {self.shape!r}: one of {', '.join(BOX_SHAPES)}")


def bgr_of(hex_colour: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` as OpenCV's (b, g, r)."""
    value = hex_colour.lstrip("#")
    if len(value) != 6:
        raise ValueError(f"colour {hex_colour!r}: expected #rrggbb")
    r, g, b = (int(value[i:i + 2], 16) for i in (0, 2, 4))
    return b, g, r


@dataclass(frozen=True)
class HudInfo:
    capture_fps: float
    inference_fps: float
    display_fps: float
    latency_ms: float
    inference_ms: float
    backend: str


def _label(score: float, names: tuple[str, ...], cls: int) -> str:
    name = names[cls] if 0 <= cls < len(names) else str(cls)
    return f"{name} {score:.2f}"


def _label_rect(box: np.ndarray, text: str, style: OverlayStyle, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    (tw, th), base = cv2.getTextSize(text, FONT, style.font_scale, 1)
    x1 = int(round(box[0]))
    y1 = int(round(box[1])) - th - base - 4
    if y1 < 0:  # no room above the box: put the label inside its top edge
        y1 = int(round(box[1]))
    return max(0, x1), max(0, y1), min(shape[1], x1 + tw + 6), min(shape[0], y1 + th + base + 4)


def _hud_lines(hud: HudInfo) -> list[str]:
    return [f"FPS  cap {hud.capture_fps:4.1f}  inf {hud.inference_fps:4.1f}  disp {hud.display_fps:4.1f}",
            f"lat {hud.latency_ms:5.1f} ms  model {hud.inference_ms:4.1f} ms",
            hud.backend]


def scaled(style: OverlayStyle, shape: tuple[int, ...]) -> OverlayStyle:
    """The style with text and lines sized for this frame (tuned at 800 px wide)."""
    factor = min(2.0, max(0.6, shape[1] / 800))
    return replace(style, font_scale=style.font_scale * factor, thickness=max(1, round(style.thickness * factor)))


def _hud_rect(hud: HudInfo, style: OverlayStyle, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    sizes = [cv2.getTextSize(line, FONT, style.font_scale, 1)[0] for line in _hud_lines(hud)]
    w = max(s[0] for s in sizes) + 12
    h = sum(s[1] + 8 for s in sizes) + 6
    return 0, max(0, shape[0] - h), min(shape[1], w), shape[0]


def corner_arm(side: float, fraction: float) -> float:
    """A corner bracket's arm on a box whose shorter side is ``side``: ``fraction`` of it,
    at least 4 pixels, and never past the middle of the edge (on a tiny box too)."""
    return min(max(4.0, fraction * side), max(1.0, side / 2))


def _corner_strokes(p1: tuple[int, int], p2: tuple[int, int],
                    fraction: float) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The eight strokes of four corner brackets on the box ``p1``-``p2`` (each on its edge)."""
    (x1, y1), (x2, y2) = p1, p2
    arm = round(corner_arm(min(x2 - x1, y2 - y1), fraction))
    strokes = []
    for x, y, dx, dy in ((x1, y1, 1, 1), (x2, y1, -1, 1), (x1, y2, 1, -1), (x2, y2, -1, -1)):
        strokes.append(((x, y), (x + dx * arm, y)))
        strokes.append(((x, y), (x, y + dy * arm)))
    return strokes


def _alert_rect(shape: tuple[int, int]) -> tuple[int, int, int, int]:
    size = max(12, min(shape[:2]) // 20)
    return shape[1] - size - 8, 8, shape[1] - 8, 8 + size


def draw_overlay(frame: np.ndarray, dets: Detections, class_names: tuple[str, ...] = ("polyp",),
                 hud: HudInfo | None = None, style: OverlayStyle = OverlayStyle()) -> np.ndarray:
    """A copy of ``frame`` with boxes (and scores), alert marker and HUD drawn on it."""
    out = frame.copy()
    shape = out.shape[:2]
    style = scaled(style, shape)
    for box, score, cls in zip(dets.boxes, dets.scores, dets.classes):
        p1 = (int(round(box[0])), int(round(box[1])))
        p2 = (int(round(box[2])), int(round(box[3])))
        if style.shape == "corners":
            for a, b in _corner_strokes(p1, p2, style.corner_fraction):
                cv2.line(out, a, b, style.colour, style.thickness, cv2.LINE_8)
        else:
            cv2.rectangle(out, p1, p2, style.colour, style.thickness, cv2.LINE_8)
        if style.show_scores:
            text = _label(float(score), class_names, int(cls))
            x1, y1, x2, y2 = _label_rect(box, text, style, shape)
            cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), style.colour, -1)
            cv2.putText(out, text, (x1 + 3, y2 - 5), FONT, style.font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    if style.alert and len(dets):
        x1, y1, x2, y2 = _alert_rect(shape)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), ALERT_COLOUR, -1)
    if style.hud and hud is not None:
        x1, y1, x2, y2 = _hud_rect(hud, style, shape)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), HUD_BG, -1)
        y = y1 + 4
        for line in _hud_lines(hud):
            (_, th), _ = cv2.getTextSize(line, FONT, style.font_scale, 1)
            y += th + 8
            cv2.putText(out, line, (x1 + 6, y - 4), FONT, style.font_scale, HUD_FG, 1, cv2.LINE_AA)
    return out


def drawn_regions(frame_shape: tuple[int, ...], dets: Detections, class_names: tuple[str, ...] = ("polyp",),
                  hud: HudInfo | None = None, style: OverlayStyle = OverlayStyle()) -> np.ndarray:
    """Boolean mask of every pixel :func:`draw_overlay` is allowed to change."""
    h, w = frame_shape[:2]
    style = scaled(style, (h, w))
    mask = np.zeros((h, w), bool)
    pad = style.thickness
    for box, score, cls in zip(dets.boxes, dets.scores, dets.classes):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        for (a, b, c, d) in ((x1, y1, x2, y1), (x1, y2, x2, y2), (x1, y1, x1, y2), (x2, y1, x2, y2)):
            mask[max(0, min(b, d) - pad):max(0, max(b, d) + pad + 1), max(0, min(a, c) - pad):max(0, max(a, c) + pad + 1)] = True
        if style.show_scores:
            lx1, ly1, lx2, ly2 = _label_rect(box, _label(float(score), class_names, int(cls)), style, (h, w))
            mask[ly1:ly2, lx1:lx2] = True
    if style.alert and len(dets):
        x1, y1, x2, y2 = _alert_rect((h, w))
        mask[y1:y2, x1:x2] = True
    if style.hud and hud is not None:
        x1, y1, x2, y2 = _hud_rect(hud, style, (h, w))
        mask[y1:y2, x1:x2] = True
    return mask
