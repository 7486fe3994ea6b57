"""Splits keep content groups apart, the epoch is chosen on validation, reports parse."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from pinet_training.datasets import IQADataset, IQASample, ScoreScale
from pinet_training.metrics import QualityMetrics
from pinet_training.protocol import (
    EpochRecord, RoundResult, choose_epoch, cross_dataset_description, cross_dataset_split, make_rounds,
    make_split, within_dataset_description, write_report,
)

SCALE = ScoreScale(0.0, 1.0, True, "test")


def _dataset(name: str, groups: int, per_group: int, content: str) -> IQADataset:
    samples = tuple(IQASample(Path(f"{name}/{g}_{k}.png"), (g * per_group + k) / (groups * per_group), 0.0,
                              f"ref{g}" if content == "synthetic" else f"{g}_{k}")
                    for g in range(groups) for k in range(per_group))
    return IQADataset(name, Path(name), samples, SCALE, content)


def _groups_of(dataset: IQADataset, indices) -> set[str]:
    return {dataset.samples[i].group for i in indices}


@pytest.mark.parametrize("content, groups, per_group", [("synthetic", 29, 27), ("authentic", 300, 1)])
def test_splits_never_share_a_group_over_several_seeds(content, groups, per_group):
    dataset = _dataset("d", groups, per_group, content)
    splits = make_rounds(dataset, rounds=6, base_seed=11)
    for split in splits:
        train, val, test = (_groups_of(dataset, s) for s in (split.train, split.val, split.test))
        assert not (train & val) and not (train & test) and not (val & test)
        assert sorted(split.train + split.val + split.test) == list(range(len(dataset)))  # a partition
        assert len(test) == round(0.2 * groups)
        assert len(val) == round(0.15 * (groups - len(test)))
    # different seeds give different test sets; the same seed gives the same split
    assert len({split.test for split in splits}) == len(splits)
    assert make_split(dataset, 13) == splits[2]


def test_split_does_not_depend_on_sample_order():
    dataset = _dataset("d", 20, 3, "synthetic")
    reversed_set = IQADataset("d", Path("d"), tuple(reversed(dataset.samples)), SCALE, "synthetic")
    a, b = make_split(dataset, 4), make_split(reversed_set, 4)
    assert _groups_of(dataset, a.test) == _groups_of(reversed_set, b.test)


def test_too_few_groups_is_an_error():
    with pytest.raises(ValueError, match=">= 3"):
        make_split(_dataset("d", 2, 5, "synthetic"), 0)


def test_cross_dataset_split_tests_on_all_of_b():
    a, b = _dataset("a", 30, 2, "synthetic"), _dataset("b", 50, 1, "authentic")
    split = cross_dataset_split(a, b, seed=3)
    assert split.test == tuple(range(len(b))) and split.test_dataset == "b"
    assert not (_groups_of(a, split.train) & _groups_of(a, split.val))
    assert len(split.train) + len(split.val) == len(a)


def test_cross_dataset_split_without_validation_trains_on_all_of_a():
    a, b = _dataset("a", 30, 2, "synthetic"), _dataset("b", 50, 1, "authentic")
    split = cross_dataset_split(a, b, seed=3, val_fraction=0)
    assert split.val == () and split.train == tuple(range(len(a)))
    assert split.test == tuple(range(len(b)))
    with pytest.raises(ValueError, match="val_fraction"):
        cross_dataset_split(a, b, seed=3, val_fraction=1)


def test_chosen_epoch_is_the_validation_best_not_the_test_best():
    # planted curves: validation peaks at epoch 4, test peaks at epoch 7
    val = [0.50, 0.60, 0.70, 0.80, 0.85, 0.84, 0.83, 0.82, 0.80, 0.79]
    test = [0.40, 0.50, 0.60, 0.70, 0.75, 0.78, 0.80, 0.90, 0.70, 0.60]
    history = [EpochRecord(epoch=e, val_srcc=v, test_srcc=t) for e, (v, t) in enumerate(zip(val, test))]
    assert choose_epoch(history) == 4
    assert max(history, key=lambda r: r.test_srcc).epoch == 7


def test_choose_epoch_ties_and_nan():
    history = [EpochRecord(1, math.nan), EpochRecord(2, 0.7), EpochRecord(3, 0.9), EpochRecord(4, 0.9)]
    assert choose_epoch(history) == 3
    assert choose_epoch([EpochRecord(5, math.nan), EpochRecord(6, math.nan)]) == 5
    with pytest.raises(ValueError):
        choose_epoch([])


def _metrics(srcc: float) -> QualityMetrics:
    return QualityMetrics(n=10, srcc=srcc, krcc=srcc - 0.1, plcc=srcc + 0.01, rmse=1 - srcc, plcc_raw=srcc,
                          rmse_raw=1.0, fit="logistic")


def test_report_files_parse_and_contain_median_and_mean(tmp_path):
    srccs = [0.80, 0.90, 0.70, 0.95, 0.60]
    results = [RoundResult(r, 100 + r, "kadid10k", "kadid10k", 3 + r, _metrics(s), 80, 10, 20)
               for r, s in enumerate(srccs)]
    dataset = _dataset("kadid10k", 10, 2, "synthetic")
    json_path, md_path = write_report(results, tmp_path / "out", within_dataset_description(dataset, rounds=5))
    report = json.loads(json_path.read_text())
    srcc = report["summary"]["kadid10k"]["srcc"]
    assert srcc["median"] == pytest.approx(statistics.median(srccs)) == pytest.approx(0.80)
    assert srcc["mean"] == pytest.approx(statistics.fmean(srccs))
    assert report["summary"]["kadid10k"]["rmse"]["median"] == pytest.approx(0.20)
    assert len(report["rounds"]) == 5 and report["rounds"][2]["chosen_epoch"] == 5
    assert report["protocol"]["split_unit"] == "reference content"
    markdown = md_path.read_text()
    assert "| kadid10k | SRCC | 0.8000 | 0.7900 |" in markdown  # median 0.80, mean 3.95 / 5
    assert f"| kadid10k | PLCC | 0.8100 | {statistics.fmean(srccs) + 0.01:.4f} |" in markdown
    assert "80%/20%" in markdown
    assert not list((tmp_path / "out").glob("*.tmp"))  # atomic writes leave no temp files


def test_cross_dataset_report_has_one_summary_per_test_set_and_nan_as_null(tmp_path):
    a, b, c = _dataset("koniq10k", 40, 1, "authentic"), _dataset("clive", 5, 1, "authentic"), \
        _dataset("spaq", 5, 1, "authentic")
    results = [RoundResult(0, 0, "koniq10k", "clive", 2, _metrics(0.7), 34, 6, 5),
               RoundResult(0, 0, "koniq10k", "spaq", 2, _metrics(0.8), 34, 6, 5),
               RoundResult(1, 1, "koniq10k", "clive", 4, _metrics(math.nan), 34, 6, 5)]
    json_path, md_path = write_report(results, tmp_path, cross_dataset_description(a, [b, c], rounds=2))
    report = json.loads(json_path.read_text())  # strict JSON: NaN written as null
    assert set(report["summary"]) == {"clive", "spaq"}
    assert report["summary"]["clive"]["srcc"]["rounds"] == 1
    assert report["summary"]["clive"]["srcc"]["median"] == pytest.approx(0.7)
    assert report["rounds"][2]["metrics"]["srcc"] is None
    assert "test on all of clive, spaq" in md_path.read_text()
