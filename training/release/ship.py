"""Package a trained checkpoint for shipping: fp16 weights, then one scoring on test.

    python -m training.release.ship --weights runs/baseline/best.safetensors \\
        --out assets/models/baseline.safetensors --data ../shared/data/kvasir-seg [--img 352]

The shipped (fp16) file itself is evaluated, so the metrics in its header and in
``--json-out`` are those of exactly what ships. Test is scored once, here, after model
selection on val is over.

The operating threshold is chosen here, on val: the strictest score threshold at which
recall on val reaches :data:`OPERATING_RECALL`. It goes into the checkpoint's metadata,
from there into the ONNX metadata (``polypscope export``), and ``detect`` and the app use
it unless told otherwise. False alarms on polyp-free crops mined from each split are
reported at it.

Box merging after NMS (chosen on val, docs/accuracy.md) is written into the metadata the
same way, and every score here is taken with it: ``--merge-iou 0`` ships plain NMS.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from models import load_checkpoint, save_checkpoint, with_input_size
from training.data.data_check import open_checked, print_problems, require_samples
from training.data.loader import ImageCache
from training.data.negatives import polyp_free_frames
from training.evaluation.box_merge import CHOSEN_IOU, IOU_KEY, SCORE_RATIO_KEY, BoxMerge
from training.evaluation.evaluate import DetectionEvaluator, evaluate_model, write_json
from training.evaluation.validate import APP_DEFAULT_CONF, format_clinical, format_table
from training.loop.run_log import save_pr_plot

OPERATING_RECALL = 0.90


def score(weights: Path, data: Path, split: str, bootstrap: int = 1000,
          thresholds: dict[str, float] | None = None) -> tuple[dict, DetectionEvaluator]:
    """Metrics of the checkpoint on ``split``, with false alarms on crops mined from it."""
    ckpt = load_checkpoint(weights)
    size = ckpt.config.input_size
    index = open_checked(data, split)
    print_problems(index, split)
    require_samples(index, split)
    cache = ImageCache(index.samples, size)
    negatives = ImageCache(polyp_free_frames(index, None, True)[0], size)
    return evaluate_model(ckpt.model, cache, size, ckpt.config.class_names, bootstrap_reps=bootstrap,
                          negatives=negatives, thresholds=thresholds or {"app default": APP_DEFAULT_CONF},
                          merge=BoxMerge.from_metadata(ckpt.metadata))


class NotShippable(RuntimeError):
    """The model cannot meet its operating point on val: nothing is shipped."""


def operating_point(val_metrics: dict) -> dict:
    """The val operating point at :data:`OPERATING_RECALL` (threshold, recall, false
    alarms); :class:`NotShippable` when no threshold reaches that recall on val."""
    point = val_metrics["operating_points"][f"recall_{OPERATING_RECALL:.2f}"]
    if not point["reached"]:
        raise NotShippable(f"val recall never reaches {OPERATING_RECALL} (at most {point['recall']:.4f}): "
                           "no operating threshold exists, so this model is not shipped")
    return point


def with_box_merge(metadata: dict, merge: BoxMerge) -> dict:
    """``metadata`` shipping with ``merge``: a re-shipped file loses the setting it had, so
    plain NMS (``--merge-iou 0``) leaves no keys behind for the runtime to find."""
    out = {k: v for k, v in metadata.items() if k not in (IOU_KEY, SCORE_RATIO_KEY)}
    return {**out, **merge.to_metadata()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--json-out", help="test metrics as JSON")
    parser.add_argument("--pr-plot", help="test PR curve (PNG)")
    parser.add_argument("--extra", default="{}", help="JSON object merged into the metadata (e.g. training time)")
    parser.add_argument("--img", type=int, help="ship it to run at this input size (a multiple of 32; default: "
                                                "the size the source checkpoint runs at); the operating threshold "
                                                "and every score are then at this size")
    parser.add_argument("--merge-iou", type=float, default=CHOSEN_IOU,
                        help=f"box merging after NMS, as the model will run (default {CHOSEN_IOU}, chosen on val; "
                             "0: plain NMS)")
    args = parser.parse_args()
    try:
        merge = BoxMerge.from_iou(args.merge_iou)
    except ValueError as exc:
        parser.error(str(exc))
    source = load_checkpoint(args.weights)
    out = Path(args.out)
    meta = with_box_merge({**source.metadata, **json.loads(args.extra), "shipped_from": Path(args.weights).name},
                          merge)
    model = source.model
    if args.img and args.img != source.config.input_size:
        model = with_input_size(source.model, args.img).eval()
    trained = source.trained_input_size  # a file shipped before keeps the size it was trained at
    if model.config.input_size != trained:
        meta["trained_input_size"] = trained
    else:
        meta.pop("trained_input_size", None)
    # Scored as it will ship (fp16), from a staging file beside --out: the file already there
    # (the committed model, for make ship-baseline) stays until the new one has its figures.
    staging = out.with_name(f".{out.stem}.staging{out.suffix}")
    save_checkpoint(staging, model, meta, half=True)
    try:
        val, _ = score(staging, Path(args.data), "val", bootstrap=0)
        point = operating_point(val)
        named = {"operating threshold": point["threshold"], "app default": APP_DEFAULT_CONF}
        test, evaluator = score(staging, Path(args.data), "test", thresholds=named)
    except NotShippable as exc:
        raise SystemExit(f"error: {args.weights}: {exc}; {out} is left as it was") from None
    finally:
        staging.unlink(missing_ok=True)
    print(format_table(val, f"{out.name} on val"))
    print(format_clinical(val))
    print(format_table(test, f"{out.name} on test"))
    print(format_clinical(test))
    meta.update({"val_metrics_fp16": val, "test_metrics": test, "operating_threshold": point["threshold"],
                 "operating_point": {"chosen_on": "val", "recall_target": OPERATING_RECALL, **point}})
    save_checkpoint(out, model, meta, half=True)
    if args.json_out:  # how it was scored travels with the figures, as ``val --json-out`` writes it
        scored_as = {"weights": str(out), "input_size": model.config.input_size, "box_merge_iou": merge.iou}
        write_json(args.json_out, {**scored_as, "val": val, "test": test})
    if args.pr_plot:
        save_pr_plot(evaluator.image_results(), Path(args.pr_plot), f"{out.stem} on test")


if __name__ == "__main__":
    main()
