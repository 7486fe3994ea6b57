"""INT8 vs FP32 on many real photos: rank fidelity, score difference and speed, with the CPU flags.

    python -m pinet_export.fidelity --fp32 model.onnx --int8 model.int8.onnx --photos DIR [--count 240]

The export gate checks a few dozen photos; this measures a file on as many photos as you have
(never the calibration photos: pass a directory it was not calibrated on). Both files are opened
with the torch-free runtime (``pinet_runtime.Scorer``), so the figures are what users get.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from pinet_export.pipeline import spread
from pinet_export.photos import list_photos
from pinet_runtime.cpu import read_cpu_info


def measure(fp32: Path, int8: Path, photos: list[Path], timing_images: int = 20, threads: int | None = None) -> dict:
    from scipy.stats import spearmanr

    from pinet_runtime import Scorer

    scorers = {name: Scorer(path, providers="cpu", threads=threads) for name, path in (("fp32", fp32), ("int8", int8))}
    crops, skipped = [], []
    for path in photos:
        try:
            crops.append(scorers["fp32"].crops(path))
        except ValueError as err:   # ImageDecodeError and its subclasses
            skipped.append(str(err))
    scores = {name: np.array([float(s.score_crops(c).mean()) for c in crops]) for name, s in scorers.items()}
    latency = {}
    for name, scorer in scorers.items():
        scorer.score_crops(crops[0])   # warm-up
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
        "machine": platform.machine(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, required=True)
    parser.add_argument("--int8", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True, help="directory of real photos (not calibration ones)")
    parser.add_argument("--count", type=int, default=240, help="photos, spread evenly over the directory")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    result = measure(args.fp32, args.int8, spread(list_photos(args.photos), args.count), threads=args.threads)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
