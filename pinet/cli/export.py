"""`pinet export`: checkpoint -> model.onnx (+ INT8 / FP16), validated, with report.md/json.

Heavy imports (torch, onnx, onnxruntime.quantization) happen inside the command.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import List, Optional

import typer

from pinet.cli.choices import CalibrationMethod, Int8Target
from pinet.cli.common import EXIT_USAGE, fail, reported_errors, require_extra, stderr

DEFAULT_MODEL_NAME = "default.safetensors"
# A shared data folder next to the checkout, when present (development machines and CI): its
# pristine photos calibrate and validate, its camera photos validate (the INT8 gate runs on both).
PRISTINE_DIR = Path("../shared/data/pristine")
CAMERA_DIR = Path("../shared/data/clive/images")


def bundled_default_model() -> Path | None:
    """pinet/assets/default.safetensors where the install has it (a source checkout); the wheel
    leaves it out, so there the model is rebuilt once from the bundled FP32 ONNX file into the
    user cache. None when the install bundles neither."""
    candidate = resources.files("pinet") / "assets" / DEFAULT_MODEL_NAME
    if candidate.is_file():
        return Path(str(candidate))
    from pinet_export.default_checkpoint import default_checkpoint_from_onnx

    return default_checkpoint_from_onnx(lambda message: stderr.print(f"[cyan]•[/] {message}", highlight=False))


def default_calibration_dirs() -> tuple[Path, ...]:
    """The bundled samples, plus the shared pristine photos where this machine has them."""
    from pinet_export.photos import bundled_samples_dir

    return (bundled_samples_dir(),) + ((PRISTINE_DIR,) if PRISTINE_DIR.is_dir() else ())


def export(
    checkpoint: Optional[Path] = typer.Argument(None, help="Stage-2 checkpoint (.safetensors); "
                                                "default: the model bundled with pinet"),
    out: Path = typer.Option(Path("pinet-export"), "--out", help="Output directory"),
    quantize: bool = typer.Option(False, "--quantize", help="Also write model.int8.onnx (static INT8, QDQ)"),
    fp16: bool = typer.Option(False, "--fp16", help="Also write model.fp16.onnx (for GPUs)"),
    calib: Optional[List[Path]] = typer.Option(None, "--calib", help="Directory of real photos for INT8 calibration "
                                               "and the accuracy search; repeat for several (default: the bundled "
                                               "sample photos, plus a shared data folder's pristine photos, "
                                               f"{PRISTINE_DIR}, when present)"),
    calib_count: int = typer.Option(512, "--calib-count", min=1, help="Calibration crops to use"),
    calib_degraded: bool = typer.Option(True, "--calib-degraded/--calib-clean-only",
                                        help="Calibrate on the photos and blurred, JPEG-compressed and noisy "
                                             "versions of them (ranges that cover poor photos too)"),
    calib_photos: int = typer.Option(48, "--calib-photos", min=1, help="At most this many calibration photos"),
    calib_method: CalibrationMethod = typer.Option(CalibrationMethod.minmax, "--calib-method",
                                                   help="onnxruntime's calibration method for INT8 ranges"),
    int8_target: Int8Target = typer.Option(Int8Target.portable, "--int8-target",
                                           help="portable (7-bit weights: the same scores on every CPU, with "
                                                "or without VNNI, and ARM) | this-cpu (full 8-bit weights when this "
                                                "CPU has VNNI; such a file can saturate on CPUs without VNNI)"),
    accuracy_search: bool = typer.Option(True, "--accuracy-search/--no-accuracy-search",
                                         help="Keep the fewest score-sensitive nodes in FP32 until INT8 follows "
                                              "FP32 on the calibration photos"),
    search_photos: int = typer.Option(32, "--search-photos", min=1, help="Calibration photos (each at 4 "
                                      "qualities) scored by the accuracy search"),
    max_fp32_nodes: int = typer.Option(8, "--max-fp32-nodes", min=0, help="At most this many nodes kept in FP32 "
                                       "(the report lists the search SRCC after each one: fewer is faster)"),
    search_target_srcc: float = typer.Option(0.995, "--search-target-srcc", min=0.5, max=1.0,
                                             help="The accuracy search stops once INT8 vs FP32 per-image SRCC on "
                                                  "the search photos reaches this"),
    opset: Optional[int] = typer.Option(None, "--opset", min=18, help="ONNX opset (default 18, the dynamo floor)"),
    batch: str = typer.Option("dynamic", "--batch", help="'dynamic' or a fixed batch size N"),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip the validation gates"),
    end_to_end: bool = typer.Option(False, "--end-to-end", help="Also write model.e2e.onnx (and model.e2e.int8.onnx "
                                    "with --quantize): uint8 RGB pixels [H, W, 3] in, the image's score out; "
                                    "resize, crops and normalisation inside the graph"),
    ort: bool = typer.Option(False, "--ort", help="Also write the ORT format (*.ort) of every file and "
                             "required_operators.config, for onnxruntime Mobile and minimal builds"),
) -> None:
    """Export a stage-2 checkpoint to ONNX (FP32, optional INT8/FP16), validate it and write a report."""
    require_extra("export", "export")
    from pinet_export.pipeline import run_export
    from pinet_export.config import ExportSettings, parse_batch

    if checkpoint is None:
        with reported_errors():
            checkpoint = bundled_default_model()
        if checkpoint is None:
            raise fail("no bundled default model in this install; pass a checkpoint", EXIT_USAGE)
    for directory in calib or []:
        if not directory.is_dir():
            raise fail(f"--calib {directory}: not a directory", EXIT_USAGE)
    try:
        fixed_batch = parse_batch(batch)
    except ValueError as err:  # a user string that is neither 'dynamic' nor a batch size
        raise fail(str(err), EXIT_USAGE) from None
    calib_dirs = tuple(calib) if calib else default_calibration_dirs()
    settings = ExportSettings(out_dir=out, quantize=quantize, fp16=fp16, calib_dirs=calib_dirs,
                              calib_count=calib_count, calib_degraded=calib_degraded, calib_photos=calib_photos,
                              calib_method=calib_method.value,
                              int8_target=int8_target.value, accuracy_search=accuracy_search, search_photos=search_photos,
                              max_fp32_nodes=max_fp32_nodes, search_target_srcc=search_target_srcc, opset=opset,
                              batch=fixed_batch, validate=not no_validate,
                              end_to_end=end_to_end, ort=ort,
                              validation_dirs=tuple(d for d in (PRISTINE_DIR, CAMERA_DIR) if d.is_dir()))
    with reported_errors(), stderr.status("exporting") as status:
        def progress(message: str) -> None:
            stderr.print(f"[cyan]•[/] {message}", highlight=False)
            status.update(message)

        outcome = run_export(checkpoint, settings, progress)
    for precision, path in outcome.files.items():
        stderr.print(f"[green]✓[/] {precision}: {path}", highlight=False)
    for problem in outcome.failures + outcome.report.get("skipped_steps", []):
        stderr.print(f"[red]✗[/] {problem}", highlight=False)
    stderr.print(f"report: {out / 'report.md'}", highlight=False)
    if not outcome.report.get("passed", False):
        raise fail(f"export failed validation ({len(outcome.failures)} problem(s)); no file was written "
                   "for a failed step")
