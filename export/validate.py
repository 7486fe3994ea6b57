"""Validation after every export step. Each check records its failure and the next one still runs,
so a report lists EVERY problem at once (optimum-style), not just the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pinet_export.config import Gates
from pinet_export.onnx_metadata import missing_keys, read_metadata
from pinet_export.photos import PhotoCrops
from pinet_runtime import metadata as keys


def expected_errors() -> tuple[type[BaseException], ...]:
    """What onnx/onnxruntime raise for a bad model (their pybind classes derive from Exception)."""
    import onnx
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    return (onnx.checker.ValidationError, ort_state.Fail, ort_state.InvalidArgument, ort_state.NoSuchFile,
            ort_state.InvalidGraph, ort_state.NotImplemented, ort_state.RuntimeException,
            ort_state.InvalidProtobuf, RuntimeError, ValueError, OSError)


@dataclass
class StepValidation:
    step: str                                    # fp32 | int8 | fp16
    path: str
    failures: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def fail(self, problem: str) -> None:
        self.failures.append(f"{Path(self.path).name}: {problem}")

    def to_dict(self) -> dict:
        return {"step": self.step, "passed": self.passed, "failures": self.failures,
                "figures": self.figures, "notes": self.notes}


def open_session(model: Path | bytes, providers: list[str] | None = None):
    """An onnxruntime session of a model file (or serialized model bytes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # keep onnxruntime's warnings off the user's terminal
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"])


def run_scores(session, crops: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    """Per-crop scores; a fixed-batch model gets its batch filled by repeating the last crop."""
    if fixed_batch is None:
        return session.run([keys.OUTPUT_NAME], {keys.INPUT_NAME: crops})[0]
    scores = []
    for start in range(0, len(crops), fixed_batch):
        chunk = crops[start:start + fixed_batch]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], fixed_batch - len(chunk), axis=0)])
        scores.append(session.run([keys.OUTPUT_NAME], {keys.INPUT_NAME: padded})[0][:len(chunk)])
    return np.concatenate(scores)


