"""Dataset readers: Kvasir-SEG as released, image+mask folders, YOLO label folders.

Every reader returns a :class:`DatasetIndex`: the usable samples plus a list of
:class:`Problem` records. An image without a polyp is data, not an error: an empty mask,
an empty label file or an empty box list (whose mask, if any, is empty too) makes a
*negative* sample (no boxes), which training learns "nothing here" from and evaluation
counts false alarms on. Anything ambiguous (a missing label file, a mask of specks, an
empty box list beside a marked mask) is skipped and reported instead: calling a polyp
frame polyp-free is the worst label error a detector can learn from. Nothing is dropped silently: an item that cannot be used is
named in ``problems`` with the reason, and ``polypscope data check`` prints them all.
Boxes are ``x1, y1, x2, y2`` in the pixels of the original image.

Readers decode only what the boxes need (masks of mask folders, images whose size scales
normalised labels); ``training.data.data_check.open_checked`` decodes the rest, and is what
``data check``, ``train`` and ``val`` all use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from training.data.image_files import UnreadableImage, read_grayscale, read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MASK_THRESHOLD = 128
KVASIR_BOXES_FILE = "kavsir_bboxes.json"
SPLITS_DIR = "splits"
#: Connected components smaller than this fraction of the image are mask noise, not polyps.
MIN_COMPONENT_FRACTION = 1e-4


class DatasetError(RuntimeError):
    """A dataset folder or split that cannot be read at all; names the path."""


@dataclass(frozen=True)
class Sample:
    """One annotated image: boxes ``[N, 4]`` float32 xyxy pixels, labels ``[N]`` int64.
    ``N == 0`` is a negative (polyp-free) image. ``crop`` (x1, y1, x2, y2 in image pixels)
    restricts the sample to part of the image: mined polyp-free crops use it."""

    id: str
    image_path: Path
    boxes: np.ndarray
    labels: np.ndarray
    mask_path: Path | None = None
    size: tuple[int, int] | None = None  # (height, width) when the annotation states it
    #: The boxes were taken from the mask, so the reader has already decoded and size-checked it.
    boxes_from_mask: bool = False
    crop: tuple[int, int, int, int] | None = None

    @property
    def is_negative(self) -> bool:
        return len(self.boxes) == 0

    @property
    def frame_hw(self) -> tuple[int, int] | None:
        """(height, width) of what the sample shows: its crop, else the whole image."""
        if self.crop is not None:
            x1, y1, x2, y2 = self.crop
            return y2 - y1, x2 - x1
        return self.size


@dataclass(frozen=True)
class Problem:
    """Something wrong with one item: which file, and what. ``item`` is the sample id, or
    ``""`` for a problem of the whole dataset or split; the printed form names both, so a
    line from a split file or the box JSON can be traced to its sample."""

    item: str
    path: str
    message: str
    skipped: bool  # True when the item was left out of the dataset because of it

    def __str__(self) -> str:
        id_part = f" (id {self.item})" if self.item else ""
        return f"{'SKIPPED ' if self.skipped else ''}{self.path}: {self.message}{id_part}"


@dataclass
class DatasetIndex:
    root: Path
    format: str
    class_names: tuple[str, ...]
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def negatives(self) -> list[Sample]:
        """The polyp-free samples."""
        return [s for s in self.samples if s.is_negative]

    @property
    def positives(self) -> list[Sample]:
        """The samples with at least one box."""
        return [s for s in self.samples if not s.is_negative]

    @property
    def skipped(self) -> list[Problem]:
        return [p for p in self.problems if p.skipped]

    def subset(self, ids: list[str], split_name: str) -> DatasetIndex:
        """The samples whose id is in ``ids``, in the order of ``ids``, with their problems;
        ids the dataset does not know are problems too."""
        by_id = {s.id: s for s in self.samples}
        out = DatasetIndex(self.root, self.format, self.class_names)
        out.samples = [by_id[item] for item in ids if item in by_id]
        out.problems = self.unknown_ids(ids, split_name)
        wanted = set(ids)
        out.problems.extend(p for p in self.problems if p.item in wanted)
        return out

    def unknown_ids(self, ids: Iterable[str], split_name: str) -> list[Problem]:
        """One skipping problem per listed id that is neither a sample nor already reported
        as skipped (those carry their own reason)."""
        known = {s.id for s in self.samples} | {p.item for p in self.skipped}
        return [Problem(item, f"{SPLITS_DIR}/{split_name}.txt", "id listed in the split but not in the dataset", True)
                for item in ids if item not in known]


def find_image(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_split_ids(root: Path, split: str) -> list[str]:
    path = root / SPLITS_DIR / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in (root / SPLITS_DIR).glob("*.txt")) if (root / SPLITS_DIR).is_dir() else []
        raise DatasetError(f"{path}: no such split file (available splits: {available or 'none'})")
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def boxes_from_mask(mask: np.ndarray, min_fraction: float = MIN_COMPONENT_FRACTION) -> np.ndarray:
    """One box per connected component of the thresholded mask (8-connectivity),
    ignoring specks below ``min_fraction`` of the image. Returns ``[N, 4]`` xyxy with
    exclusive right/bottom edges."""
    binary = (mask >= MASK_THRESHOLD).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    min_area = min_fraction * mask.shape[0] * mask.shape[1]
    boxes = [
        (x, y, x + w, y + h)
        for x, y, w, h, area in stats[1:count]
        if area >= min_area
    ]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def _box_problems(item: str, path: str, boxes: np.ndarray, size: tuple[int, int] | None) -> list[Problem]:
    problems = []
    for b in boxes:
        if b[2] <= b[0] or b[3] <= b[1]:
            problems.append(Problem(item, path, f"degenerate box {b.tolist()} (zero or negative size)", False))
        elif size is not None and (b[0] < 0 or b[1] < 0 or b[2] > size[1] or b[3] > size[0]):
            problems.append(Problem(item, path, f"box {b.tolist()} lies outside the {size[1]}x{size[0]} image", False))
    return problems


def _valid_boxes(boxes: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes = boxes[keep]
    if size is not None and len(boxes):
        boxes = boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, size[1])
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, size[0])
    return boxes


def read_kvasir(root: Path) -> DatasetIndex:
    """Kvasir-SEG as released: ``images/``, ``masks/`` and ``kavsir_bboxes.json``."""
    meta_path = root / KVASIR_BOXES_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{meta_path}: cannot read the box file ({exc})") from None
    index = DatasetIndex(root, "kvasir-seg", ("polyp",))
    for item, entry in meta.items():
        image = find_image(root / "images", item)
        if image is None:
            index.problems.append(Problem(item, f"images/{item}.jpg", "image file missing", True))
            continue
        size = (int(entry["height"]), int(entry["width"]))
        boxes = np.asarray(
            [[b["xmin"], b["ymin"], b["xmax"], b["ymax"]] for b in entry.get("bbox", [])],
            dtype=np.float32,
        ).reshape(-1, 4)
        rel = f"{KVASIR_BOXES_FILE}[{item}]"
        index.problems.extend(_box_problems(item, rel, boxes, size))
        listed = len(boxes)
        boxes = _valid_boxes(boxes, size)
        if listed and len(boxes) == 0:  # an empty list is a negative; a list of bad boxes is not
            index.problems.append(Problem(item, rel, "no usable box", True))
            continue
        mask = find_image(root / "masks", item)
        if not listed and mask is not None and _mask_marks_anything(mask):
            index.problems.append(Problem(item, rel, f"empty box list, but masks/{mask.name} marks a polyp: "
                                                     "neither boxes nor polyp-free", True))
            continue
        if mask is None:
            index.problems.append(Problem(item, f"masks/{item}.jpg", "mask file missing (the boxes come from "
                                          f"{KVASIR_BOXES_FILE}, so the image is still used)", False))
        index.samples.append(Sample(item, image, boxes, np.zeros(len(boxes), np.int64), mask, size))
    return index


def _mask_marks_anything(path: Path) -> bool:
    """True when the mask file has a pixel above threshold (or cannot be read: then it is
    safer not to call the image polyp-free)."""
    try:
        return bool((read_grayscale(path) >= MASK_THRESHOLD).any())
    except UnreadableImage:
        return True


def read_mask_folder(root: Path) -> DatasetIndex:
    """``images/`` and ``masks/`` with matching stems (CVC-ClinicDB, ETIS-Larib, CVC-ColonDB);
    boxes come from the connected components of each thresholded mask; an empty mask makes a
    negative (polyp-free) sample."""
    index = DatasetIndex(root, "image-mask folders", ("polyp",))
    for image in list_images(root / "images"):
        sample, problems = _read_mask_item(root, image)
        index.problems.extend(problems)
        if sample is not None:
            index.samples.append(sample)
    return index


def _read_mask_item(root: Path, image_path: Path) -> tuple[Sample | None, list[Problem]]:
    """One image and its mask; a mask of another size than its image is rescaled to it
    (nearest neighbour keeps it binary) before the boxes are taken, so boxes are always
    in image pixels."""
    item = image_path.stem
    mask_path = find_image(root / "masks", item)
    if mask_path is None:
        return None, [Problem(item, str(image_path.relative_to(root)), "no mask with this name in masks/", True)]
    rel_mask = str(mask_path.relative_to(root))
    try:
        height, width = read_image(image_path).shape[:2]
    except UnreadableImage as exc:
        return None, [undecodable(item, str(image_path.relative_to(root)), "image", exc)]
    try:
        mask = read_grayscale(mask_path)
    except UnreadableImage as exc:
        return None, [undecodable(item, rel_mask, "mask", exc)]
    problems = []
    if mask.shape != (height, width):
        problems.append(mask_size_problem(item, rel_mask, mask.shape, (height, width),
                                          ": rescaled to the image (nearest neighbour) before taking its boxes"))
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    boxes = boxes_from_mask(mask)
    if len(boxes) == 0 and (mask >= MASK_THRESHOLD).any():
        # Marked pixels without a usable component: a tiny polyp or noise, never "no polyp".
        return None, [*problems, Problem(item, rel_mask, "mask marks only specks under "
                                         f"{MIN_COMPONENT_FRACTION:.0e} of the image: neither a polyp box nor "
                                         "polyp-free", True)]
    sample = Sample(item, image_path, boxes, np.zeros(len(boxes), np.int64), mask_path, (height, width),
                    boxes_from_mask=True)
    return sample, problems


def mask_size_problem(item: str, rel_mask: str, mask_hw: tuple[int, ...], image_hw: tuple[int, int],
                      consequence: str) -> Problem:
    """The one wording for a mask whose size differs from its image's, in every reader."""
    return Problem(item, rel_mask, f"mask is {mask_hw[1]}x{mask_hw[0]}, image {image_hw[1]}x{image_hw[0]}"
                                   f"{consequence}", False)


