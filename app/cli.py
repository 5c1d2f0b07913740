"""The ``polypscope`` command: one entry point, one subcommand per job.

Training-side subcommands (data, anchors, train, val, prune, export) import torch and
the ``training`` package lazily, inside their handlers; the runtime subcommands
(detect, bench, app, build-engine) run on onnxruntime or TensorRT alone.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Sequence

from engine.detector import BACKENDS  # light: no backend library is imported until one is opened

EPILOG = """\
typical workflow:
  polypscope data check ../shared/data/kvasir-seg          # what is in the data, and what is wrong
  polypscope train --data ../shared/data/kvasir-seg --out runs/base
  polypscope val --weights runs/base/best.safetensors --data ../shared/data/kvasir-seg --split test
  polypscope prune --weights runs/base/best.safetensors --method taylor --ratio 0.5 --out runs/pruned.safetensors
  polypscope export --weights runs/pruned.safetensors --out model.onnx
  polypscope detect video.mp4 --model model.onnx --out annotated.mp4
  polypscope app video.mp4 --model model.onnx              # review: timeline, events, marks
  polypscope app --clinical 0 --model model.onnx           # the clinical view on capture device 0
  polypscope compare video.mp4 --model a.onnx --model-b b.onnx

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
    check.add_argument("--strict", action="store_true", help="exit 1 if any item had to be skipped, or the dataset or a split is empty")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(handler=_lazy("training.cli", "run_data_check"))
    zoom = data_sub.add_parser(
        "zoom-out", help="write the synthetic zoom-out set: frames shrunk onto polyp-free mucosa (small polyps)",
        description="Each frame of the split with a polyp is shrunk to 0.3-0.6 of its size and laid on a canvas "
                    "of polyp-free mucosa mined from another frame of the same split; boxes move exactly. "
                    "Written as images/ + labels/ (YOLO), so 'polypscope val --data OUT' scores it. "
                    "Made from val, it stands in for small polyps in high-resolution frames.")
    zoom.add_argument("--data", required=True, help="dataset folder")
    zoom.add_argument("--split", default="val", help="split to make it from (default val; never train on it)")
    zoom.add_argument("--out", required=True, help="output folder")
    zoom.add_argument("--seed", type=int, default=0, help="random seed (default 0): the set is deterministic")
    zoom.add_argument("--quiet", action="store_true", help="no progress bar")
    zoom.set_defaults(handler=_lazy("training.cli", "run_zoom_out"))


