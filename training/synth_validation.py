"""Validation figures of exported models on the held-out references of a synth set (`pinet data validate`).

Scores every image of one split (default: val) of a `pinet data synth` folder with the torch-free
runtime (the exact files that ship), then reports against the pseudo-MOS: SRCC/PLCC overall, SRCC
per coarse distortion class, pairwise ranking accuracy on same-reference pairs whose pseudo scores
differ by more than a margin, and, when two models are given, their agreement (e.g. INT8 vs FP32).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from pinet_runtime.errors import PinetError
from pinet_runtime.files import write_json_atomic, write_text_atomic
from pinet_training.metrics import fit_logistic, quality_metrics, srcc
from pinet_training.synth_manifest import SPLITS, SynthItem, manifest_path, read_manifest

PAIR_MARGIN = 0.05


def score_items(model: Path, items: list[SynthItem], batch_size: int = 8) -> np.ndarray:
    from pinet_runtime import Scorer

    scorer = Scorer(model, providers="cpu")
    scores = np.full(len(items), np.nan)
    for index, result in enumerate(scorer.score_many([item.file for item in items], batch_size=batch_size)):
        if result.ok:
            scores[index] = result.score
    return scores


def pairwise_accuracy(items: list[SynthItem], scores: np.ndarray, margin: float = PAIR_MARGIN) -> tuple[float, int]:
    """Share of same-reference pairs (pseudo scores more than ``margin`` apart) ordered as the pseudo-MOS."""
    correct = total = 0
    targets = np.array([item.pseudo_score for item in items])
    for idx in _indices_by_reference(items):
        gap = targets[idx][:, None] - targets[idx][None, :]
        predicted = scores[idx][:, None] - scores[idx][None, :]
        eligible = gap > margin                       # each unordered pair once, better image first
        correct += int(np.sum(predicted[eligible] > 0))
        total += int(np.sum(eligible))
    return (correct / total if total else float("nan")), total


def figures(items: list[SynthItem], scores: np.ndarray) -> dict:
    targets = np.array([item.pseudo_score for item in items])
    overall = quality_metrics(scores, targets).as_dict()
    per_class = {}
    for name in sorted({item.distortion_class for item in items}):
        mask = np.array([item.distortion_class == name for item in items])
        # A class needs two images for a rank correlation (a tiny split can have one).
        class_srcc = srcc(scores[mask], targets[mask]) if mask.sum() >= 2 else float("nan")
        per_class[name] = {"images": int(mask.sum()), "srcc": class_srcc}
    accuracy, pairs = pairwise_accuracy(items, scores)
    return {"images": len(items), "overall": overall, "per_class": per_class,
            "pairwise_accuracy": accuracy, "pairs": pairs, "pair_margin": PAIR_MARGIN,
            "per_reference_median_srcc": _median_srcc(items, scores),
            "per_type": per_type_figures(items, scores)}


def _indices_by_reference(items: list[SynthItem]) -> list[np.ndarray]:
    """The item indices of each reference photo."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[item.reference].append(index)
    return [np.array(indices) for indices in groups.values()]


def _median_srcc(items: list[SynthItem], scores: np.ndarray) -> float:
    """Median SRCC vs the pseudo-MOS within each reference (references with fewer than 3 items are left out)."""
    targets = np.array([item.pseudo_score for item in items])
    values = [srcc(scores[idx], targets[idx]) for idx in _indices_by_reference(items) if len(idx) >= 3]
    values = [value for value in values if np.isfinite(value)]
    return float(np.median(values)) if values else float("nan")


def per_type_figures(items: list[SynthItem], scores: np.ndarray) -> dict:
    """Where a model departs from the pseudo-MOS, per distortion type: its mean score mapped onto
    the pseudo-MOS scale (the logistic fit of all items, so a model with another output scale
    compares too) against the mean pseudo-MOS (lower: a type judged harsher than the proxy does),
    the median SRCC of the type's levels within each reference, and the overall SRCC with this
    type left out."""
    targets = np.array([item.pseudo_score for item in items])
    mapped = fit_logistic(scores, targets).apply(scores)
    table = {}
    for name in sorted({item.distortion for item in items}):
        mask = np.array([item.distortion == name for item in items])
        members = [item for item, inside in zip(items, mask) if inside]
        table[name] = {"images": int(mask.sum()), "mean_pseudo": float(targets[mask].mean()),
                       "mean_score": float(scores[mask].mean()), "mean_mapped": float(mapped[mask].mean()),
                       "level_srcc": _median_srcc(members, scores[mask]),
                       "srcc_without": srcc(scores[~mask], targets[~mask]) if (~mask).sum() >= 2 else float("nan")}
    return table


