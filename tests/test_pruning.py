
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from app.cli import build_parser
from models import create, load_checkpoint, save_checkpoint
from models.complexity import count_flops
from training.cli import prune_job_from_args
from training.data.augment.pipeline import AugmentConfig
from training.pruning.graph import coupling_groups, input_sources, producer_group
from training.pruning.importance import (
    BNScaleImportance,
    L1Importance,
    RandomImportance,
    TaylorGateImportance,
    TaylorImportance,
)
from training.pruning.plan import PruneSpec, group_scores, plan_keep
from training.pruning.prune import PruneJob, finetune_config, prune_once, run_prune, step_ratios
from training.pruning.reference import fold_reference, silenced_network, weights_removed_network
from training.pruning.slim import FOLD_MODES, slim

from .conftest import kvasir_root
from .synthetic import write_kvasir_like


def _model(spp: bool, size: int = 128, seed: int = 0):
    """A model with non-trivial BatchNorm statistics (like a trained one)."""
    torch.manual_seed(seed)
    m = create("yolov3-spp" if spp else "yolov3", width=0.25, input_size=size)
    with torch.no_grad():
        for bn in (x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.bias.normal_(0, 0.5)
            bn.weight.uniform_(0.5, 1.5)
    return m.eval()


def _inputs(size: int) -> torch.Tensor:
    root = kvasir_root()
    if root is not None:
        images = [cv2.imread(str(p)) for p in sorted((root / "images").iterdir())[:2]]
    else:
        rng = np.random.default_rng(0)
        images = [cv2.resize(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), (300, 240)) for _ in range(2)]
    from training.data.augment.pipeline import Item, letterbox
    from training.data.loader import to_tensor

    return torch.stack([to_tensor(letterbox(Item(im, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)),
                                            size).image) for im in images])


def _random_keep(model, fraction=0.5, seed=0):
    rng = np.random.default_rng(seed)
    groups = coupling_groups(model.config.spp)
    convs = model.named_convs()
    return {g: np.sort(rng.choice(convs[m[0]].conv.out_channels, max(1, int(convs[m[0]].conv.out_channels * fraction)),
                                  replace=False)) for g, m in groups.items()}


