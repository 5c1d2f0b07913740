"""Hard-negative crops: where a window goes (by hand), which detections become crops, and
the trainer's pool of them (swapped at each pass, drawn by the loader, kept across --resume)."""

import json

import cv2
import numpy as np
import pytest

from training.data.datasets import Sample
from training.data.negatives import polyp_region
from training.evaluation.evaluate import ImageDetections
from training.loop.hard_crops import CROPS_FILE, HARD_SUFFIX, crop_around, crops_of_frame, mine_hard_crops
from training.loop.hard_negatives import hardness_weights

from .synthetic import write_kvasir_like


def _holds(window, box) -> bool:
    return window[0] <= box[0] and window[1] <= box[1] and window[2] >= box[2] and window[3] >= box[3]


def _clear(region, window) -> bool:
    x1, y1, x2, y2 = window
    return not region[y1:y2, x1:x2].any()


def test_a_window_is_centred_on_the_false_box_moved_before_shrunk_and_kept_clear_of_the_polyp():
    region = np.zeros((200, 300), bool)
    region[:100, :120] = True  # the grown polyp, top left
    # Far from the polyp: side max(2 x 30, 0.5 x 200) = 100, centred on the box.
    assert crop_around(np.array([200, 120, 230, 150]), region) == (165, 85, 265, 185)
    # A box on the grown polyp is a mislocalised polyp box, not a false alarm on mucosa.
    assert crop_around(np.array([100, 50, 130, 80]), region) is None
    # Beside it: the centred square would reach into the polyp; moved right, the same size is
    # clear, at the nearest such place (not shrunk into a magnified close-up).
    near = np.array([130, 40, 150, 60])
    assert crop_around(near, region) == (120, 0, 220, 100)
    # Near the frame's edge the square moves inside the frame, still holding the box.
    assert crop_around(np.array([285, 180, 300, 200]), region) == (200, 100, 300, 200)
    # Hemmed in on three sides, no square of 100 holds the box clear: it shrinks until one does.
    hemmed = region.copy()
    hemmed[:, 200:] = True
    hemmed[85:, :] = True
    window = crop_around(near, hemmed)
    assert window is not None and _holds(window, near) and _clear(hemmed, window)
    assert 60 <= window[2] - window[0] == window[3] - window[1] < 100
    # ... but not below 0.3 of the frame's shorter side: a close-up of a false box in a narrow
    # strip of mucosa would show it at many times the scale the runtime sees.
    strip = np.zeros((1000, 1000), bool)
    strip[:, 60:] = True
    assert crop_around(np.array([20, 500, 30, 510]), strip) is None
    # Squeezed between two polyps, no square that holds the tall box is clear: none.
    region[:100, 130:] = True
    assert crop_around(np.array([121, 10, 125, 90]), region) is None


def _frame(tmp_path):
    """A 160 x 200 frame with one round polyp (centre 40, 40; radius 20) and its mask."""
    image = np.full((160, 200, 3), 120, np.uint8)
    mask = np.zeros((160, 200), np.uint8)
    cv2.circle(mask, (40, 40), 20, 255, -1)
    cv2.imwrite(str(tmp_path / "f.png"), image)
    cv2.imwrite(str(tmp_path / "f_mask.png"), mask)
    return Sample("f", tmp_path / "f.png", np.array([[20, 20, 60, 60]], np.float32), np.zeros(1, np.int64),
                  mask_path=tmp_path / "f_mask.png", size=(160, 200))


def test_confident_boxes_clear_of_the_polyp_become_crops_strongest_first(tmp_path):
    sample = _frame(tmp_path)
    dets = ImageDetections(
        boxes=np.array([[20, 20, 60, 60],      # the polyp itself: not a false alarm
                        [150, 110, 170, 130],  # mucosa: a crop
                        [152, 112, 172, 132],  # the same spot again: its window overlaps the first by more than half
                        [150, 10, 170, 30],    # mucosa elsewhere: a crop
                        [100, 120, 110, 130]], np.float32),  # too unsure to count
        scores=np.array([0.9, 0.5, 0.45, 0.3, 0.05], np.float32), labels=np.zeros(5, np.int64))
    crops = crops_of_frame(sample, dets, (160, 200), per_frame=3)
    assert [c.id for c, _ in crops] == [f"f{HARD_SUFFIX}0", f"f{HARD_SUFFIX}1"]
    assert [s for _, s in crops] == pytest.approx([0.5, 0.3])
    region = polyp_region(sample, (160, 200))
    for (crop, _), box in zip(crops, ([150, 110, 170, 130], [150, 10, 170, 30])):
        assert crop.is_negative and crop.mask_path is None and crop.image_path == sample.image_path
        assert _holds(crop.crop, box) and _clear(region, crop.crop)
    assert [c.id for c, _ in crops_of_frame(sample, dets, (160, 200), per_frame=1)] == [f"f{HARD_SUFFIX}0"]
    assert crops_of_frame(sample, dets, (160, 200), per_frame=3, min_score=0.95) == []


