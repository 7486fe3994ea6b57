"""`pinet bench` results: rows, ratios against the project's targets, JSON + markdown + optional chart."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

from pinet_runtime.cpu import read_cpu_info
from pinet_runtime.files import write_json_atomic, write_text_atomic

SCHEMA_VERSION = 1
REPORT_JSON = "bench.json"
REPORT_MD = "bench.md"
REPORT_PNG = "bench.png"

# Every row carries every one of these keys (None where a skipped row has no value).
ROW_FIELDS = (
    "model", "variant", "precision", "status", "note", "provider", "execution_providers", "threads",
    "batch_images", "crops_per_image", "crops_per_run", "crop_size", "warmup", "repeats",
    "run_ms_p50", "run_ms_p90", "image_ms_p50", "image_ms_p90", "crop_ms_p50", "crop_ms_p90",
    "images_per_s", "flops_per_crop", "achieved_gflops", "machine_peak_gflops", "fraction_of_peak",
    "peak_rss_mib", "rss_libraries_mib", "model_file", "model_file_bytes", "cold_start_ms", "op_profile",
)

# The bench's speed targets (docs/benchmarks.md), checked on ratios measured in the same run.
TARGET_FP32_VS_TORCH = 3.0
TARGET_INT8_VS_FP32 = 1.6
TARGET_FRACTION_OF_PEAK = 0.5
TARGET_LITE0_INT8_IMAGE_MS = 40.0
TARGET_COLD_START_MS = 500.0


def machine_info() -> dict:
    """CPU model and flags, core counts, load and library versions, for the report's honesty."""
    import numpy
    import onnxruntime

    cpu = read_cpu_info()
    info = {
        "cpu_model": cpu.model_name, "cpu_flags_of_interest": cpu.flags_of_interest(),
        "cpu_flags": " ".join(sorted(cpu.flags)),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(), "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(), "torch": None,
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def _blank_row(model, precision: str, batch: int, threads: int, settings) -> dict:
    row = dict.fromkeys(ROW_FIELDS)
    crops = model.preprocessing.num_crops
    file = model.files.get(precision) if precision != "torch" else model.checkpoint
    row.update(model=model.name, variant=model.variant, precision=precision, provider=settings.provider,
               threads=threads, batch_images=batch, crops_per_image=crops, crops_per_run=crops * batch,
               crop_size=model.preprocessing.crop_size, warmup=settings.warmup, repeats=settings.repeats,
               flops_per_crop=model.flops_per_crop,
               model_file=str(file) if file else None,
               model_file_bytes=Path(file).stat().st_size if file and Path(file).is_file() else None)
    return row


def skipped_row(model, precision: str, batch: int, threads: int, settings, note: str,
                status: str = "skipped") -> dict:
    row = _blank_row(model, precision, batch, threads, settings)
    row.update(status=status, note=note)
    return row


def percentile(values: list[float], fraction: float) -> float:
    """Linear-interpolation percentile (numpy's default), without numpy."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def measured_row(model, precision: str, batch: int, threads: int, settings, result: dict, peak: dict) -> dict:
    row = _blank_row(model, precision, batch, threads, settings)
    run_p50, run_p90 = percentile(result["run_ms"], 0.5), percentile(result["run_ms"], 0.9)
    crops = row["crops_per_run"]
    row.update(status="ok", note="", execution_providers=result["execution_providers"],
               run_ms_p50=run_p50, run_ms_p90=run_p90, image_ms_p50=run_p50 / batch, image_ms_p90=run_p90 / batch,
               crop_ms_p50=run_p50 / crops, crop_ms_p90=run_p90 / crops, images_per_s=1000.0 * batch / run_p50,
               machine_peak_gflops=peak["best_gflops"], peak_rss_mib=result["peak_rss_mib"],
               rss_libraries_mib=result["rss_libraries_mib"], cold_start_ms=result["cold_start_ms"],
               op_profile=result.get("op_profile"))
    if model.flops_per_crop:
        row["achieved_gflops"] = model.flops_per_crop * crops / (run_p50 / 1000.0) / 1e9
        row["fraction_of_peak"] = row["achieved_gflops"] / peak["best_gflops"]
    if settings.provider == "cuda" and precision != "torch" and "CUDAExecutionProvider" not in result["execution_providers"]:
        row["note"] = "CUDA provider not in use: ran on " + ", ".join(result["execution_providers"])
    return row


def _ok(rows: list[dict], **match) -> dict | None:
    for row in rows:
        if row["status"] == "ok" and all(row[k] == v for k, v in match.items()):
            return row
    return None


def compare(rows: list[dict]) -> list[dict]:
    """Speed-up ratios (p50 per image) measured in this run, for each model / batch / threads."""
    ratios = []
    for row in rows:
        if row["status"] != "ok" or row["precision"] not in ("fp32", "int8"):
            continue
        baseline = "torch" if row["precision"] == "fp32" else "fp32"
        other = _ok(rows, model=row["model"], precision=baseline, batch_images=row["batch_images"],
                    threads=row["threads"])
        if other:
            ratios.append({"model": row["model"], "faster": row["precision"], "than": baseline,
                           "batch_images": row["batch_images"], "threads": row["threads"],
                           "speedup": other["image_ms_p50"] / row["image_ms_p50"]})
    return ratios


def check_targets(rows: list[dict], ratios: list[dict]) -> list[dict]:
    """The speed targets, one entry per measured case; 'met' is None when the case was not measured."""
    targets = []

    def add(name, case, value, threshold, higher_is_better):
        met = None if value is None else (value >= threshold if higher_is_better else value <= threshold)
        targets.append({"target": name, "case": case, "value": value, "threshold": threshold, "met": met})

    for ratio in ratios:
        case = f"{ratio['model']} batch {ratio['batch_images']} threads {ratio['threads']}"
        if ratio["faster"] == "fp32":
            add("ONNX FP32 vs PyTorch eager speed-up", case, ratio["speedup"], TARGET_FP32_VS_TORCH, True)
        else:
            add("INT8 vs ONNX FP32 speed-up", case, ratio["speedup"], TARGET_INT8_VS_FP32, True)
    fp32_rows = [r for r in rows if r["status"] == "ok" and r["precision"] == "fp32" and r["fraction_of_peak"]]
    for row in fp32_rows:
        largest = max(r["batch_images"] for r in fp32_rows if r["model"] == row["model"])
        if row["batch_images"] == largest:
            add(f"ONNX FP32 batch {largest} fraction of matmul peak", f"{row['model']} threads {row['threads']}",
                row["fraction_of_peak"], TARGET_FRACTION_OF_PEAK, True)
    for row in rows:
        if (row["status"] == "ok" and row["variant"] == "pinet_lite0" and row["precision"] == "int8"
                and row["threads"] == 2 and row["batch_images"] == 1 and row["crops_per_image"] == 5):
            add("pinet_lite0 INT8 ms per image (5 crops, 2 threads)", f"{row['model']} crop {row['crop_size']}",
                row["image_ms_p50"], TARGET_LITE0_INT8_IMAGE_MS, False)
    runtime_rows = [r for r in rows if r["status"] == "ok" and r["precision"] != "torch"]
    for key in sorted({(r["model"], r["precision"]) for r in runtime_rows}):
        values = [r["cold_start_ms"] for r in runtime_rows if (r["model"], r["precision"]) == key]
        add("runtime cold start ms (median over this run's fresh processes)", f"{key[0]} {key[1]}",
            statistics.median(values), TARGET_COLD_START_MS, False)
    return targets


def build_report(models, rows, peaks, peaks_end, settings, machine_start, machine_end,
                 cameras: list[dict] | None = None) -> dict:
    from pinet_export.bench.camera import camera_targets

    ratios = compare(rows)
    cameras = cameras or []
    return {
        "schema_version": SCHEMA_VERSION,
        "settings": {"precisions": list(settings.precisions), "batches": list(settings.batches),
                     "threads": list(settings.threads), "provider": settings.provider,
                     "repeats": settings.repeats, "warmup": settings.warmup},
        "definitions": {
            "batch_images": "images per session run; a run scores batch_images x crops_per_image crops",
            "latency": "p50/p90 over the repeated runs; per image = run / batch_images, per crop = run / crops",
            "images_per_s": "1000 x batch_images / run_ms_p50",
            "peak_rss_mib": "peak resident memory (VmHWM) of the row's own child process: interpreter, "
                            "libraries, model and inputs",
            "cold_start_ms": "fresh process: import + model load/session creation + first score of one "
                             "photo (decode and preprocessing included); excludes interpreter start-up; the "
                             "file is in the page cache after the first row",
            "camera_rows": "a 12-MP / 24-MP JPEG (an enlarged bundled photo, for timing only): model only = "
                           "score_crops on its crops; preprocess = decode + resize + crops; one photo = score(path); "
                           "stream = score_many of 4 copies, batch 1, per photo (prefetch: the next photo decodes "
                           "while the model runs); medians of interleaved runs in one fresh process",
            "machine_peak_gflops": "best of repeated numpy float32 square matmuls (size in matmul_peak), same thread count, better of the probes before and after the rows",
        },
        "machine_start": machine_start, "machine_end": machine_end,
        "matmul_peak": peaks, "matmul_peak_end": peaks_end,
        "models": [{"name": m.name, "source": m.source, "kind": m.kind, "variant": m.variant,
                    "crop_size": m.preprocessing.crop_size, "crops_per_image": m.preprocessing.num_crops,
                    "flops_per_crop": m.flops_per_crop, "files": {p: str(f) for p, f in m.files.items()},
                    "notes": m.notes} for m in models],
        "rows": rows, "ratios": ratios, "targets": check_targets(rows, ratios) + camera_targets(cameras),
        "camera_rows": cameras,
    }


def write_reports(report: dict, out_dir: Path, progress: Callable[[str], None]) -> dict[str, Path]:
    from pinet_export.bench.table import render_chart, render_markdown

    written = {"json": out_dir / REPORT_JSON, "markdown": out_dir / REPORT_MD}
    chart_note = render_chart(report, out_dir / REPORT_PNG)
    report["chart"] = chart_note
    write_json_atomic(written["json"], report, sort_keys=False)
    write_text_atomic(written["markdown"], render_markdown(report))
    progress(f"results written to {written['json']} and {written['markdown']}; chart: {chart_note}")
    return written
