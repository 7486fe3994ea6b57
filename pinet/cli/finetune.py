"""`pinet train finetune`: stage-2 fine-tuning on a human-rated dataset, with the evaluation protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pinet.cli.choices import BackboneInit, CacheLevel, DatasetName, Device, EpochChoice, EvalEngine, Loss, \
    MixPairs, RankTargets
from pinet.cli.nproc import NPROC_OPTION, run_in_processes
from pinet.cli.common import (
    CHECKPOINT_EVERY_OPTION, EXIT_USAGE, PROGRESS_OPTION, THREADS_OPTION, WORKERS_OPTION, device_option,
    fail, reported_errors, require_extra, stderr,
)


def csv_scale_from_options(dataset: str, csv_range: Optional[str], csv_lower_is_better: bool,
                           csv_label: Optional[str] = None):
    """The generic CSV's declared scale (``--csv-range LOW,HIGH``); None for the other datasets."""
    from pinet_training.datasets import CsvScale

    if dataset.strip().lower() != "csv":
        if csv_range is not None or csv_lower_is_better or csv_label is not None:
            raise fail("--csv-range, --csv-label and --csv-lower-is-better only apply to --dataset csv", EXIT_USAGE)
        return None
    if csv_range is None:
        raise fail("--dataset csv needs --csv-range LOW,HIGH (and --csv-lower-is-better if lower scores are better)",
                   EXIT_USAGE)
    try:
        low, high = (float(part) for part in csv_range.split(","))
    except ValueError:
        raise fail(f"--csv-range must be LOW,HIGH (two numbers), got {csv_range!r}", EXIT_USAGE) from None
    if not high > low:
        raise fail(f"--csv-range needs HIGH > LOW, got {csv_range!r}", EXIT_USAGE)
    label = (csv_label or "score").strip()
    if not label or "(" in label:
        raise fail(f"--csv-label must be a short name such as MOS or DMOS, got {csv_label!r}", EXIT_USAGE)
    return CsvScale(low=low, high=high, higher_is_better=not csv_lower_is_better, label=label)