def test_the_trainer_swaps_in_the_crops_draws_them_and_keeps_them_across_resume(tmp_path, monkeypatch):
    from training.data.data_check import open_checked
    from training.data.sampling import TrainKey
    from training.loop.trainer import TrainConfig, Trainer

    data = write_kvasir_like(tmp_path / "kv", n=12)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), width=0.125, img=64, epochs=4, batch=4, workers=1,
                      threads=1, hard_negatives_from=0.0, hard_negatives_every=1, hard_crops=2)
    seen = []
    original_epoch, original_end = Trainer._train_epoch, Trainer._end_epoch

    def counted(self, epoch):
        seen.append((epoch, len(self.train_cache), self.sampler.negatives, self.sampler.negative_weights.copy(),
                     [s.crop for s in self.train_cache.samples], id(self.loader), len(self.loader.dataset)))
        return original_epoch(self, epoch)

    def stopped_after_two(self, epoch, *rest):
        metrics = original_end(self, epoch, *rest)
        if epoch == 1:
            raise KeyboardInterrupt  # the sitting ends with epoch 2 saved
        return metrics
    monkeypatch.setattr(Trainer, "_train_epoch", counted)
    monkeypatch.setattr(Trainer, "_end_epoch", stopped_after_two)
    first = Trainer(cfg, show_progress=False)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    fixed = first.positive_count + first.fixed_negative_count
    saved, before = json.loads((tmp_path / "run" / CROPS_FILE).read_text())["pools"]
    assert (saved["epoch"], before["epoch"]) == (2, 1) and saved["crops"]  # an untrained network fires all over the mucosa
    crops = first.train_cache.samples[fixed:]
    assert [c.id for c in crops] == [r["id"] for r in saved["crops"]]
    assert seen[0][:3] == (0, fixed, first.fixed_negative_count)  # before the first pass: no crops
    # Epoch 2 drew from the pool of the first pass, through a loader made after the pass (its
    # workers start from the cache with the crops in it), over a dataset that covers them.
    assert seen[1][1] > fixed
    assert seen[1][5] != seen[0][5] and seen[1][6] == seen[1][1]
    # Each crop lies on its frame's background, clear of the grown polyp, and trains as polyp-free.
    frames = {s.id: s for s in open_checked(data, "train").positives}
    for crop in crops:
        frame = frames[crop.id.rsplit(HARD_SUFFIX, 1)[0]]
        assert _clear(polyp_region(frame, frame.frame_hw), crop.crop)
    index = fixed  # the first crop, as the loader's workers would augment it
    _, item = first.dataset[TrainKey(1, index, False)]
    assert item.boxes.shape[0] == 0 and item.image.shape[:2] == (64, 64)
    weights = json.loads((tmp_path / "run" / "negative_weights.json").read_text())["sets"][0]["weights"]
    assert set(weights) == {s.id for s in first.negative_cache.samples} and len(weights) == len(first.sampler.negative_weights)
    # The weights follow the cache's order: each crop's is the re-weighting's for its score.
    order = [s.id for s in first.negative_cache.samples]
    np.testing.assert_allclose(first.sampler.negative_weights, [weights[i] for i in order])
    scores = {r["id"]: r["score"] for r in saved["crops"]}
    np.testing.assert_allclose([weights[c.id] for c in crops], [hardness_weights(np.array([scores[c.id]]))[0]
                                                                 for c in crops])
    # The loader's worker (a new process since the pass) augments the crops: drawn by weight
    # alone, almost every draw is one.
    first.sampler.set_negative_weights(np.r_[np.full(first.fixed_negative_count, 1e-9), np.ones(len(crops))])
    first.sampler.set_epoch(2)
    drawn = [i for batch in first.loader for i in batch.indices]
    assert any(i >= fixed for i in drawn)

    seen.clear()
    monkeypatch.setattr(Trainer, "_end_epoch", original_end)
    resumed = Trainer(cfg, resume=True, show_progress=False)
    resumed.run()
    # The resumed epoch 3 trains on the pool mined after epoch 2 (the same windows), by the
    # weights saved with it, in the same order.
    epoch, size, _, resumed_weights, windows, _, _ = seen[0]
    assert epoch == 2 and size == fixed + len(saved["crops"])
    assert windows[fixed:] == [tuple(r["crop"]) for r in saved["crops"]]
    np.testing.assert_allclose(resumed_weights, [weights[i] for i in order])


