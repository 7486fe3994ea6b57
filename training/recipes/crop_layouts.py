"""Would more test-time crops score CLIVE better? Paired check on a protocol run's split models.

Every finished round's best checkpoint is exported to ONNX FP32 (``pinet export --no-validate``) and
its test photos are scored with the contract's layout (centre + corners, 5 crops at 384 px) and with
alternatives (3x3 and 4x4 grids, mirrored crops, a 448 px short side), so each layout is compared on
the same models and photos. The 5-crop figure must equal the round's recorded test SRCC (a check on
the pipeline). Results per round go to OUT/<folder>_<round>.json (rerunning skips finished rounds).

    python training/recipes/crop_layouts.py runs/clive/d_splits_a runs/clive/d_splits_b --out runs/exp/tta
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
from pathlib import Path

import numpy as np


def layouts(prep) -> dict:
    grid = dict(crop_layout="grid")
    return {"contract (5 crops)": prep,
            "grid 3x3": dataclasses.replace(prep, **grid, grid_rows=3, grid_cols=3),
            "grid 4x4": dataclasses.replace(prep, **grid, grid_rows=4, grid_cols=4),
            "5 crops at 448 px": dataclasses.replace(prep, resize_short_side=448),
            "grid 3x3 at 448 px": dataclasses.replace(prep, **grid, grid_rows=3, grid_cols=3, resize_short_side=448)}


def score_round(round_dir: Path, onnx_dir: Path) -> dict:
    from pinet.checkpoint import read_header
    from pinet_runtime.preprocess import load_image, make_crops
    from pinet_runtime.scorer import Scorer
    from pinet_training.checkpoint_evaluation import recorded_split, samples_by_ids
    from pinet_training.datasets import load_dataset
    from pinet_training.metrics import plcc, srcc

    checkpoint = round_dir / "best.safetensors"
    if not (onnx_dir / "model.onnx").exists():
        subprocess.run(["pinet", "export", str(checkpoint), "--out", str(onnx_dir), "--no-validate"],
                       check=True, capture_output=True)
    training = read_header(checkpoint).training
    primary = training["info"]["datasets"][0]
    dataset = load_dataset(primary["name"], primary["root"])
    test = samples_by_ids(dataset, recorded_split(training, checkpoint, dataset))
    scorer = Scorer(onnx_dir / "model.onnx", threads=2)
    scores: dict[str, list[float]] = {}
    for sample in test:
        resized = {}   # one decode + resize per scale, shared by the layouts at that scale
        for name, prep in layouts(scorer.preprocessing).items():
            if prep.resize_short_side not in resized:
                resized[prep.resize_short_side] = load_image(sample.path, prep)
            crops = make_crops(resized[prep.resize_short_side], prep)
            if name.startswith("contract"):   # the same crops mirrored: 10 crops
                per_crop = scorer.score_crops(np.concatenate([crops, crops[..., ::-1]]))
                scores.setdefault(name, []).append(per_crop[:len(crops)].mean())
                scores.setdefault("contract + mirrored (10)", []).append(per_crop.mean())
            else:
                scores.setdefault(name, []).append(scorer.score_crops(crops).mean())
    mos = np.array([s.score for s in test])
    recorded = json.loads((round_dir / "round.json").read_text())["test"]["srcc"]
    return {"recorded_test_srcc": recorded,
            "layouts": {k: {"srcc": srcc(v, mos), "plcc": plcc(v, mos)} for k, v in scores.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("splits", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for folder in args.splits:
        for round_dir in sorted(p.parent for p in folder.glob("round_*/round.json")):
            tag = f"{folder.name}_{round_dir.name}"
            result_file = args.out / f"{tag}.json"
            if not result_file.exists():
                result_file.write_text(json.dumps(score_round(round_dir, args.out / tag)))
            rows.append(json.loads(result_file.read_text()))
    base = "contract (5 crops)"
    for row in rows:
        assert abs(row["layouts"][base]["srcc"] - row["recorded_test_srcc"]) < 1e-3, row
    print(f"| layout | median test SRCC | mean | mean change vs contract (min, max) | better in | median PLCC |")
    print("|---|---|---|---|---|---|")
    for name in rows[0]["layouts"]:
        values = [r["layouts"][name]["srcc"] for r in rows]
        change = [r["layouts"][name]["srcc"] - r["layouts"][base]["srcc"] for r in rows]
        print(f"| {name} | {statistics.median(values):.4f} | {np.mean(values):.4f} | {np.mean(change):+.4f} "
              f"({min(change):+.4f}, {max(change):+.4f}) | {sum(c > 0 for c in change)}/{len(rows)} | "
              f"{statistics.median(r['layouts'][name]['plcc'] for r in rows):.4f} |")


if __name__ == "__main__":
    main()
