"""Validation after every export step, through the runtime users run.

Every candidate file is opened as users open it, with :class:`pinet_runtime.scorer.Scorer`: the
typed metadata and the input/output contract are checked by the runtime's own code, and every
score comes from ``Scorer.score_crops`` (fixed-batch padding included); an image's score is the
mean of its crop scores, as the runtime computes it. Each check records its failure and the next
one still runs where it can, so a report lists every problem at once (optimum-style).

Failures are typed: ``structure`` (the file is missing, breaks the contract or does not run),
``parity`` (scores differ from the reference beyond a gate), ``ranking`` (INT8 does not rank
images like FP32).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from pinet_export.config import Gates
from pinet_export.photos import PhotoCrops
from pinet_runtime import metadata as keys
from pinet_runtime.errors import ModelFileError

if TYPE_CHECKING:
    from pinet_runtime.scorer import Scorer

FailureKind = Literal["structure", "parity", "ranking"]
FAILURE_KINDS: tuple[str, ...] = get_args(FailureKind)
# What export promises beyond the runtime's contract (which also accepts float16 input and [batch, 1]).
EXPORTED_TENSOR_TYPE = "tensor(float)"


def export_tool_errors() -> tuple[type[BaseException], ...]:
    """What onnx, onnxruntime and its quantizer raise for a graph they reject."""
    import onnx

    from pinet_runtime.model_file import ORT_ERRORS

    return (onnx.checker.ValidationError, *ORT_ERRORS)


@dataclass(frozen=True)
class ValidationFailure:
    """One problem of one file; ``str()`` reads "file: problem"."""

    kind: FailureKind
    file: str          # the file's name, without its directory
    problem: str

    def __post_init__(self) -> None:
        if self.kind not in FAILURE_KINDS:
            raise ValueError(f"failure kind {self.kind!r} is not one of {FAILURE_KINDS}")

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"

    def renamed(self, old_name: str, new_name: str) -> "ValidationFailure":
        """The same failure once the file ``old_name`` is published as ``new_name`` (tools quote the
        name they were given, so the problem text is renamed too)."""
        return replace(self, file=new_name if self.file == old_name else self.file,
                       problem=self.problem.replace(old_name, new_name))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "file": self.file, "problem": self.problem}


@dataclass
class StepValidation:
    step: str                                    # fp32 | int8 | fp16
    path: str
    failures: list[ValidationFailure] = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def fail(self, kind: FailureKind, problem: str, file: str | None = None) -> None:
        """Record a problem of ``file`` (a name; this step's file when None)."""
        self.failures.append(ValidationFailure(kind, file or Path(self.path).name, problem))

    def rename(self, final: Path) -> None:
        """The step's file was validated under a temporary name and is reported as ``final``."""
        old_name = Path(self.path).name
        self.path = str(final)
        self.failures = [failure.renamed(old_name, final.name) for failure in self.failures]

    def to_dict(self) -> dict:
        return {"step": self.step, "passed": self.passed, "failures": [f.to_dict() for f in self.failures],
                "figures": self.figures, "notes": self.notes}


def _problem(err: ValueError) -> str:
    """The runtime's message without the path (the failure names the file)."""
    return err.problem if isinstance(err, ModelFileError) else str(err)


def open_scorer(result: StepValidation, path: Path, providers: str = "cpu") -> "Scorer | None":
    """The file opened as users open it; a contract failure becomes a structure failure naming it."""
    from pinet_runtime.scorer import Scorer

    try:
        return Scorer(path, providers=providers)
    except ModelFileError as err:
        result.fail("structure", err.problem, Path(path).name)
        return None


def crop_scores(result: StepValidation, scorer: "Scorer", photos: list[PhotoCrops]) -> list[np.ndarray] | None:
    """Per-crop scores of each photo from the runtime; None (and a structure failure) when the model
    cannot score them."""
    scores = []
    for photo in photos:
        try:
            scores.append(scorer.score_crops(photo.crops))
        except ValueError as err:   # ModelFileError; ValueError for an output of the wrong length
            result.fail("structure", f"scoring {photo.name} failed: {_problem(err)}", scorer.info.path.name)
            return None
    return scores


def image_scores(result: StepValidation, scorer: "Scorer", photos: list[PhotoCrops]) -> np.ndarray | None:
    """Per-image score = mean over its crops (what the runtime does)."""
    per_crop = crop_scores(result, scorer, photos)
    return None if per_crop is None else np.array([float(scores.mean()) for scores in per_crop])


def _check_onnx(result: StepValidation, path: Path) -> None:
    """The ONNX checker (export has the onnx package; the runtime does not), plus size figures."""
    import onnx

    if path.is_file():
        result.figures["bytes"] = path.stat().st_size
    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, OSError) as err:
        result.fail("structure", f"onnx checker: {err}")
        return
    result.figures["nodes"] = len(onnx.load(str(path), load_external_data=False).graph.node)


