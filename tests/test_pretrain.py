"""Stage-1 pre-training: pair rules, same-window crops, a tiny run that learns, kill + resume = uninterrupted."""

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pinet.checkpoint import load_checkpoint, read_header
from pinet_runtime.preprocess import Preprocessing, normalize
from pinet_training.pairs import (
    ManifestError,
    PairBatches,
    PairItem,
    PairSampler,
    load_pair_batch,
    read_pair_items,
)

SMALL = ["--crop-size", "64", "--resize-short-side", "80", "--batch-size", "4", "--workers", "0",
         "--threads", "1", "--warmup-steps", "0", "--no-progress"]


@pytest.fixture
def restore_torch_globals():
    """In-process training sets torch's thread count and determinism flag: put them back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    torch.utils.deterministic.fill_uninitialized_memory = fill


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, sample_photos, tiny_synth_set) -> Path:
    return tiny_synth_set.make(sample_photos[:4], tmp_path_factory.mktemp("synth"))


# ---------------------------------------------------------------------------------------------
# Pair sampling

def _items(refs_per_split: dict[str, int], per_ref: int, rng) -> list[PairItem]:
    items = []
    for split, count in refs_per_split.items():
        for r in range(count):
            for k in range(per_ref):
                items.append(PairItem(file=Path(f"{split}{r}_{k}.png"), reference=f"{split}{r}",
                                      class_index=k % 6, pseudo_score=float(rng.random()), split=split))
    return items


def test_pairs_follow_the_rules():
    rng = np.random.default_rng(1)
    items = _items({"train": 6, "val": 3}, per_ref=12, rng=rng)
    margin = 0.2
    train = PairSampler(items, "train", margin)
    pairs = np.concatenate([train.epoch_pairs(np.random.default_rng(seed)) for seed in range(5)])
    assert len(pairs) == 5 * len(train) and len(train) > 50
    val_references = {item.reference for item in items if item.split == "val"}
    for first, second, label in pairs:
        a, b = items[first], items[second]
        assert a.reference == b.reference                                # same content
        assert a.reference not in val_references                         # never a val reference
        assert abs(a.pseudo_score - b.pseudo_score) > margin
        assert label == (0 if a.pseudo_score > b.pseudo_score else 1)    # 0 = first is better
    one_epoch = train.epoch_pairs(np.random.default_rng(9))
    counts = Counter(one_epoch[:, 2].tolist())
    assert abs(counts[0] - counts[1]) <= 1                               # balanced labels
    # Each eligible image is an anchor once per epoch: it appears at least once.
    assert set(train.anchors.tolist()) <= set(one_epoch[:, :2].ravel().tolist())

    val = PairSampler(items, "val", margin)
    val_pairs = val.sample_pairs(40, np.random.default_rng(3))
    assert {items[i].reference for i in val_pairs[:, :2].ravel()} <= val_references
    np.testing.assert_array_equal(val_pairs, val.sample_pairs(40, np.random.default_rng(3)))   # fixed set


def test_margin_excludes_near_ties():
    items = [PairItem(Path(f"{i}.png"), "r", 0, score, "train") for i, score in enumerate([0.50, 0.52, 0.90])]
    sampler = PairSampler(items, "train", margin=0.05)
    assert sorted(sampler.partners[0].tolist()) == [2] and sorted(sampler.partners[1].tolist()) == [2]
    assert sorted(sampler.partners[2].tolist()) == [0, 1]


def test_manifest_reader(tiny_data, tmp_path):
    items = read_pair_items(tiny_data)
    assert len(items) == 4 * 3 * 2 and all(item.file.is_file() for item in items)
    assert {item.split for item in items} == {"train", "val"}
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.csv").write_text("file,reference\nx.png,r\n")
    with pytest.raises(ManifestError, match="is not"):
        read_pair_items(bad)
    with pytest.raises(ManifestError, match="no manifest"):
        read_pair_items(tmp_path / "absent")


def test_both_images_get_the_same_window_and_flip(tmp_path):
    # Pixel values encode their own coordinates, so each crop tells where it came from.
    ys, xs = np.mgrid[0:90, 0:120]
    pixels = np.stack([ys, xs, (ys + xs) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(255 - pixels).save(tmp_path / "b.png")
    items = [PairItem(tmp_path / "a.png", "r", 1, 0.9, "train"), PairItem(tmp_path / "b.png", "r", 3, 0.1, "train")]
    prep = Preprocessing(crop_size=32, resize_short_side=None, mean=(0.5,) * 3, std=(0.25,) * 3)
    flips = set()
    for step in range(12):
        batch = load_pair_batch(items, np.array([[0, 1, 0], [1, 0, 1]]), prep, np.random.default_rng(step))
        assert batch["image1"].shape == (2, 3, 32, 32) and batch["rank"].tolist() == [0, 1]
        assert batch["class1"].tolist() == [1, 3] and batch["class2"].tolist() == [3, 1]
        # Undo the normalisation: both crops of a pair show the same window of the same-sized images.
        first = np.rint((batch["image1"][0].numpy() * 0.25 + 0.5) * 255).astype(np.int64)
        second = np.rint((batch["image2"][0].numpy() * 0.25 + 0.5) * 255).astype(np.int64)
        np.testing.assert_array_equal(first, 255 - second)
        top, left = int(first[0, 0, 0]), int(first[1, 0].min())
        flipped = first[1, 0, 0] > first[1, 0, -1]
        flips.add(bool(flipped))
        window = pixels[top:top + 32, left:left + 32]
        window = window[:, ::-1] if flipped else window
        np.testing.assert_array_equal(batch["image1"][0].numpy(), normalize(window, prep))
    assert flips == {True, False}


def test_batches_are_a_function_of_seed_and_step(tiny_data):
    items = read_pair_items(tiny_data)
    sampler = PairSampler(items, "train", 0.05)
    prep = Preprocessing(crop_size=64, resize_short_side=80)
    one, other = PairBatches(sampler, prep, 4, seed=5), PairBatches(sampler, prep, 4, seed=5)
    for step in (4, 0, 4, 7):           # any order, fresh or reused object: same batch
        a, b = one(step), other(step)
        assert torch.equal(a["image1"], b["image1"]) and torch.equal(a["rank"], b["rank"])
    assert not torch.equal(one(0)["image1"], PairBatches(sampler, prep, 4, seed=6)(0)["image1"])


# ---------------------------------------------------------------------------------------------
# Training

@pytest.mark.slow
def test_tiny_pretraining_lowers_its_loss(tiny_data, tmp_path, restore_torch_globals):
    from pinet_training.engine import MetricsLogger
    from pinet_training.pretrain import PretrainSettings, prepare, train

    settings = PretrainSettings(data_dir=tiny_data, variant="pinet_lite0", out_dir=tmp_path / "run", init="random",
                                steps=30, batch_size=6, lr=1e-3, warmup_steps=0, crop_size=64,
                                resize_short_side=80, workers=0, threads=1, seed=0, checkpoint_every=100,
                                val_pairs=8, show_progress=False)
    prepared = prepare(settings)
    state = train(prepared, settings)
    assert state.step == 30
    losses = [row["loss"] for row in MetricsLogger(tmp_path / "run" / "log.jsonl").records("train")]
    assert len(losses) == 30
    first, last = np.mean(losses[:6]), np.mean(losses[-6:])
    # Untrained, the loss is chance level: ln 2 + 0.5 * 2 * ln 6 = 2.48. Measured over 4 seeds the
    # last/first ratio was 0.61-0.71.
    assert abs(first - (np.log(2) + np.log(6))) < 0.3, first
    assert last < 0.85 * first, (first, last)

    header = read_header(tmp_path / "run" / "last.safetensors")
    assert header.stage == 1 and header.model_config.variant == "pinet_lite0"
    assert header.preprocessing.crop_size == 64
    assert header.training["step"] == 30 and header.training["settings"]["margin"] == 0.05
    assert header.training["info"]["data_dir"] == str(tiny_data.resolve())
    assert 0 <= header.training["last_validation"]["val_rank_accuracy"] <= 1
    best = read_header(tmp_path / "run" / "best.safetensors")
    assert best.training["step"] == best.training["best_step"]
    val_rows = MetricsLogger(tmp_path / "run" / "log.jsonl").records("val")
    assert best.training["best_metric"] == max(row["val_rank_accuracy"] for row in val_rows)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pinet.cli", "train", "pretrain", *args]


@pytest.mark.slow
def test_killed_and_resumed_run_equals_uninterrupted(interrupted_runs, tiny_data, tmp_path):
    common = ["--data", str(tiny_data), "--variant", "pinet_lite0", "--init", "random", "--steps", "10",
              "--checkpoint-every", "2", "--val-pairs", "6", "--seed", "3", "--lr", "1e-3", *SMALL]
    interrupted = tmp_path / "interrupted"
    interrupted_runs.run_straight_then_kill(lambda out: _cli(*common, "--out", str(out)), tmp_path / "straight",
                                            interrupted)
    killed_at = read_header(interrupted / "last.safetensors").training["step"]
    assert 0 < killed_at < 10            # the kill really interrupted the run

    resumed = subprocess.run(_cli(*common, "--out", str(interrupted), "--resume"),
                             env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {interrupted / 'last.safetensors'} at step" in resumed.stderr.replace("\n", "")

    for name in ("last.safetensors", "best.safetensors"):
        a = load_checkpoint(tmp_path / "straight" / name, stage=1)
        b = load_checkpoint(interrupted / name, stage=1)
        a_state, b_state = a.model.state_dict(), b.model.state_dict()
        assert set(a_state) == set(b_state)
        for key in a_state:
            assert torch.equal(a_state[key], b_state[key]), f"{name}: {key}"
        assert set(a.extra_tensors) == set(b.extra_tensors)
        for key in a.extra_tensors:                            # optimizer state too
            assert torch.equal(a.extra_tensors[key], b.extra_tensors[key]), f"{name}: {key}"
        assert a.header.training["step"] == b.header.training["step"]
        assert a.header.training["best_metric"] == b.header.training["best_metric"]
    assert read_header(interrupted / "last.safetensors").training["step"] == 10


def test_cli_refuses_bad_input_without_traceback(tiny_data, tmp_path, restore_torch_globals):
    from typer.testing import CliRunner

    from pinet.cli.app import app

    runner = CliRunner()
    args = ["train", "pretrain", "--variant", "pinet_lite0", *SMALL]
    missing = runner.invoke(app, [*args, "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")])
    assert missing.exit_code == 1 and "manifest" in missing.stderr and missing.exception is not None
    assert isinstance(missing.exception, SystemExit)                      # a clean exit, not a crash
    unknown = runner.invoke(app, ["train", "pretrain", "--variant", "pinet_nope", *SMALL, "--data",
                                  str(tiny_data), "--out", str(tmp_path / "r")])
    assert unknown.exit_code == 1 and "unknown variant 'pinet_nope'" in unknown.stderr
    # An existing run is never overwritten silently.
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "last.safetensors").write_bytes(b"x")
    taken = runner.invoke(app, [*args, "--data", str(tiny_data), "--out", str(tmp_path / "r")])
    assert taken.exit_code == 1 and "--resume" in taken.stderr
    assert (tmp_path / "r" / "last.safetensors").read_bytes() == b"x"
