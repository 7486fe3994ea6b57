"""`pinet bench`'s camera rows: a 12-MP and a 24-MP JPEG scored end to end vs the model alone.

The photos are a bundled real photo enlarged to 4000x3000 and 6000x4000 with mild noise (sigma 2,
like a sensor's) and saved at JPEG quality 92: stand-ins for timing only (an enlarged photo's
pixels say nothing about agreement; docs/runtime.md has that on real photos). Each row is measured
in a fresh child (probe.py, kind "camera") with every step interleaved, so the ratios are of one
run on one machine state.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
from PIL import Image

CAMERA_SIZES = {"12mp": (4000, 3000), "24mp": (6000, 4000)}
STREAM_IMAGES = 4
JPEG_QUALITY = 92
NOISE_SIGMA = 2.0
# Target of the camera row (docs/benchmarks.md): end to end <= 1.5x the INT8 model alone (goal 1.2x).
TARGET_CAMERA_RATIO = 1.5
GOAL_CAMERA_RATIO = 1.2


def make_camera_jpeg(source: Path, size: tuple[int, int], out: Path, seed: int = 0) -> Path:
    """``source`` enlarged to ``size`` (bicubic) with sensor-like noise, saved as a JPEG."""
    with Image.open(source) as image:
        big = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(big, dtype=np.float32)
    pixels += np.random.default_rng(seed).normal(0.0, NOISE_SIGMA, pixels.shape).astype(np.float32)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=JPEG_QUALITY)
    return out


def camera_spec(model_path: Path, photo: Path, threads: int, settings) -> dict:
    return {"kind": "camera", "model_path": str(model_path), "photo": str(photo), "threads": threads,
            "provider": settings.provider, "warmup": max(1, settings.warmup), "repeats": settings.repeats,
            "stream_images": STREAM_IMAGES}


def camera_row(model_name: str, precision: str, photo_label: str, photo: Path, threads: int, result: dict) -> dict:
    """Medians of the interleaved timings and the end-to-end / model-only ratios."""
    medians = {name: statistics.median(values) for name, values in result["times"].items()}
    model = medians["model_ms"]
    with Image.open(photo) as image:
        width, height = image.size
    return {"model": model_name, "precision": precision, "photo": photo_label, "photo_size": [width, height],
            "photo_bytes": photo.stat().st_size, "threads": threads, "decode_path": result["decode_path"],
            **{name: round(value, 2) for name, value in medians.items()},
            "single_ratio": medians["single_ms"] / model, "stream_ratio": medians["stream_ms"] / model,
            "stream_no_prefetch_ratio": medians["stream_no_prefetch_ms"] / model,
            "execution_providers": result["execution_providers"]}


def camera_rows(models, settings, work: Path, progress, run_child) -> list[dict]:
    """Every model's INT8 file (its FP32 file when it has none) on each camera photo, each thread count."""
    from pinet_export.photos import bundled_samples_dir, list_photos

    source = list_photos(bundled_samples_dir())[0]
    photos = {label: make_camera_jpeg(source, size, work / f"camera-{label}.jpg")
              for label, size in CAMERA_SIZES.items()}
    rows = []
    for model in models:
        precision = next((p for p in ("int8", "fp32") if p in model.files), None)
        if precision is None:
            continue
        for label, photo in photos.items():
            for threads in settings.threads:
                progress(f"{model.name} {precision} {label} JPEG end to end, threads {threads}")
                try:
                    result = run_child(camera_spec(model.files[precision], photo, threads, settings), settings)
                except (RuntimeError, ValueError) as err:   # one bad row must not end the run
                    progress(f"{model.name} {label}: failed ({err})")
                    continue
                rows.append(camera_row(model.name, precision, label, photo, threads, result))
    return rows


def camera_targets(rows: list[dict]) -> list[dict]:
    """The 12-MP INT8 target, per thread count: one photo alone, and a stream of photos."""
    targets = []
    for row in rows:
        if row["photo"] != "12mp" or row["precision"] != "int8":
            continue
        for kind in ("single", "stream"):
            value = row[f"{kind}_ratio"]
            targets.append({"target": f"12-MP JPEG end to end ({'one photo' if kind == 'single' else 'a stream, decode overlapped'}) "
                                      "vs INT8 model only", "case": f"{row['model']} threads {row['threads']}",
                            "value": value, "threshold": TARGET_CAMERA_RATIO, "met": value <= TARGET_CAMERA_RATIO})
    return targets


def render_camera(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["", "## Camera-size JPEGs (ms per photo, median; ratios to the model alone, same run)", "",
             "| model, precision | photo | threads | decode | model only | preprocess | one photo | ratio "
             "| stream | ratio | stream, no prefetch | ratio |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} {r['precision']} | {r['photo']} {r['photo_size'][0]}x{r['photo_size'][1]} | "
                     f"{r['threads']} | {r['decode_path']} | {r['model_ms']:.1f} | {r['preprocess_ms']:.1f} | "
                     f"{r['single_ms']:.1f} | {r['single_ratio']:.2f} | {r['stream_ms']:.1f} | {r['stream_ratio']:.2f} | "
                     f"{r['stream_no_prefetch_ms']:.1f} | {r['stream_no_prefetch_ratio']:.2f} |")
    return lines
