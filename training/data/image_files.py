"""Reading image and mask files for training, with one rule for files that cannot be used.

A file is unusable when it cannot be read, is empty, is visibly cut short (a JPEG without
its end-of-image marker ``FF D9``, a PNG without its ``IEND`` chunk; trailing zero padding,
as left by some copy tools, is allowed), or when OpenCV cannot decode it. The truncation
test runs before the bytes reach libjpeg: given half a JPEG, ``cv2.imread`` prints
"Premature end of JPEG file", fills the missing half with grey and returns it as an image,
while ``cv2.imdecode`` refuses the same bytes, so the outcome depended on which call a
reader used. Every training reader, the data check and the image cache go through here.

The runtime's image-folder source applies the same rule with its own code (``app`` may not
import ``training``).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

JPEG_START = b"\xff\xd8"
JPEG_END = b"\xff\xd9"
PNG_START = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"


class UnreadableImage(ValueError):
    """An image or mask file that cannot be used; ``detail`` says why, without the path."""

    def __init__(self, path: str | os.PathLike[str], detail: str) -> None:
        super().__init__(f"{path}: image cannot be decoded: {detail}")
        self.path = Path(path)
        self.detail = detail


def _jpeg_has_end(data: bytes) -> bool:
    """Whether the JPEG in ``data`` reaches its end-of-image marker. The marker segments
    before the first scan are walked by their lengths (an EXIF thumbnail inside APP1 has
    its own markers), then FF D9 is looked for after the scan starts: byte stuffing keeps
    it out of the compressed data, so whatever follows the image (zero padding, a motion
    photo's video, a vendor trailer) does not matter."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the image data follows
            return data.find(JPEG_END, pos + 2) != -1
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False


def truncation(data: bytes) -> str | None:
    """Why ``data`` is visibly cut short, or ``None`` when its format's end marker is there."""
    body = data.rstrip(b"\0")
    if data.startswith(JPEG_START) and not _jpeg_has_end(data):
        return "truncated JPEG (no end-of-image marker FF D9)"
    if data.startswith(PNG_START) and not body.endswith(PNG_END):
        return "truncated PNG (no IEND chunk)"
    return None


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """HxWx3 BGR uint8, or :class:`UnreadableImage`."""
    return _decode(path, cv2.IMREAD_COLOR)


def read_grayscale(path: str | os.PathLike[str]) -> np.ndarray:
    """HxW uint8 (masks), or :class:`UnreadableImage`."""
    return _decode(path, cv2.IMREAD_GRAYSCALE)


def _decode(path: str | os.PathLike[str], flags: int) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UnreadableImage(path, f"cannot read ({exc.strerror or exc})") from None
    if not data:
        raise UnreadableImage(path, "empty file")
    reason = truncation(data)
    if reason is not None:
        raise UnreadableImage(path, reason)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise UnreadableImage(path, "not an image, or corrupt")
    return image
