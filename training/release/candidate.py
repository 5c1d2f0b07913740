"""Does a candidate replace the default? The rule of ``docs/accuracy.md`` (Plan C), applied
the same way to every candidate:

    python -m training.release.candidate --candidate runs/x/last.safetensors \\
        --default assets/models/default.safetensors --data ../shared/data/kvasir-seg \\
        --zoom-out runs/zoomout-val [--img 352] [--merge-iou 0.6] [--markdown F] [--json-out F]

Both checkpoints are scored in one process on the same inputs, as ``polypscope val --img
352 --merge-iou 0.6`` scores each (box merging at that IoU with the checkpoint's own score
ratio, as the runtime takes it), on four figures: val AP50, val AP50-95, the polyp-free val
frames with a box at each model's own recall-0.90 threshold (crops mined from val, as
``val`` counts them), and zoom-out AP50 (``polypscope data zoom-out --split val`` makes the
set). The candidate replaces the default only if it is no worse on all four; a tie is not
worse. A model whose val recall never reaches 0.90 has no operating point and cannot
replace anything. The compute of both is printed beside the verdict: the rule compares
accuracy, and a candidate of other widths than the default must meet the speed bars as
well. Test is never scored here (a zoom-out set made from another split is refused): that
happens once, when the winner ships (``python -m training.release.ship``).

The rule is strict on purpose: on 88 val images and 72 polyp-free frames one run's figures
move by about as much as the differences it judges (``docs/accuracy.md``), so a candidate
must not trade one figure for another.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import load_checkpoint
from models.complexity import count_flops
from training.data.data_check import open_checked, require_samples
from training.data.loader import ImageCache
from training.data.negatives import polyp_free_frames
from training.evaluation.box_merge import CHOSEN_IOU
from training.evaluation.evaluate import evaluate_model, write_json
from training.evaluation.validate import box_merge_for
from training.evaluation.zoom_out_set import MANIFEST

RECALL_KEY = "recall_0.90"


@dataclass(frozen=True)
class Figure:
    """One of the rule's figures: its name, and whether more is better."""

    name: str
    higher_is_better: bool


FIGURES = (Figure("val AP50", True), Figure("val AP50-95", True),
           Figure("polyp-free val frames with a box at recall 0.90", False), Figure("zoom-out AP50", True))


@dataclass
class Inputs:
    """What both models are scored on, decoded once: val, its polyp-free crops, zoom-out."""

    val: ImageCache
    negatives: ImageCache
    zoom_out: ImageCache
    size: int


def check_zoom_out_set(folder: Path) -> dict[str, Any]:
    """The set's manifest; a folder that is not a finished zoom-out set made from val is
    refused (a set made from test would score test)."""
    manifest_file = folder / MANIFEST
    if not manifest_file.is_file():
        raise SystemExit(f"{folder}: not a finished zoom-out set (no {MANIFEST}); make it with polypscope data "
                         f"zoom-out --data DATA --split val --out {folder}")
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("split") != "val":
        made_from = manifest.get("split") or "an unrecorded split (a set made before sets recorded it)"
        raise SystemExit(f"{manifest_file}: made from {made_from}; the rule scores a set made from val only: "
                         f"make it again with polypscope data zoom-out --data DATA --split val --out {folder}")
    return manifest


def load_inputs(data: Path, zoom_out: Path, size: int) -> Inputs:
    val = open_checked(data, "val", show_progress=False)
    require_samples(val, "val")
    negatives = polyp_free_frames(val, None, True, show_progress=False)[0]
    if not negatives:
        raise SystemExit(f"{data}: no polyp-free frame could be mined from val, so no false alarm can be counted")
    zoom = open_checked(zoom_out, None, show_progress=False)
    require_samples(zoom, None)
    return Inputs(ImageCache(val.samples, size), ImageCache(negatives, size), ImageCache(zoom.samples, size), size)


def figures(weights: Path, inputs: Inputs, merge_iou: float) -> dict[str, Any]:
    """The four figures of one checkpoint (``None`` for the false-alarm frames when val
    recall never reaches 0.90), with the threshold and settings they were taken at."""
    ckpt = load_checkpoint(weights)
    merge = box_merge_for(ckpt.metadata, merge_iou)
    names, size = ckpt.config.class_names, inputs.size
    val, _ = evaluate_model(ckpt.model, inputs.val, size, names, negatives=inputs.negatives, merge=merge)
    zoom, _ = evaluate_model(ckpt.model, inputs.zoom_out, size, names, merge=merge)
    point = val["operating_points"][RECALL_KEY]
    frames = round(point["frames_with_false_box"] * val["negative_frames"]) if point["reached"] else None
    values = [val["ap50"], val["ap50_95"], frames, zoom["ap50"]]
    return {"weights": str(weights), "gflops": count_flops(ckpt.model, size) / 1e9,
            "box_merge": {"iou": merge.iou, "score_ratio": merge.score_ratio},
            "threshold_recall_0.90": point["threshold"] if point["reached"] else None,
            "polyp_free_frames": val["negative_frames"],
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
    """The verdict as a table, with the difference to five decimals (a row that prints
    equal at four may still be worse), then the compute of both."""
    def show(v: Any) -> str:
        return "no operating point" if v is None else (f"{v}" if isinstance(v, int) else f"{v:.4f}")

    def change(c: Any, d: Any) -> str:
        if c is None or d is None:
            return "–"
        return f"{c - d:+d}" if isinstance(c, int) and isinstance(d, int) else f"{c - d:+.5f}"

    iou = result["candidate"]["box_merge"]["iou"]
    how = "plain NMS" if iou is None else f"box merging IoU > {iou} (each model's own score ratio)"
    lines = [f"candidate `{result['candidate']['weights']}` against default `{result['default']['weights']}`, "
             f"{result['input_size']} px, {how}", "",
             "| figure | candidate | default | difference | no worse |", "|---|---|---|---|---|"]
    for name, row in result["verdict"]["figures"].items():
        lines.append(f"| {name} | {show(row['candidate'])} | {show(row['default'])} | "
                     f"{change(row['candidate'], row['default'])} | {'yes' if row['no_worse'] else '**no**'} |")
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
    """Score both, print the table, write it and the JSON where asked; exit 0 either way
    (the verdict is the output, not the exit status)."""
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
    if not 0 <= args.merge_iou <= 1:
        parser.error(f"--merge-iou {args.merge_iou}: an IoU in [0, 1] (0: plain NMS)")
    for path in (args.candidate, args.default):
        if not path.is_file():
            parser.error(f"{path}: no such checkpoint")
    manifest = check_zoom_out_set(args.zoom_out)
    inputs = load_inputs(args.data, args.zoom_out, args.img)
    scored = {role: figures(path, inputs, args.merge_iou)
              for role, path in (("candidate", args.candidate), ("default", args.default))}
    result = {**scored, "input_size": args.img, "data": str(args.data.resolve()), "split": "val",
              "zoom_out": {"folder": str(args.zoom_out), "seed": manifest.get("seed"),
                           "made_from": manifest.get("data")},
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
