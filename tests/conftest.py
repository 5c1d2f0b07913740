"""Shared fixtures: small models, the optional real data set, offscreen Qt."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parent.parent


def kvasir_root() -> Path | None:
    env = os.environ.get("POLYPSCOPE_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data" / "kvasir-seg")
    for c in candidates:
        if (c / "kavsir_bboxes.json").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def kvasir() -> Path:
    root = kvasir_root()
    if root is None:
        pytest.skip("Kvasir-SEG not found: set POLYPSCOPE_DATA or place it at ../shared/data/kvasir-seg")
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from .engine_fixtures import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny.safetensors")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint) -> Path:
    from engine.export import export_onnx

    out = tiny_checkpoint.with_suffix(".onnx")
    export_onnx(tiny_checkpoint, out, check_images=None)
    return out


@pytest.fixture(autouse=True)
def restore_signal_handlers():
    """The runners' entry points (``training.prune_study``, ``training.ablations``,
    ``training.gpu_lease``) turn SIGTERM into ``SystemExit`` for the rest of their process,
    which is right for a process of their own. Called in-process by a test, that handler
    would stay in pytest's process, and a suite stopped from outside would fail whichever
    test was running instead of stopping (seen in session 22). Each test leaves the
    handlers as it found them."""
    import signal

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGCHLD)}
    yield
    for sig, handler in saved.items():
        if handler is not None and signal.getsignal(sig) is not handler:  # None: set outside Python
            signal.signal(sig, handler)


@pytest.fixture(scope="module")
def restore_torch_threads():
    """Training runs with ``threads=N`` set torch's thread count for the whole process; a
    module that makes such runs gives the next module the count it found."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def trained_epochs(monkeypatch) -> list[int]:
    """The 0-based epochs the trainer trains from here on, in order (to tell a run that
    went on from one that started again)."""
    from training.loop.trainer import Trainer

    trained: list[int] = []
    original = Trainer._train_epoch

    def counted(self, epoch):
        trained.append(epoch)
        return original(self, epoch)
    monkeypatch.setattr(Trainer, "_train_epoch", counted)
    return trained


@pytest.fixture()
def train_configs(monkeypatch) -> list:
    """The ``TrainConfig`` each ``polypscope train`` in the test hands to the trainer, which
    is replaced by one that records it and trains nothing: how flags become settings,
    without a training run."""
    import training.cli

    seen: list = []

    class Recorded:
        stopped_early = False

        def __init__(self, cfg, resume, show_progress, deadline=None):
            seen.append(cfg)

        def run(self):
            return {}

    monkeypatch.setattr(training.cli, "Trainer", Recorded)
    return seen
