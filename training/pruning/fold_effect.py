"""Does folding removed channels' constants help? Measured on a trained model, per fold mode.

    python -m training.pruning.fold_effect --weights runs/baseline/best.safetensors \\
        --data ../shared/data/kvasir-seg --method taylor --ratio 0.5 --json-out docs/pruning/fold-effect.json

One channel choice (the criterion's), slimmed three ways (``fold`` = all, pointwise, none;
see :mod:`training.pruning.slim`). For each: how far the raw outputs on val frames are from
what pruning does to the original network (removed channels' weights zeroed, so they emit
their constant; :func:`~training.pruning.reference.weights_removed_network`), and val AP50
before and after BatchNorm recalibration. Selection data only (val); test is not touched.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from models import load_checkpoint
from training.data.data_check import open_checked, require_samples
from training.data.loader import EvalDataset, ImageCache, to_tensor
from training.evaluation.evaluate import evaluate_model, write_json
from training.pruning.graph import coupling_groups
from training.pruning.plan import PruneSpec, group_scores, plan_keep
from training.pruning.prune import PruneJob, make_criterion, recalibrate, training_batches
from training.pruning.reference import weights_removed_network
from training.pruning.slim import FOLD_MODES, slim


def raw_output_error(slim_model: torch.nn.Module, truth: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Mean (over every element of the three heads) and worst |difference| of the raw head
    outputs (logits and box terms)."""
    with torch.no_grad():
        diffs = torch.cat([(a - b).abs().flatten() for a, b in zip(slim_model.forward_raw(images),
                                                                    truth.forward_raw(images))])
    return {"mean_abs": diffs.mean().item(), "max_abs": diffs.max().item()}


def measure(weights: Path, data: Path, method: str, ratio: float, scope: str = "uniform",
            recalibration_batches: int = 32, seed: int = 0) -> dict[str, Any]:
    ckpt = load_checkpoint(weights)
    model = ckpt.model_at_trained_size().eval()  # measured where the network was trained
    size = model.config.input_size
    loader = training_batches(data, size, 16, seed)
    job = PruneJob(weights=weights, method=method, ratio=ratio, out=Path("unused"), data=data, scope=scope,
                   seed=seed, recalibration_batches=recalibration_batches, device="cpu", show_progress=False)
    scores = make_criterion(job, model, loader)(model)
    keep = plan_keep(group_scores(scores, coupling_groups(model.config.spp)), PruneSpec(ratio, scope))
    val = open_checked(data, "val")
    require_samples(val, "val")
    cache = ImageCache(val.samples, size)
    frames = EvalDataset(cache, size)
    probe = torch.stack([to_tensor(frames[i][1].image) for i in range(min(16, len(cache)))])
    truth = weights_removed_network(model, keep)
    names = ckpt.config.class_names
    rows: dict[str, Any] = {"unpruned_val_ap50": evaluate_model(model, cache, size, names)[0]["ap50"]}
    for fold in FOLD_MODES:
        small = slim(model, keep, fold)
        row = raw_output_error(small, truth, probe)
        row["val_ap50_before_recalibration"] = evaluate_model(small, cache, size, names)[0]["ap50"]
        # The same recalibration batches for every mode: a fresh loader with the same seed
        # (iterating one loader again would draw a new shuffle and augmentation).
        small = recalibrate(job, small, training_batches(data, size, 16, seed))
        row["val_ap50_after_recalibration"] = evaluate_model(small, cache, size, names)[0]["ap50"]
        rows[fold] = row
    return {"weights": str(weights), "method": method, "ratio": ratio, "scope": scope,
            "recalibration_batches": recalibration_batches, "folds": rows}


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{result['method']} {result['ratio']} ({result['scope']}) of {result['weights']}; "
             f"unpruned val AP50 {result['folds']['unpruned_val_ap50']:.4f}",
             "| fold | mean abs error | max abs error | val AP50 before recal. | val AP50 after recal. |",
             "|---|---|---|---|---|"]
    for fold in FOLD_MODES:
        r = result["folds"][fold]
        lines.append(f"| {fold} | {r['mean_abs']:.4f} | {r['max_abs']:.4f} | {r['val_ap50_before_recalibration']:.4f} "
                     f"| {r['val_ap50_after_recalibration']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " Val only.")
    parser.add_argument("--weights", required=True, help="a trained (unpruned) checkpoint")
    parser.add_argument("--data", required=True, help="dataset folder with train and val splits")
    parser.add_argument("--method", default="taylor", help="pruning criterion (default taylor)")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--scope", choices=["global", "uniform"], default="uniform")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json-out", help="write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(Path(args.weights), Path(args.data), args.method, args.ratio, args.scope)
    print(format_table(result))
    if args.json_out:
        write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
