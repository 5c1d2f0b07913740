"""Reading one image file, with one rule for files that cannot be read.

The rule, everywhere a folder of images is read: a file that cannot be read is skipped,
a warning names it and says why, and the file is counted (the report lists it). It is
never fatal because of where it sorts, and never silent.

A JPEG cut short (a copy interrupted, a disk that filled) still half-decodes: libjpeg
fills the rest grey and prints "Premature end of JPEG file" on stderr, where nobody reads
it, and the frame goes on to the detector. So truncation is checked on the bytes before
decoding: a JPEG must end with its end-of-image marker FF D9, a PNG with its IEND chunk,
either allowing the zero padding some cameras and copy tools append. The training side's
readers (``training/data/image_files.py``) apply the same rule with their own copy, since the
runtime may not import ``training``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
PNG_START = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC


class UnreadableImage(ValueError):
    """An image file that cannot be used; the message names the file and says why."""


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


def truncation_problem(data: bytes) -> str | None:
    """Why ``data`` (a whole JPEG or PNG file) is cut short, or None if it ends properly or
    is of another format (left to the decoder)."""
    body = data.rstrip(b"\x00")
    if data.startswith(JPEG_START) and not _jpeg_has_end(data):
        return "truncated JPEG (no end-of-image marker FF D9)"
    if data.startswith(PNG_START) and not body.endswith(PNG_END):
        return "truncated PNG (no IEND chunk)"
    return None


def read_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` as a BGR uint8 array ``[H, W, 3]``.

    Raises :class:`UnreadableImage` (naming the file and the problem) when the file cannot
    be read, is empty, is a truncated JPEG or PNG, or does not decode; callers skip it, warn
    and count it. Never prints a decoder message: truncation is caught before decoding.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise UnreadableImage(f"{path}: empty file")
    problem = truncation_problem(data)
    if problem is not None:
        raise UnreadableImage(f"{path}: {problem}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableImage(f"{path}: cannot decode the image (not an image, or corrupt)")
    return image
