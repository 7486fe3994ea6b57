"""Scoring a stage-2 checkpoint on a dataset: the ONE evaluation path of fine-tuning and `pinet eval`.

Each image becomes the contract's FIXED crops (``pinet_runtime.preprocess.preprocess`` with the
checkpoint's Preprocessing: resize, then e.g. centre + 4 corners) and its score is the mean of
the model's per-crop outputs. Nothing is random, so the same checkpoint, images, batch size and
device give bit-identical scores: the test SRCC that `pinet train finetune` reports is recomputed
exactly by `pinet eval CKPT --split test` (both call :func:`evaluate_checkpoint`).

Images that cannot be decoded are skipped, named in the result, and left out of the metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pinet_runtime.errors import PinetError
from pinet_runtime.files import write_json_atomic
from pinet_runtime.preprocess import ImageDecodeError, Preprocessing, preprocess
from pinet_training.datasets import IQADataset, IQASample

DEFAULT_EVAL_BATCH = 8            # images per forward pass (x the layout's crops)
SPLIT_KEY = "split"               # where finetune stores the split in the checkpoint's training metadata
TEST_KEY = "test"                 # ... and the test metrics
MIN_IMAGES_FOR_METRICS = 3


class EvaluationError(PinetError):
    """Bad evaluation input (checkpoint without a split, split not of this dataset...)."""


def sample_id(sample: IQASample, dataset: IQADataset) -> str:
    """A sample's stable name: its path relative to the dataset root (posix), else the absolute path."""
    try:
        return Path(sample.path).resolve().relative_to(Path(dataset.root).resolve()).as_posix()
    except ValueError:
        return Path(sample.path).resolve().as_posix()


def score_images(model, paths: Sequence[Path], prep: Preprocessing, batch_size: int,
                 device) -> tuple[np.ndarray, list[str]]:
    """Mean per-image score over the contract's fixed crops (NaN for an unreadable image).

    ``model`` must be a stage-2 model in eval mode. Returns (scores float64 [N], problems).
    """
    import torch

    if batch_size < 1:
        raise ValueError("batch size must be >= 1")
    scores = np.full(len(paths), math.nan, dtype=np.float64)
    problems: list[str] = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        crops = torch.from_numpy(np.concatenate([c for _, c in pending])).to(device)
        with torch.no_grad():
            outputs = model(crops).float().cpu().numpy().astype(np.float64)
        start = 0
        for index, image_crops in pending:
            scores[index] = float(outputs[start:start + len(image_crops)].mean())
            start += len(image_crops)
        pending.clear()

    for index, path in enumerate(paths):
        try:
            pending.append((index, preprocess(path, prep)))
        except (ImageDecodeError, ValueError) as err:
            problems.append(str(err) if str(path) in str(err) else f"{path}: {err}")
            continue
        if len(pending) == batch_size:
            flush()
    flush()
    return scores, problems


def finite_quality_metrics(predicted: np.ndarray, target: np.ndarray) -> dict:
    """SRCC/KRCC/PLCC/RMSE (PLCC/RMSE after the 4-parameter logistic) on the finite predictions, as a
    dict; every figure NaN when fewer than MIN_IMAGES_FOR_METRICS remain."""
    from pinet_training.metrics import quality_metrics

    keep = np.isfinite(predicted)
    if int(keep.sum()) < MIN_IMAGES_FOR_METRICS:
        nan = math.nan
        return {"n": int(keep.sum()), "srcc": nan, "krcc": nan, "plcc": nan, "rmse": nan,
                "plcc_raw": nan, "rmse_raw": nan, "fit": "none"}
    return quality_metrics(predicted[keep], np.asarray(target, dtype=np.float64)[keep]).as_dict()


@dataclass
class Evaluation:
    """One checkpoint scored on one set of images."""

    checkpoint: str
    train_dataset: str | None          # from the checkpoint's metadata (None: not fine-tuned here)
    test_dataset: str
    split: str                         # "test" (the split recorded in the checkpoint) or "all"
    chosen_epoch: int
    metrics: dict
    ids: list[str]
    targets: list[float]
    predictions: list[float]
    problems: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def cross_dataset(self) -> bool:
        return self.train_dataset is not None and self.train_dataset != self.test_dataset

    def summary(self) -> dict:
        return {"checkpoint": self.checkpoint, "train_dataset": self.train_dataset,
                "test_dataset": self.test_dataset, "split": self.split, "chosen_epoch": self.chosen_epoch, "cross_dataset": self.cross_dataset,
                "metrics": self.metrics, "skipped_images": self.problems, "settings": self.settings}


def samples_by_ids(dataset: IQADataset, ids: Sequence[str]) -> list[IQASample]:
    """The samples of ``dataset`` with these ids, in their order (KeyError for an id it lacks)."""
    by_id = {sample_id(s, dataset): s for s in dataset.samples}
    return [by_id[i] for i in ids]


