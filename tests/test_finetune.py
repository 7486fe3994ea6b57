"""Stage-2 fine-tuning: it learns, kill + resume = uninterrupted, epoch chosen on validation,
disjoint splits, stage-1 transfer. Tiny Lite0 (random init, 64 px crops) on a blur replica."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pinet.checkpoint import load_checkpoint, read_header, save_checkpoint
from pinet.models import create_model
from pinet_runtime.preprocess import Preprocessing
from pinet_training.datasets import CsvScale, load_dataset

SCALE = CsvScale(low=0.0, high=11.0, higher_is_better=True)
TINY = ["--variant", "pinet_lite0", "--backbone-init", "random", "--crop-size", "64", "--resize-short-side",
        "native", "--batch-size", "8", "--crops-per-image", "2", "--lr-backbone", "1e-3", "--lr-head", "1e-3",
        "--workers", "0", "--threads", "1", "--val-fraction", "0.25", "--no-progress"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pinet.cli", "train", "finetune", *args]


@pytest.fixture(scope="module")
def replica(replicas, tmp_path_factory, sample_photos) -> Path:
    return replicas.make_blur_replica(tmp_path_factory.mktemp("setA"), sample_photos[:6], "setA",
                                      with_reference=True)


def _settings(replica: Path, out: Path, **changes):
    from pinet_training.finetune import FinetuneSettings

    base = dict(dataset="csv", root=replica, out_dir=out, variant="pinet_lite0", backbone_init="random",
                csv_scale=SCALE, epochs=3, batch_size=8, crops_per_image=2, lr_backbone=1e-3, lr_head=1e-3,
                crop_size=64, resize_short_side="native", val_fraction=0.25, workers=0, threads=1,
                show_progress=False)
    base.update(changes)
    return FinetuneSettings(**base)


@pytest.mark.slow
def test_tiny_finetune_lowers_its_training_loss(replica, tmp_path):
    from pinet_training.finetune import run_finetune

    results, results_json = run_finetune(_settings(replica, tmp_path / "run", epochs=5, lr_head=3e-3), lambda _: None)
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines())
              if r["kind"] == "train"]
    steps_per_epoch = len(losses) // 5
    first, last = np.mean(losses[:steps_per_epoch]), np.mean(losses[-steps_per_epoch:])
    assert last < 0.7 * first, (first, last)
    summary = json.loads(results_json.read_text())
    assert summary["rounds"][0]["metrics"]["srcc"] == results[0]["test"]["srcc"]
    assert (tmp_path / "run" / "results.md").read_text().count("SRCC") >= 2


@pytest.mark.slow
def test_killed_and_resumed_run_equals_uninterrupted(interrupted_runs, replica, tmp_path):
    common = ["--dataset", "csv", "--csv-range", "0,11", "--root", str(replica), "--epochs", "2",
              "--checkpoint-every", "1", "--seed", "5", *TINY]
    interrupted = tmp_path / "interrupted"
    interrupted_runs.run_straight_then_kill(lambda out: _cli(*common, "--out", str(out)), tmp_path / "straight",
                                            interrupted)
    total = read_header(tmp_path / "straight" / "last.safetensors").training["step"]
    killed_at = read_header(interrupted / "last.safetensors").training["step"]
    assert 0 < killed_at < total
    assert not (interrupted / "results.json").exists()

    resumed = subprocess.run(_cli(*common, "--out", str(interrupted), "--resume"),
                             env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr

    for name in ("last.safetensors", "best.safetensors"):
        a = load_checkpoint(tmp_path / "straight" / name, stage=2)
        b = load_checkpoint(interrupted / name, stage=2)
        a_state, b_state = a.model.state_dict(), b.model.state_dict()
        assert set(a_state) == set(b_state)
        for key in a_state:
            assert torch.equal(a_state[key], b_state[key]), f"{name}: {key}"
        for key in a.extra_tensors:
            assert torch.equal(a.extra_tensors[key], b.extra_tensors[key]), f"{name}: {key}"
    a_results = json.loads((tmp_path / "straight" / "results.json").read_text())
    b_results = json.loads((interrupted / "results.json").read_text())
    assert a_results["rounds"] == b_results["rounds"]


@pytest.mark.slow
def test_chosen_epoch_is_the_validation_best(replica, tmp_path, monkeypatch):
    """A planted validation curve (best at epoch 2, tied at 4) decides best.safetensors and the
    reported epoch; the test split is scored once, on that checkpoint, not per epoch."""
    import pinet_training.finetune as finetune
    import pinet_training.finetune_report as finetune_report

    planted = iter([0.10, 0.70, 0.30, 0.70])
    calls = {"val": 0}

    def planted_validation(model, dataset, indices, prep, batch_size, device):
        calls["val"] += 1
        return {"val_srcc": next(planted)}

    test_scorings = []
    real_evaluate = finetune_report.evaluate_checkpoint

    def counting_evaluate(path, *args, **kwargs):
        test_scorings.append(Path(path))
        return real_evaluate(path, *args, **kwargs)

    monkeypatch.setattr(finetune, "validation_metrics", planted_validation)
    monkeypatch.setattr(finetune_report, "evaluate_checkpoint", counting_evaluate)
    results, _ = finetune.run_finetune(_settings(replica, tmp_path / "run", epochs=4), lambda _: None)
    assert calls["val"] == 4
    assert results[0]["chosen_epoch"] == 2 and results[0]["val_srcc"] == pytest.approx(0.70)
    best = read_header(tmp_path / "run" / "best.safetensors").training
    steps_per_epoch = best["info"]["steps_per_epoch"]
    assert best["best_step"] == 2 * steps_per_epoch and best["step"] == 2 * steps_per_epoch
    assert best["chosen_epoch"] == 2 and best["test"]["srcc"] == results[0]["test"]["srcc"]
    assert test_scorings == [tmp_path / "run" / "best.safetensors"]
    last = load_checkpoint(tmp_path / "run" / "last.safetensors", stage=2).model.state_dict()
    chosen = load_checkpoint(tmp_path / "run" / "best.safetensors", stage=2).model.state_dict()
    assert any(not torch.equal(last[k], chosen[k]) for k in last)      # epoch 2 weights, not the final ones


def test_epoch_choice_last_ships_the_last_epochs_averaged_weights(replica, tmp_path, monkeypatch):
    """--epoch-choice last: validation peaks at epoch 2, yet the model is epoch 4's moving average
    (the weights validation saw last), scored once on the test split, and the report says the rule."""
    import pinet_training.finetune as finetune
    import pinet_training.finetune_report as finetune_report
    from pinet_training.engine import TrainingRun
    from pinet_training.weight_average import TENSOR_PREFIX

    planted = iter([0.10, 0.70, 0.30, 0.50])
    test_scorings = []
    real_evaluate = finetune_report.evaluate_checkpoint

    def counting_evaluate(path, *args, **kwargs):
        test_scorings.append(Path(path))
        return real_evaluate(path, *args, **kwargs)

    monkeypatch.setattr(finetune, "validation_metrics", lambda *args: {"val_srcc": next(planted)})
    monkeypatch.setattr(finetune_report, "evaluate_checkpoint", counting_evaluate)
    saved = []
    real_save = TrainingRun.save
    monkeypatch.setattr(TrainingRun, "save", lambda self, path, **kw: (saved.append(Path(path).name),
                                                                       real_save(self, path, **kw))[1])
    run = tmp_path / "run"
    results, results_json = finetune.run_finetune(_settings(replica, run, epochs=4, ema_decay=0.5,
                                                            epoch_choice="last"), lambda _: None)
    assert results[0]["chosen_epoch"] == 4 and results[0]["val_srcc"] == pytest.approx(0.50)
    best = read_header(run / "best.safetensors").training
    steps_per_epoch = best["info"]["steps_per_epoch"]
    assert results[0]["best_step"] == 4 * steps_per_epoch and best["epoch_choice"] == "last"
    assert best["test"]["srcc"] == results[0]["test"]["srcc"] and test_scorings == [run / "best.safetensors"]
    assert saved.count("best.safetensors") == 1      # written once, at the end: not at epoch 2's validation peak
    last = load_checkpoint(run / "last.safetensors", stage=2)
    averaged = {k[len(TENSOR_PREFIX):]: v for k, v in last.extra_tensors.items() if k.startswith(TENSOR_PREFIX)}
    shipped = load_checkpoint(run / "best.safetensors", stage=2).model.state_dict()
    raw = last.model.state_dict()
    assert averaged and all(torch.equal(shipped[k], averaged[k]) for k in averaged)
    assert any(not torch.equal(shipped[k], raw[k]) for k in averaged)        # the average, not the raw weights
    assert "the last epoch (4) is the model" in (run / "results.md").read_text()
    assert json.loads(results_json.read_text())["rounds"][0]["chosen_epoch"] == 4


def test_epoch_choice_is_checked_and_fixed_for_a_resume(replica, tmp_path):
    from pinet_training.engine import ResumeError
    from pinet_training.finetune import FinetuneError, run_finetune

    with pytest.raises(FinetuneError, match="--epoch-choice must be one of validation, last"):
        run_finetune(_settings(replica, tmp_path / "bad", epoch_choice="best"), lambda _: None)
    run_finetune(_settings(replica, tmp_path / "run", epochs=1), lambda _: None)
    with pytest.raises(ResumeError, match="epoch_choice=None .this run: 'last'"):
        run_finetune(_settings(replica, tmp_path / "run", epochs=2, epoch_choice="last", resume=True), lambda _: None)


def test_splits_never_share_a_group(replica, tmp_path):
    from pinet_training.finetune_data import groups_of, round_split, synthetic_split

    dataset = load_dataset("csv", replica, csv_scale=SCALE)
    seen_tests = set()
    for round_index in range(5):
        split = round_split(dataset, round_index, split_seed=3, val_fraction=0.25).split
        train, val, test = (groups_of(dataset, part) for part in (split.train, split.val, split.test))
        assert train and val and test
        assert not (train & val) and not (train & test) and not (val & test)
        assert len(split.train) + len(split.val) + len(split.test) == len(dataset)
        seen_tests.add(frozenset(test))
    assert len(seen_tests) > 1                                  # rounds really use different splits

    # The synthetic set keeps its manifest's split by reference: train refs / val refs.
    folder = tmp_path / "synth"
    folder.mkdir()
    rows = []
    for r in range(4):
        for level in range(3):
            file = f"r{r}_{level}.png"
            Image.new("RGB", (80, 80), (40 * r, 60, 20 * level)).save(folder / file)
            rows.append([file, f"ref{r}", f"{1 - 0.3 * level:.2f}", "val" if r == 3 else "train"])
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "reference", "pseudo_score", "split"])
        writer.writerows(rows)
    synthetic = load_dataset("synthetic", folder)
    split = synthetic_split(synthetic).split
    assert groups_of(synthetic, split.train) == {"ref0", "ref1", "ref2"}
    assert groups_of(synthetic, split.val) == groups_of(synthetic, split.test) == {"ref3"}


@pytest.mark.slow
def test_recorded_test_split_is_disjoint_from_training(replica, tmp_path):
    from pinet_training.finetune import run_finetune

    run_finetune(_settings(replica, tmp_path / "run", epochs=1, split_seed=7), lambda _: None)
    training = read_header(tmp_path / "run" / "best.safetensors").training
    dataset = load_dataset("csv", replica, csv_scale=SCALE)
    test_ids = set(training["split"]["test_ids"])
    group_of = {s.path.name: s.group for s in dataset.samples}
    test_groups = {group_of[i] for i in test_ids}
    # every image of a test group is in the test split, so no test content was trained on
    assert {name for name, group in group_of.items() if group in test_groups} == test_ids
    assert training["split"]["n_train"] + training["split"]["n_val"] + len(test_ids) == len(dataset)


def test_init_from_stage1_copies_the_shared_tensors(replica, tmp_path):
    from pinet_training.finetune import prepare_round

    torch.manual_seed(123)
    stage1 = create_model("pinet_lite0", stage=1, init="random")
    prep = Preprocessing(crop_size=64, resize_short_side=80)
    path = save_checkpoint(tmp_path / "stage1.safetensors", stage1, prep, {"kind": "test"})
    settings = _settings(replica, tmp_path / "run", variant=None, crop_size=None, resize_short_side="auto")
    settings = type(settings)(**{**settings.__dict__, "init": str(path)})
    prepared = prepare_round(settings, load_dataset("csv", replica, csv_scale=SCALE), 0)
    model = prepared.run.model
    source = stage1.state_dict()
    fresh = create_model("pinet_lite0", stage=2, init="random").state_dict()
    shared = [k for k in model.state_dict()
              if k.startswith(("backbone.", "staircase.", "quality_branch.", "distortion_branch."))]
    assert any(k.startswith("backbone.") and k.endswith("weight") for k in shared)
    for key in shared:
        assert torch.equal(model.state_dict()[key], source[key]), key
    first_conv = next(k for k in shared if k.startswith("backbone.") and model.state_dict()[k].ndim == 4)
    assert not torch.equal(fresh[first_conv], source[first_conv])   # copying was needed to match
    # the fresh regressor's output starts at the mean training score
    dataset = prepared.dataset
    mean_train = np.mean([dataset.samples[i].score for i in prepared.split.split.train])
    assert float(model.regressor[-1].bias.detach()) == pytest.approx(mean_train, abs=1e-6)
    assert prepared.run.preprocessing.crop_size == 64            # crops follow the init contract
    assert prepared.run.info["init_stage"] == 1


def test_cli_refuses_bad_input_without_traceback(replica, tmp_path):
    from typer.testing import CliRunner

    from pinet.cli.app import app

    runner = CliRunner()
    run = runner.invoke(app, ["train", "finetune", "--dataset", "kadid10k", "--root", str(tmp_path / "missing"),
                              "--out", str(tmp_path / "r"), *TINY])
    assert run.exit_code == 1 and "missing" in run.output and "Traceback" not in run.output
    run = runner.invoke(app, ["train", "finetune", "--dataset", "csv", "--csv-range", "0,11", "--root", str(replica),
                              "--init", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "r"), *TINY[2:]])
    assert run.exit_code == 1 and "nope.safetensors" in run.output and "Traceback" not in run.output
    run = runner.invoke(app, ["train", "finetune", "--dataset", "csv", "--root", str(replica), "--out",
                              str(tmp_path / "r"), *TINY])
    assert run.exit_code == 2 and "--csv-range" in run.output


def test_images_per_epoch_draws_a_fresh_subset_each_epoch(replica):
    from pinet_training.finetune_data import FinetuneBatches

    dataset = load_dataset("csv", replica, csv_scale=CsvScale(0.0, 1.0, True))
    train = tuple(range(0, len(dataset.samples), 2))
    prep = Preprocessing(crop_size=32, resize_short_side=40)
    batches = FinetuneBatches(dataset, train, prep, batch_size=2, crops_per_image=1, flip=False, seed=0,
                              images_per_epoch=4)
    assert batches.entries_per_epoch == 4 and batches.steps_per_epoch == 2
    epochs = [np.concatenate([batches.images_of_step(e * 2 + s) for s in range(2)]) for e in range(3)]
    for chosen in epochs:
        assert len(chosen) == 4 and len(set(chosen.tolist())) == 4 and chosen.max() < len(train)
    assert len({tuple(sorted(chosen.tolist())) for chosen in epochs}) > 1     # subsets change by epoch
    full = FinetuneBatches(dataset, train, prep, batch_size=2, crops_per_image=1, flip=False, seed=0)
    assert full.entries_per_epoch == len(train)


def test_val_max_images_chooses_the_epoch_on_a_fixed_subset(replica, tmp_path):
    from pinet_training.finetune import validation_subset

    val = tuple(range(100, 140))
    settings = _settings(replica, tmp_path / "run", val_max_images=10)
    subset = validation_subset(val, settings)
    assert len(subset) == 10 and set(subset) <= set(val) and list(subset) == sorted(subset)
    assert validation_subset(val, settings) == subset                       # fixed by the seed
    assert validation_subset(val, _settings(replica, tmp_path / "run", val_max_images=None)) == val
    assert validation_subset(val[:5], settings) == val[:5]


@pytest.mark.slow
def test_a_finished_run_trains_on_when_epochs_grow(replica, tmp_path):
    """--resume with a larger --epochs continues a finished round from its last checkpoint: the same
    weights, epoch choice and test figures as a run started with that many epochs. A smaller
    --epochs is refused (the epoch was chosen among the later ones too)."""
    from pinet_training.finetune import FinetuneError, run_finetune

    said = []
    straight, _ = run_finetune(_settings(replica, tmp_path / "straight", epochs=3, rounds=2), lambda _: None)
    run_finetune(_settings(replica, tmp_path / "grown", epochs=2, rounds=2), lambda _: None)
    grown, _ = run_finetune(_settings(replica, tmp_path / "grown", epochs=3, rounds=2, resume=True), said.append)
    assert sum("finished after 2 epochs; training on to 3" in line for line in said) == 2, said
    for name in ("round_01/last.safetensors", "round_02/best.safetensors"):
        a = load_checkpoint(tmp_path / "straight" / name, stage=2).model.state_dict()
        b = load_checkpoint(tmp_path / "grown" / name, stage=2).model.state_dict()
        assert all(torch.equal(a[key], b[key]) for key in a), name
    keys = ("chosen_epoch", "best_step", "val_srcc", "test", "split_seed")
    assert [{k: r[k] for k in keys} for r in grown] == [{k: r[k] for k in keys} for r in straight]
    assert [json.loads(line)["epoch"] for line in (tmp_path / "grown" / "round_01" / "log.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "val"] == [1, 2, 3]

    again = []
    run_finetune(_settings(replica, tmp_path / "grown", epochs=3, rounds=2, resume=True), again.append)
    assert sum("already finished" in line for line in again) == 2
    with pytest.raises(FinetuneError, match=r"round_01 has trained 3 epochs; --epochs 2 cannot shorten it"):
        run_finetune(_settings(replica, tmp_path / "grown", epochs=2, rounds=2, resume=True), lambda _: None)
