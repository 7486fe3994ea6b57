"""INT8 vs FP32 on many real photos: rank fidelity, score difference and speed, with the CPU flags.

The export gate checks a few dozen photos; `pinet fidelity` measures a file on as many photos as
you have (never the calibration photos: pass a directory it was not calibrated on). Both files are
opened with the torch-free runtime (``pinet_runtime.Scorer``), so the figures are what users get.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from pinet_export.photos import list_photos
from pinet_export.pipeline import spread
from pinet_runtime.cpu import read_cpu_info
from pinet_runtime.errors import PinetError

TIMING_IMAGES = 20
MIN_PHOTOS = 2          # a rank correlation needs two scored photos


class FidelityError(PinetError):
    """Too few readable photos to compare the two files on."""


def measure_fidelity(fp32: Path, int8: Path, photos: list[Path], timing_images: int = TIMING_IMAGES,
                     threads: int | None = None) -> dict:
    """Scores of ``photos`` by both files: SRCC of INT8 vs FP32, |difference|, median latency, CPU flags."""
    from scipy.stats import spearmanr

    from pinet_runtime import Scorer

    scorers = {name: Scorer(path, providers="cpu", threads=threads) for name, path in (("fp32", fp32), ("int8", int8))}
    crops, skipped = [], []
    for path in photos:
        try:
            crops.append(scorers["fp32"].crops(path))
        except ValueError as err:   # ImageDecodeError and its subclasses
            skipped.append(str(err))
    if len(crops) < MIN_PHOTOS:
        raise FidelityError(f"{len(crops)} of {len(photos)} photos could be read; the comparison needs at least "
                            f"{MIN_PHOTOS}")
    scores = {name: np.array([float(s.score_crops(c).mean()) for c in crops]) for name, s in scorers.items()}
    latency = {}
    for name, scorer in scorers.items():
        scorer.score_crops(crops[0])   # warm-up: the first run allocates
        times = []
        for c in crops[:timing_images]:
            started = time.perf_counter()
            scorer.score_crops(c)
            times.append(time.perf_counter() - started)
        latency[name] = float(np.median(times) * 1000)
    diff = np.abs(scores["int8"] - scores["fp32"])
    cpu = read_cpu_info()
    return {
        "photos": len(crops), "skipped": skipped, "srcc": float(spearmanr(scores["int8"], scores["fp32"]).statistic),
        "mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max()),
        "fp32_score_std": float(scores["fp32"].std()),
        "ms_per_image": latency, "speedup": latency["fp32"] / latency["int8"],
        "cpu_flags": [name for name, present in cpu.flags_of_interest().items() if present],
        "cpu_model": cpu.model_name, "machine": platform.machine(),
    }


def measure_fidelity_on_folder(fp32: Path, int8: Path, folder: Path, count: int,
                               threads: int | None = None) -> dict:
    """:func:`measure_fidelity` on ``count`` photos spread evenly over ``folder`` (sorted by name)."""
    return measure_fidelity(fp32, int8, spread(list_photos(folder), count), threads=threads)


def fidelity_table(result: dict) -> str:
    """The figures of :func:`measure_fidelity` as aligned text lines, for people."""
    latency = result["ms_per_image"]
    rows = [
        ("photos", f"{result['photos']} ({len(result['skipped'])} unreadable)"),
        ("SRCC int8 vs fp32", f"{result['srcc']:.4f}"),
        ("mean |difference|", f"{result['mean_abs_diff']:.5f}"),
        ("max |difference|", f"{result['max_abs_diff']:.5f}"),
        ("fp32 score std", f"{result['fp32_score_std']:.4f}"),
        ("ms per image", f"fp32 {latency['fp32']:.1f}, int8 {latency['int8']:.1f} (x{result['speedup']:.2f})"),
        ("cpu", f"{result['cpu_model']} ({result['machine']})"),
        ("cpu flags", ", ".join(result["cpu_flags"]) or "none of interest"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
