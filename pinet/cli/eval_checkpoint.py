"""`pinet eval`: score a fine-tuned checkpoint on a dataset (its recorded test split, or all of it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pinet.cli.choices import DatasetName, Device, EvalSplit
from pinet.cli.common import THREADS_OPTION, device_option, fail, reported_errors, require_extra, stderr


def eval_checkpoint(
    checkpoint: Path = typer.Argument(..., help="A stage-2 checkpoint (e.g. RUN/best.safetensors)"),
    dataset: DatasetName = typer.Option(..., "--dataset", case_sensitive=False, help="The dataset's name"),
    root: Path = typer.Option(..., "--root", help="Dataset root in its published layout"),
    split: EvalSplit = typer.Option(EvalSplit.test, "--split", help="test: the test split recorded by `pinet train "
                                    "finetune` (same dataset only); all: every image (cross-dataset test)"),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for eval.json, report.json, report.md "
                                       "(default: CKPT's folder/eval_<dataset>_<split>)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per forward pass (default: the "
                                             "one fine-tuning used, so its test SRCC is reproduced exactly)"),
    device: Device = device_option(Device.cpu),
    threads: Optional[int] = THREADS_OPTION,
    csv_range: Optional[str] = typer.Option(None, "--csv-range", help="--dataset csv: native score range LOW,HIGH"),
    csv_lower_is_better: bool = typer.Option(False, "--csv-lower-is-better", help="--dataset csv: lower is better"),
    csv_label: Optional[str] = typer.Option(None, "--csv-label", help="--dataset csv: what the score is called"),
    include_anchors: bool = typer.Option(False, "--include-anchors", help="csv/clive: also score role=anchor rows"),
) -> None:
    """Evaluate a checkpoint: SRCC, KRCC, PLCC, RMSE over the contract's fixed crops."""
    require_extra("train", "eval")
    from pinet.checkpoint import read_header
    from pinet.cli.finetune import csv_scale_from_options
    from pinet_training.datasets import load_dataset
    from pinet_training.engine import configure_threads, select_device
    from pinet_training.checkpoint_evaluation import DEFAULT_EVAL_BATCH, evaluate_checkpoint, write_evaluation

    scale = csv_scale_from_options(dataset.value, csv_range, csv_lower_is_better, csv_label)
    with reported_errors():
        header = read_header(checkpoint)
        if header.stage != 2:
            raise fail(f"{checkpoint}: is a stage-{header.stage} checkpoint; `pinet eval` needs a fine-tuned "
                       "(stage-2) one")
        data = load_dataset(dataset.value, root, csv_scale=scale, include_anchors=include_anchors)
        recorded = (header.training.get("test") or {}).get("eval_batch_size")
        size = batch_size or recorded or DEFAULT_EVAL_BATCH
        configure_threads(threads)
        chosen_device = select_device(device.value)
        evaluation = evaluate_checkpoint(checkpoint, data, split.value, size, str(chosen_device))
    out_dir = out or checkpoint.resolve().parent / f"eval_{data.name}_{split.value}"
    json_path, md_path = write_evaluation(evaluation, out_dir)
    m = evaluation.metrics
    kind = "cross-dataset" if evaluation.cross_dataset else "within-dataset"
    stderr.print(f"{kind}: trained on {evaluation.train_dataset or 'unknown'}, tested on {data.name} "
                 f"({split.value}, {m['n']} images): SRCC {m['srcc']:.4f} KRCC {m['krcc']:.4f} PLCC {m['plcc']:.4f} "
                 f"RMSE {m['rmse']:.4f}", highlight=False)
    for problem in evaluation.problems:
        stderr.print(f"[yellow]skipped:[/] {problem}", highlight=False)
    stderr.print(f"wrote {json_path} and {md_path}", highlight=False)
    typer.echo(json.dumps(evaluation.summary()["metrics"], sort_keys=True))
