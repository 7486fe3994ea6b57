"""The accuracy search on its own: a simulated quantizer whose per-node errors are known."""

from __future__ import annotations

import numpy as np
import pytest

from pinet_export.mixed_precision import AccuracyTarget, Fidelity, search_fp32_nodes

REFERENCE = np.linspace(0.1, 0.9, 40).reshape(20, 2).astype(np.float64)   # 20 images x 2 crops


class SimulatedInt8:
    """Each quantized node adds its own fixed error pattern to the FP32 scores; the model written
    last is the one scored (like a file on disk)."""

    def __init__(self, errors: dict[str, float]):
        rng = np.random.default_rng(0)
        self.patterns = {name: size * rng.standard_normal(REFERENCE.shape) for name, size in errors.items()}
        self.scored: list[list[str]] = []

    def score(self, fp32_nodes: list[str]) -> np.ndarray:
        self.scored.append(list(fp32_nodes))
        return REFERENCE + sum(p for name, p in self.patterns.items() if name not in fp32_nodes)


def _candidates(names):
    return [(name, "Conv") for name in names]


def test_fragile_nodes_are_found_first_and_the_search_stops_at_the_target():
    sim = SimulatedInt8({"stem": 0.3, "tiny_a": 0.001, "head": 0.1, "tiny_b": 0.002})
    result = search_fp32_nodes(_candidates(sim.patterns), REFERENCE, sim.score,
                               AccuracyTarget(min_srcc=0.99, max_fp32_nodes=4))
    assert result.all_int8.srcc < 0.99
    assert [node.name for node in result.kept_fp32] == ["stem", "head"]
    assert result.target_met and result.final.srcc >= 0.99
    assert result.most_sensitive[0].name == "stem" and result.most_sensitive[0].error_share > 0.5
    assert ["stem", "head"] in sim.scored
    helpful = sum(node.error_share > 0 for node in result.most_sensitive)
    assert helpful == 2                                  # the tiny errors happen to cancel: no gain alone
    assert result.evaluations == 1 + 4 + 2 + 1           # all-INT8, one per node, then 2 and 1 re-measured
    kept = result.to_dict()["fp32_nodes"]
    assert [node["name"] for node in kept] == ["stem", "head"]
    # the trajectory: fidelity after the stem alone, then after both (the final one)
    stem_only = Fidelity.measure(REFERENCE, sim.score(["stem"]))
    assert kept[0]["srcc_after"] == stem_only.srcc < 0.99 <= kept[1]["srcc_after"] == result.final.srcc
    assert kept[1]["crop_mse_after"] == result.final.crop_mse < kept[0]["crop_mse_after"]


def test_no_search_when_all_int8_already_meets_the_target():
    sim = SimulatedInt8({"a": 1e-5, "b": 1e-5})
    result = search_fp32_nodes(_candidates(sim.patterns), REFERENCE, sim.score, AccuracyTarget(0.99))
    assert result.target_met and result.kept_fp32 == [] and result.evaluations == 1
    assert sim.scored == [[]]


def test_cap_on_fp32_nodes_returns_the_best_model_and_reports_the_miss():
    sim = SimulatedInt8({"a": 0.2, "b": 0.2, "c": 0.2})
    result = search_fp32_nodes(_candidates(sim.patterns), REFERENCE, sim.score,
                               AccuracyTarget(min_srcc=0.999, max_fp32_nodes=1))
    assert len(result.kept_fp32) == 1 and not result.target_met
    assert result.final.srcc > result.all_int8.srcc
    assert result.final == Fidelity.measure(REFERENCE, sim.score([result.kept_fp32[0].name]))


def _chain_float_nodes(order: list[str]):
    """Float node count of a simulated chain graph: kept nodes, plus the producer (the node before)
    of every kept node when that producer is quantized: it loses its QuantizeLinear."""
    def count(names: list[str]) -> int:
        demoted = {order[order.index(n) - 1] for n in names if order.index(n) > 0} - set(names)
        return len(names) + len(demoted)
    return count


def test_a_prefix_computing_no_more_nodes_in_float_replaces_the_searched_set():
    sim = SimulatedInt8({"stem": 0.3, "a": 0.0005, "b": 0.1, "c": 0.0005})
    order = list(sim.patterns)
    result = search_fp32_nodes(_candidates(order), REFERENCE, sim.score, AccuracyTarget(0.99, max_fp32_nodes=4),
                               float_nodes=_chain_float_nodes(order))
    # the node search keeps stem and b; b's producer a is demoted: 3 nodes in float, as many as the prefix
    assert result.alternative == {"strategy": "nodes", "fp32_nodes": ["stem", "b"], "float_nodes": 3,
                                  "srcc": result.alternative["srcc"], "crop_mse": result.alternative["crop_mse"]}
    assert result.alternative["srcc"] >= 0.99
    assert result.strategy == "prefix" and [n.name for n in result.kept_fp32] == ["stem", "a", "b"]
    assert result.float_nodes == 3 and result.target_met
    assert sim.scored[-3:] == [["stem"], ["stem", "a"], ["stem", "a", "b"]]      # the prefixes tried
    assert result.prefix_srcc[:2] == [f.srcc for f in result.after_each[:2]] and max(result.prefix_srcc[:2]) < 0.99
    assert result.final == Fidelity.measure(REFERENCE, sim.score(["stem", "a", "b"]))
    assert result.to_dict()["strategy"] == "prefix"


def test_a_prefix_needing_more_float_nodes_is_not_taken():
    sim = SimulatedInt8({"stem": 0.3, "a": 0.0005, "b": 0.0005, "head": 0.1})
    order = list(sim.patterns)
    result = search_fp32_nodes(_candidates(order), REFERENCE, sim.score, AccuracyTarget(0.99, max_fp32_nodes=4),
                               float_nodes=_chain_float_nodes(order))
    assert result.strategy == "nodes" and [n.name for n in result.kept_fp32] == ["stem", "head"]
    assert result.float_nodes == 3 and result.alternative is None
    # prefixes of 1-3 nodes were tried (a 4-node prefix computes at least 4 in float) and missed
    assert len(result.prefix_srcc) == 3 and max(result.prefix_srcc) < 0.99
    assert ["stem", "a", "b", "head"] not in sim.scored


def test_fidelity_measures_per_image_rank_and_per_crop_error():
    shifted = REFERENCE + 0.01
    fidelity = Fidelity.measure(REFERENCE, shifted)
    assert fidelity.srcc == pytest.approx(1.0)
    assert fidelity.crop_mse == pytest.approx(1e-4) and fidelity.mean_abs_diff == pytest.approx(0.01)
    reversed_scores = REFERENCE[::-1]
    assert Fidelity.measure(REFERENCE, reversed_scores).srcc == pytest.approx(-1.0)


def test_target_settings_are_checked():
    with pytest.raises(ValueError, match="SRCC"):
        AccuracyTarget(min_srcc=1.5)
    with pytest.raises(ValueError, match="FP32 nodes"):
        AccuracyTarget(max_fp32_nodes=-1)
