"""`pinet bench`: PyTorch eager vs ONNX FP32 / INT8 (/ FP16 on CUDA), side by side, in one run.

Every row (model x precision x threads x batch) is measured in its own fresh child process
(bench_probe.py), so peak memory and cold start belong to that row alone. Inputs are real photos
(the bundled samples) turned into crops by the preprocessing contract stored with each model.
Checkpoints and variant names are exported on the fly with the export library; ONNX files are
benchmarked as they are. Report writing (JSON, markdown, chart, targets) lives in bench_report.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pinet_export import bench_probe
from pinet_runtime.errors import PinetError
from pinet_runtime.preprocess import Preprocessing, preprocess

PRECISIONS = ("torch", "fp32", "int8", "fp16")
PROVIDERS = ("cpu", "cuda")
MATMUL_SIZE = 2048
CALIBRATION_CROPS = 16  # INT8 here is for timing: its speed does not depend on calibration quality
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
    matmul_size: int = MATMUL_SIZE          # tests use a small probe; the real one needs ~0.1 s per product
    child_timeout_s: float = 1800.0

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


@dataclass
class BenchModel:
    """One model under test and the files each precision runs from."""

    name: str
    source: str                              # what the user gave: a variant, a checkpoint or an ONNX file
    kind: str                                # "variant" | "checkpoint" | "onnx"
    variant: str
    preprocessing: Preprocessing
    model_config: dict
    checkpoint: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)          # precision -> ONNX file
    unavailable: dict[str, str] = field(default_factory=dict)     # precision -> why it has no row
    flops_per_crop: int | None = None
    notes: list[str] = field(default_factory=list)


def torch_problem() -> str | None:
    """None when torch imports, else the note every torch row carries."""
    try:
        import torch  # noqa: F401
    except ImportError as err:
        return (f"skipped: PyTorch is not importable ({err}); torch rows need the 'export' or 'train' "
                "extra: pip install 'pinet-iqa[export]'")
    return None


def flops_at_crop_size(model_config: dict, crop_size: int) -> int:
    """FLOPs of one crop at the contract's crop size (the network is fully convolutional)."""
    from pinet.config import ModelConfig
    from pinet.model_cost import flops_per_crop

    config = dataclasses.replace(ModelConfig.from_dict(model_config), input_size=crop_size)
    return flops_per_crop(config)


def classify_input(item: str, variants: list[str]) -> str:
    path = Path(item)
    if path.exists():
        if not path.is_file():
            raise BenchError(f"{item}: not a regular file")
        return "onnx" if path.suffix.lower() == ".onnx" else "checkpoint"
    if item in variants:
        return "variant"
    raise BenchError(f"{item}: no such file, and not a PINet variant ({', '.join(variants)})")