def undecodable(item: str, rel: str, what: str, exc: UnreadableImage) -> Problem:
    """The one wording for an image or mask file that cannot be used: the item is skipped."""
    return Problem(item, rel, f"{what} cannot be decoded: {exc.detail}", True)


def _read_yolo_label(path: Path, item: str, rel: str) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    rows, labels, problems = [], [], []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls, cx, cy, w, h = int(parts[0]), *map(float, parts[1:5])
        except (ValueError, IndexError):
            problems.append(Problem(item, f"{rel}:{line_no}", f"not 'class cx cy w h': {line!r}", False))
            continue
        if not (0 <= cx <= 1 and 0 <= cy <= 1 and 0 < w <= 1 and 0 < h <= 1):
            problems.append(Problem(item, f"{rel}:{line_no}", f"coordinates outside [0, 1]: {line!r}", False))
            continue
        rows.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        labels.append(cls)
    return np.asarray(rows, np.float32).reshape(-1, 4), np.asarray(labels, np.int64), problems


def read_yolo_folder(root: Path) -> DatasetIndex:
    """``images/`` and ``labels/`` (one ``class cx cy w h`` line per box, normalised);
    class names from ``classes.txt`` when present. Boxes are scaled to pixels on reading
    the image size."""
    names_file = root / "classes.txt"
    names = tuple(n.strip() for n in names_file.read_text().splitlines() if n.strip()) if names_file.is_file() else ("polyp",)
    index = DatasetIndex(root, "yolo labels", names)
    for image in list_images(root / "images"):
        item = image.stem
        label_path = root / "labels" / f"{item}.txt"
        rel = str(label_path.relative_to(root))
        if not label_path.is_file():
            # Not taken as polyp-free (as Ultralytics would): a forgotten label file would
            # teach "no polyp" on a polyp frame. An EMPTY label file marks a polyp-free image.
            index.problems.append(Problem(item, rel, "label file missing (an empty label file marks a "
                                                     "polyp-free image)", True))
            continue
        boxes, labels, problems = _read_yolo_label(label_path, item, rel)
        index.problems.extend(problems)
        if len(boxes) == 0 and any(p.path.startswith(f"{rel}:") for p in problems):
            index.problems.append(Problem(item, rel, "no usable box", True))
            continue
        try:
            size = read_image(image).shape[:2]
        except UnreadableImage as exc:
            index.problems.append(undecodable(item, str(image.relative_to(root)), "image", exc))
            continue
        scale = np.array([size[1], size[0], size[1], size[0]], np.float32)
        index.samples.append(Sample(item, image, boxes * scale, labels, None, size))
    return index