def check_structure(result: StepValidation, precision: str, crop_size: int, fixed_batch: int | None,
                    gates: Gates, sample: np.ndarray, providers: list[str] | None = None):
    """Checker, metadata, onnxruntime load, I/O names and shapes at the gate batches.
    Returns the session, or None when it could not be created."""
    import onnx

    path = Path(result.path)
    errors = expected_errors()
    try:
        onnx.checker.check_model(str(path))
    except errors as err:
        result.fail(f"onnx checker: {err}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except errors as err:
        result.fail(f"cannot be read as ONNX: {err}")
        return None
    missing = missing_keys(proto)
    if missing:
        result.fail(f"metadata keys missing: {', '.join(missing)}")
    found_precision = read_metadata(proto).get(keys.PRECISION)
    if found_precision != precision:
        result.fail(f"metadata {keys.PRECISION} is {found_precision!r}, expected {precision!r}")
    result.figures["nodes"] = len(proto.graph.node)
    result.figures["bytes"] = path.stat().st_size
    try:
        session = open_session(path, providers)
    except errors as err:
        result.fail(f"onnxruntime cannot load it: {err}")
        return None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [keys.INPUT_NAME] or [o.name for o in outputs] != [keys.OUTPUT_NAME]:
        result.fail(f"I/O names are {[i.name for i in inputs]} -> {[o.name for o in outputs]}, "
                    f"expected [{keys.INPUT_NAME!r}] -> [{keys.OUTPUT_NAME!r}]")
        return session
    declared_batch = inputs[0].shape[0]
    if fixed_batch is None and isinstance(declared_batch, int):
        result.fail(f"input batch axis is fixed at {declared_batch}, expected dynamic")
    if list(inputs[0].shape[1:]) != [3, crop_size, crop_size] or inputs[0].type != "tensor(float)":
        result.fail(f"input is {inputs[0].type} {inputs[0].shape}, expected float32 [batch, 3, {crop_size}, {crop_size}]")
    if len(outputs[0].shape) != 1:
        result.fail(f"output shape {outputs[0].shape}, expected [batch] (one score per crop)")
    batches = gates.shape_check_batches if fixed_batch is None else (fixed_batch,)
    for batch in batches:
        x = np.repeat(sample[:1], batch, axis=0) if len(sample) < batch else sample[:batch]
        try:
            scores = session.run([keys.OUTPUT_NAME], {keys.INPUT_NAME: x})[0]
        except errors as err:
            result.fail(f"inference at batch {batch} failed: {err}")
            continue
        if scores.shape != (batch,) or scores.dtype != np.float32:
            result.fail(f"batch {batch}: output {scores.dtype} {scores.shape}, expected float32 ({batch},)")
        elif not np.all(np.isfinite(scores)):
            result.fail(f"batch {batch}: output has NaN/inf")
    result.figures["shape_checked_batches"] = list(batches)
    return session


def validate_fp32(path: Path, model, crop_size: int, fixed_batch: int | None, gates: Gates,
                  photos: list[PhotoCrops]) -> StepValidation:
    """Structure + PyTorch vs onnxruntime max abs difference per crop over real photos."""
    import torch

    result = StepValidation("fp32", str(path))
    session = check_structure(result, "fp32", crop_size, fixed_batch, gates, photos[0].crops)
    if session is None:
        return result
    if len(photos) < gates.min_parity_photos:
        result.fail(f"only {len(photos)} photos for the parity check, {gates.min_parity_photos} needed")
    worst, worst_name = 0.0, ""
    for photo in photos:
        with torch.no_grad():
            expected = model(torch.from_numpy(photo.crops)).numpy()
        try:
            got = run_scores(session, photo.crops, fixed_batch)
        except expected_errors() as err:
            result.fail(f"inference on {photo.name} failed: {err}")
            return result
        diff = float(np.abs(got - expected).max())
        if not np.isfinite(diff) or diff > worst:
            worst, worst_name = diff, photo.name
    result.figures.update(parity_photos=len(photos), parity_crops=int(sum(len(p.crops) for p in photos)),
                          max_abs_diff=worst, worst_photo=worst_name, gate=gates.fp32_max_abs_diff)
    if not worst <= gates.fp32_max_abs_diff:
        result.fail(f"PyTorch vs ONNX max abs difference {worst:.3g} on {worst_name} exceeds "
                    f"{gates.fp32_max_abs_diff:g}")
    return result


def image_scores(session, photos: list[PhotoCrops], fixed_batch: int | None) -> np.ndarray:
    """Per-image score = mean over its crops (what the runtime does)."""
    return np.array([float(run_scores(session, p.crops, fixed_batch).mean()) for p in photos])


def validate_int8(path: Path, fp32_path: Path, crop_size: int, fixed_batch: int | None, gates: Gates,
                  photos: list[PhotoCrops]) -> StepValidation:
    """Structure + rank fidelity: SRCC of INT8 vs FP32 per-image scores over photos of varied quality."""
    from scipy.stats import spearmanr

    result = StepValidation("int8", str(path))
    session = check_structure(result, "int8", crop_size, fixed_batch, gates, photos[0].crops)
    if session is None:
        return result
    try:
        reference = image_scores(open_session(fp32_path), photos, fixed_batch)
        quantized = image_scores(session, photos, fixed_batch)
    except expected_errors() as err:
        result.fail(f"scoring the ranking photos failed: {err}")
        return result
    result.figures.update(ranking_images=len(photos), fp32_score_std=float(reference.std()),
                          mean_abs_diff=float(np.abs(quantized - reference).mean()),
                          max_abs_diff=float(np.abs(quantized - reference).max()), gate_srcc=gates.int8_min_srcc)
    if not np.all(np.isfinite(quantized)):
        result.fail("INT8 scores contain NaN/inf")
        return result
    if reference.std() == 0 or quantized.std() == 0:
        which = "FP32" if reference.std() == 0 else "INT8"
        result.fail(f"{which} scores are identical for all {len(photos)} images; rank fidelity cannot hold")
        result.figures["srcc"] = None
        return result
    srcc = float(spearmanr(quantized, reference).statistic)
    result.figures["srcc"] = srcc
    if not srcc >= gates.int8_min_srcc:
        result.fail(f"INT8 vs FP32 per-image SRCC {srcc:.4f} is below {gates.int8_min_srcc} "
                    f"(mean abs score difference {result.figures['mean_abs_diff']:.4g}); "
                    "check the calibration photos (--calib), keep more nodes in FP32 (--max-fp32-nodes) "
                    "or try --calib-method percentile/entropy")
    return result


def validate_fp16(path: Path, fp32_path: Path, crop_size: int, fixed_batch: int | None, gates: Gates,
                  photos: list[PhotoCrops]) -> StepValidation:
    """Structure everywhere; numeric parity only where onnxruntime has its CUDA provider."""
    import onnxruntime as ort

    result = StepValidation("fp16", str(path))
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else None
    session = check_structure(result, "fp16", crop_size, fixed_batch, gates, photos[0].crops, providers)
    if session is None:
        return result
    if not cuda or "CUDAExecutionProvider" not in session.get_providers():
        result.figures["parity"] = "not checked"
        result.notes.append("FP16 parity not checked: no CUDA execution provider "
                            f"(onnxruntime offers {', '.join(ort.get_available_providers())}); "
                            "FP16 is meant for GPUs")
        return result
    reference = open_session(fp32_path)
    worst = max(float(np.abs(run_scores(session, p.crops, fixed_batch)
                              - run_scores(reference, p.crops, fixed_batch)).max()) for p in photos)
    result.figures.update(parity="cuda", max_abs_diff=worst, gate=gates.fp16_max_abs_diff)
    if not worst <= gates.fp16_max_abs_diff:
        result.fail(f"FP16 (CUDA) vs FP32 max abs difference {worst:.3g} exceeds {gates.fp16_max_abs_diff:g}")
    return result


def median_latency_ms(path: Path, crops: np.ndarray, fixed_batch: int | None, runs: int = 5) -> float | None:
    """Median onnxruntime CPU time for one batch of crops (one image); None if it cannot run on CPU."""
    import time

    try:
        session = open_session(path)
        run_scores(session, crops, fixed_batch)  # warm-up
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            run_scores(session, crops, fixed_batch)
            times.append(time.perf_counter() - started)
    except expected_errors():
        return None
    return round(float(np.median(times)) * 1000, 2)
