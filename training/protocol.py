"""Evaluation protocol: seeded group-aware splits, epoch choice on validation, per-round reports.

Within one dataset (the paper's protocol, minus its defect of choosing the epoch on the test
set): for each round r, shuffle the content groups with seed ``base_seed + r``; 20% of the
groups are the test split, and a validation split (default 15% of the remaining groups) is
carved from the training groups. Groups are reference images for synthetic datasets and single
images for authentic ones, so no content is ever shared between train, val and test. Train,
pick the epoch with :func:`choose_epoch` on validation SRCC, then evaluate the test split ONCE
with that epoch's weights. Report median and mean over rounds (:func:`write_report`).

Cross-dataset: train (and validate) on dataset A with the same split of A's groups into
train/val, test on ALL of dataset B; same report format (:func:`cross_dataset_split`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from pinet_runtime.files import write_json_atomic, write_text_atomic
from pinet_training.datasets.common import IQADataset
from pinet_training.metrics import QualityMetrics

DEFAULT_TEST_FRACTION = 0.2
DEFAULT_VAL_FRACTION = 0.15
REPORTED_METRICS = ("srcc", "krcc", "plcc", "rmse")
REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"


@dataclass(frozen=True)
class Split:
    """Indices into a dataset's samples. ``train``/``val`` index ``train_dataset``; ``test``
    indexes ``test_dataset`` (the same dataset within-dataset, another one cross-dataset)."""

    train_dataset: str
    test_dataset: str
    seed: int
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]


def _group_indices(dataset: IQADataset) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for index, sample in enumerate(dataset.samples):
        groups.setdefault(sample.group, []).append(index)
    return groups


def _shuffled_groups(dataset: IQADataset, seed: int) -> list[str]:
    # Sorted first so the split depends only on the seed and the group names, not file order.
    names = sorted(_group_indices(dataset))
    order = np.random.default_rng(seed).permutation(len(names))
    return [names[i] for i in order]


def _portion(count: int, fraction: float) -> int:
    """At least one group, and at least one left over."""
    return min(max(1, round(count * fraction)), count - 1)


def _validation_portion(count: int, fraction: float) -> int:
    """Validation groups: none at fraction 0 (the whole training part trains), else a portion."""
    return _portion(count, fraction) if fraction else 0


def _indices(groups: dict[str, list[int]], names: Sequence[str]) -> tuple[int, ...]:
    return tuple(sorted(i for name in names for i in groups[name]))


def make_split(dataset: IQADataset, seed: int, test_fraction: float = DEFAULT_TEST_FRACTION,
               val_fraction: float = DEFAULT_VAL_FRACTION) -> Split:
    """One seeded train/val/test split of ``dataset`` by content group. ``val_fraction`` 0 leaves no
    validation part (the whole training part trains); the test part depends on the seed only."""
    if not (0 < test_fraction < 1 and 0 <= val_fraction < 1):
        raise ValueError("test_fraction must be between 0 and 1, val_fraction in [0, 1)")
    groups = _group_indices(dataset)
    if len(groups) < 3:
        raise ValueError(f"{dataset.name} has {len(groups)} content group(s); a train/val/test split needs >= 3")
    order = _shuffled_groups(dataset, seed)
    n_test = _portion(len(order), test_fraction)
    test, rest = order[:n_test], order[n_test:]
    n_val = _validation_portion(len(rest), val_fraction)
    val, train = rest[:n_val], rest[n_val:]
    return Split(dataset.name, dataset.name, seed, _indices(groups, train), _indices(groups, val),
                 _indices(groups, test))


def make_rounds(dataset: IQADataset, rounds: int = 10, base_seed: int = 0,
                test_fraction: float = DEFAULT_TEST_FRACTION, val_fraction: float = DEFAULT_VAL_FRACTION) -> list[Split]:
    """``rounds`` splits with seeds base_seed, base_seed+1, ... (the paper uses 10 rounds)."""
    return [make_split(dataset, base_seed + r, test_fraction, val_fraction) for r in range(rounds)]


def cross_dataset_split(train_dataset: IQADataset, test_dataset: IQADataset, seed: int,
                        val_fraction: float = DEFAULT_VAL_FRACTION) -> Split:
    """Train/val from ``train_dataset``'s groups; the test split is every sample of ``test_dataset``.
    ``val_fraction`` 0 leaves no validation part, as in :func:`make_split`."""
    if not 0 <= val_fraction < 1:
        raise ValueError("val_fraction must be in [0, 1)")
    groups = _group_indices(train_dataset)
    if val_fraction and len(groups) < 2:
        raise ValueError(f"{train_dataset.name} needs >= 2 content groups to carve a validation split")
    order = _shuffled_groups(train_dataset, seed)
    n_val = _validation_portion(len(order), val_fraction)
    return Split(train_dataset.name, test_dataset.name, seed, _indices(groups, order[n_val:]),
                 _indices(groups, order[:n_val]), tuple(range(len(test_dataset))))


@dataclass(frozen=True)
class EpochRecord:
    """What the training loop records per epoch. ``test_srcc`` may be logged for diagnostics
    but never influences :func:`choose_epoch`."""

    epoch: int
    val_srcc: float
    train_loss: float = math.nan
    test_srcc: float | None = None


def choose_epoch(history: Sequence[EpochRecord]) -> int:
    """The epoch with the highest validation SRCC; ties go to the earliest; NaN counts as worst."""
    if not history:
        raise ValueError("no epochs recorded")
    best = None
    for record in history:
        value = record.val_srcc if not math.isnan(record.val_srcc) else -math.inf
        if best is None or value > best[0]:
            best = (value, record.epoch)
    return best[1]


@dataclass(frozen=True)
class RoundResult:
    """The test metrics of one round at its chosen epoch."""

    round_index: int
    seed: int
    train_dataset: str
    test_dataset: str
    chosen_epoch: int
    metrics: QualityMetrics
    n_train: int
    n_val: int
    n_test: int


@dataclass(frozen=True)
class ProtocolDescription:
    """How the results were obtained, written at the top of every report."""

    kind: Literal["within", "cross"]
    train_dataset: str
    test_datasets: tuple[str, ...]
    rounds: int
    split_unit: str  # "reference content" (synthetic) or "image" (authentic)
    test_fraction: float | None = DEFAULT_TEST_FRACTION  # None for cross-dataset (all of B)
    val_fraction: float = DEFAULT_VAL_FRACTION
    epoch_selection: str = "best validation SRCC (ties: earliest); test evaluated once at that epoch"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def summary_line(self) -> str:
        if self.kind == "within":
            validation = (f"validation = {self.val_fraction:.0%} of the training {self.split_unit} groups"
                          if self.val_fraction else "no validation part (the whole training part trains)")
            return (f"{self.rounds} rounds on {self.train_dataset}: random {1 - self.test_fraction:.0%}/"
                    f"{self.test_fraction:.0%} train/test split by {self.split_unit}, {validation}.")
        return (f"{self.rounds} rounds: train on {self.train_dataset} (validation = {self.val_fraction:.0%} "
                f"of its {self.split_unit} groups), test on all of {', '.join(self.test_datasets)}.")


def within_dataset_description(dataset: IQADataset, rounds: int, test_fraction: float = DEFAULT_TEST_FRACTION,
                               val_fraction: float = DEFAULT_VAL_FRACTION) -> ProtocolDescription:
    unit = "reference content" if dataset.content == "synthetic" else "image"
    return ProtocolDescription("within", dataset.name, (dataset.name,), rounds, unit, test_fraction, val_fraction)


def cross_dataset_description(train_dataset: IQADataset, test_datasets: Sequence[IQADataset],
                              rounds: int, val_fraction: float = DEFAULT_VAL_FRACTION) -> ProtocolDescription:
    unit = "reference content" if train_dataset.content == "synthetic" else "image"
    return ProtocolDescription("cross", train_dataset.name, tuple(d.name for d in test_datasets), rounds, unit,
                               None, val_fraction)


def aggregate(results: Sequence[RoundResult]) -> dict[str, dict[str, dict[str, float]]]:
    """Per test dataset and metric: median, mean, std (population) and min/max over rounds."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for test_name in dict.fromkeys(r.test_dataset for r in results):
        rows = [r for r in results if r.test_dataset == test_name]
        summary[test_name] = {}
        for metric in REPORTED_METRICS:
            values = [getattr(r.metrics, metric) for r in rows]
            finite = [v for v in values if not math.isnan(v)]
            summary[test_name][metric] = {
                "median": statistics.median(finite) if finite else math.nan,
                "mean": statistics.fmean(finite) if finite else math.nan,
                "std": statistics.pstdev(finite) if finite else math.nan,
                "min": min(finite, default=math.nan), "max": max(finite, default=math.nan),
                "rounds": len(finite),
            }
    return summary


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _markdown(results: Sequence[RoundResult], summary: dict, description: ProtocolDescription | None) -> str:
    lines = ["# PINet evaluation report", ""]
    if description is not None:
        lines += [f"Protocol: {description.summary_line()}", "",
                  f"Epoch selection: {description.epoch_selection}.", ""]
        lines += [f"Note: {note}" for note in description.notes] + ([""] if description.notes else [])
    lines += ["## Summary over rounds", "",
              "| test set | metric | median | mean | std | min | max | rounds |",
              "|---|---|---|---|---|---|---|---|"]
    for test_name, metrics in summary.items():
        for metric, stats in metrics.items():
            lines.append(f"| {test_name} | {metric.upper()} | {_fmt(stats['median'])} | {_fmt(stats['mean'])} | "
                         f"{_fmt(stats['std'])} | {_fmt(stats['min'])} | {_fmt(stats['max'])} | {stats['rounds']} |")
    lines += ["", "PLCC and RMSE are after the 4-parameter logistic mapping (see docs/evaluation.md).", "",
              "## Rounds", "",
              "| round | seed | train | test | epoch | SRCC | KRCC | PLCC | RMSE | fit | n train/val/test |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        m = r.metrics
        lines.append(f"| {r.round_index} | {r.seed} | {r.train_dataset} | {r.test_dataset} | {r.chosen_epoch} | "
                     f"{_fmt(m.srcc)} | {_fmt(m.krcc)} | {_fmt(m.plcc)} | {_fmt(m.rmse)} | {m.fit} | "
                     f"{r.n_train}/{r.n_val}/{r.n_test} |")
    return "\n".join(lines) + "\n"


def write_report(results: Sequence[RoundResult], out_dir: Path | str,
                 description: ProtocolDescription | None = None) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` (atomically) into ``out_dir``; returns both paths."""
    if not results:
        raise ValueError("no round results to report")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = aggregate(results)
    document = {
        "protocol": asdict(description) if description is not None else None,
        "summary": summary,
        "rounds": [asdict(r) for r in results],
    }
    json_path, markdown_path = out_dir / REPORT_JSON, out_dir / REPORT_MARKDOWN
    write_json_atomic(json_path, document, sort_keys=False)
    write_text_atomic(markdown_path, _markdown(results, summary, description))
    return json_path, markdown_path
