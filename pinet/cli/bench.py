"""`pinet bench`: latency, throughput, memory, size and cold start of PyTorch vs ONNX FP32 / INT8."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from pinet.cli.choices import BenchProvider
from pinet.cli.common import EXIT_FAILURE, EXIT_USAGE, fail, reported_errors, require_extra, stderr


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise fail(f"{option} takes comma-separated positive integers, got {text!r}", EXIT_USAGE) from None
    if not values or min(values) < 1:
        raise fail(f"{option} takes comma-separated positive integers, got {text!r}", EXIT_USAGE)
    return values


def _name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _export_settings(out: Path, validate: bool):
    """`pinet export`'s defaults (its calibration and validation photos), so the bench times the
    files that command writes; each model's folder and precisions are filled in per model."""
    from pinet.cli.export import CAMERA_DIR, PRISTINE_DIR, default_calibration_dirs
    from pinet_export.config import ExportSettings

    return ExportSettings(out_dir=out / "models", calib_dirs=default_calibration_dirs(), validate=validate,
                          validation_dirs=tuple(d for d in (PRISTINE_DIR, CAMERA_DIR) if d.is_dir()))


def bench(
    models: Optional[List[str]] = typer.Argument(None, metavar="[MODEL_OR_CKPT]...",
                                                 help="Variant names, stage-2 checkpoints or exported .onnx files"),
    variants: str = typer.Option("", "--variants", help="Comma-separated variants to build untrained "
                                                         "(e.g. pinet_lite0,pinet_r50)"),
    precisions: str = typer.Option("torch,fp32,int8", "--precisions", help="Any of torch,fp32,int8,fp16"),
    batch: str = typer.Option("1,8", "--batch", help="Images per run (each is the contract's N crops)"),
    threads: str = typer.Option("1,2", "--threads", help="Intra-op thread counts"),
    provider: BenchProvider = typer.Option(BenchProvider.cpu, "--provider", case_sensitive=False,
                                           help="onnxruntime execution provider"),
    repeats: int = typer.Option(20, "--repeats", min=1, help="Timed runs per row"),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed runs before timing"),
    out: Path = typer.Option(Path("pinet-bench"), "--out", help="Folder for bench.json, bench.md, bench.png "
                                                               "and the exported models"),
    profile_ops: bool = typer.Option(False, "--profile-ops", help="Add onnxruntime's time per operator type"),
    camera: bool = typer.Option(True, "--camera/--no-camera", help="Time a 12-MP and a 24-MP JPEG end to end "
                                "(decode + preprocess + model) against the model alone"),
    matmul_size: int = typer.Option(2048, "--matmul-size", min=64, help="Side of the float32 matmul peak probe"),
    validate: bool = typer.Option(False, "--validate/--no-validate",
                                  help="Hold exported files to pinet export's validation gates (a failed "
                                       "precision's rows fail)"),
) -> None:
    """Benchmark PyTorch eager vs ONNX FP32 / INT8 (FP16 on CUDA) against the machine's matmul peak.

    Every row runs in its own fresh process. Checkpoints and variants are exported on the fly into
    OUT/models by the `pinet export` pipeline with its default settings, so the files timed are the
    ones `pinet export --quantize` writes; variants get untrained weights, which changes no timing.
    Inputs are real photo crops made by each model's preprocessing contract.
    """
    from pinet_export.bench import BenchSettings, run_benchmark

    items = list(models or [])
    variant_names = _name_list(variants)
    if not items and not variant_names:
        raise fail("name at least one model: a variant, a checkpoint, an .onnx file or --variants", EXIT_USAGE)
    if variant_names or any(not item.lower().endswith(".onnx") for item in items):
        require_extra("export", "bench")  # exporting checkpoints and building variants needs torch + onnx
    with reported_errors(EXIT_USAGE):
        settings = BenchSettings(precisions=tuple(_name_list(precisions.lower())),
                                 batches=_int_list(batch, "--batch"), threads=_int_list(threads, "--threads"),
                                 provider=provider.value, repeats=repeats, warmup=warmup, out_dir=out,
                                 profile_ops=profile_ops, camera=camera, matmul_size=matmul_size,
                                 export=_export_settings(out, validate))
    with reported_errors():
        report = run_benchmark(items, variant_names, settings,
                               progress=lambda message: stderr.print(f"[dim]{escape(message)}[/]", highlight=False))
    stderr.print(f"{sum(r['status'] == 'ok' for r in report['rows'])} rows measured, "
                 f"{sum(r['status'] == 'skipped' for r in report['rows'])} skipped, "
                 f"{sum(r['status'] == 'failed' for r in report['rows'])} failed; see {out / 'bench.md'}",
                 highlight=False)
    from pinet_export.bench.table import render_markdown

    typer.echo(render_markdown(report))
    if any(r["status"] == "failed" for r in report["rows"]):
        raise typer.Exit(EXIT_FAILURE)

