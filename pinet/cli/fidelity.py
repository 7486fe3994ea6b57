"""`pinet fidelity FP32 INT8 --photos DIR`: an INT8 file against its FP32 original on many real photos.

Torch-free: both files run in the runtime, as users get them. The JSON goes to stdout, a table
for people to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pinet.cli.common import EXIT_USAGE, fail, reported_errors, require_modules, stderr

DEFAULT_PHOTO_COUNT = 240      # enough photos for a stable SRCC, a few minutes on a small CPU


def fidelity(
    fp32: Path = typer.Argument(..., help="The FP32 ONNX file (e.g. model.onnx)"),
    int8: Path = typer.Argument(..., help="Its INT8 file (e.g. model.int8.onnx)"),
    photos: Path = typer.Option(..., "--photos", help="Folder of real photos the INT8 file was NOT calibrated on"),
    count: int = typer.Option(DEFAULT_PHOTO_COUNT, "--count", min=2, help="Photos, spread evenly over the folder "
                              "sorted by name"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="onnxruntime threads (default: its own)"),
) -> None:
    """Rank fidelity (SRCC), score difference and speed of an INT8 file vs its FP32 original."""
    require_modules("fidelity", ("scipy",), "export")
    for path in (fp32, int8):
        if not path.is_file():
            raise fail(f"{path}: no such model file", EXIT_USAGE)
    if not photos.is_dir():
        raise fail(f"--photos {photos}: not a folder", EXIT_USAGE)
    from pinet_export.fidelity import fidelity_table, measure_fidelity_on_folder

    with reported_errors():
        result = measure_fidelity_on_folder(fp32, int8, photos, count, threads=threads)
    stderr.print(fidelity_table(result), markup=False, highlight=False)
    typer.echo(json.dumps(result, indent=2))
