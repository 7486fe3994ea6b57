"""The ONNX files `pinet bench` times for a checkpoint: written by the `pinet export` pipeline
(same calibration, INT8 method and FP32 islands as the files users ship), and reused by a later
run when the checkpoint and the export settings are the same."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from pinet_export.bench.settings import BenchSettings, ProgressCallback
from pinet_export.config import ExportSettings

EXPORTED_PRECISIONS = ("fp32", "int8", "fp16")
# Written next to the files: what they were made from, so a later run knows whether to reuse them.
RECIPE_FILE = "bench-export.json"


@dataclass
class ExportedFiles:
    files: dict[str, Path] = field(default_factory=dict)     # precision -> ONNX file
    failures: dict[str, str] = field(default_factory=dict)   # precision -> why it has no file
    note: str = ""


def exported_precisions(settings: BenchSettings) -> list[str]:
    """The precisions that need an ONNX file of a checkpoint (FP16 only on CUDA)."""
    return [p for p in EXPORTED_PRECISIONS if p in settings.precisions and (p != "fp16" or settings.provider == "cuda")]


def export_recipe(export: ExportSettings, sha: str) -> dict:
    """What decides an export's files: the checkpoint and every setting but the folder, as JSON
    reads it back (tuples as lists, paths as strings)."""
    settings = dataclasses.asdict(export)
    settings.pop("out_dir")
    return json.loads(json.dumps({"checkpoint_sha256": sha, "settings": settings}, default=str))


def earlier_export(folder: Path, recipe: dict, wanted: list[str]) -> dict[str, Path] | None:
    """The files an earlier run exported into ``folder`` by the same recipe, when they hold every
    wanted precision and are still the files it wrote; None otherwise."""
    from pinet_runtime.model_file import ModelFileError, read_model_info

    try:
        stamp = json.loads((folder / RECIPE_FILE).read_text())
    except (OSError, ValueError):  # no earlier export, or a stamp cut short: export again
        return None
    if not isinstance(stamp, dict) or stamp.get("recipe") != recipe:
        return None
    files = {precision: folder / name for precision, name in stamp.get("files", {}).items()}
    for precision in wanted:
        try:
            if precision not in files or read_model_info(files[precision]).source_sha256 != recipe["checkpoint_sha256"]:
                return None
        except ModelFileError:
            return None
    return files


def export_checkpoint(checkpoint: Path, folder: Path, settings: BenchSettings, label: str,
                      progress: ProgressCallback) -> ExportedFiles:
    """The ONNX files of the checkpoint for the precisions the bench measures."""
    from pinet.checkpoint import file_sha256
    from pinet_runtime.files import write_json_atomic

    wanted = exported_precisions(settings)
    if not wanted:
        return ExportedFiles()
    export = dataclasses.replace(settings.export, out_dir=folder, quantize="int8" in wanted, fp16="fp16" in wanted)
    recipe = export_recipe(export, file_sha256(checkpoint))
    earlier = earlier_export(folder, recipe, wanted)
    if earlier is not None:
        return ExportedFiles(earlier, note=f"ONNX files reused from the export an earlier run left in {folder}")
    from pinet_export.pipeline import run_export

    outcome = run_export(checkpoint, export, lambda message: progress(f"{label}: {message}"))
    result = ExportedFiles({precision: Path(path) for precision, path in outcome.files.items()},
                           note=(f"ONNX files written by the pinet export pipeline "
                                 f"({'validated' if export.validate else 'not validated'}); its report is in {folder}"))
    for step in outcome.validations:
        if not step.passed:
            result.failures[step.step] = "; ".join(str(failure) for failure in step.failures)
    for precision in wanted:
        if precision not in result.files and precision not in result.failures:
            result.failures[precision] = "not exported because the FP32 export failed"
    write_json_atomic(folder / RECIPE_FILE, {"recipe": recipe,
                                             "files": {p: path.name for p, path in result.files.items()}})
    return result
