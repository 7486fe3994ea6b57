"""`pinet export` end to end: convert, quantize, validate, report.

Every model file is written under a temporary name and renamed only after its validation passed;
a failed step removes its temp file, records its failures and the run goes on to the next step
(INT8 and FP16 need a valid FP32 model, so they are skipped when FP32 fails).
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pinet_export.config import FP16_FILE, FP32_FILE, INT8_FILE, ExportSettings

FP32, INT8, FP16 = "fp32", "int8", "fp16"   # the crops files' keys in ExportOutcome.files
from pinet_export.convert import ExportError, convert_model, load_stage2_checkpoint
from pinet_export.photos import (CALIBRATION_DEGRADATIONS, bundled_samples_dir, calibration_crops, list_photos,
                                 parity_photos, ranking_photos)
from pinet_export.validate import (StepValidation, ValidationFailure, export_tool_errors, median_latency_ms,
                                   validate_fp16, validate_fp32, validate_int8)
from pinet_runtime.files import publish, temporary_path

# Validation stays quick: at most this many real photos (bundled samples first, then --calib,
# then an even spread of the validation folders, e.g. a shared data folder's pristine photos).
MAX_VALIDATION_PHOTOS = 24
ProgressCallback = Callable[[str], None]


@dataclass
class ExportOutcome:
    out_dir: Path
    files: dict[str, str] = field(default_factory=dict)           # precision (or e2e-/ort- key) -> final path
    e2e_images: list = field(default_factory=list)                # end-to-end parity images (ParityImage)
    validations: list[StepValidation] = field(default_factory=list)
    report: dict = field(default_factory=dict)

    @property
    def failures(self) -> list[ValidationFailure]:
        return [failure for v in self.validations for failure in v.failures]


def spread(paths: list[Path], count: int) -> list[Path]:
    """``count`` paths evenly spread over ``paths`` (all of them when there are fewer)."""
    if len(paths) <= count:
        return list(paths)
    return [paths[i] for i in np.linspace(0, len(paths) - 1, count).round().astype(int)]


def calibration_photo_paths(settings: ExportSettings) -> list[Path]:
    """Up to ``calib_photos`` photos spread over each calibration directory in turn (an equal
    share each); the bundled samples when no directory is given."""
    dirs = settings.calib_dirs or (bundled_samples_dir(),)
    share = max(1, settings.calib_photos // len(dirs))
    return [path for directory in dirs for path in spread(list_photos(directory), share)]


def validation_photo_paths(settings: ExportSettings, calibration: list[Path]) -> tuple[list[Path], list[str]]:
    """Bundled samples plus an equal share of each validation directory, up to
    MAX_VALIDATION_PHOTOS, none of them a calibration photo; the calibration photos themselves
    (with a note) only when nothing else is readable."""
    used = {path.resolve() for path in calibration}
    fresh = [p for p in list_photos(bundled_samples_dir()) if p.resolve() not in used]
    dirs = [Path(d) for d in settings.validation_dirs if Path(d).is_dir()]
    for index, directory in enumerate(dirs):
        room = (MAX_VALIDATION_PHOTOS - len(fresh)) // (len(dirs) - index)
        fresh += spread([p for p in list_photos(directory) if p.resolve() not in used], max(0, room))
    if fresh:
        return fresh, []
    return list(calibration), ["validation photos are the calibration photos: no other real photo was given"]


def _run_step(outcome: ExportOutcome, settings: ExportSettings, precision: str, final: Path,
              write: Callable[[Path], dict | None], check: Callable[[Path], StepValidation],
              progress: ProgressCallback) -> dict | None:
    """Write to a temp name, validate, publish; the temp file never survives a failure."""
    tmp = temporary_path(final)
    try:
        progress(f"{precision}: writing {final.name}")
        try:
            info = write(tmp)
        except export_tool_errors() as err:  # e.g. the quantizer rejecting the graph: a step failure
            failed = StepValidation(precision, str(final))
            failed.fail("structure", f"could not be written: {str(err).replace(str(tmp), final.name)}")
            outcome.validations.append(failed)
            return None
        if settings.validate:
            progress(f"{precision}: validating")
            result = check(tmp)
            result.rename(final)
        else:
            result = StepValidation(precision, str(final), notes=["validation skipped (--no-validate)"])
        outcome.validations.append(result)
        if result.passed:
            publish(tmp, final)
            outcome.files[precision] = str(final)   # precision: the step's name (fp32, int8, e2e-fp32...)
        return info
    finally:
        tmp.unlink(missing_ok=True)


def _int8_step(outcome: ExportOutcome, settings: ExportSettings, prep, fp32_final: Path, photo_paths: list[Path],
               calib_paths: list[Path], flags: dict, progress: ProgressCallback) -> tuple[dict | None, list[str]]:
    """Calibrate, search the FP32 nodes, write, validate on photos outside the calibration set.
    Returns (calibration summary or None, unreadable validation photos)."""
    from pinet_export.mixed_precision import AccuracyTarget
    from pinet_export.quantize import AccuracySearch, choose_int8_types, quantize_int8

    final = outcome.out_dir / INT8_FILE
    degradations = CALIBRATION_DEGRADATIONS if settings.calib_degraded else ()
    crops, calib_skipped, used = calibration_crops(calib_paths, prep, settings.calib_count, degradations)
    dirs = [str(d) for d in settings.calib_dirs] or [str(bundled_samples_dir())]
    if len(crops) == 0:  # an INT8 step failure; FP32/FP16 and the report still go ahead
        failed = StepValidation("int8", str(final))
        failed.fail("structure", f"{', '.join(dirs)}: no readable photo for INT8 calibration"
                                 + (f" ({'; '.join(calib_skipped)})" if calib_skipped else ""))
        outcome.validations.append(failed)
        return None, []
    types = choose_int8_types(flags, settings.int8_target)
    source = {"directories": dirs, "photos": used, "degradations": list(degradations),
              "skipped_files": calib_skipped, "bundled_samples": not settings.calib_dirs}
    search = None
    if settings.accuracy_search:
        search = AccuracySearch(ranking_photos(spread(calib_paths, settings.search_photos), prep).photos,
                                settings.batch, AccuracyTarget(settings.search_target_srcc, settings.max_fp32_nodes))
    progress(f"int8: calibrating on {len(crops)} crops of {used} photos ({settings.calib_method}, "
             f"{'7-bit' if types.reduce_range else '8-bit'} weights)")
    ranking = ranking_photos(photo_paths, prep)
    calibration = _run_step(
        outcome, settings, "int8", final,
        lambda tmp: quantize_int8(fp32_final, tmp, crops, settings.calib_method, types, settings.batch, source,
                                  search, progress),
        lambda tmp: validate_int8(tmp, fp32_final, prep.crop_size, settings.batch, settings.gates, ranking.photos),
        progress)
    return calibration, ranking.skipped


def _e2e_steps(outcome: ExportOutcome, settings: ExportSettings, prep, photo_paths: list[Path],
               progress: ProgressCallback) -> None:
    """model.e2e.onnx (+ model.e2e.int8.onnx) from each published crops file, validated against it."""
    from pinet_export.e2e.graph import e2e_file_name, write_e2e
    from pinet_export.e2e.parity import parity_images
    from pinet_export.e2e.steps import E2E_PRECISIONS, e2e_step_name, validate_e2e

    if settings.validate:
        progress("end-to-end: making parity images (5 shapes of each validation photo)")
        outcome.e2e_images, _ = parity_images(photo_paths, prep)
    for precision in E2E_PRECISIONS:
        if precision not in outcome.files:
            continue
        crops_path = Path(outcome.files[precision])
        final = outcome.out_dir / e2e_file_name(crops_path)
        try:
            _run_step(outcome, settings, e2e_step_name(precision), final,
                      lambda tmp, source=crops_path: write_e2e(source, tmp),
                      lambda tmp, source=crops_path: validate_e2e(tmp, source, outcome.e2e_images, settings.gates),
                      progress)
        except ExportError as err:   # a contract the graph cannot express (e.g. a fixed batch != crops)
            failed = StepValidation(e2e_step_name(precision), str(final))
            failed.fail("structure", f"could not be written: {err}")
            outcome.validations.append(failed)


def run_export(checkpoint: Path, settings: ExportSettings, progress: ProgressCallback = lambda _: None) -> ExportOutcome:
    """Raises CheckpointError/ExportError for input that cannot be exported at all; validation
    failures are collected in the outcome instead."""
    from pinet_runtime.cpu import cpu_flags
    from pinet_export.report import build_report, write_reports

    started = time.perf_counter()
    progress(f"loading {checkpoint}")
    model, prep, sha = load_stage2_checkpoint(checkpoint)
    fixed_batch = settings.batch
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outcome = ExportOutcome(out)
    flags = cpu_flags()

    progress("reading validation photos")
    calib_paths = calibration_photo_paths(settings)
    photo_paths, photo_notes = validation_photo_paths(settings, calib_paths)
    parity = parity_photos(photo_paths, prep, settings.gates.min_parity_photos)
    if not parity.photos:
        raise ExportError("no readable real photo for validation (bundled samples missing?)")

    conversion = {}

    def write_fp32(tmp: Path) -> dict:
        result = convert_model(model, prep, tmp, sha, opset=settings.opset, batch=fixed_batch)
        conversion.update(exporter=result.exporter, opset=result.opset, nodes_exported=result.nodes_exported,
                          nodes_simplified=result.nodes_simplified, export_seconds=round(result.export_seconds, 2))
        return conversion

    fp32_final = out / FP32_FILE
    _run_step(outcome, settings, "fp32", fp32_final, write_fp32,
              lambda tmp: validate_fp32(tmp, model, prep.crop_size, fixed_batch, settings.gates, parity.photos),
              progress)
    calibration, ranking_skipped, skipped_steps = None, [], []
    if "fp32" not in outcome.files:
        skipped_steps = [p for p, wanted in (("int8", settings.quantize), ("fp16", settings.fp16)) if wanted]
    else:
        if settings.quantize:
            calibration, ranking_skipped = _int8_step(outcome, settings, prep, fp32_final, photo_paths,
                                                      calib_paths, flags, progress)
        if settings.fp16:
            from pinet_export.fp16 import convert_fp16

            _run_step(outcome, settings, "fp16", out / FP16_FILE, lambda tmp: convert_fp16(fp32_final, tmp),
                      lambda tmp: validate_fp16(tmp, fp32_final, prep.crop_size, fixed_batch, settings.gates,
                                                parity.photos),
                      progress)

    if settings.end_to_end and outcome.files:
        _e2e_steps(outcome, settings, prep, photo_paths, progress)
    if settings.ort and outcome.files:
        from pinet_export.e2e.steps import ort_step

        step, published = ort_step(outcome.files, out, parity.photos[0].crops, outcome.e2e_images, settings.gates,
                                   progress)
        outcome.validations.append(step)
        outcome.files.update(published)

    progress("measuring latency")
    latency = {precision: median_latency_ms(Path(path), parity.photos[0].crops)
               for precision, path in outcome.files.items() if precision in (FP32, INT8, FP16)}
    latency.update({step.step: step.figures["latency_ms"] for step in outcome.validations
                    if step.step.startswith("e2e-") and "latency_ms" in step.figures})
    outcome.report = build_report(
        checkpoint=checkpoint, checkpoint_sha256=sha, model_config=model.config, prep=prep, settings=settings,
        conversion=conversion, calibration=calibration, validations=outcome.validations, files=outcome.files,
        latency_ms=latency, cpu_flags=flags, photo_skips=sorted(set(parity.skipped + ranking_skipped)),
        skipped_steps=skipped_steps, parity_photo_count=len(parity.photos), machine=platform.machine(),
        seconds=round(time.perf_counter() - started, 1))
    outcome.report["notes"] = photo_notes
    write_reports(outcome.report, out)
    progress(f"report written to {out}")
    return outcome
