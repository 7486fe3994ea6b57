"""The `--end-to-end` and `--ort` steps of `pinet export`: write, validate, publish.

End-to-end files are validated against the crops file they were built from, scored by the runtime
(`pinet score`'s path) on photos of varied sizes and shapes (parity.py). ORT files are validated
against their .onnx file on the same inputs, and published only when every one converted and agreed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from pinet_export.config import Gates
from pinet_export.e2e.parity import ParityImage, compare, run_e2e
from pinet_export.validate import StepValidation

E2E_PRECISIONS = ("fp32", "int8")   # FP16 files are for CUDA, where apps keep the runtime


def e2e_step_name(precision: str) -> str:
    return f"e2e-{precision}"


def validate_e2e(path: Path, crops_path: Path, images: list[ParityImage], gates: Gates) -> StepValidation:
    """Structure (the runtime reads it as an end-to-end file) and parity with the runtime's scores."""
    from pinet_runtime.errors import ModelFileError
    from pinet_runtime.metadata import IMAGE_INTERFACE
    from pinet_runtime.model_file import read_model_info

    result = StepValidation(e2e_step_name(read_model_info(crops_path).precision), str(path))
    try:
        info = read_model_info(path)
    except ModelFileError as err:
        result.fail("structure", err.problem)
        return result
    if info.interface != IMAGE_INTERFACE:
        result.fail("structure", f"interface is {info.interface!r}, expected {IMAGE_INTERFACE!r}")
        return result
    figures = compare(path, crops_path, images)
    low, high = figures["score_range"]
    mean_gate = gates.e2e_max_mean_abs_diff * (high - low)
    result.figures.update(figures, gate_srcc=gates.e2e_min_srcc, gate_mean_abs_diff=mean_gate,
                          latency_ms=_latency_ms(path, images))
    if figures["images"] < gates.e2e_min_images:
        result.notes.append(f"parity measured on {figures['images']} images, fewer than the "
                            f"{gates.e2e_min_images} wanted: give more photos (--calib / the shared data folder)")
    if figures["srcc"] is None or not figures["srcc"] >= gates.e2e_min_srcc:
        result.fail("ranking", f"end-to-end vs runtime per-image SRCC {figures['srcc']} is below {gates.e2e_min_srcc}")
    if figures["mean_abs_diff"] is None or not figures["mean_abs_diff"] <= mean_gate:
        result.fail("parity", f"end-to-end vs runtime mean |difference| {figures['mean_abs_diff']} exceeds "
                              f"{mean_gate:g} ({gates.e2e_max_mean_abs_diff:g} of the score range)")
    return result


def _latency_ms(path: Path, images: list[ParityImage], runs: int = 5) -> float | None:
    """Median ms per image of the graph on the first photo as it is (resize inside the graph)."""
    import onnxruntime as ort

    if not images:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pixels = images[0].pixels
    run_e2e(session, pixels)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run_e2e(session, pixels)
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)) * 1000, 2)


def ort_step(files: dict[str, str], out_dir: Path, crops: np.ndarray, images: list[ParityImage], gates: Gates,
             progress: Callable[[str], None]) -> tuple[StepValidation, dict[str, str]]:
    """Convert every published .onnx file to .ort (+ required_operators.config); check each .ort
    scores as its .onnx on real inputs. Returns the step and {key: published path}."""
    from pinet_export.ort_format import REQUIRED_OPERATORS, convert_to_ort, ort_parity, required_operators
    from pinet_export.validate import export_tool_errors
    from pinet_runtime.metadata import E2E_INPUT_NAME, INPUT_NAME

    result = StepValidation("ort", str(out_dir / REQUIRED_OPERATORS))
    sources = {key: Path(path) for key, path in files.items() if path.endswith(".onnx")}
    if not sources:
        result.fail("structure", "no .onnx file was published to convert")
        return result, {}
    progress(f"ort: converting {', '.join(p.name for p in sources.values())}")

    def check(converted: dict[str, Path]) -> bool:
        for key, source in sources.items():
            feeds = ([{E2E_INPUT_NAME: image.pixels} for image in images[:3]] if key.startswith("e2e-")
                     else [{INPUT_NAME: crops}])
            if not feeds:
                result.notes.append(f"{source.name}: no parity image (validation skipped), .ort not compared")
                continue
            worst = ort_parity(source, converted[source.name], feeds)
            gate = gates.ort_int8_max_abs_diff if key.endswith("int8") else gates.ort_max_abs_diff
            result.figures[f"{key}_max_abs_diff"] = worst
            if not worst <= gate:
                result.fail("parity", f"{converted[source.name].name} vs {source.name} max |difference| {worst:.3g} "
                                      f"exceeds {gate:g}")
        return result.passed

    try:
        written = convert_to_ort(list(sources.values()), out_dir, check)
    except (RuntimeError, *export_tool_errors()) as err:
        result.fail("structure", f"conversion to the ORT format failed: {str(err).strip().splitlines()[0]}")
        return result, {}
    if not written:
        return result, {}
    published = {f"ort-{key}": str(written[path.name]) for key, path in sources.items()}
    config = written[REQUIRED_OPERATORS]
    published["required-operators"] = str(config)
    result.figures["required_operators"] = required_operators(config)
    result.notes.append("optimisation style Fixed, target platform arm; a minimal onnxruntime build takes "
                        f"--include_ops_by_config {REQUIRED_OPERATORS}")
    return result, published
