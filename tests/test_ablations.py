"""The per-change campaign on the CPU: runs train as children, finish once, resume where they
stopped, stop whole at the deadline, and refuse to mix recipes; the table reads the last epochs."""

import json
import subprocess
import sys
import time

import pytest

from training.ablations import campaign
from training.ablations.campaign import CampaignSettings, run_campaign, status
from training.ablations.plan import ABLATION, REFERENCE, Run, ablations
from training.ablations.report import format_markdown, table
from training.data.datasets import open_dataset
from training.evaluation.zoom_out_set import write_zoom_out_set

from .synthetic import write_kvasir_like

TINY = {"width": 0.0625, "img": 64, "batch": 4, "eval_every": 1, "close_mosaic": 1, "fit_anchors": False}


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("abl")
    data = write_kvasir_like(root / "kv", n=12)
    zoom = root / "zoom"
    write_zoom_out_set(open_dataset(data, "val").samples, zoom, seed=0)
    return CampaignSettings(data, root / "campaign", zoom, epochs=2, threads=1, workers=0)


def _runs():
    return [Run(REFERENCE, "the recipe", dict(TINY), ABLATION),
            Run("abl-no-negatives", "no polyp-free samples", {**TINY, "mine_negatives": False,
                                                             "negative_fraction": 0.0}, ABLATION)]


def test_the_table_has_the_recipe_first_and_one_change_per_run():
    runs = ablations()
    assert runs[0].name == REFERENCE and runs[0].overrides == {}
    assert all(r.group == ABLATION and r.overrides for r in runs[1:])


def test_runs_finish_once_resume_where_they_stopped_and_are_tabled(setting):
    said = []
    assert run_campaign(setting, _runs(), jobs=2, deadline=None, say=said.append) == {
        REFERENCE: "done", "abl-no-negatives": "done"}
    for r in _runs():
        zoom = json.loads((setting.out / r.name / "zoom_out.json").read_text())
        assert zoom["checkpoint"] == "last.safetensors" and 0 <= zoom["ap50"] <= 1
    # Done runs are never trained again; a run with saved state but no 'done' mark resumes.
    (setting.out / REFERENCE / "done").unlink()
    assert status(setting, _runs()[0]) == "started"
    said.clear()
    assert run_campaign(setting, _runs(), jobs=2, deadline=None, say=said.append)[REFERENCE] == "done"
    assert said[0].startswith(f"resumed {REFERENCE}") and not any("abl-no-negatives" in m for m in said)
    rows = (setting.out / REFERENCE / "train" / "results.jsonl").read_text().splitlines()
    assert len(rows) == 2  # resumed after its last epoch: nothing trained twice
    result = table(setting.out, _runs(), 2)
    ref, other = result["runs"][REFERENCE], result["runs"]["abl-no-negatives"]
    last = json.loads(rows[-1])
    assert ref["val_ap50"] == last["val_ap50"] and ref["epochs_done"] == 2 and ref["done"]
    # Trained without polyp-free samples, still validated on the same mined val crops as the rest.
    assert other["val_alarm_frames_r90"] is not None and "val_alarm_frames_r90" in other["minus_reference"]
    assert other["minus_reference"]["val_ap50"] == pytest.approx(other["val_ap50"] - ref["val_ap50"])
    assert "| abl-no-negatives | no polyp-free samples | 2/2 |" in format_markdown(result)


def test_a_campaign_continues_only_with_the_settings_it_began_with(setting):
    other = CampaignSettings(setting.data, setting.out, setting.zoom, epochs=3, threads=1, workers=0)
    with pytest.raises(SystemExit, match=r"campaign.json: this campaign was started with other settings \(epochs\)"):
        run_campaign(other, _runs(), jobs=1, deadline=None)


def test_the_deadline_stops_every_run_whole(tmp_path, monkeypatch):
    started = []

    def sleeper(cfg, folder, resume, zoom, checkpoint):
        folder.mkdir(parents=True, exist_ok=True)
        # A parent that forks a child, as a trainer forks its loaders: both must stop.
        proc = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                                 "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                                 "time.sleep(60)"], start_new_session=True)
        started.append(proc)
        return proc

    monkeypatch.setattr(campaign, "start_job", sleeper)
    settings = CampaignSettings(tmp_path / "d", tmp_path / "c", tmp_path / "z", epochs=2)
    result = run_campaign(settings, _runs(), jobs=2, deadline=time.time() + 1.0, say=lambda m: None, poll_s=0.1)
    assert result == {REFERENCE: "new", "abl-no-negatives": "new"}
    assert len(started) == 2 and all(p.poll() is not None for p in started)


def test_the_epoch_log_has_alarm_figures_only_where_there_were_polyp_free_frames():
    from training.loop.trainer import alarm_columns

    with_frames = {"operating_points": {"recall_0.90": {"threshold": 0.2, "frames_with_false_box": 0.25}}}
    assert alarm_columns(with_frames) == {"val_threshold_r90": 0.2, "val_alarm_frames_r90": 0.25}
    assert alarm_columns({"operating_points": {"recall_0.90": {"threshold": 0.2}}}) == {"val_threshold_r90": 0.2}
    assert alarm_columns({}) == {}


def test_a_campaign_recorded_before_an_augmentation_option_existed_is_continued(tmp_path):
    import dataclasses

    from training.ablations.campaign import check_settings, same_override
    from training.data.augment.pipeline import AugmentConfig

    no_zoom = dataclasses.replace(AugmentConfig.other_scopes(), zoom_out=0.0)
    older = str(no_zoom).replace(", copy_paste=0.0, copy_paste_min=0.15, copy_paste_max=0.6", "")
    assert "copy_paste" not in older and older != str(no_zoom)
    assert same_override(older, no_zoom)  # the field added since reads as its default
    assert not same_override(older, dataclasses.replace(no_zoom, copy_paste=0.5))  # a real change
    assert not same_override(older, AugmentConfig.other_scopes())
    assert same_override("256", 256) and not same_override("256", 320)
    runs = [Run("abl-no-zoom-out", "no zoom-out", {"augment": no_zoom}, ABLATION)]
    settings = CampaignSettings(tmp_path / "d", tmp_path / "c", tmp_path / "z", epochs=2)
    settings.out.mkdir()
    (settings.out / "campaign.json").write_text(json.dumps({
        "epochs": 2, "data": str(settings.data), "zoom": str(settings.zoom),
        "runs": {"abl-no-zoom-out": {"what": "no zoom-out", "overrides": {"augment": older}}}}))
    check_settings(settings, runs)  # accepted
    changed = [Run("abl-no-zoom-out", "no zoom-out", {"augment": dataclasses.replace(no_zoom, zoom_out=0.1)},
                   ABLATION)]
    with pytest.raises(SystemExit, match="run abl-no-zoom-out"):
        check_settings(settings, changed)
