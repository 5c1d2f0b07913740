"""Does a candidate replace the default? The rule of ``docs/accuracy.md`` (Plan C), applied
the same way to every candidate:

    python -m training.release.candidate --candidate runs/x/last.safetensors \\
        --default assets/models/default.safetensors --data ../shared/data/kvasir-seg \\
        --zoom-out runs/zoomout-val [--img 352] [--merge-iou 0.6] [--markdown F] [--json-out F]

Both checkpoints are scored in one process, as the default ships (``--img``, box merging
``--merge-iou``), on four figures: val AP50, val AP50-95, the polyp-free val frames with a
box at each model's own recall-0.90 threshold (crops mined from val, as ``val`` counts
them), and zoom-out AP50 (``polypscope data zoom-out`` makes the set from val). The
candidate replaces the default only if it is no worse on all four; a tie is not worse. A
model whose val recall never reaches 0.90 has no operating point and cannot replace
anything. The compute of both is printed beside the verdict: the rule compares accuracy,
and a candidate of other widths than the default must meet the speed bars as well. Test is
never scored here: that happens once, when the winner ships
(``python -m training.release.ship``).

The rule is strict on purpose: on 88 val images and 72 polyp-free frames one run's figures
move by about as much as the differences it judges (``docs/accuracy.md``), so a candidate
must not trade one figure for another.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import load_checkpoint
from models.complexity import count_flops
from training.data.data_check import open_checked, require_samples
from training.data.loader import ImageCache
from training.data.negatives import polyp_free_frames
from training.evaluation.box_merge import CHOSEN_IOU, BoxMerge
from training.evaluation.evaluate import evaluate_model, write_json

RECALL_KEY = "recall_0.90"


@dataclass(frozen=True)
class Figure:
    """One of the rule's figures: its name, and whether more is better."""

    name: str
    higher_is_better: bool


FIGURES = (Figure("val AP50", True), Figure("val AP50-95", True),
           Figure("polyp-free val frames with a box at recall 0.90", False), Figure("zoom-out AP50", True))


def figures(weights: Path, data: Path, zoom_out: Path, size: int, merge: BoxMerge) -> dict[str, Any]:
    """The four figures of one checkpoint (``None`` for the false-alarm frames when val
    recall never reaches 0.90), with the threshold they were counted at."""
    ckpt = load_checkpoint(weights)
    names = ckpt.config.class_names
    val = open_checked(data, "val", show_progress=False)
    require_samples(val, "val")
    negatives = ImageCache(polyp_free_frames(val, None, True, show_progress=False)[0], size)
    val_metrics, _ = evaluate_model(ckpt.model, ImageCache(val.samples, size), size, names,
                                    negatives=negatives, merge=merge)
    zoom = open_checked(zoom_out, None, show_progress=False)
    require_samples(zoom, None)
    zoom_metrics, _ = evaluate_model(ckpt.model, ImageCache(zoom.samples, size), size, names, merge=merge)
    point = val_metrics["operating_points"][RECALL_KEY]
    frames = round(point["frames_with_false_box"] * val_metrics["negative_frames"]) if point["reached"] else None
    values = [val_metrics["ap50"], val_metrics["ap50_95"], frames, zoom_metrics["ap50"]]
    return {"weights": str(weights), "gflops": count_flops(ckpt.model, size) / 1e9,
            "threshold_recall_0.90": point["threshold"] if point["reached"] else None,
            "polyp_free_frames": val_metrics["negative_frames"],
            "figures": {f.name: v for f, v in zip(FIGURES, values, strict=True)}}


def verdict(candidate: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    """Per figure, whether the candidate is no worse; and whether it replaces the default
    (no worse on all four)."""
    rows = {}
    for f in FIGURES:
        c, d = candidate[f.name], default[f.name]
        if c is None:  # no operating point: nothing to count false alarms at
            ok = False
        elif d is None:
            ok = True
        else:
            ok = c >= d if f.higher_is_better else c <= d
        rows[f.name] = {"candidate": c, "default": d, "no_worse": ok}
    return {"figures": rows, "replaces_default": all(r["no_worse"] for r in rows.values())}


def format_markdown(result: dict[str, Any]) -> str:
    def show(v: Any) -> str:
        return "no operating point" if v is None else (f"{v}" if isinstance(v, int) else f"{v:.4f}")

    lines = [f"candidate `{result['candidate']['weights']}` against default `{result['default']['weights']}`, "
             f"{result['input_size']} px, {result['box_merge']}", "",
             "| figure | candidate | default | no worse |", "|---|---|---|---|"]
    for name, row in result["verdict"]["figures"].items():
        lines.append(f"| {name} | {show(row['candidate'])} | {show(row['default'])} | "
                     f"{'yes' if row['no_worse'] else '**no**'} |")
    c, d = result["candidate"]["gflops"], result["default"]["gflops"]
    lines += ["", f"Compute at {result['input_size']} px: candidate {c:.3f} GFLOPs, default {d:.3f}"
                  + ("" if abs(c - d) <= 0.01 * d else " (the rule compares accuracy only: a candidate of other "
                                                       "widths must also meet the speed bars, `polypscope bench --vs`)")
                  + "."]
    replaces = result["verdict"]["replaces_default"]
    lines += ["", f"**{'The candidate replaces the default' if replaces else 'The default stays'}** "
                  f"({'no worse on all four' if replaces else 'worse on at least one figure'})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.release.candidate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", required=True, type=Path, help="the candidate checkpoint (.safetensors)")
    parser.add_argument("--default", required=True, type=Path, help="the default's checkpoint "
                                                                    "(assets/models/default.safetensors)")
    parser.add_argument("--data", required=True, type=Path, help="the dataset with splits (val is scored)")
    parser.add_argument("--zoom-out", required=True, type=Path,
                        help="the zoom-out set made from val ('polypscope data zoom-out --split val')")
    parser.add_argument("--img", type=int, default=352, help="input size both run at (default 352, as shipped)")
    parser.add_argument("--merge-iou", type=float, default=CHOSEN_IOU,
                        help=f"box merging after NMS for both (default {CHOSEN_IOU}, as shipped; 0: plain NMS)")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--json-out", type=Path, help="write the figures and the verdict as JSON here")
    args = parser.parse_args(argv)
    try:
        merge = BoxMerge.from_iou(args.merge_iou)
    except ValueError as exc:
        parser.error(str(exc))
    for path in (args.candidate, args.default):
        if not path.is_file():
            parser.error(f"{path}: no such checkpoint")
    scored = {role: figures(path, args.data, args.zoom_out, args.img, merge)
              for role, path in (("candidate", args.candidate), ("default", args.default))}
    result = {**scored, "input_size": args.img, "box_merge": merge.describe(),
              "verdict": verdict(scored["candidate"]["figures"], scored["default"]["figures"])}
    text = format_markdown(result)
    print(text, end="")
    if args.markdown:
        args.markdown.write_text(text)
    if args.json_out:
        write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
