"""Which polyp-free frames a model fires on, and which of them several models share.

A false-alarm share such as "5.6% of val's polyp-free frames" says how often, not where.
Whether the next gain comes from training or from the data depends on where: frames that
every model fires on, whatever its seed or recipe, hold something polyp-like (a raised
spot, debris, perhaps a diminutive polyp the annotation left out), while frames only one
model fires on are that model's noise. ``polypscope val --false-alarms-out FILE`` writes
one model's list (:func:`alarm_record`); this module's command lines several up:

    python -m training.evaluation.alarm_overlap A.json B.json ... [--markdown OUT.md] [--sheet OUT.png]

Each list is judged at its own recall-0.90 threshold, the operating point ``val`` reports,
so models with different score scales compare fairly. Frames are matched by sample id,
source image and crop: the lists must come from the same split mined with the same
settings (the command refuses lists that differ, and a model listed twice). For two lists
it also gives the paired comparison an A/B decision needs: the frames only one of them
fires on, and a one-sided exact McNemar test over them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from training.data.datasets import Sample
from training.evaluation.evaluate import ImageDetections

#: Boxes scoring below this are left out of a list (unless the model's threshold is lower
#: still): without a floor a frame lists hundreds of near-zero candidates.
LIST_FLOOR = 0.05


def alarm_record(negatives: list[Sample], detections: list[ImageDetections], point: dict[str, Any],
                 label: str, scored_as: dict[str, Any], floor: float = LIST_FLOOR) -> dict[str, Any]:
    """One model's boxes on every polyp-free frame, in the frame's pixels (a crop's own
    pixels for a mined crop), with the recall-0.90 operating ``point`` they are judged at
    and how they were scored (``scored_as``: data, split, input size, box merging). Scores
    are stored exactly (float32, as ``val`` compares them). ``max_score`` is the frame's
    best score even when it is under the floor (0.0 for a frame with no box)."""
    if len(negatives) != len(detections):
        raise ValueError(f"{len(negatives)} polyp-free frames but {len(detections)} detection lists")
    threshold = float(point["threshold"])
    floor = min(floor, threshold)  # never hide a box that counts as a false alarm
    frames = []
    for sample, det in zip(negatives, detections, strict=True):
        scores = np.asarray(det.scores, np.float32)
        keep = scores >= np.float32(floor)
        frames.append({"id": sample.id, "image": str(sample.image_path),
                       "crop": list(sample.crop) if sample.crop is not None else None,
                       "max_score": float(scores.max()) if len(scores) else 0.0,
                       "boxes": [[*(round(float(v), 1) for v in box), float(s)]
                                 for box, s in zip(np.asarray(det.boxes)[keep], scores[keep])]})
    return {"model": label, "threshold": threshold, "reached": bool(point["reached"]), "floor": floor,
            "scored_as": scored_as, "frames": frames}


def firing_frames(record: dict[str, Any]) -> set[str]:
    """Ids of the frames with a box scoring above the record's threshold (strictly, in
    float32, as ``val`` counts a false alarm)."""
    t = np.float32(record["threshold"])
    return {f["id"] for f in record["frames"] if np.float32(f["max_score"]) > t}


def _frame_key(frame: dict[str, Any]) -> tuple:
    """What makes two lists' frames the same frame: the sample id, the image's file name and
    the crop (mined ids name only the image, so crops mined differently differ here)."""
    return frame["id"], Path(frame["image"]).name, tuple(frame["crop"]) if frame["crop"] else None


def mcnemar_fewer(only_first: int, only_second: int) -> float:
    """One-sided exact McNemar p-value that the second model fires on fewer frames than the
    first: the chance of ``only_second`` or fewer of the discordant frames falling to the
    second if each were a fair coin."""
    n = only_first + only_second
    return sum(math.comb(n, k) for k in range(only_second + 1)) / 2 ** n if n else 1.0


def overlap(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per frame, which models fire on it; how many frames k of the n models share; and, for
    two lists, the paired comparison of the frames on which only one fires."""
    if not records:
        raise ValueError("no false-alarm lists to compare")
    labels = [r["model"] for r in records]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{sorted({m for m in labels if labels.count(m) > 1})[0]} is listed twice: "
                         "give each list once")
    first = records[0]
    keys = sorted(_frame_key(f) for f in first["frames"])
    for r in records[1:]:
        if sorted(_frame_key(f) for f in r["frames"]) != keys:
            raise ValueError(f"{r['model']} and {first['model']} list different polyp-free frames: "
                             "score the same split with the same mining settings")
        split = (r.get("scored_as") or {}).get("split"), (first.get("scored_as") or {}).get("split")
        if split[0] != split[1]:
            raise ValueError(f"{r['model']} was scored on split {split[0]!r}, {first['model']} on {split[1]!r}")
    ids = [f["id"] for f in first["frames"]]
    fired = [firing_frames(r) for r in records]
    scores = [{f["id"]: f["max_score"] for f in r["frames"]} for r in records]
    rows = []
    for frame_id in ids:
        firing = [i for i, hits in enumerate(fired) if frame_id in hits]
        if firing:
            rows.append({"id": frame_id, "models": [labels[i] for i in firing], "model_numbers": [i + 1 for i in firing],
                         "scores": [round(s[frame_id], 3) for s in scores]})
    rows.sort(key=lambda row: (-len(row["models"]), row["id"]))
    shared = Counter(len(row["models"]) for row in rows)
    result = {"frames": len(ids), "models": labels,
              "scored_as": [r.get("scored_as") for r in records],
              "reached": [r.get("reached", True) for r in records],
              "firing_per_model": [len(hits) for hits in fired],
              "frames_by_models_firing": {k: shared.get(k, 0) for k in range(1, len(records) + 1)},
              "rows": rows}
    if len(records) == 2:
        only_first, only_second = len(fired[0] - fired[1]), len(fired[1] - fired[0])
        result["paired"] = {"only_first": only_first, "only_second": only_second, "both": len(fired[0] & fired[1]),
                            "p_second_fires_on_fewer": mcnemar_fewer(only_first, only_second)}
    return result


