"""`pinet data ...`: make the synth set (distorted photos with pseudo-subjective scores) and validate
exported models on its held-out references."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from pinet.cli.choices import SynthSplit
from pinet.cli.common import (EXIT_FAILURE, EXIT_USAGE, fail, reported_errors, require_extra, require_modules,
                              stderr)

app = typer.Typer(help="The synth set: make it (distorted photos, pseudo-subjective scores) and validate models on it.",
                  no_args_is_help=True)


def _parse_types(value: str) -> tuple[str, ...]:
    from pinet_training.distortions import DISTORTION_NAMES

    if value.strip().lower() == "all":
        return DISTORTION_NAMES
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [name for name in names if name not in DISTORTION_NAMES]
    if unknown or not names:
        raise fail(f"--types: unknown distortion type(s) {', '.join(unknown) or '(none given)'}; "
                   f"known: all, {', '.join(DISTORTION_NAMES)}", EXIT_USAGE)
    return names


@app.command("synth")
def synth(
    refs: Path = typer.Option(..., "--refs", help="Folder of pristine reference images (not searched recursively)"),
    out: Path = typer.Option(..., "--out", help="Output folder (created; a rerun resumes it)"),
    short_side: int = typer.Option(384, "--short-side", min=32, help="References are resized to this short side first"),
    types: str = typer.Option("all", "--types", help="'all' or a comma-separated list of distortion types"),
    types_per_ref: Optional[int] = typer.Option(None, "--types-per-ref", min=1,
                                                help="Distortion types per reference, each at 5 levels "
                                                     "[default: 12, or all listed types if fewer]"),
    max_refs: Optional[int] = typer.Option(None, "--max-refs", min=1, help="Use only the first N references (by name)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker processes [default: min(2, cpu count)]"),
    val_fraction: float = typer.Option(0.15, "--val-fraction", min=0.0, max=1.0,
                                       help="Share of references in the validation split (by file-name hash)"),
    seed: int = typer.Option(0, "--seed", help="Seed for type choice and random distortions"),
    metric_short_side: int = typer.Option(192, "--metric-short-side", min=0,
                                          help="Pseudo-score metrics run at this short side (0 = full size)"),
) -> None:
    """Make the synth set: distort reference photos (25 types x 5 levels), score them, write a manifest.

    Each distorted copy is scored against its reference by a full-reference ensemble (pseudo-MOS).
    """
    require_extra("train", "data synth")
    require_modules("data synth", ("scipy", "piq"), "train")
    if 0 < metric_short_side < 32:
        raise fail(f"--metric-short-side {metric_short_side}: use 0 (full size) or at least 32", EXIT_USAGE)
    if not refs.is_dir():
        raise fail(f"--refs {refs}: not a folder", EXIT_USAGE)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from pinet_training.synth import DEFAULT_TYPES_PER_REF, SynthSettings, list_references, run_synth

    type_names = _parse_types(types)
    if not list_references(refs, max_refs):
        raise fail(f"--refs {refs}: no image files (.png, .jpg, .tif, .bmp, .webp ...) in it")
    settings = SynthSettings(short_side=short_side, types=type_names,
                             types_per_ref=min(types_per_ref or DEFAULT_TYPES_PER_REF, len(type_names)),
                             seed=seed, metric_short_side=metric_short_side or None, val_fraction=val_fraction)
    worker_count = workers or max(1, min(2, os.cpu_count() or 1))
    with reported_errors(), Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.description}"), console=stderr,
                                     transient=False) as bar:
        task = bar.add_task("", total=None)

        def started(pending: int) -> None:
            bar.update(task, total=pending)

        def finished(result) -> None:
            if result.error is not None:
                bar.console.print(f"[red]skipped[/] {result.source}: {result.error}", highlight=False)
            bar.update(task, advance=1, description=result.stem)

        summary = run_synth(refs, out, settings, max_refs=max_refs, workers=worker_count,
                            on_result=finished, on_start=started)
    for result in summary.failed:
        if "same file stem" in (result.error or ""):
            stderr.print(f"[red]skipped[/] {result.source}: {result.error}", highlight=False)
    typer.echo(f"{summary.images} images from {summary.references - len(summary.failed)} references "
               f"({summary.processed} made now, {summary.skipped} already done) in {summary.seconds:.1f} s; "
               f"manifest: {summary.manifest}")
    if summary.failed:
        names = ", ".join(Path(result.source).name for result in summary.failed)
        raise fail(f"{len(summary.failed)} reference(s) could not be used: {names} (details in {out / 'errors.jsonl'})",
                   EXIT_FAILURE)


@app.command("validate")
def validate(
    models: List[Path] = typer.Argument(..., help="Exported ONNX model(s); with two, also their agreement"),
    data: Path = typer.Option(..., "--data", help="A synth set (the --out folder of `pinet data synth`)"),
    out: Path = typer.Option(..., "--out", help="Folder for validation.json and validation.md"),
    split: SynthSplit = typer.Option(SynthSplit.val, "--split", help="The manifest's split to score (val: the "
                                     "held-out references)"),
) -> None:
    """Validate exported ONNX models on a synth set's held-out references (torch-free runtime).

    Reports SRCC/PLCC vs the pseudo-MOS, SRCC per distortion class and same-reference pair accuracy.
    """
    require_modules("data validate", ("scipy",), "train")
    for model in models:
        if not model.is_file():
            raise fail(f"{model}: no such model file", EXIT_USAGE)
    from pinet_training.synth_validation import markdown, validate_on_synth_set, write_validation

    with reported_errors():
        report = validate_on_synth_set(data, models, split.value)
    json_path, md_path = write_validation(report, out)
    typer.echo(markdown(report))
    stderr.print(f"wrote {json_path} and {md_path}", highlight=False)
