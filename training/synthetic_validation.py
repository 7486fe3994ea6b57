"""Validation figures of an exported model on the held-out references of a synthetic set.

Scores every val image of a `pinet data synth` folder with the torch-free runtime (the exact
files that ship), then reports against the pseudo-MOS: SRCC/PLCC overall, SRCC per coarse
distortion class, pairwise ranking accuracy on same-reference pairs whose pseudo scores differ by
more than a margin, and, when two models are given, their agreement (INT8 vs FP32 fidelity).

    python -m pinet_training.synthetic_validation --data runs/synth --model a.onnx [--model b.onnx] --out DIR
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from pinet_runtime.files import write_json_atomic, write_text_atomic
from pinet_training.metrics import quality_metrics, srcc
from pinet_training.synth_manifest import SynthItem, read_manifest

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
    by_reference: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_reference[item.reference].append(index)
    correct = total = 0
    targets = np.array([item.pseudo_score for item in items])
    for indices in by_reference.values():
        idx = np.array(indices)
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
        per_class[name] = {"images": int(mask.sum()), "srcc": srcc(scores[mask], targets[mask])}
    accuracy, pairs = pairwise_accuracy(items, scores)
    return {"images": len(items), "overall": overall, "per_class": per_class,
            "pairwise_accuracy": accuracy, "pairs": pairs, "pair_margin": PAIR_MARGIN}


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
        lines.append("")
    if "agreement" in report:
        a = report["agreement"]
        lines += ["## Agreement between the two models", "",
                  f"- SRCC {a['srcc']:.5f}, mean |difference| {a['mean_abs_difference']:.5f}, "
                  f"max |difference| {a['max_abs_difference']:.5f}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a `pinet data synth` folder")
    parser.add_argument("--model", type=Path, action="append", required=True, help="ONNX model (1 or 2)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", default="val", choices=("train", "val"))
    args = parser.parse_args(argv)
    items = [item for item in read_manifest(args.data) if item.split == args.split]
    all_scores = {model.name: score_items(model, items) for model in args.model}
    report: dict = {"data": str(args.data), "split": args.split, "models": {}}
    for name, scores in all_scores.items():
        keep = np.isfinite(scores)
        report["models"][name] = figures([i for i, k in zip(items, keep) if k], scores[keep])
        report["models"][name]["unreadable"] = int((~keep).sum())
    if len(all_scores) == 2:
        first, second = all_scores.values()
        keep = np.isfinite(first) & np.isfinite(second)
        report["agreement"] = agreement(first[keep], second[keep])
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "validation.json", report)
    write_text_atomic(args.out / "validation.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