def check_structure(result: StepValidation, precision: str, crop_size: int, fixed_batch: int | None,
                    gates: Gates, sample: np.ndarray, providers: str = "cpu") -> "Scorer | None":
    """ONNX checker; the runtime's own opening (metadata, I/O contract); what export promises on top
    (precision, batch axis, crop size, float32 [batch] output); scoring at the gate batches.
    Returns the Scorer, or None when the runtime refuses the file."""
    path = Path(result.path)
    _check_onnx(result, path)
    scorer = open_scorer(result, path, providers)
    if scorer is None:
        return None
    info = scorer.info
    if info.precision != precision:
        result.fail("structure", f"metadata {keys.PRECISION} is {info.precision!r}, expected {precision!r}")
    declared_batch = info.input.shape[0]
    if fixed_batch is None and isinstance(declared_batch, int):
        result.fail("structure", f"input batch axis is fixed at {declared_batch}, expected dynamic")
    elif fixed_batch is not None and declared_batch != fixed_batch:
        result.fail("structure", f"input batch axis is {declared_batch!r}, expected fixed at {fixed_batch}")
    if info.preprocessing.crop_size != crop_size:
        result.fail("structure", f"metadata {keys.PREPROCESSING} has crop size {info.preprocessing.crop_size}, "
                                 f"expected {crop_size}")
    if info.input.element_type != EXPORTED_TENSOR_TYPE or info.output.element_type != EXPORTED_TENSOR_TYPE:
        result.fail("structure", f"I/O types are {info.input.element_type} -> {info.output.element_type}, "
                                 f"expected float32 -> float32")
    if len(info.output.shape) != 1:
        result.fail("structure", f"output shape {list(info.output.shape)}, expected [batch] (one score per crop)")
    batches = sorted({*gates.shape_check_batches, *([fixed_batch] if fixed_batch else [])})
    for batch in batches:
        crops = sample[np.arange(batch) % len(sample)]   # the sample's crops, repeated when it has fewer
        try:
            scores = scorer.score_crops(crops)
        except ValueError as err:   # ModelFileError; ValueError for an output of the wrong length
            result.fail("structure", f"scoring {batch} crop(s) failed: {_problem(err)}")
            continue
        if scores.shape != (batch,):
            result.fail("structure", f"{batch} crop(s) gave scores of shape {scores.shape}, expected ({batch},)")
        elif not np.all(np.isfinite(scores)):
            result.fail("structure", f"{batch} crop(s) gave NaN/inf scores")
    result.figures["shape_checked_batches"] = batches
    return scorer


def validate_fp32(path: Path, model, crop_size: int, fixed_batch: int | None, gates: Gates,
                  photos: list[PhotoCrops]) -> StepValidation:
    """Structure + PyTorch vs runtime max abs difference per crop over real photos."""
    import torch

    result = StepValidation("fp32", str(path))
    scorer = check_structure(result, "fp32", crop_size, fixed_batch, gates, photos[0].crops)
    if len(photos) < gates.min_parity_photos:
        result.fail("parity", f"only {len(photos)} photos for the parity check, {gates.min_parity_photos} needed")
    got = None if scorer is None else crop_scores(result, scorer, photos)
    if got is None:
        return result
    worst, worst_name = 0.0, ""
    for photo, scores in zip(photos, got):
        with torch.no_grad():
            expected = model(torch.from_numpy(photo.crops)).numpy()
        diff = float(np.abs(scores - expected).max())
        if not np.isfinite(diff) or diff > worst:
            worst, worst_name = diff, photo.name
    result.figures.update(parity_photos=len(photos), parity_crops=int(sum(len(p.crops) for p in photos)),
                          max_abs_diff=worst, worst_photo=worst_name, gate=gates.fp32_max_abs_diff)
    if not worst <= gates.fp32_max_abs_diff:
        result.fail("parity", f"PyTorch vs ONNX max abs difference {worst:.3g} on {worst_name} exceeds "
                              f"{gates.fp32_max_abs_diff:g}")
    return result