def format_markdown(result: dict[str, Any]) -> str:
    """The comparison as three tables (per model; frames by how many models fire; per
    frame), and for two lists the paired comparison."""
    n = len(result["models"])
    lines = [f"{result['frames']} polyp-free frames, {n} models, each at its own recall-0.90 threshold.", "",
             "| # | model | scored at | frames it fires on |", "|---|---|---|---|"]
    for i, (m, how, reached, c) in enumerate(zip(result["models"], result["scored_as"], result["reached"],
                                                 result["firing_per_model"]), 1):
        at = f"{how['input_size']} px, merge {how['box_merge_iou'] or 'off'}" if how else "–"
        lines.append(f"| {i} | {m} | {at} | {c}{'' if reached else ' (recall 0.90 not reached)'} |")
    lines += ["", "| models firing | frames |", "|---|---|"]
    lines += [f"| {k} of {n} | {c} |" for k, c in sorted(result["frames_by_models_firing"].items(), reverse=True)]
    lines += ["", f"| frame | models firing | best score of model 1 .. {n} |", "|---|---|---|"]
    for row in result["rows"]:
        best = ", ".join(f"{s:.2f}" for s in row["scores"])
        lines.append(f"| {row['id']} | {len(row['models'])} | {best} |")
    if "paired" in result:
        p = result["paired"]
        lines += ["", f"Paired over the same frames: {p['only_first']} fire only for model 1, {p['only_second']} "
                      f"only for model 2, {p['both']} for both; one-sided exact McNemar p that model 2 fires on "
                      f"fewer frames: {p['p_second_fires_on_fewer']:.3f}."]
    return "\n".join(lines) + "\n"


def save_overlap_sheet(path: str | Path, records: list[dict[str, Any]], result: dict[str, Any],
                       max_frames: int = 24) -> int:
    """The frames models fire on, most shared first: each tile shows what the models saw
    (the crop) with every firing model's boxes above its threshold (red); the caption says
    how many models fire. Returns how many frames it shows."""
    from training.evaluation.review_sheet import draw_tile, frame_pixels, save_tile_grid

    by_id = [{f["id"]: f for f in r["frames"]} for r in records]
    tiles, captions = [], []
    for row in result["rows"][:max_frames]:
        frame = by_id[0][row["id"]]
        boxes = []
        for r, frames in zip(records, by_id):
            t = np.float32(r["threshold"])
            boxes += [(np.asarray(b[:4]), (0, 0, 255), "") for b in frames[row["id"]]["boxes"] if np.float32(b[4]) > t]
        sample = Sample(row["id"], Path(frame["image"]), np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                        crop=tuple(frame["crop"]) if frame["crop"] else None)
        tiles.append(draw_tile(frame_pixels(sample), boxes))
        captions.append(f"{len(row['models'])} of {len(records)} models\n{row['id'][:22]}")
    save_tile_grid(path, tiles, captions,
                   f"polyp-free frames with a box at each model's recall-0.90 threshold ({len(result['rows'])} of "
                   f"{result['frames']} frames, {len(records)} models; red: every firing model's boxes)")
    return len(tiles)


def _read(path: Path) -> dict[str, Any]:
    """A list as written by ``val --false-alarms-out``, or a one-line error naming the file."""
    try:
        record = json.loads(path.read_text())
        if not isinstance(record.get("model"), str) or not isinstance(record.get("frames"), list):
            raise ValueError("no model name or frame list")
        float(record["threshold"])
        for frame in record["frames"]:
            str(frame["id"]), str(frame["image"]), float(frame["max_score"]), list(frame["boxes"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SystemExit(f"{path}: not a false-alarm list written by 'polypscope val --false-alarms-out' ({e})") from None
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluation.alarm_overlap", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lists", nargs="+", type=Path, help="files written by 'polypscope val --false-alarms-out'")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    parser.add_argument("--json-out", type=Path, help="write the comparison as JSON here")
    parser.add_argument("--sheet", type=Path, metavar="PNG",
                        help="write a contact sheet of the frames the models fire on, most shared first")
    args = parser.parse_args(argv)
    records = [_read(p) for p in args.lists]
    try:
        result = overlap(records)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = format_markdown(result)
    print(text, end="")
    if args.markdown:
        args.markdown.write_text(text)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    if args.sheet:
        try:
            shown = save_overlap_sheet(args.sheet, records, result)
        except (OSError, ValueError) as e:  # an image moved or changed since the lists were written
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"sheet: {args.sheet} ({shown} frames)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
