"""``python -m training.gpu_lease``: pack the data here, run the lease's plan there.

    python -m training.gpu_lease pack --data ../shared/data/kvasir-seg      # writes .lease/kvasir-seg
    python -m training.gpu_lease run --out "$OUT" --minutes 8               # on the GPU machine

The lease's command, from the repository root (``carry: [".lease"]``), sets nothing else up:

    python3 -m training.gpu_lease run --out "$OUT" --minutes 8

(``python -m`` puts the repository on the path; the runs it starts get ``PYTHONPATH`` set.)
``--smoke`` runs the same machinery on the CPU for a couple of minutes with two tiny runs,
to test a change before spending a lease on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from training.gpu_lease.pack import DEFAULT_MAX_SIDE, DEFAULT_QUALITY

DEFAULT_PACKED = Path(".lease/kvasir-seg")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.gpu_lease", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write the compact dataset copy that travels to the lease")
    p.add_argument("--data", required=True, help="Kvasir-SEG as released (images/, masks/, kavsir_bboxes.json)")
    p.add_argument("--out", default=str(DEFAULT_PACKED), help=f"where (default {DEFAULT_PACKED}; git ignores .lease/)")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                   help=f"longest side of a packed frame in pixels (default {DEFAULT_MAX_SIDE})")
    p.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help=f"JPEG quality (default {DEFAULT_QUALITY})")
    r = sub.add_parser("run", help="run the lease's plan within --minutes and write the results to --out")
    r.add_argument("--out", required=True, help="the folder that comes back ($OUT on the lease)")
    r.add_argument("--minutes", type=float, required=True, help="stop everything by then (leave the lease a margin)")
    r.add_argument("--data", default=str(DEFAULT_PACKED), help=f"dataset (default {DEFAULT_PACKED}, the packed copy)")
    r.add_argument("--work", default="/tmp/polypscope-lease", help="training folders (they do not come back)")
    r.add_argument("--device", default="cuda")
    r.add_argument("--workers", type=int, default=2, help="data-loading processes per run (default 2)")
    r.add_argument("--smoke", action="store_true", help="two tiny runs on the CPU: test the machinery, not a model")
    args = parser.parse_args(argv)

    if args.command == "pack":
        from training.gpu_lease.pack import pack_kvasir

        summary = pack_kvasir(args.data, args.out, args.max_side, args.quality)
        print(f"packed {summary['frames']} frames into {summary['folder']}: {summary['bytes'] / 2**20:.1f} MiB "
              f"(a lease takes at most 64 MiB with the working tree; carry it as {args.out})")
        return 0
    from training.ablations.plan import issue11_runs
    from training.gpu_lease.plan import PROVISIONAL_EPOCHS
    from training.gpu_lease.runner import run_lease

    if not Path(args.data).is_dir():
        print(f"error: {args.data}: no dataset there (pack it here with 'python -m training.gpu_lease pack' "
              "and carry .lease)", file=sys.stderr)
        return 2
    from training.processes import exit_on_sigterm

    exit_on_sigterm()  # the lease's time limit stops this process: its runs must stop with it
    runs, provisional = issue11_runs(), PROVISIONAL_EPOCHS
    if args.smoke:
        small = {"width": 0.0625, "img": 128, "batch": 8, "eval_every": 1}
        runs = [dataclasses.replace(r, overrides={**r.overrides, **small}) for r in runs[:2]]
        provisional = 50
    log = Path(args.out) / "lease.log"
    Path(args.out).mkdir(parents=True, exist_ok=True)

    def say(message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        with log.open("a") as f:
            f.write(line + "\n")

    result = run_lease(runs, args.data, Path(args.out), Path(args.work), args.minutes,
                       device="cpu" if args.smoke else args.device, workers=1 if args.smoke else args.workers, say=say,
                       provisional_epochs=provisional)
    for name, info in result["runs"].items():
        best = info["best_val"] or {}
        zoom = info["zoom_out"] or {}
        say(f"{name:24s} {info['status']:24s} epochs {info['epochs_done']}/{info['epochs_planned']}  "
            f"val AP50 {best.get('val_ap50', float('nan')):.3f}  zoom-out AP50 {zoom.get('ap50', float('nan')):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
