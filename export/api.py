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

from pinet_export.config import FP16_FILE, FP32_FILE, INT8_FILE, ExportSettings
from pinet_export.convert import ExportError, convert_model, load_stage2_checkpoint, publish, temporary_path
from pinet_export.photos import bundled_samples_dir, calibration_crops, list_photos, parity_photos, ranking_photos
from pinet_export.validate import StepValidation, expected_errors, median_latency_ms, validate_fp16, validate_fp32, validate_int8

# Validation stays quick: at most this many real photos (bundled samples first, then --calib,
# then an even spread of ../shared/data/pristine).
MAX_VALIDATION_PHOTOS = 24
ProgressCallback = Callable[[str], None]


@dataclass
class ExportOutcome:
    out_dir: Path
    files: dict[str, str] = field(default_factory=dict)           # precision -> final path
    validations: list[StepValidation] = field(default_factory=list)
    report: dict = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        return [problem for v in self.validations for problem in v.failures]


def _validation_photo_paths(settings: ExportSettings) -> list[Path]:
    paths = list_photos(bundled_samples_dir())
    if settings.calib_dir is not None:
        paths += [p for p in list_photos(settings.calib_dir) if p not in paths]
    if settings.pristine_dir is not None and Path(settings.pristine_dir).is_dir():
        extra = list_photos(settings.pristine_dir)
        room = max(0, MAX_VALIDATION_PHOTOS - len(paths))
        if extra and room:
            step = max(1, len(extra) // room)
            paths += extra[::step][:room]
    return paths


def _run_step(outcome: ExportOutcome, settings: ExportSettings, precision: str, final: Path,
              write: Callable[[Path], dict | None], check: Callable[[Path], StepValidation],
              progress: ProgressCallback) -> dict | None:
    """Write to a temp name, validate, publish; the temp file never survives a failure."""
    tmp = temporary_path(final)
    try:
        progress(f"{precision}: writing {final.name}")
        try:
            info = write(tmp)
        except expected_errors() as err:  # e.g. the quantizer rejecting the graph: a step failure
            failed = StepValidation(precision, str(final))
            failed.fail(f"could not be written: {str(err).replace(str(tmp), final.name)}")
            outcome.validations.append(failed)
            return None
        if settings.validate:
            progress(f"{precision}: validating")
            result = check(tmp)
            result.path = str(final)
            result.failures = [f.replace(tmp.name, final.name) for f in result.failures]
        else:
            result = StepValidation(precision, str(final), notes=["validation skipped (--no-validate)"])
        outcome.validations.append(result)
        if result.passed:
            publish(tmp, final)
            outcome.files[precision] = str(final)
        return info
    finally:
        tmp.unlink(missing_ok=True)


def run_export(checkpoint: Path, settings: ExportSettings, progress: ProgressCallback = lambda _: None) -> ExportOutcome:
    """Raises CheckpointError/ExportError for input that cannot be exported at all; validation
    failures are collected in the outcome instead."""
    from pinet_export.quantize import choose_int8_types, cpu_flags, quantize_int8
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
    photo_paths = _validation_photo_paths(settings)
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
            calib_dir = settings.calib_dir or bundled_samples_dir()
            crops, calib_skipped, used = calibration_crops(list_photos(calib_dir), prep, settings.calib_count)
            if len(crops) == 0:  # an INT8 step failure; FP32/FP16 and the report still go ahead
                failed = StepValidation("int8", str(out / INT8_FILE))
                failed.fail(f"{calib_dir}: no readable photo for INT8 calibration"
                            + (f" ({'; '.join(calib_skipped)})" if calib_skipped else ""))
                outcome.validations.append(failed)
        if settings.quantize and len(crops) > 0:
            types = choose_int8_types(flags, settings.int8_target)
            source = {"directory": str(calib_dir), "photos": used, "skipped_files": calib_skipped,
                      "bundled_samples": settings.calib_dir is None}
            progress(f"int8: calibrating on {len(crops)} crops of {used} photos ({settings.calib_method})")
            ranking = ranking_photos(photo_paths, prep)
            ranking_skipped = ranking.skipped
            calibration = _run_step(
                outcome, settings, "int8", out / INT8_FILE,
                lambda tmp: quantize_int8(fp32_final, tmp, crops, settings.calib_method, types, fixed_batch, source),
                lambda tmp: validate_int8(tmp, fp32_final, prep.crop_size, fixed_batch, settings.gates, ranking.photos),
                progress)
        if settings.fp16:
            from pinet_export.fp16 import convert_fp16

            _run_step(outcome, settings, "fp16", out / FP16_FILE, lambda tmp: convert_fp16(fp32_final, tmp),
                      lambda tmp: validate_fp16(tmp, fp32_final, prep.crop_size, fixed_batch, settings.gates,
                                                parity.photos),
                      progress)

    progress("measuring latency")
    latency = {precision: median_latency_ms(Path(path), parity.photos[0].crops, fixed_batch)
               for precision, path in outcome.files.items()}
    outcome.report = build_report(
        checkpoint=checkpoint, checkpoint_sha256=sha, model_config=model.config, prep=prep, settings=settings,
        conversion=conversion, calibration=calibration, validations=outcome.validations, files=outcome.files,
        latency_ms=latency, cpu_flags=flags, photo_skips=sorted(set(parity.skipped + ranking_skipped)),
        skipped_steps=skipped_steps, parity_photo_count=len(parity.photos), machine=platform.machine(),
        seconds=round(time.perf_counter() - started, 1))
    write_reports(outcome.report, out)
    progress(f"report written to {out}")
    return outcome
