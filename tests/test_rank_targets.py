"""``--rank-targets thurstone``: the primary set's ranking loss aims at the share of raters expected to
prefer one image (Thurstone case V from each image's MOS and raters' standard deviation) instead of a
hard order. The CSV's score_std column travels from the loader through both batch paths (random crops,
cached crops) to the loss; the option is checked and fixed for a resume."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pinet.checkpoint import read_header
from pinet_training.datasets import DatasetError, load_dataset
from pinet_training.datasets.generic import CsvScale


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _fidelity(p: float, p_hat: float) -> float:
    return 1 - math.sqrt(p * p_hat) - math.sqrt((1 - p) * (1 - p_hat))


def test_score_std_is_read_onto_the_normalised_scale(clive_like):
    with open(clive_like / "scores.csv", newline="") as handle:
        published = {row["path"]: float(row["score_std"]) for row in csv.DictReader(handle) if row["role"] == "train"}
    dataset = load_dataset("clive", clive_like)
    assert len(dataset) == len(published) == 18
    for sample in dataset.samples:
        assert sample.score_spread == pytest.approx(published[str(sample.path.relative_to(clive_like))] / 100)


def test_score_std_column_is_optional_but_checked(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    scale = CsvScale(0, 10, True)
    (tmp_path / "scores.csv").write_text("path,score\na.png,3\n")
    assert load_dataset("csv", tmp_path, csv_scale=scale).samples[0].score_spread is None
    (tmp_path / "scores.csv").write_text("path,score,score_std\na.png,3,2.5\n")
    assert load_dataset("csv", tmp_path, csv_scale=scale).samples[0].score_spread == pytest.approx(0.25)
    for bad, problem in (("wide", "is not a number"), ("-1", "must be a finite number >= 0"), ("", "is not a number")):
        (tmp_path / "scores.csv").write_text(f"path,score,score_std\na.png,3,2\na.png,4,{bad}\n")
        with pytest.raises(DatasetError, match=f"scores.csv.*line 3: score_std .*{problem}"):
            load_dataset("csv", tmp_path, csv_scale=scale)


def test_thurstone_targets_are_the_share_of_raters_preferring_an_image():
    from pinet_training.mixed import fidelity_ranking_loss

    targets, spreads = torch.tensor([0.6, 0.5]), torch.tensor([0.1, 0.2])
    pair = math.sqrt(0.1 ** 2 + 0.2 ** 2)
    p = _phi(0.1 / pair)                                       # ~0.67: a third of people would disagree
    for predictions in ([0.6, 0.5], [0.55, 0.5], [0.5, 0.6], [0.9, 0.1]):
        expected = _fidelity(p, _phi((predictions[0] - predictions[1]) / pair))
        got = fidelity_ranking_loss(torch.tensor(predictions), targets, spreads=spreads)
        assert float(got) == pytest.approx(expected, abs=2e-4)   # eps inside the square roots
    # The loss is smallest where the predicted gap is the MOS gap: a compressed gap is pulled open,
    # an exaggerated one pulled closed (a hard target would keep pushing the gap wider).
    for start, opening in (([0.55, 0.5], True), ([0.9, 0.1], False)):
        predictions = torch.tensor(start, requires_grad=True)
        fidelity_ranking_loss(predictions, targets, spreads=spreads).backward()
        assert (predictions.grad[0] < 0 < predictions.grad[1]) == opening
    # A tie is a pair too (p = 0.5), which the hard targets skip; people who disagree more pull less.
    tie = torch.tensor([0.5, 0.5])
    assert fidelity_ranking_loss(torch.tensor([0.7, 0.3]), tie) is None
    assert float(fidelity_ranking_loss(torch.tensor([0.7, 0.3]), tie, spreads=spreads)) > 0.01
    wrong = torch.tensor([0.5, 0.6])
    assert float(fidelity_ranking_loss(wrong, targets, spreads=spreads * 2)) < \
        float(fidelity_ranking_loss(wrong, targets, spreads=spreads))


def test_thurstone_mixed_loss_needs_the_spreads():
    from pinet_training.mixed import LossWeights, mixed_loss

    weights = LossWeights("l1", 1.0, 1.0, "thurstone")
    predictions, targets, source = torch.tensor([0.5, 0.4]), torch.tensor([0.6, 0.3]), torch.tensor([0, 0])
    with pytest.raises(ValueError, match="standard deviations"):
        mixed_loss(predictions, targets, source, weights)
    total, parts = mixed_loss(predictions, targets, source, weights, spreads=torch.tensor([0.1, 0.1]))
    assert parts["loss_primary"] == pytest.approx(0.1)
    assert float(total) == pytest.approx(0.1 + parts["loss_rank_primary"])


def test_option_is_checked_and_part_of_the_resume_comparison(clive_like, synthetic, mixed_sets, tmp_path):
    from pinet_training.finetune import FinetuneError, load_data, run_finetune
    from pinet_training.finetune_settings import check_settings, compared_settings

    with pytest.raises(FinetuneError, match="--rank-targets must be one of hard, thurstone"):
        check_settings(mixed_sets.settings(clive_like, synthetic, tmp_path, rank_weight=1.0, rank_targets="soft"))
    with pytest.raises(FinetuneError, match="add --rank-weight"):
        run_finetune(mixed_sets.settings(clive_like, synthetic, tmp_path, rank_targets="thurstone"), lambda _: None)
    # A set without score_std cannot give Thurstone targets: the error names the set and an image.
    with pytest.raises(FinetuneError, match=r"standard deviation \(> 0\) of every image of synthetic .*12 of 12 have none \(first: .*blur_0\.png\)"):
        load_data(mixed_sets.settings(synthetic, synthetic, tmp_path, dataset="synthetic", rank_weight=1.0,
                                      rank_targets="thurstone"))
    hard = mixed_sets.settings(clive_like, synthetic, tmp_path, rank_weight=1.0)
    soft = mixed_sets.settings(clive_like, synthetic, tmp_path, rank_weight=1.0, rank_targets="thurstone")
    dataset = load_data(soft)
    keys = lambda settings: compared_settings(settings, "pinet_lite0", dataset, None, {}, 0, 0)
    assert "rank_targets" not in keys(hard)                  # runs from before the option still resume
    assert keys(soft)["rank_targets"] == "thurstone" and len(keys(soft)["data_spread_sha256"]) == 64


def test_random_crop_batches_carry_the_primary_spreads(clive_like, synthetic, mixed_sets):
    from pinet_training.finetune import load_data, load_mix, prepare_round

    settings = mixed_sets.settings(clive_like, synthetic, Path("/nonexistent/run"), rank_weight=1.0,
                                   rank_targets="thurstone")
    prepared = prepare_round(settings, load_data(settings), 0, load_mix(settings))
    train = prepared.split.split.train
    for step in range(prepared.batches.steps_per_epoch):
        batch = prepared.batches(step)
        drawn = prepared.batches.primary.images_of_step(step)
        expected = [prepared.dataset.samples[train[int(i)]].score_spread for i in drawn]
        primary = batch["source"] == 0
        assert batch["spread"][primary].tolist() == pytest.approx(expected)
        assert min(expected) > 0 and batch["spread"][~primary].tolist() == [0.0, 0.0]   # the mix has none


def test_cached_batches_carry_the_primary_spreads():
    from pinet_training.head_cache import CachedBatches

    count = 10
    parts = (np.arange(count * 2 * 5 * 3, dtype=np.float16).reshape(count, 2, 5, 3, 1, 1),)
    rows = [1, 3, 4, 6, 8, 9]
    targets = np.linspace(0.2, 0.8, len(rows))
    spreads = np.array([0.11, 0.12, 0.13, 0.14, 0.15, 0.16])
    batches = CachedBatches(parts, rows, targets, 4, 0, None, parts, range(count), np.zeros(count), 1,
                            spreads=spreads)
    for step in range(2 * batches.steps_per_epoch):
        images, _, _ = batches._draw(step)
        batch = batches(step)
        assert batch["targets"][:-1].tolist() == pytest.approx(targets[images].tolist())
        assert batch["spread"].tolist() == pytest.approx([*spreads[images], 0.0])


@pytest.mark.slow
def test_thurstone_run_trains_and_records_the_targets(clive_like, synthetic, mixed_sets, tmp_path):
    import json

    from pinet_training.engine import ResumeError
    from pinet_training.finetune import run_finetune

    run = tmp_path / "run"
    settings = mixed_sets.settings(clive_like, synthetic, run, rank_weight=1.0, rank_targets="thurstone", epochs=1)
    run_finetune(settings, lambda _: None)
    header = read_header(run / "best.safetensors").training
    assert header["settings"]["rank_targets"] == "thurstone"
    assert "Thurstone targets" in header["info"]["datasets"][0]["loss"]
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    ranks = [entry["loss_rank_primary"] for entry in logged if entry.get("kind") == "train"]
    assert ranks and all(0 <= value < 0.5 for value in ranks)
    from dataclasses import replace
    with pytest.raises(ResumeError, match="rank_targets"):
        run_finetune(replace(settings, rank_targets="hard", epochs=2, resume=True), lambda _: None)