def agreement(first: np.ndarray, second: np.ndarray) -> dict:
    return {"srcc": srcc(first, second), "mean_abs_difference": float(np.mean(np.abs(first - second))),
            "max_abs_difference": float(np.max(np.abs(first - second)))}


def markdown(report: dict) -> str:
    lines = [f"# Validation on held-out references ({report['data']})", ""]
    for name, result in report["models"].items():
        overall = result["overall"]
        lines += [f"## {name}", "",
                  f"- images: {result['images']}; SRCC {overall['srcc']:.4f}, PLCC {overall['plcc']:.4f} "
                  f"(after the 4-parameter logistic fit), KRCC {overall['krcc']:.4f}, RMSE {overall['rmse']:.4f}",
                  f"- pairwise ranking accuracy: {result['pairwise_accuracy']:.4f} over {result['pairs']} "
                  f"same-reference pairs (pseudo-score gap > {result['pair_margin']})", "",
                  "| distortion class | images | SRCC |", "|---|---|---|"]
        lines += [f"| {cls} | {v['images']} | {v['srcc']:.4f} |" for cls, v in result["per_class"].items()]
        lines += ["", f"Median SRCC within one reference: {result['per_reference_median_srcc']:.4f}. Per "
                  "distortion type (mapped: the mean score on the pseudo-MOS scale through the logistic fit; "
                  "below the mean pseudo-MOS, the model judges the type harsher than the proxy; level SRCC: "
                  "its levels within a reference, median over references):", "",
                  "| distortion | images | mean pseudo-MOS | mean score | mapped | level SRCC | SRCC without it |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {v['images']} | {v['mean_pseudo']:.3f} | {v['mean_score']:.3f} | "
                  f"{v['mean_mapped']:.3f} | {v['level_srcc']:.3f} | {v['srcc_without']:.4f} |"
                  for name, v in result["per_type"].items()]
        lines.append("")
    if "agreement" in report:
        a = report["agreement"]
        lines += ["## Agreement between the two models", "",
                  f"- SRCC {a['srcc']:.5f}, mean |difference| {a['mean_abs_difference']:.5f}, "
                  f"max |difference| {a['max_abs_difference']:.5f}", ""]
    return "\n".join(lines)


class SynthValidationError(PinetError):
    """Nothing to validate on: the asked split of the manifest is empty, or a model scored under 2 images."""


def model_names(models: Sequence[Path]) -> list[str]:
    """The report's key for each model: its file name, or its full path where two names clash."""
    names = [model.name for model in models]
    return [name if names.count(name) == 1 else str(model) for name, model in zip(names, models)]


def validate_on_synth_set(data: Path, models: Sequence[Path], split: str = "val") -> dict:
    """The report for ``models`` (ONNX files) on the ``split`` rows of the synth set at ``data``."""
    if split not in SPLITS:
        raise SynthValidationError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    items = [item for item in read_manifest(data) if item.split == split]
    if not items:
        raise SynthValidationError(manifest_path(data), f"has no {split!r} rows to validate on")
    all_scores = {name: score_items(model, items) for name, model in zip(model_names(models), models)}
    report: dict = {"data": str(data), "split": split, "models": {}}
    for name, scores in all_scores.items():
        keep = np.isfinite(scores)
        if keep.sum() < 2:
            raise SynthValidationError(name, f"scored {int(keep.sum())} of the {len(items)} {split} images; "
                                             "the figures need at least 2")
        report["models"][name] = figures([i for i, k in zip(items, keep) if k], scores[keep])
        report["models"][name]["unreadable"] = int((~keep).sum())
    if len(all_scores) == 2:
        first, second = all_scores.values()
        keep = np.isfinite(first) & np.isfinite(second)
        report["agreement"] = agreement(first[keep], second[keep])
    return report


def write_validation(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """``validation.json`` and ``validation.md`` in ``out_dir`` (created), each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return (write_json_atomic(out_dir / "validation.json", report),
            write_text_atomic(out_dir / "validation.md", markdown(report)))
