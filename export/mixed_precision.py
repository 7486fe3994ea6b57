"""Accuracy-aware INT8: keep the fewest score-sensitive nodes in FP32 until INT8 follows FP32.

A whole-model INT8 setting is rarely both fast and faithful for a small backbone (docs/export.md
has the measured table): a handful of layers carry most of the score error. In the manner of
NNCF's accuracy-controlled quantization, the search

1. quantizes everything and scores the search photos (per crop) with FP32 and INT8;
2. if the per-image SRCC of INT8 vs FP32 is below the target, measures each candidate node's
   contribution: the drop of the per-crop squared score error when ONLY that node stays in FP32
   (every other quantized node unchanged, the same calibration ranges);
3. keeps nodes in FP32 one at a time: each time the ``rerank`` best-ranked remaining nodes are
   scored on top of those already kept and the best one stays, until the target is met, no node
   helps any more or ``max_fp32_nodes`` is reached;
4. given a way to count the nodes a file really computes in float (``float_nodes``), also tries the
   graph's first 1, 2, ... quantizable nodes in FP32 (a prefix) and keeps the shortest prefix that
   meets the target when it computes no more nodes in float than the set of step 3. Why: a node
   kept inside the INT8 graph is an island; its producer loses its QuantizeLinear and runs in
   float on INT8 weights, and each island switches layouts twice. On the shipped Lite0 a 6-node
   prefix ran about 1.1x faster than a searched 5-node set (7 nodes in float) and followed FP32
   more closely on unseen photos (docs/export.md).

The caller owns quantization and scoring (``score_with_fp32_nodes``), so this module is the
search only and is tested on its own.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

# Nodes with weights: where INT8 buys speed and where reduce_range's 7-bit weights cost accuracy.
# Elementwise nodes (Add, Mul, Sigmoid, ...) follow their neighbours' quantization.
CANDIDATE_OP_TYPES = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class AccuracyTarget:
    """When the search stops: the INT8 vs FP32 per-image SRCC on the search photos (kept above the
    export gate's 0.99 so the unseen validation photos clear it too) and a cap on FP32 nodes."""

    min_srcc: float = 0.995
    max_fp32_nodes: int = 8
    rerank: int = 6          # remaining nodes re-measured before each pick

    def __post_init__(self) -> None:
        if not 0.0 < self.min_srcc <= 1.0:
            raise ValueError(f"accuracy target SRCC must be in (0, 1], got {self.min_srcc}")
        if self.max_fp32_nodes < 0:
            raise ValueError(f"max FP32 nodes must be >= 0, got {self.max_fp32_nodes}")


@dataclass(frozen=True)
class Fidelity:
    """INT8 vs FP32 on the search photos."""

    srcc: float            # per-image scores (mean over crops)
    crop_mse: float        # per-crop squared score difference
    mean_abs_diff: float   # per-image

    def ordering(self) -> tuple[float, float]:
        """Better models sort higher: SRCC first (NaN, from constant scores, is the worst), then error."""
        return (self.srcc if np.isfinite(self.srcc) else -2.0, -self.crop_mse)

    @classmethod
    def measure(cls, reference: np.ndarray, candidate: np.ndarray) -> "Fidelity":
        """``reference`` and ``candidate``: per-crop scores [images, crops]."""
        ref_images, cand_images = reference.mean(axis=1), candidate.mean(axis=1)
        return cls(srcc=spearman(ref_images, cand_images),
                   crop_mse=float(np.mean((candidate - reference) ** 2)),
                   mean_abs_diff=float(np.mean(np.abs(cand_images - ref_images))))


@dataclass(frozen=True)
class NodeSensitivity:
    name: str
    op_type: str
    crop_mse_if_fp32: float   # per-crop squared error with only this node in FP32
    error_share: float        # fraction of the all-INT8 error this node alone removes


@dataclass
class SearchResult:
    target: AccuracyTarget
    all_int8: Fidelity
    final: Fidelity
    kept_fp32: list[NodeSensitivity] = field(default_factory=list)
    after_each: list[Fidelity] = field(default_factory=list)   # fidelity once kept_fp32[:i + 1] are FP32
    most_sensitive: list[NodeSensitivity] = field(default_factory=list)   # top of the ranking, for the report
    candidates: int = 0
    evaluations: int = 0
    seconds: float = 0.0
    strategy: str = "nodes"          # "nodes" (steps 1-3) or "prefix" (step 4)
    float_nodes: int | None = None   # nodes the chosen file computes in float (kept + demoted producers)
    alternative: dict | None = None  # the strategy not chosen, for the report
    prefix_srcc: list[float] = field(default_factory=list)   # search SRCC of the prefixes tried (step 4)

    def adopt(self, strategy: str, kept: list[NodeSensitivity], after_each: list[Fidelity], float_nodes: int) -> None:
        self.alternative = {"strategy": self.strategy, "fp32_nodes": [node.name for node in self.kept_fp32],
                            "float_nodes": self.float_nodes, "srcc": self.final.srcc, "crop_mse": self.final.crop_mse}
        self.strategy, self.kept_fp32, self.after_each, self.float_nodes = strategy, kept, after_each, float_nodes
        self.final = after_each[-1]

    @property
    def target_met(self) -> bool:
        return self.final.srcc >= self.target.min_srcc

    def to_dict(self) -> dict:
        return {
            "target_srcc": self.target.min_srcc, "max_fp32_nodes": self.target.max_fp32_nodes,
            "target_met": self.target_met, "all_int8": asdict(self.all_int8), "final": asdict(self.final),
            "fp32_nodes": [{**asdict(node), "srcc_after": fidelity.srcc, "crop_mse_after": fidelity.crop_mse}
                           for node, fidelity in zip(self.kept_fp32, self.after_each)],
            "most_sensitive": [asdict(node) for node in self.most_sensitive],
            "strategy": self.strategy, "float_nodes": self.float_nodes, "alternative": self.alternative,
            "prefix_srcc": self.prefix_srcc,
            "candidates": self.candidates, "evaluations": self.evaluations, "seconds": round(self.seconds, 1),
        }


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation; NaN when either side is constant."""
    from scipy.stats import spearmanr

    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def search_fp32_nodes(candidates: list[tuple[str, str]], reference: np.ndarray,
                      score_with_fp32_nodes: Callable[[list[str]], np.ndarray], target: AccuracyTarget,
                      progress: Callable[[str], None] = lambda _: None, report_top: int = 8,
                      float_nodes: Callable[[list[str]], int] | None = None) -> SearchResult:
    """Find the FP32 nodes (see the module docstring). ``candidates``: (node name, op type) of the
    quantizable nodes in graph order; ``score_with_fp32_nodes(names)`` scores the search photos per
    crop (shaped like ``reference``) with the INT8 model in which ``names`` stay FP32;
    ``float_nodes(names)`` counts the nodes that model computes in float (step 4 runs only with it)."""
    started = time.perf_counter()

    def evaluate(excluded: list[str]) -> Fidelity:
        return Fidelity.measure(reference, score_with_fp32_nodes(excluded))

    base = evaluate([])
    result = SearchResult(target=target, all_int8=base, final=base, candidates=len(candidates), evaluations=1)
    if result.target_met or target.max_fp32_nodes == 0 or not candidates:
        result.float_nodes = None if float_nodes is None else float_nodes([])
        result.seconds = time.perf_counter() - started
        return result

    ranking = []
    for index, (name, op_type) in enumerate(candidates, start=1):
        progress(f"int8: sensitivity {index}/{len(candidates)} ({name})")
        alone = evaluate([name])
        share = (base.crop_mse - alone.crop_mse) / base.crop_mse if base.crop_mse > 0 else 0.0
        ranking.append(NodeSensitivity(name, op_type, alone.crop_mse, float(share)))
    result.evaluations += len(candidates)
    ranking.sort(key=lambda node: node.crop_mse_if_fp32)
    result.most_sensitive = ranking[:report_top]
    helpful = [node for node in ranking if node.error_share > 0][:target.max_fp32_nodes]

    kept, current, remaining = [], base, list(helpful)
    while remaining and len(kept) < target.max_fp32_nodes and not current.srcc >= target.min_srcc:
        # Errors interact: re-measure the best-ranked remaining nodes on top of those already kept.
        trials = []
        for node in remaining[:target.rerank]:
            progress(f"int8: {len(kept) + 1} node(s) in FP32, trying {node.name}")
            trials.append((evaluate([n.name for n in kept] + [node.name]), node))
        result.evaluations += len(trials)
        fidelity, node = max(trials, key=lambda trial: trial[0].ordering())
        if fidelity.ordering() <= current.ordering():
            break   # no remaining node helps any more
        kept.append(node)
        result.after_each.append(fidelity)
        remaining.remove(node)
        current = fidelity
    result.kept_fp32, result.final = kept, current
    if float_nodes is not None:
        result.float_nodes = float_nodes([node.name for node in kept])
        _try_prefix(result, [name for name, _ in candidates], ranking, evaluate, float_nodes, progress)
    result.seconds = time.perf_counter() - started
    return result


def _try_prefix(result: SearchResult, names: list[str], ranking: list[NodeSensitivity],
                evaluate: Callable[[list[str]], Fidelity], float_nodes: Callable[[list[str]], int],
                progress: Callable[[str], None]) -> None:
    """Step 4: adopt the shortest FP32 prefix that meets the target, unless the node set computes
    fewer nodes in float (a k-node prefix computes at least k)."""
    target = result.target
    budget = result.float_nodes if result.target_met else target.max_fp32_nodes
    trajectory = []
    for length in range(1, min(target.max_fp32_nodes, budget, len(names)) + 1):
        progress(f"int8: the first {length} node(s) in FP32")
        trajectory.append(evaluate(names[:length]))
        result.evaluations += 1
        result.prefix_srcc.append(trajectory[-1].srcc)
        if trajectory[-1].srcc >= target.min_srcc:
            count = float_nodes(names[:length])
            if count <= budget:
                by_name = {node.name: node for node in ranking}
                result.adopt("prefix", [by_name[name] for name in names[:length]], trajectory, count)
            return
