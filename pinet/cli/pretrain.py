"""`pinet train pretrain`: stage-1 Siamese pair pre-training on the synth set."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pinet.cli.choices import Device
from pinet.cli.nproc import NPROC_OPTION, run_in_processes
from pinet.cli.common import (
    CHECKPOINT_EVERY_OPTION, PROGRESS_OPTION, THREADS_OPTION, WORKERS_OPTION, device_option, reported_errors,
    require_extra, stderr,
)


def pretrain(
    data: Path = typer.Option(..., "--data", help="Folder made by `pinet data synth` (holds manifest.csv)"),
    variant: str = typer.Option(..., "--variant", help="Model variant: pinet_lite0, pinet_r18 or pinet_r50"),
    out: Path = typer.Option(..., "--out", help="Run folder: log.jsonl, last.safetensors, best.safetensors"),
    init: str = typer.Option("auto", "--init", help="Backbone start: auto (ImageNet if on this machine, "
                             "else random), imagenet, random, or a local weights file"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs (one pair per train image each); "
                                         "default 3 unless --steps is given"),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimizer steps instead of --epochs"),
    batch_size: int = typer.Option(16, "--batch-size", help="Pairs per step"),
    lr: float = typer.Option(1e-4, "--lr", help="AdamW learning rate (after a linear warm-up)"),
    weight_decay: float = typer.Option(1e-4, "--weight-decay", help="AdamW decoupled weight decay"),
    warmup_steps: int = typer.Option(200, "--warmup-steps", help="Steps of linear learning-rate warm-up"),
    rank_weight: float = typer.Option(1.0, "--rank-weight", help="Weight of the ranking cross-entropy"),
    distortion_weight: float = typer.Option(0.5, "--distortion-weight",
                                            help="Weight of EACH image's distortion-class cross-entropy"),
    margin: float = typer.Option(0.05, "--margin", help="Minimum pseudo-score gap of a pair"),
    crop_size: int = typer.Option(224, "--crop-size", help="Square training crop (pixels)"),
    resize_short_side: Optional[int] = typer.Option(None, "--resize-short-side",
                                                    help="Contract resize (default: the variant's, 384)"),
    device: Device = device_option(),
    workers: int = WORKERS_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    seed: int = typer.Option(0, "--seed", help="Seed for init, pair order, crops and val pairs"),
    checkpoint_every: int = CHECKPOINT_EVERY_OPTION,
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.safetensors"),
    val_pairs: int = typer.Option(512, "--val-pairs", help="Fixed validation pairs from the val references"),
    progress: bool = PROGRESS_OPTION,
    nproc_per_node: int = NPROC_OPTION,
) -> None:
    """Stage-1 pre-training: rank pairs of distorted images and classify their distortions."""
    require_extra("train", "train pretrain")
    from pinet_training.pretrain import PretrainSettings

    settings = PretrainSettings(
        data_dir=data, variant=variant, out_dir=out, init=init, epochs=epochs, steps=steps, batch_size=batch_size,
        lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, rank_weight=rank_weight,
        distortion_weight=distortion_weight, margin=margin, crop_size=crop_size, resize_short_side=resize_short_side,
        device=device.value, workers=workers, threads=threads, seed=seed, checkpoint_every=checkpoint_every,
        resume=resume, val_pairs=val_pairs, show_progress=progress, nproc_per_node=nproc_per_node)
    run_in_processes(nproc_per_node, run_pretraining, settings)


def run_pretraining(settings) -> None:
    """The command's work, in each of its processes; only the main one prints."""
    from pinet_training.pretrain import prepare, train

    with reported_errors():
        prepared = prepare(settings)
    main = prepared.collective.is_main
    info = prepared.run.info
    if main:
        for note in prepared.notes:
            stderr.print(f"[yellow]note:[/] {note}", highlight=False)
        launch = f" x {info['distributed']['world_size']} processes" if "distributed" in info else ""
        stderr.print(f"stage-1 {settings.variant} on {info['device']}{launch}: {info['train_pairs_per_epoch']} "
                     f"pairs/epoch from {info['train_references']} train references, {info['steps_per_epoch']} "
                     f"steps/epoch, {prepared.total_steps} steps; {info['val_pairs']} val pairs", highlight=False)
    state = train(prepared, settings)
    if not main:
        return
    summary = f"done: step {state.step}, last checkpoint {prepared.run.last_path}"
    if state.best_step is not None:
        summary += f"; best val rank accuracy {state.best_metric:.4f} at step {state.best_step} ({prepared.run.best_path})"
    stderr.print(summary, highlight=False)
