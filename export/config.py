"""What an export produces and the gates it must pass (optimum-style: declared here, checked in validate.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The dynamo exporter's opset floor (measured: asking for less silently stays at 18).
DEFAULT_OPSET = 18
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# this-cpu: full 8-bit weights where the exporting CPU has VNNI (they can saturate on x86 CPUs
# without it); portable: 7-bit weights (reduce_range), exact on every CPU, accuracy recovered by
# the accuracy search. The default because an exported file travels.
INT8_TARGETS = ("portable", "this-cpu")

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
FP16_FILE = "model.fp16.onnx"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"


@dataclass(frozen=True)
class Gates:
    """Pass/fail thresholds of validation."""

    fp32_max_abs_diff: float = 1e-4      # torch vs onnxruntime, per crop
    int8_min_srcc: float = 0.99          # INT8 vs FP32 per-image scores on the validation photos
    fp16_max_abs_diff: float = 1e-2      # FP16 vs FP32 per crop, CUDA only
    min_parity_photos: int = 16          # real photos (plus flips/resizes when fewer exist)
    shape_check_batches: tuple[int, ...] = (1, 5)
    e2e_min_srcc: float = 0.999          # end-to-end graph vs the runtime (`pinet score`), same precision
    e2e_max_mean_abs_diff: float = 0.005  # as a fraction of the score range (0.005 for a [0, 1] score)
    e2e_min_images: int = 100            # fewer parity images give a note, not a failure
    ort_max_abs_diff: float = 1e-4       # .ort vs its .onnx file on the same inputs (FP32)
    # INT8 .ort files are optimised for ARM (QDQ fused into S8 QLinear kernels), which compute a
    # little differently on x86: measured 0.006-0.010 per crop on the bundled model.
    ort_int8_max_abs_diff: float = 0.02


@dataclass(frozen=True)
class ExportSettings:
    """Everything `pinet export` was asked to do."""

    out_dir: Path
    quantize: bool = False
    fp16: bool = False
    calib_dirs: tuple[Path, ...] = ()    # calibration + accuracy-search photos; () = bundled samples
    calib_count: int = 512               # crops fed to calibration, spread over the calibration photos
    calib_degraded: bool = True          # calibration photos at several qualities (photos.CALIBRATION_DEGRADATIONS)
    calib_photos: int = 48               # at most this many calibration photos, spread over calib_dirs
    calib_method: str = "minmax"
    int8_target: str = "portable"
    accuracy_search: bool = True         # keep score-sensitive nodes in FP32 (mixed_precision.py)
    search_photos: int = 32              # calibration photos (x4 qualities) scored by the search
    search_target_srcc: float = 0.995
    max_fp32_nodes: int = 8
    opset: int | None = None
    batch: int | None = None             # None: dynamic batch axis
    validate: bool = True
    end_to_end: bool = False             # also model.e2e.onnx (+ model.e2e.int8.onnx): pixels in, score out
    ort: bool = False                    # also *.ort + required_operators.config for onnxruntime Mobile
    validation_dirs: tuple[Path, ...] = ()   # extra real photos for validation (calibration photos excluded)
    gates: Gates = field(default_factory=Gates)

    def __post_init__(self) -> None:
        if self.calib_method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration method {self.calib_method!r} is not one of {CALIBRATION_METHODS}")
        if self.int8_target not in INT8_TARGETS:
            raise ValueError(f"INT8 target {self.int8_target!r} is not one of {INT8_TARGETS}")
        for name in ("calib_count", "calib_photos", "search_photos"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.search_target_srcc <= 1.0:
            raise ValueError(f"search target SRCC must be in (0, 1], got {self.search_target_srcc}")
        if self.max_fp32_nodes < 0:
            raise ValueError(f"max FP32 nodes must be >= 0, got {self.max_fp32_nodes}")
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