def validate_int8(path: Path, fp32_path: Path, crop_size: int, fixed_batch: int | None, gates: Gates,
                  photos: list[PhotoCrops]) -> StepValidation:
    """Structure + rank fidelity: SRCC of INT8 vs FP32 per-image scores over photos of varied quality."""
    from scipy.stats import spearmanr

    result = StepValidation("int8", str(path))
    scorer = check_structure(result, "int8", crop_size, fixed_batch, gates, photos[0].crops)
    reference = open_scorer(result, Path(fp32_path))
    if scorer is None or reference is None:
        return result
    expected, quantized = image_scores(result, reference, photos), image_scores(result, scorer, photos)
    if expected is None or quantized is None:
        return result
    result.figures.update(ranking_images=len(photos), fp32_score_std=float(expected.std()),
                          mean_abs_diff=float(np.abs(quantized - expected).mean()),
                          max_abs_diff=float(np.abs(quantized - expected).max()), gate_srcc=gates.int8_min_srcc)
    if not np.all(np.isfinite(quantized)):
        result.fail("ranking", "INT8 scores contain NaN/inf")
        return result
    if expected.std() == 0 or quantized.std() == 0:
        which = "FP32" if expected.std() == 0 else "INT8"
        result.fail("ranking", f"{which} scores are identical for all {len(photos)} images; rank fidelity cannot hold")
        result.figures["srcc"] = None
        return result
    srcc = float(spearmanr(quantized, expected).statistic)
    result.figures["srcc"] = srcc
    if not srcc >= gates.int8_min_srcc:
        result.fail("ranking", f"INT8 vs FP32 per-image SRCC {srcc:.4f} is below {gates.int8_min_srcc} "
                               f"(mean abs score difference {result.figures['mean_abs_diff']:.4g}); "
                               "check the calibration photos (--calib), keep more nodes in FP32 (--max-fp32-nodes) "
                               "or try --calib-method percentile/entropy")
    return result


def validate_fp16(path: Path, fp32_path: Path, crop_size: int, fixed_batch: int | None, gates: Gates,
                  photos: list[PhotoCrops]) -> StepValidation:
    """Structure everywhere; numeric parity only where onnxruntime runs the file on CUDA."""
    import onnxruntime as ort

    from pinet_runtime.scorer import CUDA

    result = StepValidation("fp16", str(path))
    # "auto": CUDA when this onnxruntime offers it, as `pinet score` picks it.
    scorer = check_structure(result, "fp16", crop_size, fixed_batch, gates, photos[0].crops, providers="auto")
    if scorer is None:
        return result
    if CUDA not in scorer.providers:
        result.figures["parity"] = "not checked"
        result.notes.append("FP16 parity not checked: no CUDA execution provider "
                            f"(onnxruntime offers {', '.join(ort.get_available_providers())}); "
                            "FP16 is meant for GPUs")
        return result
    reference = open_scorer(result, Path(fp32_path))
    got = crop_scores(result, scorer, photos)
    expected = None if reference is None else crop_scores(result, reference, photos)
    if got is None or expected is None:
        return result
    worst = max(float(np.abs(a - b).max()) for a, b in zip(got, expected))
    result.figures.update(parity="cuda", max_abs_diff=worst, gate=gates.fp16_max_abs_diff)
    if not worst <= gates.fp16_max_abs_diff:
        result.fail("parity", f"FP16 (CUDA) vs FP32 max abs difference {worst:.3g} exceeds {gates.fp16_max_abs_diff:g}")
    return result


def median_latency_ms(path: Path, crops: np.ndarray, runs: int = 5) -> float | None:
    """Median runtime CPU time for one image's crops (Scorer.score_crops); None if it cannot run."""
    import time

    from pinet_runtime.scorer import Scorer

    try:
        scorer = Scorer(path, providers="cpu")
        scorer.score_crops(crops)  # warm-up
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            scorer.score_crops(crops)
            times.append(time.perf_counter() - started)
    except ValueError:   # ModelFileError: a published file the runtime cannot run has no latency
        return None
    return round(float(np.median(times)) * 1000, 2)
