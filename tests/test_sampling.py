"""Epoch plans: every polyp image once, polyp-free draws by hardness, the same order on resume,
and augmentation that follows the key even in workers that persist across epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from training.data.augment.pipeline import AugmentConfig
from training.data.datasets import open_dataset
from training.data.loader import ImageCache, TrainDataset, collate
from training.data.negatives import mined_negatives
from training.data.sampling import EpochPlan, TrainKey
from training.loop.precision import autocast_dtype, cpu_has_native_bf16

from .synthetic import write_kvasir_like


def test_each_epoch_visits_every_positive_once_and_draws_negatives():
    plan = EpochPlan(40, 10, negative_fraction=0.25, seed=3, mosaic_epochs=2)
    for epoch in range(3):
        plan.set_epoch(epoch)
        keys = list(plan)
        indices = [k.index for k in keys]
        assert sorted(i for i in indices if i < 40) == list(range(40))
        assert sum(i >= 40 for i in indices) == 10 == plan.negatives_per_epoch
        assert all(k.epoch == epoch and k.mosaic == (epoch < 2) for k in keys)
    plan.set_epoch(1)
    first = [k.index for k in plan]
    assert first == [k.index for k in plan]  # the order depends on (seed, epoch) only
    plan.set_epoch(2)
    assert first != [k.index for k in plan]


def test_hard_negatives_are_drawn_more_often():
    plan = EpochPlan(100, 20, negative_fraction=1.0, seed=0)
    weights = np.ones(20)
    weights[0] = 20.0  # one crop the model fires on
    plan.set_negative_weights(weights)
    draws = []
    for epoch in range(20):
        plan.set_epoch(epoch)
        draws += [k.index - 100 for k in plan if k.index >= 100]
    draws = np.array(draws)
    share = (draws == 0).mean()
    assert share == pytest.approx(20 / 39, abs=0.05)
    with pytest.raises(ValueError, match="positive weights"):
        plan.set_negative_weights(np.zeros(20))


def test_ranks_split_one_order_between_them():
    plans = [EpochPlan(30, 6, negative_fraction=0.2, seed=1, rank=r, world=2) for r in range(2)]
    together = EpochPlan(30, 6, negative_fraction=0.2, seed=1).epoch_order()
    assert [k.index for k in plans[0]] + [k.index for k in plans[1]] == \
        together[0::2].tolist()[:len(plans[0])] + together[1::2].tolist()[:len(plans[1])]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = write_kvasir_like(tmp_path_factory.mktemp("kv") / "kv", n=10, size=(160, 200))
    positives = open_dataset(root).samples
    negatives = mined_negatives(positives)
    cache = ImageCache(positives + negatives, 64)
    cache.fill()
    return TrainDataset(cache, 64, AugmentConfig.other_scopes(), seed=5, positives=len(positives),
                        negative_share=0.2), len(positives), len(negatives)


def _epoch_batches(ds, plan, workers):
    loader = DataLoader(ds, batch_size=4, sampler=plan, collate_fn=collate, num_workers=workers,
                        persistent_workers=workers > 0)
    out = []
    for epoch in range(3):
        plan.set_epoch(epoch)
        out.append([(b.indices, b.images.clone(), b.targets.clone()) for b in loader])
    return out


def test_persistent_workers_augment_as_the_epoch_asks(dataset):
    ds, positives, negatives = dataset
    plan = EpochPlan(positives, negatives, negative_fraction=0.5, seed=2, mosaic_epochs=2)
    in_process = _epoch_batches(ds, plan, 0)
    in_worker = _epoch_batches(ds, plan, 1)
    for a_epoch, b_epoch in zip(in_process, in_worker):
        for (ia, xa, ta), (ib, xb, tb) in zip(a_epoch, b_epoch):
            assert ia == ib and torch.equal(xa, xb) and torch.equal(ta, tb)
    assert not torch.equal(in_process[0][0][1], in_process[1][0][1])  # a new epoch, new augmentation


def test_polyp_free_items_have_no_targets(dataset):
    ds, positives, negatives = dataset
    for i in range(positives, positives + negatives):
        for epoch in range(4):  # mosaic partners are drawn among polyp-free items too, but a
            _, item = ds[TrainKey(epoch, i, False)]  # whole polyp-free input has no box
            assert len(item.boxes) == 0 and item.image.shape == (64, 64, 3)


def test_precision_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("auto", cuda) is torch.float16 and autocast_dtype("fp16", cuda) is torch.float16
    assert autocast_dtype("auto", cpu) is (torch.bfloat16 if cpu_has_native_bf16() else None)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("fp8", cpu)