def finetune(
    dataset: DatasetName = typer.Option(..., "--dataset", case_sensitive=False, help="synthetic is the synth "
                                        "set made by `pinet data synth`; clive reads the release's .mat layout or "
                                        "a scores.csv (path,score,role; MOS 0-100)"),
    root: Path = typer.Option(..., "--root", help="Dataset root in its published layout (csv: the CSV or its folder)"),
    out: Path = typer.Option(..., "--out", help="Run folder: log.jsonl, last/best.safetensors, results.json/.md"),
    init: str = typer.Option("none", "--init", help="Stage-1 checkpoint whose shared tensors start the model, "
                             "or 'none' for a fresh model (measures what pre-training adds)"),
    variant: Optional[str] = typer.Option(None, "--variant", help="pinet_lite0, pinet_r18 or pinet_r50 (needed "
                                          "with --init none; otherwise must match the checkpoint)"),
    backbone_init: BackboneInit = typer.Option(BackboneInit.auto, "--backbone-init", help="With --init none: auto "
                                               "(ImageNet if on this machine, else random), imagenet or random"),
    csv_range: Optional[str] = typer.Option(None, "--csv-range", help="--dataset csv: native score range LOW,HIGH"),
    csv_lower_is_better: bool = typer.Option(False, "--csv-lower-is-better", help="--dataset csv: lower is better"),
    csv_label: Optional[str] = typer.Option(None, "--csv-label", help="--dataset csv: what the score is called "
                                            "(MOS, DMOS...; default 'score'); names the checkpoint's output, "
                                            "e.g. 'MOS/100 (clive)'"),
    include_anchors: bool = typer.Option(False, "--include-anchors", help="csv/clive: also use role=anchor rows "
                                         "(left out of training and evaluation by default)"),
    mix_dataset: Optional[DatasetName] = typer.Option(None, "--mix-dataset", case_sensitive=False,
                                                      help="A second dataset trained on at once (e.g. synthetic, "
                                                           "the synth set) with a ranking loss within it only"),
    mix_root: Optional[Path] = typer.Option(None, "--mix-root", help="Root of --mix-dataset"),
    mix_per_batch: int = typer.Option(0, "--mix-per-batch", min=0, help="Crops of the mix set in each batch "
                                      "(the other --batch-size minus N are the primary set)"),
    mix_weight: float = typer.Option(1.0, "--mix-weight", help="Weight of the mix set's fidelity ranking loss"),
    rank_weight: float = typer.Option(0.0, "--rank-weight", help="Weight of a fidelity ranking loss within the "
                                      "primary set, added to the L1/MSE loss"),
    rank_targets: RankTargets = typer.Option(RankTargets.hard, "--rank-targets", help="That ranking's targets: "
                                             "hard (the higher MOS wins) or thurstone (the share of raters "
                                             "expected to prefer it, from each image's score_std; Zhang et al. "
                                             "2021)"),
    mix_eval_max_images: int = typer.Option(300, "--mix-eval-max-images", min=1, help="Held-out mix images "
                                            "(fixed seeded subset) scored on each round's best checkpoint"),
    freeze_backbone_stages: int = typer.Option(0, "--freeze-backbone-stages", min=0, help="Keep the backbone's "
                                               "first K stages fixed (stem = 1; Lite0 has 8, ResNets 5)"),
    eval_engine: EvalEngine = typer.Option(EvalEngine.torch, "--eval-engine", help="torch, or onnx: score "
                                           "validation/test with onnxruntime FP32 of the same weights (~3x faster "
                                           "on CPU)"),
    channels_last: bool = typer.Option(False, "--channels-last", help="NHWC tensors in training (~2x faster "
                                       "on CPU for Lite0's depthwise convs)"),
    train_head_only: bool = typer.Option(False, "--train-head-only", help="Keep backbone + staircase of --init "
                                         "fixed and train branches + regressor on cached representations of the "
                                         "contract crops (fast on CPU; see docs/experiments.md)"),
    feature_cache: Optional[Path] = typer.Option(None, "--feature-cache", help="--train-head-only: cache folder "
                                                 "(default OUT/feature_cache; share it between runs)"),
    cache_level: CacheLevel = typer.Option(CacheLevel.features, "--cache-level", help="--train-head-only: features "
                                           "(backbone + staircase fixed) or taps (only the backbone fixed; the "
                                           "staircase trains too; float16, ~4 MB per image)"),
    cache_random_views: int = typer.Option(0, "--cache-random-views", min=0, help="--train-head-only: K more "
                                           "cached views of every primary image, each as many crops as the "
                                           "contract at seeded random windows (mirrored at random), drawn in "
                                           "training only; costs K/2 more cache time and space with --flip"),
    mix_pairs: MixPairs = typer.Option(MixPairs.any, "--mix-pairs", help="Mix pairs the ranking loss compares: any, "
                                       "or within-reference (groups of 3 images of one synth reference, "
                                       "one shared crop window)"),
    train_last_stage: bool = typer.Option(False, "--train-last-stage", help="--cache-level taps: the backbone's "
                                          "last stage (tap f4 -> f5) trains too, from the cached f4 (BatchNorm "
                                          "statistics stay the init's); the same as --train-last-stages 1"),
    train_last_stages: int = typer.Option(0, "--train-last-stages", min=0, max=3, help="--cache-level taps: the "
                                          "backbone's last N stages train too (2: f3 -> f4 -> f5, from the cached f3; "
                                          "3: from the cached f2)"),
    fresh_head: bool = typer.Option(False, "--fresh-head", help="Take only the backbone from --init; staircase, "
                                    "branches and regressor start from seeded random weights"),
    mix_train_images: Optional[int] = typer.Option(None, "--mix-train-images", min=1, help="--train-head-only: "
                                                   "cache a fixed subset of this many mix training images"),
    ema_decay: float = typer.Option(0.0, "--ema-decay", min=0.0, max=0.9999, help="Validate, snapshot and ship an "
                                    "exponential moving average of the weights with this decay per step (e.g. "
                                    "0.98); 0: off"),
    swa_start_epoch: int = typer.Option(0, "--swa-start-epoch", min=0, help="From this epoch on, validate, "
                                        "snapshot and ship the plain mean of the weights after every step "
                                        "since its start (stochastic weight averaging; before it: the EMA or "
                                        "the raw weights); 0: off"),
    lr_cosine_epochs: int = typer.Option(0, "--lr-cosine-epochs", min=0, help="Lower both learning rates on a "
                                         "half cosine to 0 over this many epochs (then 0); 0: constant"),
    backbone_warmup_epochs: int = typer.Option(0, "--backbone-warmup-epochs", min=0, help="Raise the pretrained "
                                               "backbone's lr linearly from 0 over this many epochs while the rest "
                                               "trains at full lr (spares its features the fresh head's early "
                                               "noise); 0: off"),
    mix_val_refs: int = typer.Option(0, "--mix-val-refs", min=0, help="Move this many of the mix set's training "
                                     "references (a fixed seeded draw) out of training; the epoch is then chosen on "
                                     "the mean of the validation SRCC and theirs; 0: on the validation SRCC alone"),
    epoch_choice: EpochChoice = typer.Option(EpochChoice.validation, "--epoch-choice", help="Which epoch of a "
                                             "split round is the model: validation (its best epoch) or last (a "
                                             "fixed rule, e.g. with --swa-start-epoch; validation only monitors)"),
    train_on_all: bool = typer.Option(False, "--train-on-all", help="No split: train on every image for --epochs "
                                      "(settings chosen earlier by --rounds); no test figures"),
    epochs: int = typer.Option(30, "--epochs", help="Epochs per round"),
    batch_size: int = typer.Option(24, "--batch-size", help="Crops per step"),
    lr_backbone: float = typer.Option(1e-5, "--lr-backbone", help="Adam lr of backbone, staircase and branches"),
    lr_head: float = typer.Option(1e-4, "--lr-head", help="Adam lr of the regressor MLP"),
    weight_decay: float = typer.Option(1e-7, "--weight-decay", help="Adam weight decay"),
    crops_per_image: int = typer.Option(5, "--crops-per-image", help="Random crops per training image per epoch"),
    images_per_epoch: Optional[int] = typer.Option(None, "--images-per-epoch", min=1,
                                                   help="Train on a fresh seeded subset of this many images each "
                                                        "epoch (default: all; for large sets such as the synth set)"),
    val_max_images: Optional[int] = typer.Option(None, "--val-max-images", min=1,
                                                 help="Choose the epoch on a fixed seeded subset of this many "
                                                      "validation images (default: all; the test split is always "
                                                      "scored whole)"),
    no_flip: bool = typer.Option(False, "--no-flip", help="No random horizontal flips"),
    loss: Loss = typer.Option(Loss.l1, "--loss", help="On the normalised 0-1 score"),
    crop_size: Optional[int] = typer.Option(None, "--crop-size", help="Crop size (default: the init contract's, 224)"),
    resize_short_side: str = typer.Option("auto", "--resize-short-side", help="auto (the dataset's suggestion, "
                                          "e.g. KonIQ 384 = 512x384; native otherwise), native, or pixels"),
    val_fraction: float = typer.Option(0.15, "--val-fraction", help="Validation share of the training groups "
                                       "(chooses the epoch; never the test split). 0: no validation part, the "
                                       "whole training part trains (needs --epoch-choice last)"),
    seed: int = typer.Option(0, "--seed", help="Training seed (round r uses seed + r)"),
    split_seed: int = typer.Option(0, "--split-seed", help="Split seed (round r uses split-seed + r)"),
    rounds: int = typer.Option(1, "--rounds", help="Rounds of random 80/20 splits; median/mean reported"),
    device: Device = device_option(),
    workers: int = WORKERS_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    checkpoint_every: int = CHECKPOINT_EVERY_OPTION,
    eval_batch_size: int = typer.Option(8, "--eval-batch-size", help="Images per forward pass in val/test scoring"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (finished rounds are "
                                "kept; with a larger --epochs they train on and the epoch is chosen again)"),
    progress: bool = PROGRESS_OPTION,
    nproc_per_node: int = NPROC_OPTION,
) -> None:
    """Stage-2 fine-tuning on a human-rated dataset; reports test SRCC/KRCC/PLCC/RMSE per round."""
    require_extra("train", "train finetune")
    from pinet_training.finetune import FinetuneSettings

    settings = FinetuneSettings(
        dataset=dataset.value, root=root, out_dir=out, init=init, variant=variant, backbone_init=backbone_init.value,
        csv_scale=csv_scale_from_options(dataset.value, csv_range, csv_lower_is_better, csv_label), epochs=epochs,
        batch_size=batch_size, lr_backbone=lr_backbone, lr_head=lr_head, weight_decay=weight_decay,
        crops_per_image=crops_per_image, images_per_epoch=images_per_epoch, val_max_images=val_max_images,
        flip=not no_flip, loss=loss.value, crop_size=crop_size,
        resize_short_side=resize_short_side, val_fraction=val_fraction, seed=seed, split_seed=split_seed,
        rounds=rounds, device=device.value, workers=workers, threads=threads, checkpoint_every=checkpoint_every,
        eval_batch_size=eval_batch_size, resume=resume, show_progress=progress, include_anchors=include_anchors,
        mix_dataset=mix_dataset.value if mix_dataset is not None else None, mix_root=mix_root, mix_per_batch=mix_per_batch, mix_weight=mix_weight,
        rank_weight=rank_weight, rank_targets=rank_targets.value, mix_eval_max_images=mix_eval_max_images,
        freeze_backbone_stages=freeze_backbone_stages, train_on_all=train_on_all, eval_engine=eval_engine.value,
        channels_last=channels_last, train_head_only=train_head_only, feature_cache=feature_cache,
        cache_level=cache_level.value, cache_random_views=cache_random_views, fresh_head=fresh_head,
        train_last_stages=max(train_last_stages, int(train_last_stage)),
        mix_pairs=mix_pairs.value,
        mix_train_images=mix_train_images, ema_decay=ema_decay, swa_start_epoch=swa_start_epoch,
        lr_cosine_epochs=lr_cosine_epochs,
        backbone_warmup_epochs=backbone_warmup_epochs, mix_val_refs=mix_val_refs, epoch_choice=epoch_choice.value,
        nproc_per_node=nproc_per_node)
    run_in_processes(nproc_per_node, run_finetuning, settings)


def run_finetuning(settings) -> None:
    """The command's work, in each of its processes; only the main one (rank 0) prints."""
    from pinet_training.distributed import context_from_env
    from pinet_training.finetune import run_finetune

    main = context_from_env().rank == 0
    with reported_errors():
        _, results_path = run_finetune(settings, lambda line: stderr.print(line, highlight=False) if main else None)
    if results_path is not None:
        stderr.print(f"done: {results_path} and {results_path.with_suffix('.md')}", highlight=False)
