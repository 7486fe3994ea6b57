"""`pinet bench`: PyTorch eager vs ONNX FP32 / INT8 (/ FP16 on CUDA), side by side, in one run.

Every row (model x precision x threads x batch) is measured in its own fresh child process
(probe.py), so peak memory and cold start belong to that row alone. Inputs are real photos
(the bundled samples) turned into crops by the preprocessing contract stored with each model.
The models to measure are prepared in models.py (their ONNX files in exports.py); rows, ratios,
targets and report files in report.py, the markdown and the chart in table.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from pinet_export.bench import probe
from pinet_export.bench.camera import camera_rows
from pinet_export.bench.models import BenchModel, prepare_models
from pinet_export.bench.settings import BenchSettings, ProgressCallback
from pinet_runtime.preprocess import Preprocessing, preprocess


def input_crops(prep: Preprocessing, images: int) -> np.ndarray:
    """Crops of ``images`` real bundled photos (cycled), by the model's own contract."""
    from pinet_export.photos import bundled_samples_dir, list_photos

    photos = list_photos(bundled_samples_dir())
    return np.concatenate([preprocess(photos[i % len(photos)], prep) for i in range(images)])


def run_child(spec: dict, settings: BenchSettings, env: dict | None = None) -> dict:
    """Run probe.py in a fresh interpreter; its last stdout line is the JSON result."""
    command = [sys.executable, str(Path(probe.__file__).resolve()), json.dumps(spec)]
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
    from pinet_export.bench.report import build_report, machine_info, write_reports
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
                    rows += [bench_row(model, precision, batch, threads, settings, str(crops_path), photo, peak,
                                       progress) for precision in settings.precisions]
        cameras = camera_rows(models, settings, Path(work), progress, run_child) if settings.camera else []
    # A second probe after the rows shows whether the machine's speed drifted during the run.
    peaks_end = [matmul_peak(threads, settings) for threads in settings.threads]
    _use_best_peak(rows, peaks, peaks_end)
    report = build_report(models, rows, peaks, peaks_end, settings, machine_start, machine_info(), cameras)
    write_reports(report, settings.out_dir, progress)
    return report


def bench_row(model: BenchModel, precision: str, batch: int, threads: int, settings: BenchSettings,
              crops_path: str, photo: str, peak: dict, progress: ProgressCallback) -> dict:
    """One row: skipped or failed with the reason, or measured in a fresh child process."""
    from pinet_export.bench.report import measured_row, skipped_row

    if precision in model.unavailable:
        return skipped_row(model, precision, batch, threads, settings, model.unavailable[precision])
    if precision in model.export_failures:
        return skipped_row(model, precision, batch, threads, settings,
                           f"failed: export: {model.export_failures[precision]}", status="failed")
    label = f"{model.name} {precision} batch {batch} threads {threads}"
    progress(label)
    spec = _row_spec(model, precision, batch, threads, settings, crops_path, photo)
    try:
        result = run_child(spec, settings)
    except (RuntimeError, ValueError) as err:  # one bad row must not end the run
        progress(f"{label}: failed ({err})")
        return skipped_row(model, precision, batch, threads, settings, f"failed: {err}", status="failed")
    return measured_row(model, precision, batch, threads, settings, result, peak)


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
