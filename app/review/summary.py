"""A recording's summary: its events, marked false alarms per minute, and the time to first
detection of each marked polyp; exported as JSON and CSV.

Time to first detection of a polyp is measured from its onset (the frame where it comes
into view) to the first frame in which this model shows a box overlapping the polyp's
stretch. Measured for any model against the same marks, it says which model warns sooner.
The onset is the engineer's (key O) where set; otherwise it is the first raw detection of
the event the polyp was marked on, and the figure then measures only the delay the
persistence filter adds. Each polyp's ``onset_by`` says which.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.review.events import Event
from app.review.marks import FALSE_ALARM, LABELS, MarkStore
from engine.atomic import atomic_write_text


def summarise(events: Sequence[Event], marks: MarkStore, *, fps: float, frame_count: int, video: str = "",
              model: str = "", threshold: float | None = None) -> dict[str, Any]:
    minutes = frame_count / fps / 60 if fps > 0 else 0.0
    labels = [marks.label_of(e) for e in events]
    counts = {label: labels.count(label) for label in LABELS}
    polyps = []
    for mark in marks.polyps():
        onset = mark.onset if mark.onset is not None else mark.start
        found = [e for e in events if e.overlap(onset, mark.end) > 0]
        first = min((max(e.start, onset) for e in found), default=None)
        polyps.append({"start_s": round(mark.start / fps, 3), "end_s": round((mark.end + 1) / fps, 3),
                       "onset_s": round(onset / fps, 3), "onset_by": mark.onset_by or ("first detection" if mark.onset is not None else "mark start"),
                       "detected": first is not None,
                       "first_detection_s": None if first is None else round(first / fps, 3),
                       "time_to_first_detection_s": None if first is None else round((first - onset) / fps, 3)})
    delays = sorted(p["time_to_first_detection_s"] for p in polyps if p["detected"])
    return {
        "video": video, "model": model, "threshold": threshold, "fps": fps, "frames": frame_count,
        "minutes": round(minutes, 3), "events": len(events),
        "marked": {**counts, "unmarked": labels.count(None)},
        "false_alarms_per_minute": round(counts[FALSE_ALARM] / minutes, 3) if minutes else None,
        "events_per_minute": round(len(events) / minutes, 3) if minutes else None,
        "polyps": polyps,
        "polyps_detected": sum(p["detected"] for p in polyps),
        "median_time_to_first_detection_s": delays[len(delays) // 2] if delays else None,
        "event_list": [{**e.to_json(), "label": label} for e, label in zip(events, labels)],
    }


CSV_FIELDS = ("video", "model", "threshold", "minutes", "events", "polyp", "false alarm", "unsure", "unmarked",
              "false_alarms_per_minute", "polyps_marked", "polyps_detected", "median_time_to_first_detection_s")


def summary_csv(summary: dict[str, Any]) -> str:
    """One row per recording (so many recordings' files concatenate into one table)."""
    row = {**{k: summary.get(k) for k in CSV_FIELDS}, **summary["marked"], "polyps_marked": len(summary["polyps"])}
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerow({k: row[k] for k in CSV_FIELDS})
    return out.getvalue()


EVENT_FIELDS = ("start", "end", "start_s", "end_s", "frames", "first_hit", "peak_frame", "peak_score", "label")


def events_csv(summary: dict[str, Any]) -> str:
    """One row per event, with its label."""
    out = io.StringIO()
    writer = csv.DictWriter(out, EVENT_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for e in summary["event_list"]:
        writer.writerow({**e, "frames": e["end"] - e["start"] + 1, "label": e["label"] or ""})
    return out.getvalue()


def write_summary(summary: dict[str, Any], stem: str | Path) -> list[Path]:
    """``STEM.json`` (everything), ``STEM.csv`` (the recording's row) and
    ``STEM.events.csv`` (one row per event), each written atomically."""
    stem = Path(stem)
    paths = [stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".csv"),
             stem.with_name(stem.name + ".events.csv")]
    atomic_write_text(paths[0], json.dumps(summary, indent=2) + "\n")
    atomic_write_text(paths[1], summary_csv(summary))
    atomic_write_text(paths[2], events_csv(summary))
    return paths

