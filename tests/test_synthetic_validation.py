"""Validation figures of a model on a synthetic set's held-out references."""

from pathlib import Path

import numpy as np
import pytest

from pinet_training.synth_manifest import SynthItem
from pinet_training.synthetic_validation import agreement, figures, pairwise_accuracy


def _item(reference, score, cls="blur"):
    return SynthItem(file=Path(f"{reference}_{score}.png"), reference=reference, reference_file=Path("r.png"),
                     distortion="gaussian_blur", distortion_class=cls, class_index=0, level=1, seed=0,
                     pseudo_score=score, split="val")


def test_pairwise_accuracy_counts_same_reference_pairs_beyond_the_margin():
    items = [_item("a", 0.9), _item("a", 0.5), _item("a", 0.52), _item("b", 0.3), _item("b", 0.8)]
    # a: pairs (0.9,0.5) (0.9,0.52) eligible, (0.5,0.52) is within the margin; b: (0.8,0.3); no cross pairs.
    scores = np.array([0.7, 0.1, 0.9, 0.2, 0.1])   # right, wrong, (ignored), wrong for b
    accuracy, pairs = pairwise_accuracy(items, scores)
    assert pairs == 3
    assert accuracy == pytest.approx(1 / 3)


def test_figures_and_agreement():
    rng = np.random.default_rng(0)
    items = [_item(f"r{i % 4}", float(s), "blur" if i % 2 else "noise") for i, s in enumerate(rng.random(40))]
    targets = np.array([item.pseudo_score for item in items])
    perfect = figures(items, targets * 2 + 1)            # any increasing map ranks perfectly
    assert perfect["overall"]["srcc"] == pytest.approx(1.0)
    assert perfect["pairwise_accuracy"] == 1.0
    assert set(perfect["per_class"]) == {"blur", "noise"}
    assert perfect["per_class"]["blur"]["images"] == 20
    inverted = figures(items, -targets)
    assert inverted["pairwise_accuracy"] == 0.0 and inverted["overall"]["srcc"] == pytest.approx(-1.0)
    same = agreement(targets, targets + 0.01)
    assert same["srcc"] == pytest.approx(1.0) and same["mean_abs_difference"] == pytest.approx(0.01)
