"""`pinet report INPUT --out report.html`: one self-contained HTML report (torch-free).

INPUT is photos, folders or globs (scored and grouped into bursts here, as `pinet best` does) or
one scores file from `pinet score` / `pinet best` (.json, .jsonl, .csv: its scores rank the
gallery and its burst groups are shown). Either way the pictures are opened with the model, so
each thumbnail carries the per-crop scores. The page is built by pinet/camera/report_html.py.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from pinet.camera import DEFAULT_GAP_SECONDS, DEFAULT_MAX_DISTANCE
from pinet.cli.common import EXIT_FAILURE, EXIT_USAGE, fail, reported_errors, stderr
from pinet.cli.output import prepare_output
from pinet.cli.progress import PROGRESS_OPTION, progress_wanted, tracked
from pinet.cli.score import Provider, open_scorer, expand_paths
from pinet.cli.score_video import is_video


def _locate(row_path: str, scores_file: Path) -> str:
    """A scores file's path as written (relative to where pinet ran), else relative to the file's folder."""
    path = Path(row_path)
    if path.is_absolute() or path.exists() or not (scores_file.parent / path).exists():
        return row_path
    return str(scores_file.parent / path)


def report(
    inputs: list[str] = typer.Argument(None, help="Photos, folders and globs, or one scores file (.json, .jsonl, "
                                                  ".csv) from pinet score / pinet best", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="The HTML file to write (atomically)"),
    model: Path = typer.Option(None, "--model", "-m", help="Exported PINet ONNX model (default: the bundled model)"),
    provider: Provider = typer.Option(Provider.auto, "--provider", help="onnxruntime execution provider"),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Include photos in subfolders"),
    gap: float = typer.Option(DEFAULT_GAP_SECONDS, "--gap", min=0.0,
                              help="Bursts: seconds between shots that start a new one"),
    max_distance: int = typer.Option(DEFAULT_MAX_DISTANCE, "--max-distance", min=0, max=63,
                                     help="Bursts: perceptual-hash bits within which two shots show one scene"),
    title: str = typer.Option("PINet photo report", "--title", help="The page's title"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Photos per onnxruntime run"),
    threads: int = typer.Option(None, "--threads", min=1, help="onnxruntime intra-op threads"),
    progress: bool = PROGRESS_OPTION,
) -> None:
    """Write a self-contained HTML report: ranked gallery with per-crop scores, histogram, bursts, model card.
    Exit 0: written; 1: written, but some photos could not be read; 2: usage error."""
    if not inputs:
        raise fail("no input given; pass photos, folders, globs or one scores file", EXIT_USAGE)
    target = prepare_output(out, "--out")

    from pinet.camera.bursts import group_bursts
    from pinet.camera.photos import PhotoScanner
    from pinet.camera.report_data import ReportData, entries_from_bursts, entries_from_file, is_scores_file, \
        model_card, read_scores_file
    from pinet.camera.thumbnails import ThumbnailMaker

    scores_file = Path(inputs[0]) if is_scores_file(inputs) else None
    rows = None
    if scores_file is not None:
        with reported_errors(EXIT_USAGE):
            rows = read_scores_file(scores_file)
        located = {row["path"]: _locate(row["path"], scores_file) for row in rows}
        files = list(dict.fromkeys(located.values()))
    else:
        files, unmatched = expand_paths(inputs, recursive)
        files = [f for f in files if not is_video(f)]
        for argument in unmatched:
            stderr.print(f"[yellow]warning:[/] {escape(argument)} matched no image files", highlight=False)
    if not files:
        raise fail(f"no photos to report: {', '.join(inputs)}", EXIT_USAGE)

    scorer = open_scorer(model, provider, threads)
    card = model_card(scorer.info)
    prep = scorer.preprocessing
    maker = ThumbnailMaker(prep.score_range, prep.higher_is_better)
    with reported_errors(), tracked(progress_wanted(progress)) as tracker:
        bar = tracker.bar("scoring", len(files))
        scanner = PhotoScanner(scorer, batch_size, hashes=scores_file is None, thumbnail=maker)
        photos = scanner.scan(files, on_photo=lambda _: bar.advance())
    if scores_file is not None:
        by_path = {photo.path: photo for photo in photos}
        entries, notes = entries_from_file(rows, {row: by_path[path] for row, path in located.items()}, card["name"])
        data = ReportData(entries, card, prep.higher_is_better, prep.score_range, f"scores file {scores_file}",
                          notes, has_groups=any(row["group"] is not None for row in rows))
    else:
        with reported_errors(EXIT_USAGE):
            bursts = group_bursts(photos, gap, max_distance, prep.higher_is_better)
        data = ReportData(entries_from_bursts(photos, bursts), card, prep.higher_is_better, prep.score_range,
                          ", ".join(inputs), has_groups=True)

    from pinet.camera.report_html import build_report
    from pinet_runtime.files import write_text_atomic

    page = build_report(data, title)
    try:
        write_text_atomic(target, page)
    except OSError as err:
        raise fail(f"cannot write {out} ({err.strerror or err})") from None
    failures = [p for p in photos if p.error is not None]
    for photo in failures:
        stderr.print(f"[red]failed:[/] {escape(photo.error)}", highlight=False, soft_wrap=True)
    stderr.print(f"report: {escape(str(out))} ({len(data.entries)} photos, {len(page.encode()) / 1e6:.1f} MB)",
                 highlight=False)
    if failures:
        raise typer.Exit(EXIT_FAILURE)