@pytest.fixture
def float64_default():
    """Build and run networks in float64: the identities tested are exact, so float64
    rounding (~1e-16 relative) leaves a tolerance of 1e-9 a factor of 1e4 or more of
    margin, whatever kernels and summation order the CPU uses. In float32 the decoded
    boxes (hundreds of pixels) already differ by a few ulps, about 5e-5 px, between two
    paths of the same network."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _raw_max_difference(a, b, x) -> float:
    return max(d.max().item() for d in _raw_differences(a, b, x))


def _raw_mean_difference(a, b, x) -> float:
    return max(d.mean().item() for d in _raw_differences(a, b, x))


def _raw_differences(a, b, x) -> list[torch.Tensor]:
    with torch.no_grad():
        return [(p - q).abs() for p, q in zip(a.forward_raw(x), b.forward_raw(x))]


@pytest.mark.parametrize("spp", [False, True])
def test_slim_equals_its_independent_reference_in_every_fold_mode(spp, float64_default):
    """The references run the ORIGINAL convolutions on edited inputs (no fold arithmetic)."""
    model = _model(spp)
    keep = _random_keep(model)
    x = _inputs(128).double()
    for fold in FOLD_MODES:
        small, ref = slim(model, keep, fold), fold_reference(model, keep, fold)
        assert next(small.parameters()).dtype == torch.float64
        with torch.no_grad():
            for a, b in zip(small.forward_raw(x), ref.forward_raw(x)):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=lambda m, f=fold: f"fold={f}: {m}")
            torch.testing.assert_close(small(x), ref(x), rtol=1e-9, atol=1e-9)  # decoded boxes are in pixels
    # Without a fold the slim network is the original with the removed channels silenced
    # (weights, BatchNorm scale, shift and mean zero): dropping a zero channel is exact.
    assert _raw_max_difference(slim(model, keep, "none"), silenced_network(model, keep), x) < 1e-9


def test_the_fold_is_exact_only_for_pointwise_consumers_and_its_true_error_is_measured(float64_default):
    """Against what pruning does to the original (weights removed, constants emitted,
    3x3 consumers zero-padding them), folding everywhere is not exact -- the border ring of
    each 3x3 consumer is off, and deep layers spread it -- but on average it is far closer
    than folding into 1x1 consumers only or not at all (here about 0.01 against 0.04 and 0.2
    mean |difference| of the raw outputs, while the worst position is off by about 0.15)."""
    model = _model(True)
    keep = _random_keep(model)
    x = _inputs(128).double()
    truth = weights_removed_network(model, keep)
    worst = {fold: _raw_max_difference(slim(model, keep, fold), truth, x) for fold in FOLD_MODES}
    mean = {fold: _raw_mean_difference(slim(model, keep, fold), truth, x) for fold in FOLD_MODES}
    assert 1e-3 < worst["all"] < 0.3  # not exact (the border effect is seen), and bounded
    assert mean["all"] < 0.05
    assert mean["all"] < 0.5 * mean["pointwise"] < 0.5 * mean["none"]
    # Pruning only groups whose every consumer is 1x1, the fold is exact.
    convs = model.named_convs()
    kernels_fed: dict[str, set] = {}
    for consumer, sources in input_sources(True).items():
        for source in sources:
            kernels_fed.setdefault(producer_group(source.tensor), set()).add(convs[consumer].conv.kernel_size)
    only_pointwise = {g: k if kernels_fed[g] == {(1, 1)} else np.arange(convs[m[0]].conv.out_channels)
                      for (g, k), m in zip(keep.items(), (coupling_groups(True)[g] for g in keep))}
    assert sum(len(k) < convs[coupling_groups(True)[g][0]].conv.out_channels for g, k in only_pointwise.items()) >= 4
    truth = weights_removed_network(model, only_pointwise)
    assert _raw_max_difference(slim(model, only_pointwise, "pointwise"), truth, x) < 1e-9


def test_slim_builds_smaller_convolutions_and_records_widths(tmp_path):
    model = _model(True)
    keep = _random_keep(model, 0.5)
    small = slim(model, keep)
    convs = small.named_convs()
    for group, members in coupling_groups(True).items():
        for name in members:
            assert convs[name].conv.out_channels == len(keep[group])
    assert convs["h0.out"].conv.out_channels == model.named_convs()["h0.out"].conv.out_channels
    assert convs["h1.c0"].conv.in_channels == len(keep["h0.lateral"]) + len(keep["s4"])
    assert convs["h0.c3"].conv.in_channels == 4 * len(keep["h0.c2"])  # SPP concatenates four views
    assert count_flops(small, 128) < 0.4 * count_flops(model, 128)
    path = save_checkpoint(tmp_path / "p.safetensors", small)
    again = load_checkpoint(path)
    assert again.config.channels == small.config.channels
    from engine.export import export_onnx

    onnx_path = export_onnx(path, tmp_path / "p.onnx", check_images=[]).path
    shapes = {tuple(t.dims) for t in onnx.load(str(onnx_path)).graph.initializer}
    assert (len(keep["s5"]), len(keep["s4"]), 3, 3) in shapes  # the slimmed s5.down weight


def test_criteria():
    model = _model(False)
    l1 = L1Importance()(model)
    w = model.named_convs()["s2.b1.reduce"].conv.weight
    np.testing.assert_allclose(l1["s2.b1.reduce"], w.abs().sum(dim=(1, 2, 3)).detach().numpy(), rtol=1e-6)
    bn = BNScaleImportance()(model)
    np.testing.assert_allclose(bn["stem"], model.backbone.stem.bn.weight.detach().abs().numpy())
    r1, r2, r3 = RandomImportance(3)(model), RandomImportance(3)(model), RandomImportance(4)(model)
    assert all(np.array_equal(r1[k], r2[k]) for k in r1) and not np.array_equal(r1["stem"], r3["stem"])
    assert "h0.out" not in l1


def test_taylor_accumulates_weight_times_gradient():
    model = _model(False, size=64).train()
    x = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 0, 8, 8, 40, 40], [1, 0, 20, 10, 60, 50.0]])
    from training.loop.loss import YoloLoss

    loss_fn = YoloLoss(model.config)
    batch_loss = lambda m, b: loss_fn(m(b), targets)[0]  # noqa: E731
    two = TaylorImportance([x, x], batch_loss, num_batches=2)(model)
    one = TaylorImportance([x], batch_loss, num_batches=1)(model)
    for name in ("stem", "s3.b0.reduce", "h2.pre"):
        np.testing.assert_allclose(two[name], 2 * one[name], rtol=1e-4)  # same batch twice: twice the score
        assert (one[name] >= 0).all() and one[name].max() > 0
    model.zero_grad()
    loss_fn(model(x), targets)[0].backward()
    conv = model.named_convs()["s3.b0.reduce"]
    manual = (conv.conv.weight * conv.conv.weight.grad).abs().sum(dim=(1, 2, 3)) \
        + (conv.bn.weight * conv.bn.weight.grad).abs() + (conv.bn.bias * conv.bn.bias.grad).abs()
    np.testing.assert_allclose(one["s3.b0.reduce"], manual.detach().numpy(), rtol=1e-4)
    with pytest.raises(ValueError, match="at least one batch"):
        TaylorImportance([], batch_loss)(model)


def _touch_every_parameter(model) -> torch.Tensor:
    """0 * sum of all parameters: every parameter gets a (zero) gradient, as in real use."""
    return sum(p.sum() for p in model.parameters()) * 0.0


def test_taylor_gate_is_the_squared_gate_term_summed_over_batches_by_hand():
    model = _model(False, size=64)
    bn = model.named_convs()["stem"].bn
    gamma, beta = bn.weight.detach().clone(), bn.bias.detach().clone()
    # L = sum_c a_c * gamma_c + sum_c b_c * beta_c^2, so dL/dgamma = a and dL/dbeta = 2 b beta:
    # the gate term is gamma * a + 2 b beta^2 per channel, squared per batch, summed over batches.
    n = len(gamma)
    batches = [(torch.linspace(-1, 1, n), torch.full((n,), 0.5)), (torch.ones(n), torch.linspace(0, 2, n))]

    def batch_loss(m, b):
        stem_bn = m.named_convs()["stem"].bn
        return (b[0] * stem_bn.weight).sum() + (b[1] * stem_bn.bias ** 2).sum() + _touch_every_parameter(m)

    scores = TaylorGateImportance(batches, batch_loss, num_batches=2)(model)
    expected = sum((gamma * a + 2 * b * beta ** 2) ** 2 for a, b in batches)
    np.testing.assert_allclose(scores["stem"], expected.double().numpy(), rtol=1e-6)
    # The square is taken per batch, after the sum over gamma and beta (not of each term):
    # |.| per term, as taylor does, would give a different number.
    per_term = sum((gamma * a).abs() ** 2 + (2 * b * beta ** 2).abs() ** 2 for a, b in batches)
    assert not np.allclose(scores["stem"], per_term.double().numpy(), rtol=1e-3)
    assert (scores["s2.b1.reduce"] == 0).all()  # no gradient reached it
    assert "h0.out" not in scores


def test_batchnorm_makes_the_signed_weight_term_vanish_which_is_why_the_gate_exists(float64_default):
    """In training mode a convolution feeding BatchNorm is scale-invariant, so per channel
    sum(w * dL/dw) = 0 up to BatchNorm's eps (here about 1e-4 of the absolute sum): only
    |w * dL/dw| (taylor) or the gate term (taylor-gate) carry signal."""
    model = _model(False, size=64).train()
    x = torch.rand(4, 3, 64, 64)
    targets = torch.tensor([[0, 0, 8, 8, 40, 40], [1, 0, 20, 10, 60, 50.0], [2, 0, 5, 30, 25, 60], [3, 0, 0, 0, 64, 64]])
    from training.loop.loss import YoloLoss

    YoloLoss(model.config)(model(x), targets)[0].backward()
    for name in ("stem", "s3.b0.reduce", "h1.c2"):
        w = model.named_convs()[name].conv.weight
        signed, absolute = (w * w.grad).sum(dim=(1, 2, 3)), (w * w.grad).abs().sum(dim=(1, 2, 3))
        assert absolute.max() > 0
        assert (signed.abs() <= 1e-2 * absolute).all(), name
    bn = model.named_convs()["s3.b0.reduce"].bn
    assert (bn.weight * bn.weight.grad + bn.bias * bn.bias.grad).abs().max() > 1e-6


def test_prune_once_with_the_gate_criterion_builds_a_slim_network():
    model = _model(False, size=64)
    x = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 0, 8, 8, 40, 40], [1, 0, 20, 10, 60, 50.0]])
    from training.loop.loss import YoloLoss

    loss_fn = YoloLoss(model.config)
    criterion = TaylorGateImportance([x, x], lambda m, b: loss_fn(m(b), targets)[0], num_batches=2)
    small, keep = prune_once(model, criterion, PruneSpec(0.5, scope="uniform"))
    assert count_flops(small, 64) < 0.4 * count_flops(model, 64)
    assert small(x).shape[-1] == model(x).shape[-1]


def test_plans_respect_ratio_rounding_and_floors():
    rng = np.random.default_rng(0)
    scores = {"a": rng.random(64), "b": rng.random(128), "c": rng.random(16) * 100}
    uniform = plan_keep(scores, PruneSpec(0.5, "uniform"))
    assert {g: len(k) for g, k in uniform.items()} == {"a": 32, "b": 64, "c": 8}
    assert np.array_equal(uniform["a"], np.sort(np.argsort(-scores["a"])[:32]))
    glob = plan_keep(scores, PruneSpec(0.5, "global"))
    assert all(len(k) % 8 == 0 and len(k) >= 8 for k in glob.values())
    total = sum(len(k) for k in glob.values())
    assert abs(total - 104) <= 16  # half of 208 channels, up to rounding
    with pytest.raises(ValueError, match="ratio must be in"):
        PruneSpec(1.2)
    summed = group_scores({"x": np.ones(4), "y": np.full(4, 2.0)}, {"g": ["x", "y"]})
    assert summed["g"].tolist() == [3, 3, 3, 3]


def test_global_plan_normalisation_is_fair_to_wide_layers():
    """Two layers with the same score distribution lose the same share under mean
    normalisation; L2 normalisation strips the wide one (the failure seen on Kvasir)."""
    rng = np.random.default_rng(1)
    narrow, wide = rng.random(32), rng.random(256)
    scores = {"narrow": narrow, "wide": wide}
    by_mean = plan_keep(scores, PruneSpec(0.5, "global"))
    assert abs(len(by_mean["narrow"]) / 32 - len(by_mean["wide"]) / 256) <= 0.25
    by_l2 = plan_keep(scores, PruneSpec(0.5, "global", normalize="l2"))
    assert len(by_l2["narrow"]) / 32 - len(by_l2["wide"]) / 256 > 0.2
    scaled = plan_keep({"narrow": narrow * 1e-6, "wide": wide * 1e3}, PruneSpec(0.5, "global"))
    assert {g: len(k) for g, k in scaled.items()} == {g: len(k) for g, k in by_mean.items()}  # scale-free
    with pytest.raises(ValueError, match="normalize must be one of"):
        PruneSpec(0.5, normalize="max")


def test_floors_are_multiples_of_the_divisor():
    scores = {"big": np.r_[np.full(4, 100.0), np.full(252, 1e-9)], "other": np.ones(64)}
    keep = plan_keep(scores, PruneSpec(0.5, "global"))
    assert len(keep["big"]) == 40  # 15% of 256 is 38.4: the floor rounds up to 40, not 39
    assert all(len(k) % 8 == 0 for k in keep.values())


def test_taylor_scoring_leaves_batchnorm_statistics_untouched():
    model = _model(False, size=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 64, 64)
    from training.loop.loss import YoloLoss

    loss_fn = YoloLoss(model.config)
    targets = torch.tensor([[0, 0, 8, 8, 40, 40.0]])
    TaylorImportance([x, x], lambda m, b: loss_fn(m(b), targets)[0], num_batches=2)(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not model.training


def test_batchnorm_recalibration_measures_the_new_statistics():
    from training.pruning.bn_recalibration import recalibrate_batchnorm

    model = _model(False, size=64)
    small = slim(model, _random_keep(model, 0.5))
    batches = [torch.rand(4, 3, 64, 64) for _ in range(3)]
    captured = []
    stem = small.named_convs()["stem"]
    momentum = stem.bn.momentum
    hook = stem.conv.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    used = recalibrate_batchnorm(small, batches + batches, num_batches=3)
    hook.remove()
    assert used == 3 and not small.training
    pre_bn = torch.cat(captured)  # the stem's convolution outputs for the 3 batches
    expected_mean = pre_bn.mean(dim=(0, 2, 3))
    np.testing.assert_allclose(stem.bn.running_mean.numpy(), expected_mean.numpy(), rtol=1e-4, atol=1e-5)
    per_batch_var = torch.stack([c.var(dim=(0, 2, 3), unbiased=True) for c in captured])
    np.testing.assert_allclose(stem.bn.running_var.numpy(), per_batch_var.mean(0).numpy(), rtol=1e-4, atol=1e-5)
    assert stem.bn.momentum == momentum  # restored
    with pytest.raises(ValueError, match="at least one batch"):
        recalibrate_batchnorm(small, [], num_batches=3)


def test_step_ratios_compound_to_the_total():
    ratios = step_ratios(0.5, 3)
    kept = np.prod([1 - r for r in ratios])
    assert kept == pytest.approx(0.5) and len(ratios) == 3


@pytest.mark.slow
def test_prune_command_end_to_end(tmp_path):
    data = write_kvasir_like(tmp_path / "kv", n=12)
    from training.loop.trainer import TrainConfig, Trainer

    Trainer(TrainConfig(data=str(data), out=str(tmp_path / "base"), width=0.25, img=64, epochs=1, batch=4,
                        workers=0), show_progress=False).run()
    job = PruneJob(weights=tmp_path / "base" / "last.safetensors", method="taylor", ratio=0.5,
                   out=tmp_path / "pruned.safetensors", data=data, steps=2, finetune_epochs=2, batch=4,
                   taylor_batches=2, distill_weight=1.0, show_progress=False)
    meta = run_prune(job)
    assert meta["after"]["gflops"] < 0.75 * meta["before"]["gflops"]  # many tiny layers sit at the 8-channel floor
    ckpt = load_checkpoint(tmp_path / "pruned.safetensors")
    assert ckpt.metadata["pruning"]["method"] == "taylor" and ckpt.config.is_pruned
    results = (tmp_path / "pruned" / "step2_finetune" / "results.csv").read_text().splitlines()
    assert "loss_kd" in results[0].split(",")  # the unpruned network taught the fine-tune
    kept = json.loads((tmp_path / "pruned" / "step1_keep.json").read_text())
    assert set(kept) == set(coupling_groups(ckpt.config.spp)) and all(len(v) % 8 == 0 or len(v) < 8 for v in kept.values())
    assert ckpt.metadata["pruning"]["recalibration_batches"] == 32
    small, keep = prune_once(ckpt.model, RandomImportance(0), PruneSpec(0.3))
    assert count_flops(small, 64) < count_flops(ckpt.model, 64)


def test_auto_fold_folds_only_when_batchnorm_is_not_recalibrated(tmp_path):
    from training.pruning.prune import effective_fold

    job = PruneJob(tmp_path / "w", "taylor", 0.5, tmp_path / "o", data=tmp_path)
    assert job.fold == "auto" and effective_fold(job) == "none"  # recalibrated: the fold would be stale
    assert effective_fold(PruneJob(tmp_path / "w", "l1", 0.5, tmp_path / "o", data=tmp_path,
                                   recalibration_batches=0)) == "all"
    assert effective_fold(PruneJob(tmp_path / "w", "l1", 0.5, tmp_path / "o")) == "all"  # no data, no recalibration
    assert effective_fold(PruneJob(tmp_path / "w", "l1", 0.5, tmp_path / "o", fold="pointwise")) == "pointwise"


@pytest.mark.parametrize("keep, name", [("best", "best.safetensors"), ("last", "last.safetensors")])
def test_the_fine_tune_hands_on_the_epoch_asked_for(keep, name, tiny_checkpoint, tmp_path, monkeypatch):
    import training.pruning.prune as prune

    trained = []

    class Recorded:
        stopped_early = False

        def __init__(self, cfg, show_progress, resume=False, deadline=None):
            trained.append(cfg)

        def run(self):
            return {}

    monkeypatch.setattr(prune, "Trainer", Recorded)
    job = prune.PruneJob(tiny_checkpoint, "taylor", 0.5, tmp_path / "p.safetensors", keep=keep)
    assert prune._finetune(job, tiny_checkpoint, 4, tmp_path / "ft") == (tmp_path / "ft" / name, True)
    assert trained[0].epochs == 4 and trained[0].out == str(tmp_path / "ft")


class SittingEnded(Exception):
    """Stands for the end of a sitting: the process is gone after an epoch was saved."""


def test_an_interrupted_prune_resumes_without_scoring_again_and_refuses_other_settings(tmp_path, monkeypatch):
    import training.pruning.prune as prune
    from training.loop.trainer import TrainConfig, Trainer

    data = write_kvasir_like(tmp_path / "kv", n=12)
    Trainer(TrainConfig(data=str(data), out=str(tmp_path / "base"), width=0.25, img=64, epochs=1, batch=4,
                        workers=0), show_progress=False).run()
    job = PruneJob(weights=tmp_path / "base" / "last.safetensors", method="taylor", ratio=0.5,
                   out=tmp_path / "pruned.safetensors", data=data, finetune_epochs=2, batch=4, taylor_batches=2,
                   keep="last", workers=0, show_progress=False)
    end_epoch = Trainer._end_epoch

    def sitting_ends_after_the_first_epoch(self, epoch, *args, **kwargs):
        metrics = end_epoch(self, epoch, *args, **kwargs)
        if epoch == 0:
            raise SittingEnded
        return metrics

    monkeypatch.setattr(Trainer, "_end_epoch", sitting_ends_after_the_first_epoch)
    with pytest.raises(SittingEnded):
        run_prune(job)
    monkeypatch.undo()
    work = tmp_path / "pruned"
    assert not job.out.exists()
    pruned = (work / "step1_pruned.safetensors").read_bytes()

    with pytest.raises(SystemExit, match="pass --resume"):  # a fresh start would mix two prunes' steps
        run_prune(job)
    with pytest.raises(SystemExit, match=r"prune_job.json: .*other settings \(ratio\)"):
        run_prune(dataclasses.replace(job, ratio=0.3, resume=True))

    # Code whose fine-tune recipe changed since the sitting began may not finish the run.
    config = prune.finetune_config
    monkeypatch.setattr(prune, "finetune_config", lambda *a: dataclasses.replace(config(*a), close_mosaic=5))
    with pytest.raises(SystemExit, match=r"step1_finetune/train_config.json: .*other settings \(close_mosaic\)"):
        run_prune(dataclasses.replace(job, resume=True))
    monkeypatch.undo()

    scored, trained = [], []
    score, train_epoch = prune.make_criterion, Trainer._train_epoch
    monkeypatch.setattr(prune, "make_criterion", lambda *a: scored.append(a) or score(*a))
    monkeypatch.setattr(Trainer, "_train_epoch", lambda self, epoch: trained.append(epoch) or train_epoch(self, epoch))
    meta = run_prune(dataclasses.replace(job, resume=True, threads=1))  # where it runs may change
    assert scored == []  # the saved step is not scored (nor slimmed) again
    assert trained == [1]  # the fine-tune goes on from its saved first epoch
    assert (work / "step1_pruned.safetensors").read_bytes() == pruned
    rows = (work / "step1_finetune" / "results.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2"]
    assert meta["pruning"]["kept_epoch"] == "last" and load_checkpoint(job.out).config.is_pruned
    run_prune(dataclasses.replace(job, resume=True))  # a finished prune resumed: nothing trains again
    assert trained == [1] and scored == []


def test_a_prune_stopped_at_its_deadline_writes_nothing_final_and_a_resume_finishes_it(tmp_path, monkeypatch):
    """``prune --stop-after-minutes``: a fine-tune longer than the sitting stops between epochs
    (and a prune of several steps between steps) with status 3, so a chain of commands stops
    too; ``--resume`` trains only what is left, and every call makes progress even when its
    deadline has passed before it starts."""
    from training.cli import STOPPED_EARLY
    from training.loop.trainer import TrainConfig, Trainer, checkpoint_epoch

    data = write_kvasir_like(tmp_path / "kv", n=12)
    Trainer(TrainConfig(data=str(data), out=str(tmp_path / "base"), width=0.25, img=64, epochs=1, batch=4,
                        workers=0), show_progress=False).run()
    out, work = tmp_path / "pruned.safetensors", tmp_path / "pruned"
    argv = ["prune", "--weights", str(tmp_path / "base" / "last.safetensors"), "--method", "taylor",
            "--ratio", "0.5", "--out", str(out), "--data", str(data), "--steps", "2", "--finetune-epochs", "4",
            "--taylor-batches", "2", "--keep", "last", "--workers", "0", "--quiet"]
    trained = []
    train_epoch = Trainer._train_epoch
    monkeypatch.setattr(Trainer, "_train_epoch",
                        lambda self, epoch: trained.append((Path(self.out).name, epoch)) or train_epoch(self, epoch))
    import training.cli

    from_args = training.cli.prune_job_from_args  # the command has no --batch; twelve images need a small one
    monkeypatch.setattr(training.cli, "prune_job_from_args", lambda a: dataclasses.replace(from_args(a), batch=4))

    def call(*extra: str) -> int:
        args = build_parser().parse_args(argv + list(extra))
        return args.handler(args)

    # Each sitting's deadline has passed before it starts (0 minutes): one epoch, then stop.
    assert call("--stop-after-minutes", "0") == STOPPED_EARLY
    assert trained == [("step1_finetune", 0)] and not out.exists()
    assert checkpoint_epoch(work / "step1_finetune" / "last.safetensors") == 1
    assert call("--resume", "--stop-after-minutes", "0") == STOPPED_EARLY  # step 1 done, stopped before step 2
    assert trained[1:] == [("step1_finetune", 1)] and not (work / "step2_pruned.safetensors").exists()
    assert call("--resume", "--stop-after-minutes", "0") == STOPPED_EARLY  # nothing left of step 1: step 2 starts
    assert trained[2:] == [("step2_finetune", 0)] and not out.exists()
    assert call("--resume", "--stop-after-minutes", "600") == 0
    assert trained[3:] == [("step2_finetune", 1)]
    meta = load_checkpoint(out).metadata["pruning"]
    assert (meta["steps"], meta["finetune_epochs"]) == (2, 4)


def test_a_prune_fine_tunes_with_the_recipe_changes_it_is_given(tiny_checkpoint, tmp_path):
    """``make default-model`` fine-tunes with the changes adopted into the baseline's recipe
    (bubbles and residue); flags left unset keep the recipe the study's fine-tunes ran."""
    base = ["prune", "--weights", str(tiny_checkpoint), "--method", "taylor", "--ratio", "0.5",
            "--out", str(tmp_path / "p.safetensors"), "--data", str(tmp_path)]
    asked = prune_job_from_args(build_parser().parse_args(
        base + ["--distractors", "0.5", "--copy-paste", "0.25", "--multi-scale", "0.5"]))
    cfg = finetune_config(asked, tiny_checkpoint, 30, tmp_path / "ft")
    assert (cfg.augment.distractors, cfg.augment.copy_paste, cfg.multi_scale) == (0.5, 0.25, 0.5)
    assert dataclasses.replace(cfg.augment, distractors=0.0, copy_paste=0.0) == AugmentConfig.other_scopes()
    plain = finetune_config(prune_job_from_args(build_parser().parse_args(base)), tiny_checkpoint, 30, tmp_path / "f2")
    assert plain.augment == AugmentConfig.other_scopes() and plain.multi_scale == 0.0
    with pytest.raises(SystemExit):  # a probability outside [0, 1] is refused by the parser
        build_parser().parse_args(base + ["--distractors", "1.5"])
