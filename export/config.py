"""What an export produces and the gates it must pass (optimum-style: declared here, checked in validate.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The dynamo exporter's opset floor (NOTES.md: asking for less silently stays at 18).
DEFAULT_OPSET = 18
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
FP16_FILE = "model.fp16.onnx"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"


@dataclass(frozen=True)
class Gates:
    """Pass/fail thresholds of validation."""

    fp32_max_abs_diff: float = 1e-4      # torch vs onnxruntime, per crop
    int8_min_srcc: float = 0.99          # INT8 vs FP32 per-image scores
    fp16_max_abs_diff: float = 1e-2      # FP16 vs FP32 per crop, CUDA only
    min_parity_photos: int = 16          # real photos (plus flips/resizes when fewer exist)
    shape_check_batches: tuple[int, ...] = (1, 5)


@dataclass(frozen=True)
class ExportSettings:
    """Everything `pinet export` was asked to do."""

    out_dir: Path
    quantize: bool = False
    fp16: bool = False
    calib_dir: Path | None = None
    calib_count: int = 64                # crops fed to calibration
    calib_method: str = "minmax"
    int8_target: str = "this-cpu"        # or "portable" (reduce_range whatever the exporting CPU)
    opset: int | None = None
    batch: int | None = None             # None: dynamic batch axis
    validate: bool = True
    pristine_dir: Path | None = None     # extra real photos for validation when present
    gates: Gates = field(default_factory=Gates)

    def __post_init__(self) -> None:
        if self.calib_method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration method {self.calib_method!r} is not one of {CALIBRATION_METHODS}")
        if self.int8_target not in ("this-cpu", "portable"):
            raise ValueError(f"INT8 target {self.int8_target!r} is not one of ('this-cpu', 'portable')")
        if self.calib_count < 1:
            raise ValueError(f"calibration count must be >= 1, got {self.calib_count}")
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"batch must be 'dynamic' or a positive integer, got {self.batch}")


def parse_batch(text: str) -> int | None:
    """'dynamic' -> None, 'N' -> N; raises ValueError otherwise."""
    if text.strip().lower() == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"--batch must be 'dynamic' or a positive integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"--batch must be 'dynamic' or a positive integer, got {text!r}")
    return value