def detect_format(root: Path) -> str:
    if (root / KVASIR_BOXES_FILE).is_file():
        return "kvasir-seg"
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return "yolo"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "masks"
    raise DatasetError(
        f"{root}: not a dataset folder PolypScope knows: expected {KVASIR_BOXES_FILE} "
        "(Kvasir-SEG), images/ + labels/ (YOLO) or images/ + masks/ (CVC-ClinicDB style)"
    )


_READERS = {"kvasir-seg": read_kvasir, "yolo": read_yolo_folder, "masks": read_mask_folder}


def open_dataset(root: str | os.PathLike[str], split: str | None = None) -> DatasetIndex:
    """Read the dataset at ``root`` (any supported format), restricted to ``split`` if given."""
    path = Path(root)
    if not path.is_dir():
        raise DatasetError(f"{path}: no such dataset folder")
    index = _READERS[detect_format(path)](path)
    if split is None:
        return index
    return index.subset(read_split_ids(path, split), split)


def default_data_root() -> Path | None:
    """Where the Kvasir-SEG copy lives: ``$POLYPSCOPE_DATA`` or ``../shared/data/kvasir-seg``."""
    env = os.environ.get("POLYPSCOPE_DATA")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent.parent
    candidates.append(here.parent / "shared" / "data" / "kvasir-seg")
    for c in candidates:
        if (c / KVASIR_BOXES_FILE).is_file():
            return c
    return None