def test_a_run_stopped_between_a_pass_and_its_state_resumes_with_the_pool_it_had(tmp_path):
    from training.loop.hard_crops import load_crops, save_crops

    frame = _frame(tmp_path)
    crops = crops_of_frame(frame, ImageDetections(np.array([[150, 110, 170, 130]], np.float32), np.array([0.5]),
                                                  np.zeros(1, np.int64)), (160, 200), per_frame=1)
    later = crops_of_frame(frame, ImageDetections(np.array([[150, 10, 170, 30]], np.float32), np.array([0.3]),
                                                  np.zeros(1, np.int64)), (160, 200), per_frame=1)
    save_crops(tmp_path, 2, crops)
    save_crops(tmp_path, 3, later)  # mined after epoch 3, whose state was never written
    frames = {"f": frame}
    assert [(c.crop, s) for c, s in load_crops(tmp_path, 2, frames)] == [(c.crop, s) for c, s in crops]
    assert [(c.crop, s) for c, s in load_crops(tmp_path, 3, frames)] == [(c.crop, s) for c, s in later]
    assert load_crops(tmp_path, 1, frames) is None  # before the first pass: no pool
    save_crops(tmp_path, 3, later)  # the pass after epoch 3 repeated after a second stop there
    assert [(c.crop, s) for c, s in load_crops(tmp_path, 2, frames)] == [(c.crop, s) for c, s in crops]
    with pytest.raises(RuntimeError, match="does not have"):
        load_crops(tmp_path, 3, {})


def test_mining_with_a_real_network_cuts_crops_only_on_background(tmp_path):
    from models import load_checkpoint
    from training.data.data_check import open_checked
    from training.data.loader import ImageCache
    from training.loop.trainer import TrainConfig, Trainer

    data = write_kvasir_like(tmp_path / "kv", n=12)
    Trainer(TrainConfig(data=str(data), out=str(tmp_path / "base"), width=0.125, img=64, epochs=1, batch=4,
                        workers=0, threads=1), show_progress=False).run()
    model = load_checkpoint(tmp_path / "base" / "last.safetensors").model
    frames = open_checked(data, "train").positives
    crops = mine_hard_crops(model, ImageCache(frames, 64), 64, per_frame=2, min_score=0.01)
    assert crops
    by_id = {s.id: s for s in frames}
    per_frame = {}
    for crop, score in crops:
        frame = by_id[crop.id.rsplit(HARD_SUFFIX, 1)[0]]
        per_frame[frame.id] = per_frame.get(frame.id, 0) + 1
        assert score >= 0.01 and _clear(polyp_region(frame, frame.frame_hw), crop.crop)
    assert max(per_frame.values()) <= 2


def test_hard_negative_weights_keep_the_set_before_through_repeated_stops(tmp_path):
    from training.loop.hard_negatives import load_weights, save_weights

    ids = ["a", "b"]
    save_weights(tmp_path, 5, ids, np.array([1.0, 2.0]))
    save_weights(tmp_path, 10, ids, np.array([3.0, 4.0]))
    save_weights(tmp_path, 10, ids, np.array([3.5, 4.5]))  # the pass repeated after a stop before its state
    np.testing.assert_allclose(load_weights(tmp_path, ids, 9), [1.0, 2.0])
    np.testing.assert_allclose(load_weights(tmp_path, ids, 10), [3.5, 4.5])
    assert load_weights(tmp_path, ids, 4) is None and load_weights(tmp_path, ["a"], 10) is None
    # A file from before the sets (one set at the top level) is still read.
    (tmp_path / "negative_weights.json").write_text(json.dumps({"epoch": 3, "gain": 4.0,
                                                               "weights": {"a": 1.5, "b": 2.5}}))
    np.testing.assert_allclose(load_weights(tmp_path, ["b", "a"], 3), [2.5, 1.5])
