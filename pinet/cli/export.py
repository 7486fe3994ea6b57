"""`pinet export`: checkpoint -> model.onnx (+ INT8 / FP16), validated, with report.md/json (issue 5).

Heavy imports (torch, onnx, onnxruntime.quantization) happen inside the command.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

import typer

from pinet.cli.common import EXIT_USAGE, fail, require_extra, stderr

DEFAULT_MODEL_NAME = "default.safetensors"
PRISTINE_DIR = Path("../shared/data/pristine")   # extra real photos for validation, when present


def bundled_default_model() -> Path | None:
    """pinet/assets/default.safetensors when this install ships one."""
    candidate = resources.files("pinet") / "assets" / DEFAULT_MODEL_NAME
    return Path(str(candidate)) if candidate.is_file() else None


def export(
    checkpoint: Optional[Path] = typer.Argument(None, help="Stage-2 checkpoint (.safetensors); "
                                                "default: the model bundled with pinet"),
    out: Path = typer.Option(Path("pinet-export"), "--out", help="Output directory"),
    quantize: bool = typer.Option(False, "--quantize", help="Also write model.int8.onnx (static INT8, QDQ)"),
    fp16: bool = typer.Option(False, "--fp16", help="Also write model.fp16.onnx (for GPUs)"),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Directory of real photos for INT8 calibration "
                                         "(default: the sample photos bundled with pinet)"),
    calib_count: int = typer.Option(64, "--calib-count", min=1, help="Calibration crops to use"),
    calib_method: str = typer.Option("minmax", "--calib-method", help="minmax | entropy | percentile"),
    int8_target: str = typer.Option("this-cpu", "--int8-target",
                                    help="this-cpu (tune INT8 to this machine's VNNI/AVX2) | portable "
                                         "(reduce_range: safe on any x86 CPU; use for files you ship)"),
    opset: Optional[int] = typer.Option(None, "--opset", min=18, help="ONNX opset (default 18, the dynamo floor)"),
    batch: str = typer.Option("dynamic", "--batch", help="'dynamic' or a fixed batch size N"),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip the validation gates"),
) -> None:
    """Export a stage-2 checkpoint to ONNX (FP32, optional INT8/FP16), validate it and write a report."""
    require_extra("export", "export")
    from pinet.checkpoint import CheckpointError
    from pinet_export.api import run_export
    from pinet_export.config import CALIBRATION_METHODS, ExportSettings, parse_batch
    from pinet_export.convert import ExportError

    if checkpoint is None:
        checkpoint = bundled_default_model()
        if checkpoint is None:
            raise fail("no bundled default model in this install; pass a checkpoint", EXIT_USAGE)
    if calib_method not in CALIBRATION_METHODS:
        raise fail(f"--calib-method must be one of {', '.join(CALIBRATION_METHODS)}, got {calib_method!r}", EXIT_USAGE)
    if int8_target not in ("this-cpu", "portable"):
        raise fail(f"--int8-target must be this-cpu or portable, got {int8_target!r}", EXIT_USAGE)
    if calib is not None and not calib.is_dir():
        raise fail(f"--calib {calib}: not a directory", EXIT_USAGE)
    try:
        fixed_batch = parse_batch(batch)
    except ValueError as err:
        raise fail(str(err), EXIT_USAGE) from None
    settings = ExportSettings(out_dir=out, quantize=quantize, fp16=fp16, calib_dir=calib, calib_count=calib_count,
                              calib_method=calib_method, int8_target=int8_target, opset=opset, batch=fixed_batch,
                              validate=not no_validate,
                              pristine_dir=PRISTINE_DIR if PRISTINE_DIR.is_dir() else None)
    try:
        with stderr.status("exporting") as status:
            def progress(message: str) -> None:
                stderr.print(f"[cyan]•[/] {message}", highlight=False)
                status.update(message)

            outcome = run_export(checkpoint, settings, progress)
    except (CheckpointError, ExportError) as err:
        raise fail(str(err)) from None
    for precision, path in outcome.files.items():
        stderr.print(f"[green]✓[/] {precision}: {path}", highlight=False)
    for problem in outcome.failures + outcome.report.get("skipped_steps", []):
        stderr.print(f"[red]✗[/] {problem}", highlight=False)
    stderr.print(f"report: {out / 'report.md'}", highlight=False)
    if not outcome.report.get("passed", False):
        raise fail(f"export failed validation ({len(outcome.failures)} problem(s)); no file was written "
                   "for a failed step")
