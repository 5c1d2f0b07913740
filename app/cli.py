"""The ``polypscope`` command: one entry point, one subcommand per job.

Training-side subcommands (data, anchors, train, val, prune, export) import torch and
the ``training`` package lazily, inside their handlers; the runtime subcommands
(detect, bench, app, build-engine) run on onnxruntime or TensorRT alone.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

EPILOG = """\
typical workflow:
  polypscope data check ../shared/data/kvasir-seg          # what is in the data, and what is wrong
  polypscope train --data ../shared/data/kvasir-seg --out runs/base
  polypscope val --weights runs/base/best.safetensors --data ../shared/data/kvasir-seg --split test
  polypscope prune --weights runs/base/best.safetensors --method taylor --ratio 0.5 --out runs/pruned.safetensors
  polypscope export --weights runs/pruned.safetensors --out model.onnx
  polypscope detect video.mp4 --model model.onnx --out annotated.mp4
  polypscope app video.mp4 --model model.onnx

run 'polypscope COMMAND --help' for the options of each command.
"""


def _lazy(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    """A handler that imports ``module`` only when the subcommand actually runs."""

    def handler(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), function)(args)

    return handler


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect a dataset folder")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    check = data_sub.add_parser(
        "check", help="count images and boxes and list every problem, file by file",
        description="Reads a dataset folder (Kvasir-SEG, images/+masks/ or images/+labels/) and "
                    "reports counts, box statistics and every problem by file. Nothing is dropped silently.")
    check.add_argument("dir", help="dataset folder")
    check.add_argument("--json-out", help="also write the report as JSON here")
    check.add_argument("--strict", action="store_true", help="exit 1 if any item had to be skipped")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(handler=_lazy("training.cli", "run_data_check"))


def _add_anchors(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("anchors", help="fit 9 anchor boxes to the training boxes (k-means, 1-IoU)",
                       description="k-means with the 1 - IoU distance on the training boxes at the "
                                   "training input size; prints the anchors and the best possible recall.")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--img", type=int, default=256, help="training input size in pixels (default 256)")
    p.add_argument("--split", default="train", help="split to fit on (default train)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_lazy("training.cli", "run_anchors"))


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a YOLOv3 from scratch (or resume a run)",
                       description="Train on the 'train' split, select on 'val'. Writes best/last "
                                   "checkpoints, results.csv and plots into --out. Multi-GPU: "
                                   "torchrun --nproc_per_node N -m app train ...")
    p.add_argument("--data", help="dataset folder (required unless --resume)")
    p.add_argument("--out", help="run folder (default runs/train)")
    p.add_argument("--model", choices=["yolov3", "yolov3-spp"], help="variant (default yolov3-spp)")
    p.add_argument("--width", type=float, help="channel width multiplier (default 0.25)")
    p.add_argument("--img", type=int, help="input size, a multiple of 32 (default 256)")
    p.add_argument("--epochs", type=int, help="epochs (default 100)")
    p.add_argument("--batch", type=int, help="batch size (default 16)")
    p.add_argument("--lr", type=float, help="peak learning rate of AdamW (default 0.002)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--workers", type=int, help="data-loading processes (default 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--close-mosaic", dest="close_mosaic", type=int, help="final epochs without mosaic (default 10)")
    p.add_argument("--no-mosaic", action="store_true", help="never use mosaic augmentation")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_lazy("training.cli", "run_train"))


def _add_val(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("val", help="evaluate a checkpoint on a split (AP50, AP50-95, F1, ...)",
                       description="Runs the model on a split and prints AP50, AP75, AP50-95 (COCO), "
                                   "AP(Jha) over IoU 0.25-0.75, precision/recall/F1 at the F1-best "
                                   "threshold, mean IoU, and a 95%% bootstrap interval for AP50.")
    p.add_argument("--weights", required=True, help="a .safetensors checkpoint")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", default="val", help="split to evaluate (default val; 'test' only for final reports)")
    p.add_argument("--img", type=int, help="input size (default: the checkpoint's)")
    p.add_argument("--json-out", help="write the metrics as JSON here")
    p.add_argument("--coco-out", help="write the predictions in COCO results format here")
    p.add_argument("--pr-plot", help="write the precision-recall curve (PNG) here")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AP50 interval")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_lazy("training.cli", "run_val"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polypscope",
        description="PolypScope: real-time polyp detection for colonoscopy video (YOLOv3, pruned, "
                    "ONNX/TensorRT).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_data, _add_anchors, _add_train, _add_val):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
