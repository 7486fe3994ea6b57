"""What `pinet bench` was asked to measure (BenchSettings) and its one error type."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pinet_export.config import ExportSettings
from pinet_runtime.errors import PinetError

PRECISIONS = ("torch", "fp32", "int8", "fp16")
PROVIDERS = ("cpu", "cuda")
MATMUL_SIZE = 2048
ProgressCallback = Callable[[str], None]


class BenchError(PinetError):
    """Bad bench input (unknown model, unreadable file); the message names it."""


@dataclass(frozen=True)
class BenchSettings:
    precisions: tuple[str, ...] = ("torch", "fp32", "int8")
    batches: tuple[int, ...] = (1, 8)       # images per run; each image is N contract crops
    threads: tuple[int, ...] = (1, 2)
    provider: str = "cpu"
    repeats: int = 20
    warmup: int = 3
    out_dir: Path = Path("pinet-bench")
    profile_ops: bool = False               # add onnxruntime's per-op-type profile to ONNX rows
    camera: bool = True                     # 12-MP / 24-MP JPEG end to end vs the model alone (camera.py)
    matmul_size: int = MATMUL_SIZE          # tests use a small probe; the real one needs ~0.1 s per product
    child_timeout_s: float = 1800.0
    # How checkpoints and variants are exported, as `pinet export` would (its out_dir, quantize
    # and fp16 are set per model from the precisions); the bench does not validate unless asked.
    export: ExportSettings = field(default_factory=lambda: ExportSettings(out_dir=Path("pinet-bench"),
                                                                          validate=False))

    def __post_init__(self) -> None:
        problems = [f"precision {p!r} is not one of {PRECISIONS}" for p in self.precisions if p not in PRECISIONS]
        if self.provider not in PROVIDERS:
            problems.append(f"provider {self.provider!r} is not one of {PROVIDERS}")
        if not self.batches or min(self.batches) < 1:
            problems.append("batch sizes must be positive integers")
        if not self.threads or min(self.threads) < 1:
            problems.append("thread counts must be positive integers")
        if self.repeats < 1 or self.warmup < 0:
            problems.append("repeats must be >= 1 and warmup >= 0")
        if problems:
            raise BenchError("; ".join(problems))
