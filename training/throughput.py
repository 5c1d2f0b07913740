"""Training throughput on this machine, in images per second, for each arithmetic choice.

    python -m training.throughput --img 320 --batch 16 --out docs/training-speed.md
    python -m training.throughput --threads 1 --compile docs/training-speed-compile.json

Runs full training steps (forward, loss, backward, AdamW) of the baseline network on a
fixed batch, for float32 and bfloat16 autocast, each with and without channels-last
memory, interleaved round by round so that a change in the machine's load hits every
variant alike; reports the median step time of each and its speed relative to float32.
Also times the augmentation pipeline alone (the loader must keep up with the steps).
Run it on an otherwise idle machine: the figures are ratios for this CPU, not a promise.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from models import config_for, create
from training.data.augment.pipeline import AugmentConfig, Augmenter, Item
from training.loop.loss import YoloLoss
from training.loop.precision import cpu_has_native_bf16

VARIANTS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))


def _batch(size: int, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g)
    rows = [[b, 0, size * 0.2, size * 0.25, size * 0.6, size * 0.7] for b in range(batch)]
    return images, torch.tensor(rows, dtype=torch.float32)


class StepRunner:
    """One model, optimiser and loss per variant; ``step()`` times one training step."""

    def __init__(self, precision: str, channels_last: bool, size: int, width: float, images: torch.Tensor,
                 targets: torch.Tensor) -> None:
        torch.manual_seed(0)
        self.config = config_for("yolov3-spp", width=width, input_size=size)
        self.model = create("yolov3-spp", width=width, input_size=size).train()
        self.images = images
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.images = images.contiguous(memory_format=torch.channels_last)
        self.targets = targets
        self.loss = YoloLoss(self.config)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.dtype = torch.bfloat16 if precision == "bf16" else None

    def step(self) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
            raw = self.model(self.images)
        loss, _ = self.loss([r.float() for r in raw], self.targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - started


def augmentation_rate(size: int, count: int = 200, seed: int = 0) -> float:
    """Images per second through the training augmentation (mosaic, zoom-out, colour, blur,
    glare, border) on synthetic frames, one process."""
    rng = np.random.default_rng(seed)
    items = [Item(rng.integers(0, 255, (size * 7 // 8, size, 3), dtype=np.uint8),
                  np.array([[size * 0.3, size * 0.3, size * 0.6, size * 0.6]], np.float32), np.zeros(1, np.int64))
             for _ in range(16)]
    canvas = Item(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), np.zeros((0, 4), np.float32),
                  np.zeros(0, np.int64))
    aug = Augmenter(size, AugmentConfig.other_scopes(), lambda i: items[i], len(items), canvas=lambda r: canvas)
    started = time.perf_counter()
    for k in range(count):
        aug(k % len(items), np.random.default_rng(k))
    return count / (time.perf_counter() - started)


def measure(size: int, batch: int, width: float, rounds: int, threads: int) -> dict:
    if threads:
        torch.set_num_threads(threads)
    images, targets = _batch(size, batch)
    runners = {f"{p}{' + channels-last' if cl else ''}": StepRunner(p, cl, size, width, images, targets)
               for p, cl in VARIANTS}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for runner in runners.values():  # warm-up: oneDNN picks its kernels on the first steps
        runner.step()
        runner.step()
    for _ in range(rounds):
        for name, runner in runners.items():
            times[name].append(runner.step())
    base = float(np.median(times["fp32"]))
    rows = {name: {"step_ms_median": round(1000 * float(np.median(t)), 1),
                   "images_per_second": round(batch / float(np.median(t)), 1),
                   "speed_vs_fp32": round(base / float(np.median(t)), 2)} for name, t in times.items()}
    return {"input_size": size, "batch": batch, "width": width, "rounds": rounds, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "native_bf16": cpu_has_native_bf16(),
            "torch": torch.__version__, "variants": rows,
            "augmentation_images_per_second": round(augmentation_rate(size), 1)}


def measure_compile(size: int, batch: int, width: float, rounds: int, threads: int) -> dict:
    """The training arithmetic (bf16 autocast, channels-last), eager against ``torch.compile``
    (inductor), interleaved: does compiling the step pay for its compile time here?"""
    if threads:
        torch.set_num_threads(threads)
    images, targets = _batch(size, batch)
    eager = StepRunner("bf16", True, size, width, images, targets)
    compiled = StepRunner("bf16", True, size, width, images, targets)
    compiled.model = torch.compile(compiled.model)
    compile_seconds = compiled.step()  # the first step compiles
    for runner in (eager, compiled, eager):
        runner.step()
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(rounds):
        times["eager"].append(eager.step())
        times["compiled"].append(compiled.step())
    eager_ms, compiled_ms = (1000 * float(np.median(times[k])) for k in ("eager", "compiled"))
    return {"input_size": size, "batch": batch, "width": width, "rounds": rounds, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "arithmetic": "bf16 + channels-last",
            "compile_seconds": round(compile_seconds, 1), "eager_step_ms_median": round(eager_ms, 1),
            "compiled_step_ms_median": round(compiled_ms, 1), "speed_compiled_vs_eager": round(eager_ms / compiled_ms, 3)}


def to_markdown(result: dict, command: str) -> str:
    lines = [f"Training steps of YOLOv3-SPP x{result['width']} at {result['input_size']} px, batch {result['batch']}, "
             f"{result['threads']} threads, torch {result['torch']}, native bf16: {result['native_bf16']} "
             f"(median of {result['rounds']} interleaved rounds).", "",
             "| arithmetic | step (ms) | images/s | vs fp32 |", "|---|---|---|---|"]
    for name, row in result["variants"].items():
        lines.append(f"| {name} | {row['step_ms_median']} | {row['images_per_second']} | {row['speed_vs_fp32']}x |")
    lines += ["", f"Augmentation alone (one process, the full recipe): {result['augmentation_images_per_second']} "
                  "images/s.", "", f"Command: `{command}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--img", type=int, default=320, help="input size (default 320)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=6, help="timed steps per variant (default 6)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", help="write the table here (Markdown) and the figures beside it (.json)")
    parser.add_argument("--compile", metavar="JSON", help="instead: time the training arithmetic eager against "
                                                          "torch.compile and write the figures here")
    args = parser.parse_args()
    if args.compile:
        result = measure_compile(args.img, args.batch, args.width, args.rounds, args.threads)
        Path(args.compile).write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return
    result = measure(args.img, args.batch, args.width, args.rounds, args.threads)
    command = (f"python -m training.throughput --img {args.img} --batch {args.batch} --width {args.width} "
               f"--rounds {args.rounds} --threads {args.threads}")
    text = to_markdown(result, command)
    print(text)
    if args.out:
        out = Path(args.out)
        out.write_text("# Training speed on this CPU (issue 11)\n\n" + text)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