def _add_anchors(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("anchors", help="fit 9 anchor boxes to the training boxes (k-means, 1-IoU)",
                       description="k-means with the 1 - IoU distance on the training boxes at the "
                                   "training input size; prints the anchors, the best possible recall, and the "
                                   "share of boxes (also shrunk to 1/2, 1/4, 1/8) that have an anchor within 4x "
                                   "of both sides, the boxes the loss can learn.")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--img", type=int, default=256, help="training input size in pixels (default 256)")
    p.add_argument("--split", default="train", help="split to fit on (default train)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", help="report the coverage of this checkpoint's anchors instead of the fitted ones")
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
    p.add_argument("--init-weights", help="start from this checkpoint's weights and widths (e.g. to fine-tune "
                                          "a pruned model longer); anchors are kept")
    p.add_argument("--warmup-epochs", type=float, help="linear learning-rate warm-up, in epochs (default 3)")
    p.add_argument("--distill-from", help="teacher checkpoint with the same head layout (e.g. the unpruned "
                                          "baseline when training a pruned network): knowledge distillation")
    p.add_argument("--distill-weight", type=float, help="weight of the distillation loss (default 1.0)")
    _add_ema_options(p)
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--workers", type=int, help="data-loading processes (default 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--close-mosaic", dest="close_mosaic", type=int, help="final epochs without mosaic (default 10)")
    p.add_argument("--no-mosaic", action="store_true", help="never use mosaic augmentation")
    p.add_argument("--augment", choices=["other-scopes", "kvasir"], default="other-scopes",
                   help="augmentation: other-scopes (default: zoom-out, colour, blur, glare and border on top of "
                        "the rest) or kvasir (mosaic, scale, flips, turns and HSV only: the recipe before issue 11)")
    _add_recipe_extras(p)
    p.add_argument("--negatives", metavar="DIR", help="a folder of polyp-free frames to train on as well "
                                                      "(normal mucosa; searched recursively)")
    p.add_argument("--no-mine-negatives", dest="mine_negatives", action="store_false", default=None,
                   help="do not mine polyp-free crops from the training images")
    p.add_argument("--negative-fraction", type=float, help="polyp-free draws per epoch as a share of the "
                                                             "polyp images (default 0.25; 0 turns negatives off)")
    p.add_argument("--hard-crops", dest="hard_crops", type=int, metavar="N",
                   help="hard-negative crops: at each hard-negative pass, run the model over the polyp frames and "
                        "cut up to N squares a frame around its confident boxes clear of the polyp, trained on as "
                        "polyp-free items until the next pass (default 0: off; only the crops mined beside the "
                        "polyp are re-weighted)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast precision (default auto: fp16 on CUDA, bf16 on CPUs with native bf16 such as "
                        "AVX-512 BF16, else fp32)")
    p.add_argument("--pretrained", help="Darknet .weights to start from (yolov3.weights or darknet53.conv.74; "
                                        "needs --width 1.0)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--stop-after-minutes", dest="stop_after_minutes", type=_minutes, metavar="M",
                   help="stop before an epoch that would end more than M minutes from now (at least one epoch "
                        "is trained) and exit with status 3, so that a chain of steps stops too (commit a "
                        "--carry folder with ';', not '&&'); go on later with --resume")
    p.add_argument("--carry", metavar="DIR",
                   help="for a run longer than a sitting: when training stops, copy what a resume needs into "
                        "DIR (a folder to commit: the full-precision state of an unfinished run, fp16 "
                        "checkpoints of a finished one); with --resume, a record in DIR further along than "
                        "--out is restored into it first (a new checkout has no runs/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_lazy("training.cli", "run_train"))


def _add_recipe_extras(p: argparse.ArgumentParser, when: str = "") -> None:
    """The changes measured one by one against the recipe (docs/accuracy.md). Shared by
    ``train`` and ``prune``: a prune's fine-tune takes them when asked (``make default-model``
    asks for the adopted ones), whether or not its baseline was trained with them."""
    p.add_argument("--copy-paste", dest="copy_paste", type=_probability, metavar="P",
                   help=f"{when}with probability P, paste 1-2 training polyps (cut along their masks, shrunk to "
                        "0.15-0.6 of their size) into a training frame, polyp-free ones included: small polyps "
                        "on new mucosa (docs/accuracy.md; default 0: off; make train-baseline and make "
                        "default-model use 0.5)")
    p.add_argument("--distractors", type=_probability, metavar="P",
                   help=f"{when}with probability P, paint 1-4 air bubbles or 1-3 residue blobs into a training "
                        "frame, clear of its polyps, as background: what the shipped models and the pruning study's networks fire on in "
                        "polyp-free frames (docs/accuracy.md; default 0: off; make train-baseline and "
                        "make default-model use 0.5)")
    p.add_argument("--multi-scale", dest="multi_scale", type=_multi_scale_spread, metavar="SPREAD",
                   help=f"{when}train each batch at a random input size between (1-SPREAD) and (1+SPREAD) times "
                        "the input size, in steps of 32 (YOLOv5's --multi-scale is 0.5; default 0: off). Polyps "
                        "are seen at more pixel sizes; validation stays at the input size")


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text}: give a number of minutes, 0 or more")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a probability must be in [0, 1]")
    return value


def _multi_scale_spread(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text}: the spread must be in [0, 1), e.g. 0.5 for 0.5x-1.5x")
    return value


def _ema_decay(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text}: the decay must be in [0, 1)")
    return value


def _ema_tau(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: the time constant must be above 0 steps")
    return value


def _add_ema_options(p: argparse.ArgumentParser, when: str = "") -> None:
    """The weight average that is validated and shipped. Its decay ramps up as
    cap * (1 - exp(-steps / tau)); with YOLOv5/v8's defaults a run of a few thousand steps
    (a hundred Kvasir epochs) averages over only the last few dozen steps."""
    p.add_argument("--ema-decay", type=_ema_decay,
                   help=f"decay cap of the weight average validated and saved {when}(default 0.9999; once ramped "
                        "up it averages over about 1/(1-decay) optimiser steps)")
    p.add_argument("--ema-tau", type=_ema_tau,
                   help="ramp time constant in optimiser steps: the decay reaches 63%% of its cap after tau steps "
                        "(default 2000; a Kvasir epoch is 61 steps at batch 16)")


def _add_val(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("val", help="evaluate a checkpoint on a split (AP50, AP50-95, F1, ...)",
                       description="Runs the model on a split and prints AP50, AP75, AP50-95 (COCO), "
                                   "AP(Jha) over IoU 0.25-0.75, precision/recall/F1 at the F1-best "
                                   "threshold, mean IoU, and a 95%% bootstrap interval for AP50; AP50 by polyp "
                                   "size; and false alarms on polyp-free frames (crops mined from the scored "
                                   "images, the split's polyp-free images, --negatives): false boxes per frame, "
                                   "share of frames with a box and alarms per minute at 25 fps, at the "
                                   "thresholds that reach recall 0.90 and 0.95.")
    p.add_argument("--weights", required=True, help="a .safetensors checkpoint")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", help="split to evaluate (default: val where the folder has splits/, else every "
                                   "image; 'test' only for final reports)")
    p.add_argument("--img", type=int, help="input size (default: the checkpoint's)")
    p.add_argument("--json-out", help="write the metrics as JSON here")
    p.add_argument("--coco-out", help="write the predictions in COCO results format here")
    p.add_argument("--pr-plot", help="write the precision-recall curve (PNG) here")
    p.add_argument("--review-sheet", metavar="PNG", help="write a contact sheet of the false alarms on polyp-free "
                                                        "frames and the missed polyps at the recall-0.90 "
                                                        "threshold here")
    p.add_argument("--false-alarms-out", metavar="JSON",
                   help="write every polyp-free frame's boxes (score >= 0.05) and the recall-0.90 threshold here; "
                        "compare models with 'python -m training.evaluation.alarm_overlap'")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AP50 interval")
    p.add_argument("--negatives", metavar="DIR", help="a folder of polyp-free frames to count false alarms on, "
                                                      "beside the crops mined from the scored images")
    p.add_argument("--no-mine-negatives", dest="mine_negatives", action="store_false",
                   help="count false alarms only on polyp-free images of the split and --negatives")
    p.add_argument("--threshold", type=float, action="append", metavar="T",
                   help="also report false alarms at this score threshold (repeatable; the model's operating "
                        "threshold and the app default 0.25 are always reported)")
    p.add_argument("--merge-iou", type=_probability, metavar="IOU",
                   help="box merging after NMS: each kept box moves to the score-weighted mean of the candidates "
                        "overlapping it by more than IOU (default: as the checkpoint was shipped, plain NMS for "
                        "one never shipped; 0: plain NMS)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_lazy("training.cli", "run_val"))


def _add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="channel-prune a checkpoint into a physically smaller network",
                       description="Scores every prunable channel (taylor: |w*grad| over batches; taylor-gate: the "
                                   "squared gate term at BatchNorm; random: the "
                                   "control; l1: weight norm; bn: |gamma|), keeps coupled residual channels "
                                   "together, builds a new network with fewer channels (constants of removed "
                                   "channels folded into the next layer) and optionally fine-tunes it.")
    p.add_argument("--weights", required=True, help="the trained .safetensors checkpoint")
    p.add_argument("--method", required=True, choices=["taylor", "taylor-gate", "random", "l1", "bn"],
                   help="taylor: sum |w*grad| per channel; taylor-gate: (gamma*dL/dgamma + beta*dL/dbeta)^2 at the "
                        "BatchNorm gate (Molchanov 2019); random: the control; l1: weight norm; bn: |gamma|")
    p.add_argument("--ratio", required=True, type=float, help="fraction of prunable channels to remove, e.g. 0.5")
    p.add_argument("--out", required=True, help="output .safetensors (work files go in a folder beside it)")
    p.add_argument("--data", help="dataset folder (Taylor scores and fine-tuning; default: Kvasir-SEG if found)")
    p.add_argument("--scope", choices=["global", "uniform"], default="global",
                   help="one ranking over the whole network (default) or the same ratio in every layer")
    p.add_argument("--steps", type=int, default=1, help="iterative pruning: prune and fine-tune in this many steps")
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tuning epochs in all (0: none)")
    p.add_argument("--finetune-lr", type=float, default=0.001, help="peak learning rate while fine-tuning")
    p.add_argument("--taylor-batches", type=int, default=32, help="batches to accumulate Taylor scores over")
    p.add_argument("--recalibration-batches", type=int, default=32,
                   help="training batches to re-estimate BatchNorm statistics after slimming (0: keep the old ones)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--workers", type=int, default=1, help="data-loading processes while fine-tuning")
    p.add_argument("--fold", choices=["auto", "all", "pointwise", "none"], default="auto",
                   help="where removed channels' constant outputs are folded into the next layer: all (exact "
                        "except on the border of 3x3 consumers), pointwise (1x1 consumers only, exact), none; "
                        "auto (default): none when BatchNorm is recalibrated, else all (docs/pruning.md measures each)")
    p.add_argument("--distill", type=float, default=0.0, metavar="WEIGHT",
                   help="knowledge distillation from the unpruned network while fine-tuning (e.g. 1.0; 0: off)")
    p.add_argument("--keep", choices=["best", "last"], default="best",
                   help="which fine-tuning epoch is written to --out: best (by val AP50, default) or last (the end "
                        "of the schedule: the best of many noisy epochs on a small val set is an optimistic pick)")
    _add_ema_options(p, "while fine-tuning ")
    _add_recipe_extras(p, "while fine-tuning: ")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--resume", action="store_true",
                   help="continue the prune whose work folder sits beside --out: steps already pruned are not "
                        "scored again, a fine-tune goes on from its last saved epoch (same flags required)")
    p.add_argument("--stop-after-minutes", dest="stop_after_minutes", type=_minutes, metavar="M",
                   help="stop before a fine-tune epoch that would end more than M minutes from now, or "
                        "before the next of several --steps once M has passed (each call scores or trains "
                        "something first), and exit with status 3, --out not written, so that a chain with "
                        "'&&' stops too; go on later with the same command and --resume (the work folder "
                        "beside --out, under runs/, holds what it needs: it is not carried in git)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_lazy("training.cli", "run_prune"))


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (decoding inside, metadata embedded)",
                       description="Writes ONNX (opset 17+) whose output 'predictions' is [B, N, 5+C]: x1, y1, "
                                   "x2, y2 in input pixels, objectness, class probabilities. Checks it with "
                                   "onnx.checker, simplifies it with onnxslim and verifies it against torch on "
                                   "real frames (max |diff| < 1e-4, same detections after NMS).")
    p.add_argument("--weights", required=True, help="a .safetensors checkpoint")
    p.add_argument("--out", help="output .onnx (default: beside the weights)")
    p.add_argument("--img", type=int, help="export to run at this input size, a multiple of 32 (the network is "
                                           "fully convolutional; default: the size the checkpoint records)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch axis (default: static batch 1)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    p.add_argument("--check-images", nargs="+", help="frames for the parity check (default: Kvasir-SEG val)")
    p.add_argument("--triton", help="also write a Triton Inference Server model repository here")
    p.add_argument("--triton-max-batch", type=int, default=8, help="Triton max_batch_size with --dynamic")
    p.set_defaults(handler=_lazy("engine.cli", "run_export"))


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="an INT8 (Q/DQ) or fp16 copy of an exported ONNX, checked against float32",
                       description="INT8: static quantization with Q/DQ nodes by onnxruntime.quantization "
                                   "(per-channel int8 weights, activation ranges from --calib frames; the box "
                                   "decode and output convolutions stay float). fp16: the network in float16, "
                                   "input, output and decode in float32. Both run on onnxruntime's CPU provider and "
                                   "build into TensorRT 10/11 engines without a calibrator. Then compares the "
                                   "copy's detections with the float32 model's on --check frames.")
    p.add_argument("--onnx", required=True, help="the float32 PolypScope .onnx")
    p.add_argument("--precision", choices=["int8", "fp16"], default="int8")
    p.add_argument("--out", help="output .onnx (default: MODEL.int8.onnx / MODEL.fp16.onnx beside the input)")
    p.add_argument("--calib", help="INT8: TRAINING frames; a dataset folder calibrates on its splits/train.txt")
    p.add_argument("--calib-split", help="id list restricting --calib, e.g. DATA/splits/train.txt")
    p.add_argument("--calib-images", type=int, default=256, help="at most this many calibration frames (default 256)")
    p.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="percentile",
                   help="activation range estimate (default percentile: 99.999th, robust to outliers)")
    p.add_argument("--target", choices=["cpu", "tensorrt"], default="cpu",
                   help="INT8 for onnxruntime's CPU kernels (default; INT32 biases) or for TensorRT (float biases, "
                        "which its parser needs); build-engine --precision int8 makes the TensorRT one itself")
    p.add_argument("--keep-float", nargs="*", default=[], metavar="NAME",
                   help="more node names (or fragments, e.g. /heads.0/) to leave in float")
    p.add_argument("--check", help="folder of frames to compare detections on (default: Kvasir-SEG val if found)")
    p.add_argument("--check-images", type=int, default=32, help="frames compared (default 32)")
    p.add_argument("--json-out", help="write the comparison here as JSON")
    p.set_defaults(handler=_lazy("engine.cli", "run_quantize"))


def _add_build_engine(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-engine", help="build a TensorRT engine from an exported ONNX (NVIDIA GPU)",
                       description="Builds a serialized TensorRT 10 or 11 engine and a JSON sidecar (TensorRT "
                                   "version, GPU, precision, input shape, ONNX and engine sha256). Precision comes "
                                   "from the ONNX types: fp16 converts the network (input, output and box decode "
                                   "stay float32); int8 writes Q/DQ nodes calibrated on --calib frames (TensorRT "
                                   "needs no calibrator); int8-calibrated is TensorRT 10's implicit calibrator.")
    p.add_argument("--onnx", required=True, help="a PolypScope .onnx (or one already quantized to Q/DQ INT8)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8", "int8-calibrated"], default="fp16")
    p.add_argument("--calib", help="folder of calibration frames for INT8: TRAINING frames (e.g. the dataset folder "
                                   "with --calib-split DATA/splits/train.txt), never test")
    p.add_argument("--calib-split", help="optional id list restricting --calib (e.g. DATA/splits/train.txt)")
    p.add_argument("--workspace-mb", type=int, default=2048, help="builder workspace limit in MiB")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch of a --dynamic model's profile")
    p.add_argument("--out", help="output .engine (default: beside the ONNX)")
    p.set_defaults(handler=_lazy("engine.cli", "run_build_engine"))


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency per stage (p50/p90/p99); two models side by side with --vs",
                       description="Warm-up, then times preprocess (of a 1280x1024 frame), inference, "
                                   "postprocess and total. With --vs the two models run interleaved in one "
                                   "process and the ratio of medians is printed: the only fair comparison on "
                                   "a shared machine.")
    p.add_argument("--model", required=True, help=".onnx, .engine or .safetensors")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="auto (default) or one backend; onnxruntime: its best provider here (CUDA, else CPU)")
    p.add_argument("--vs", help="a second model to compare with")
    p.add_argument("--vs-backend", choices=BACKENDS, help="backend of the second model (default: --backend)")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")
    p.add_argument("--frame", help="an image to use as the frame (resized to 1280x1024)")
    p.add_argument("--json-out", help="write the report as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_lazy("engine.cli", "run_bench"))


def _add_detect(sub: argparse._SubParsersAction) -> None:
    from app.detect import add_detect_parser

    add_detect_parser(sub, _lazy("app.detect", "run_detect"))


def _add_score(sub: argparse._SubParsersAction) -> None:
    from app.score_model import add_score_parser

    add_score_parser(sub, _lazy("app.score_model", "run_score"))


def _add_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="the desktop app: live or recorded video with polyp boxes",
                       description="Opens a video file, image folder, camera or stream and draws polyp boxes "
                                   "with FPS and latency. A video file is also analysed in the background: the "
                                   "strip under the seek bar shows every frame's score, the Events panel lists "
                                   "where the model fired, to mark and export. Keys: space play/pause, arrows "
                                   "step, N/P next/previous event, 1/2/3/0 mark polyp/false alarm/unsure/clear, "
                                   "O polyp in view from here, E export clip, C clinical view, F full screen, "
                                   "S snapshot, R record, Esc leave full screen.")
    p.add_argument("source", nargs="?", help="video file, image folder, camera index, /dev/videoN or URL")
    p.add_argument("--model", help=".onnx, .engine or .safetensors (default: the last one used)")
    p.add_argument("--backend", choices=BACKENDS, help="auto or one backend (default: the last one used)")
    p.add_argument("--clinical", action="store_true",
                   help="start in the clinical view: full screen, video, boxes and a status line, and a red banner "
                        "whenever the picture is not live")
    p.add_argument("--no-review", action="store_true", help="do not analyse a video file in the background")
    p.add_argument("--quit-after", type=float, help=argparse.SUPPRESS)  # for smoke tests and screenshots
    p.set_defaults(handler=_lazy("app.gui.run", "run_app"))


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="A/B: two models on the same recording, events diffed",
                       description="Both models analyse the recording (cached beside it, so a second comparison "
                                   "starts at once); then it plays with each model's boxes side by side or "
                                   "overlaid (key V), each model's inference time, and the events only A or only "
                                   "B raised. Marks made in the app's review count for both models.")
    p.add_argument("video", help="a recorded procedure (video file)")
    p.add_argument("--model", required=True, help="model A (.onnx, .engine or .safetensors)")
    p.add_argument("--model-b", required=True, help="model B")
    p.add_argument("--conf", type=float, help="A's threshold (default: its operating threshold)")
    p.add_argument("--conf-b", type=float, help="B's threshold (default: its operating threshold)")
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument("--quit-after", type=float, help=argparse.SUPPRESS)
    p.set_defaults(handler=_lazy("app.gui.run", "run_compare"))


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument error is one line on stderr (the flag and the problem, and where help
    is), not argparse's usage block above it: the line a user needs is the last one."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="polypscope",
        description="PolypScope: real-time polyp detection for colonoscopy video (YOLOv3, pruned, "
                    "ONNX/TensorRT).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_data, _add_anchors, _add_train, _add_val, _add_prune, _add_export, _add_quantize, _add_build_engine, _add_bench, _add_score, _add_detect, _add_app, _add_compare):
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