def _safe_name(text: str, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "model"
    name, index = base, 2
    while name in taken:
        name, index = f"{base}-{index}", index + 1
    taken.add(name)
    return name


def _variant_checkpoint(variant: str, folder: Path, progress: ProgressCallback) -> tuple[Path, str]:
    """A stage-2 checkpoint of the variant (reused when an earlier run left one)."""
    from pinet.checkpoint import save_checkpoint
    from pinet.models import auto_init, create_model, default_preprocessing

    path = folder / "checkpoint.safetensors"
    init, _ = auto_init(variant)      # ImageNet only where it is on this machine: a bench never downloads
    if path.is_file():
        return path, f"reused {path} from an earlier run"
    try:
        model = create_model(variant, stage=2, init=init)
    except RuntimeError as err:  # ImageNet weights need the 'lite' extra
        progress(f"{variant}: {err}; using random weights")
        init = "random"
        model = create_model(variant, stage=2, init=init)
    save_checkpoint(path, model, default_preprocessing(variant), training={"bench": f"{init} init, untrained"})
    return path, (f"{init}-initialised, untrained weights: latency, memory and size do not depend on "
                  "the weight values")


def _export_checkpoint(model: BenchModel, folder: Path, settings: BenchSettings, progress: ProgressCallback) -> None:
    """FP32 (and INT8 / FP16 when asked) ONNX files of a checkpoint, reused when already exported."""
    from pinet_export.config import FP16_FILE, FP32_FILE, INT8_FILE
    from pinet_export.convert import convert_model, load_stage2_checkpoint
    from pinet_runtime.files import publish, temporary_path
    from pinet_export.photos import bundled_samples_dir, calibration_crops, list_photos
    from pinet_runtime.model_file import ModelFileError, read_model_info

    torch_model, prep, sha = load_stage2_checkpoint(model.checkpoint)

    def up_to_date(path: Path) -> bool:
        try:
            return path.is_file() and read_model_info(path).source_sha256 == sha
        except ModelFileError:
            return False

    def write(final: Path, make: Callable[[Path], object]) -> Path:
        tmp = temporary_path(final)
        try:
            make(tmp)
            return publish(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    wanted_onnx = [p for p in settings.precisions if p != "torch"]
    if not wanted_onnx:
        return
    fp32 = folder / FP32_FILE
    if not up_to_date(fp32):
        progress(f"{model.name}: exporting FP32 ONNX")
        write(fp32, lambda tmp: convert_model(torch_model, prep, tmp, sha))
    model.files["fp32"] = fp32
    if "int8" in settings.precisions:
        int8 = folder / INT8_FILE
        if not up_to_date(int8):
            from pinet_export.quantize import choose_int8_types, quantize_int8
            from pinet_runtime.cpu import cpu_flags

            crops, _, used = calibration_crops(list_photos(bundled_samples_dir()), prep, CALIBRATION_CROPS)
            progress(f"{model.name}: quantizing to INT8 ({len(crops)} calibration crops of {used} bundled photos)")
            source = {"directory": str(bundled_samples_dir()), "photos": used, "bundled_samples": True}
            write(int8, lambda tmp: quantize_int8(fp32, tmp, crops, "minmax", choose_int8_types(cpu_flags()),
                                                  None, source))
        model.files["int8"] = int8
    if "fp16" in settings.precisions and settings.provider == "cuda":
        fp16 = folder / FP16_FILE
        if not up_to_date(fp16):
            from pinet_export.fp16 import convert_fp16

            progress(f"{model.name}: converting to FP16")
            write(fp16, lambda tmp: convert_fp16(fp32, tmp))
        model.files["fp16"] = fp16


def prepare_models(inputs: list[str], variants: list[str], settings: BenchSettings,
                   progress: ProgressCallback) -> list[BenchModel]:
    """Resolve every input to a BenchModel with its ONNX files (exporting checkpoints on the fly)."""
    from pinet_runtime.model_file import read_model_info

    known_variants = _known_variants()
    models, taken = [], set()
    unknown = [v for v in variants if v not in known_variants]
    if unknown:
        raise BenchError(f"{', '.join(unknown)}: not a PINet variant ({', '.join(known_variants) or 'none: install torch'})")
    for item, kind in [*((i, classify_input(i, known_variants)) for i in inputs), *((v, "variant") for v in variants)]:
        name = _safe_name(Path(item).stem if kind != "variant" else item, taken)
        folder = settings.out_dir / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        if kind == "onnx":
            info = read_model_info(item)  # ModelFileError names the file
            model = BenchModel(name, item, kind, info.variant, info.preprocessing, info.model_config)
            model.files[info.precision] = Path(item)
            model.notes.append("torch rows rebuild the architecture from the file's metadata with random "
                               "weights (latency does not depend on the weight values)")
        else:
            checkpoint, note = (_variant_checkpoint(item, folder, progress) if kind == "variant"
                                else (Path(item), None))
            from pinet.checkpoint import read_header

            header = read_header(checkpoint)  # CheckpointError names the file
            if header.stage != 2:
                raise BenchError(f"{item}: a stage-{header.stage} checkpoint; only stage-2 (scoring) "
                                 "models can be benchmarked")
            model = BenchModel(name, item, kind, header.model_config.variant, header.preprocessing,
                               header.model_config.to_dict(), checkpoint=checkpoint)
            if note:
                model.notes.append(note)
            _export_checkpoint(model, folder, settings, progress)
        _mark_unavailable(model, settings)
        if torch_problem() is None:
            model.flops_per_crop = flops_at_crop_size(model.model_config, model.preprocessing.crop_size)
        else:
            model.notes.append("FLOPs per crop need PyTorch (pinet.model_cost); not computed")
        models.append(model)
    return models


def _known_variants() -> list[str]:
    try:
        from pinet.models import list_models
    except ImportError:
        return []
    return list_models()


def _mark_unavailable(model: BenchModel, settings: BenchSettings) -> None:
    missing_torch = torch_problem()
    for precision in settings.precisions:
        if precision == "torch":
            if missing_torch:
                model.unavailable[precision] = missing_torch
        elif precision == "fp16" and settings.provider != "cuda":
            model.unavailable[precision] = ("skipped: FP16 rows need --provider cuda (onnxruntime has few FP16 "
                                            "CPU kernels, so a CPU FP16 figure would mislead)")
        elif precision not in model.files:
            model.unavailable[precision] = (f"skipped: the input is an ONNX {', '.join(model.files)} file; pass "
                                            "a checkpoint or variant to bench other precisions")


def input_crops(prep: Preprocessing, images: int) -> np.ndarray:
    """Crops of ``images`` real bundled photos (cycled), by the model's own contract."""
    from pinet_export.photos import bundled_samples_dir, list_photos

    photos = list_photos(bundled_samples_dir())
    return np.concatenate([preprocess(photos[i % len(photos)], prep) for i in range(images)])


def run_child(spec: dict, settings: BenchSettings, env: dict | None = None) -> dict:
    """Run bench_probe.py in a fresh interpreter; its last stdout line is the JSON result."""
    command = [sys.executable, str(Path(bench_probe.__file__).resolve()), json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=settings.child_timeout_s,
                              env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {settings.child_timeout_s:.0f} s") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        raise RuntimeError(f"child exited with code {done.returncode}: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def matmul_peak(threads: int, settings: BenchSettings) -> dict:
    """The machine's float32 matmul GFLOP/s with ``threads`` BLAS threads (in a child: the BLAS
    reads its thread count once, when numpy loads)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    spec = {"kind": "matmul", "size": settings.matmul_size, "warmup": 2, "repeats": 8}
    result = run_child(spec, settings, env)
    return {"threads": threads, "size": settings.matmul_size, "best_gflops": round(result["best_gflops"], 2),
            "median_gflops": round(result["median_gflops"], 2)}


def run_benchmark(inputs: list[str], variants: list[str], settings: BenchSettings,
                  progress: ProgressCallback = lambda _: None) -> dict:
    """Measure everything and write the reports into settings.out_dir; returns the JSON report."""
    from pinet_export.bench_report import build_report, machine_info, measured_row, skipped_row, write_reports
    from pinet_export.photos import bundled_samples_dir, list_photos

    settings.out_dir.mkdir(parents=True, exist_ok=True)
    machine_start = machine_info()
    models = prepare_models(inputs, variants, settings, progress)
    peaks = []
    for threads in settings.threads:
        progress(f"matmul peak probe, {threads} thread(s)")
        peaks.append(matmul_peak(threads, settings))
    photo = str(list_photos(bundled_samples_dir())[0])
    rows = []
    with tempfile.TemporaryDirectory(prefix="pinet-bench-") as work:
        for model in models:
            for batch in settings.batches:
                crops_path = Path(work) / f"{model.name}-b{batch}.npy"
                np.save(crops_path, input_crops(model.preprocessing, batch))
                for threads in settings.threads:
                    peak = next(p for p in peaks if p["threads"] == threads)
                    for precision in settings.precisions:
                        label = f"{model.name} {precision} batch {batch} threads {threads}"
                        if precision in model.unavailable:
                            rows.append(skipped_row(model, precision, batch, threads, settings,
                                                    model.unavailable[precision]))
                            continue
                        progress(label)
                        spec = _row_spec(model, precision, batch, threads, settings, str(crops_path), photo)
                        try:
                            result = run_child(spec, settings)
                        except (RuntimeError, ValueError) as err:  # one bad row must not end the run
                            progress(f"{label}: failed ({err})")
                            rows.append(skipped_row(model, precision, batch, threads, settings,
                                                    f"failed: {err}", status="failed"))
                            continue
                        rows.append(measured_row(model, precision, batch, threads, settings, result, peak))
    # A second probe after the rows shows whether the machine's speed drifted during the run.
    peaks_end = [matmul_peak(threads, settings) for threads in settings.threads]
    _use_best_peak(rows, peaks, peaks_end)
    report = build_report(models, rows, peaks, peaks_end, settings, machine_start, machine_info())
    write_reports(report, settings.out_dir, progress)
    return report


def _use_best_peak(rows: list[dict], peaks: list[dict], peaks_end: list[dict]) -> None:
    """On a shared machine the probe before the rows can be slowed by other work; the fraction of
    peak is taken against the better of the two probes so it is never inflated by a busy start."""
    best = {p["threads"]: max(p["best_gflops"], q["best_gflops"]) for p, q in zip(peaks, peaks_end)}
    for row in rows:
        if row["achieved_gflops"] is not None:
            row["machine_peak_gflops"] = best[row["threads"]]
            row["fraction_of_peak"] = row["achieved_gflops"] / best[row["threads"]]
        elif row["status"] == "ok":
            row["machine_peak_gflops"] = best[row["threads"]]


def _row_spec(model: BenchModel, precision: str, batch: int, threads: int, settings: BenchSettings,
              crops_path: str, photo: str) -> dict:
    spec = {"threads": threads, "warmup": settings.warmup, "repeats": settings.repeats,
            "crops_path": crops_path, "photo": photo, "provider": settings.provider}
    if precision == "torch":
        import torch

        device = "cuda" if settings.provider == "cuda" and torch.cuda.is_available() else "cpu"
        spec.update(kind="torch", device=device, checkpoint=str(model.checkpoint) if model.checkpoint else None,
                    model_config=model.model_config, preprocessing=model.preprocessing.to_dict())
    else:
        spec.update(kind="onnx", model_path=str(model.files[precision]), profile_ops=settings.profile_ops)
    return spec
