"""The prepared GPU lease: the packed dataset it carries, how it fits epochs to its time, and
the results file it brings back. (The whole run is tried with ``python -m training.gpu_lease
run --smoke`` on the CPU: minutes, too long for the suite.)"""

import dataclasses
import json

import cv2
import numpy as np

from training.ablations.plan import issue11_runs
from training.data.augment.pipeline import AugmentConfig
from training.data.datasets import boxes_from_mask, open_dataset
from training.gpu_lease.pack import pack_kvasir
from training.gpu_lease.plan import fit_epochs
from training.gpu_lease.runner import RunState, report

from .synthetic import write_kvasir_like


def test_the_packed_copy_is_smaller_and_keeps_boxes_masks_and_splits(tmp_path):
    src = write_kvasir_like(tmp_path / "kvasir", n=6, size=(600, 800))
    summary = pack_kvasir(src, tmp_path / "packed", max_side=200, quality=85, show_progress=False)
    packed = tmp_path / "packed"
    assert summary["frames"] == 6 and not (tmp_path / "packed.part").exists()
    original, copy = open_dataset(src), open_dataset(packed)
    assert [s.id for s in copy.samples] == [s.id for s in original.samples]
    for a, b in zip(original.samples, copy.samples):
        assert b.size == (150, 200)                                         # (h, w), longer side 200
        np.testing.assert_allclose(b.boxes, a.boxes * 0.25, atol=1e-3)     # boxes scaled with the frame
        mask = cv2.imread(str(b.mask_path), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == (150, 200) and set(np.unique(mask)) <= {0, 255}  # binary, lossless PNG
        from_mask = boxes_from_mask(mask)
        assert len(from_mask) == len(b.boxes)
        np.testing.assert_allclose(np.sort(from_mask, 0), np.sort(b.boxes, 0), atol=2.0)  # mask and boxes agree
    for split in ("train", "val", "test"):
        assert (packed / "splits" / f"{split}.txt").read_text() == (src / "splits" / f"{split}.txt").read_text()
    assert json.loads((packed / "PACKED.json").read_text())["max_side"] == 200


def test_epochs_fit_the_time_left_and_ablations_share_theirs():
    seconds = {"baseline": 2.0, "abl-a": 4.0, "abl-b": 5.0}
    groups = {"baseline": "baseline", "abl-a": "ablation", "abl-b": "ablation"}
    fitted = fit_epochs(seconds, groups, seconds_left=400, done={"baseline": 2, "abl-a": 2, "abl-b": 2})
    assert fitted == {"baseline": 202, "abl-a": 82, "abl-b": 82}  # the slower ablation sets both
    assert fit_epochs(seconds, groups, seconds_left=1)["abl-a"] == 5  # never fewer than the minimum


def test_the_plan_measures_one_change_per_ablation_and_keeps_the_baseline():
    runs = issue11_runs()
    assert [r.name for r in runs if r.keep_weights] == ["baseline"]
    ablations = [r for r in runs if r.group == "ablation"]
    assert ablations[0].overrides == {} and all(len(r.overrides) >= 1 for r in ablations[1:])
    # the long baseline trains the recipe as adopted since (bubbles and residue, copy-paste);
    # the ablations' reference stays the recipe they were started with
    assert runs[0].overrides == {"augment": dataclasses.replace(AugmentConfig.other_scopes(), distractors=0.5,
                                                                copy_paste=0.5)}
    assert all(getattr(r.overrides.get("augment"), "distractors", 0.0) == 0.0
               for r in ablations if r.name != "abl-distractors")
    assert all(getattr(r.overrides.get("augment"), "copy_paste", 0.0) == 0.0
               for r in ablations if r.name != "abl-copy-paste")
    assert len({r.name for r in runs}) == len(runs)


def test_the_results_file_reports_each_run_from_its_own_folder(tmp_path):
    runs = issue11_runs()[:2]
    states = [RunState(r, tmp_path / r.name) for r in runs]
    (states[0].folder / "train").mkdir(parents=True)
    rows = [{"epoch": e, "seconds": 3.0, "loss_total": 1.0 / e, "val_ap50": ap, "val_ap50_95": ap / 2}
            for e, ap in ((1, 0.2), (2, 0.5), (3, 0.4))]
    (states[0].folder / "train" / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"epo")
    (states[0].folder / "zoom_out.json").write_text(json.dumps({"ap50": 0.33}))
    states[0].status, states[0].epochs = "finished", 3
    result = report(states, started=0.0, deadline=1e12, phase="done")
    first, second = result["runs"][runs[0].name], result["runs"][runs[1].name]
    assert first["epochs_done"] == 3 and first["best_epoch"] == 2 and first["best_val"]["val_ap50"] == 0.5
    assert first["zoom_out"] == {"ap50": 0.33} and len(first["curve"]) == 3  # a half-written line is skipped
    assert second["epochs_done"] == 0 and second["best_val"] is None and second["status"] == "waiting"


def test_a_lease_run_starts_its_child_at_the_fitted_epochs_and_scores_its_best(tmp_path, monkeypatch):
    import training.gpu_lease.runner as runner

    seen = {}
    monkeypatch.setattr(runner, "start_job", lambda cfg, folder, resume, zoom, checkpoint: seen.update(
        cfg=cfg, folder=folder, resume=resume, zoom=zoom, checkpoint=checkpoint) or "proc")
    state = RunState(next(r for r in issue11_runs() if r.name == "abl-256px"), tmp_path / "abl-256px", epochs=37)
    runner.start_run(state, "data", "cuda", 2, tmp_path / "zoom", resume=True)
    cfg = seen["cfg"]
    assert (cfg.epochs, cfg.img, cfg.device, cfg.workers, cfg.out) == (37, 256, "cuda", 2,
                                                                        str(tmp_path / "abl-256px" / "train"))
    assert seen["resume"] and seen["checkpoint"] == "best" and state.proc == "proc"