def recorded_split(training: dict, checkpoint: Path, dataset: IQADataset) -> list[str]:
    """The test sample ids a fine-tuning run stored, after checking they belong to ``dataset``."""
    split = training.get(SPLIT_KEY) or training.get("info", {}).get(SPLIT_KEY)
    if not split or not split.get("test_ids"):
        raise EvaluationError(f"{checkpoint}: records no test split (it was not written by `pinet train "
                              "finetune`); use --split all to score every image of the dataset")
    if split.get("dataset") != dataset.name:
        raise EvaluationError(f"{checkpoint}: its test split is of dataset {split.get('dataset')!r}, not "
                              f"{dataset.name!r}; use --split all for a cross-dataset test")
    known = {sample_id(s, dataset) for s in dataset.samples}
    missing = [i for i in split["test_ids"] if i not in known]
    if missing:
        raise EvaluationError(f"{checkpoint}: {len(missing)} of its {len(split['test_ids'])} test images are not in "
                              f"the {dataset.name} dataset at {dataset.root} (first: {missing[0]}); "
                              "is --root the folder the model was fine-tuned on?")
    return list(split["test_ids"])


def evaluate_checkpoint(checkpoint: str | Path, dataset: IQADataset, split: str, batch_size: int,
                        device: str = "cpu", test_ids: Sequence[str] | None = None,
                        engine: str = "torch", threads: int | None = None) -> Evaluation:
    """Score ``checkpoint`` on ``dataset``: ``split="all"`` every image, ``"test"`` the recorded
    (or the given ``test_ids``) test split. ``engine="onnx"``: onnxruntime FP32 of the same weights."""
    from pinet_training.onnx_eval import scoring_model

    from pinet.checkpoint import load_checkpoint

    checkpoint = Path(checkpoint)
    loaded = load_checkpoint(checkpoint, stage=2, device=str(device))
    training = loaded.header.training
    if split == "test":
        wanted = list(test_ids) if test_ids is not None else recorded_split(training, checkpoint, dataset)
        samples = samples_by_ids(dataset, wanted)
    elif split == "all":
        samples = list(dataset.samples)
    else:
        raise EvaluationError(f"--split must be test or all, got {split!r}")
    prep = loaded.header.preprocessing
    scorer = scoring_model(loaded.model, engine, threads)
    predictions, problems = score_images(scorer, [s.path for s in samples], prep, batch_size, device)
    targets = np.array([s.score for s in samples], dtype=np.float64)
    recorded = training.get(SPLIT_KEY) or training.get("info", {}).get(SPLIT_KEY) or {}
    train_dataset = recorded.get("dataset")
    return Evaluation(checkpoint=str(checkpoint), train_dataset=train_dataset, test_dataset=dataset.name,
                      split=split, chosen_epoch=int(training.get("chosen_epoch", training.get("epoch", 0)) or 0), metrics=finite_quality_metrics(predictions, targets),
                      ids=[sample_id(s, dataset) for s in samples], targets=targets.tolist(),
                      predictions=predictions.tolist(), problems=problems,
                      settings={"batch_size": batch_size, "device": str(device), "engine": engine,
                                "crop_layout": prep.crop_layout,
                                "crops_per_image": prep.num_crops, "crop_size": prep.crop_size,
                                "resize_short_side": prep.resize_short_side, "dataset_root": str(dataset.root),
                                "val_fraction": training.get("settings", {}).get("val_fraction")})


# ----------------------------------------------------------------------------------------------
# Reports


def write_evaluation(evaluation: Evaluation, out_dir: str | Path) -> tuple[Path, Path]:
    """``eval.json`` (summary + per-image scores) and the protocol's ``report.json``/``report.md``
    (same format as fine-tuning's results, naming the training and the test dataset); atomic."""
    from dataclasses import replace

    from pinet_training.metrics import QualityMetrics
    from pinet_training.protocol import ProtocolDescription, RoundResult, write_report

    out_dir = Path(out_dir)
    data = {**evaluation.summary(),
            "images": [{"id": i, "target": t, "prediction": None if math.isnan(p) else p}
                       for i, t, p in zip(evaluation.ids, evaluation.targets, evaluation.predictions)]}
    json_path = out_dir / "eval.json"
    write_json_atomic(json_path, data)
    m = evaluation.metrics
    metrics = QualityMetrics(**{k: m[k] for k in ("n", "srcc", "krcc", "plcc", "rmse", "plcc_raw", "rmse_raw",
                                                  "fit")})
    train_name = evaluation.train_dataset or "unknown (no fine-tuning metadata)"
    round_result = RoundResult(round_index=0, seed=-1, train_dataset=train_name,
                               test_dataset=evaluation.test_dataset, chosen_epoch=evaluation.chosen_epoch,
                               metrics=metrics, n_train=0, n_val=0, n_test=m["n"])
    s = evaluation.settings
    description = ProtocolDescription(
        kind="cross" if evaluation.split == "all" else "within", train_dataset=train_name,
        test_datasets=(evaluation.test_dataset,), rounds=1, split_unit="image or reference content",
        test_fraction=None if evaluation.split == "all" else 0.2,
        val_fraction=math.nan if s.get("val_fraction") is None else s["val_fraction"])
    description = replace(description, notes=(
        f"`pinet eval` of {evaluation.checkpoint}: trained on {train_name}, tested on {evaluation.test_dataset} "
        f"({s.get('dataset_root')}), split `{evaluation.split}`"
        + (" (cross-dataset test: every image)" if evaluation.cross_dataset else "") + ".",
        f"Fixed crops: {s.get('crops_per_image')} x {s.get('crop_size')} px, layout `{s.get('crop_layout')}`, "
        f"resize short side {s.get('resize_short_side') or 'native'}; {len(evaluation.problems)} unreadable "
        "images skipped (listed in eval.json).",
        "n train/val in the table are not known to `pinet eval` (0).",
    ))
    report_json, report_md = write_report([round_result], out_dir, description)
    return json_path, report_md


