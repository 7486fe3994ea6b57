"""`pinet model ...`: create fresh checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer

from rich.markup import escape

from pinet.cli.common import EXIT_USAGE, fail, reported_errors, require_extra, stderr

app = typer.Typer(help="Create PINet checkpoints.", no_args_is_help=True)


@app.command("create")
def create(
    variant: str = typer.Option(..., "--variant", "-v", help="pinet_r50 (paper), pinet_r18, pinet_lite0"),
    stage: int = typer.Option(2, "--stage", "-s", min=1, max=2, help="1 = pair pre-training net, 2 = scorer"),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write (.safetensors)"),
    init: str = typer.Option("auto", help="Backbone init: auto (ImageNet if its weights are on this machine, "
                                          "else random; never downloads), imagenet, random, or a local weights file"),
    seed: int = typer.Option(0, help="Seed for the randomly initialised parts"),
) -> None:
    """Write a fresh, self-describing checkpoint."""
    require_extra("train", "model create")
    import torch

    from pinet.checkpoint import save_checkpoint
    from pinet.models import auto_init, create_model, default_preprocessing, list_models

    if variant not in list_models():
        raise fail(f"unknown variant {variant!r}; valid variants: {', '.join(list_models())}", EXIT_USAGE)
    used_init = init
    if init == "auto":   # ImageNet weights only when already on this machine: never a download
        used_init, why_random = auto_init(variant)
        if why_random:
            stderr.print(f"[yellow]note:[/] {escape(why_random)}")
    torch.manual_seed(seed)
    try:
        model = create_model(variant, stage, init=used_init)
    except (RuntimeError, FileNotFoundError, ValueError) as err:  # how create_model reports bad weights or init
        raise fail(str(err)) from None
    save_checkpoint(out, model, default_preprocessing(variant),
                    training={"backbone_init": used_init, "seed": seed, "trained": False})
    stderr.print(f"wrote {out} ({variant}, stage {stage}, backbone init {used_init})")


@app.command("pack")
def pack(
    checkpoint: Path = typer.Argument(..., help="A trained checkpoint (.safetensors)"),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write"),
    half: bool = typer.Option(True, "--half/--full", help="Store weights as float16 (half the size)"),
) -> None:
    """Write a shippable copy of a checkpoint: weights and metadata only (no optimizer state)."""
    require_extra("train", "model pack")
    from pinet.checkpoint import file_sha256, load_checkpoint, save_checkpoint

    with reported_errors():
        loaded = load_checkpoint(checkpoint)
    training = {**loaded.header.training, "packed_from_sha256": file_sha256(checkpoint),
                "storage": "float16" if half else "float32"}
    save_checkpoint(out, loaded.model, loaded.header.preprocessing, training=training, half_precision_storage=half)
    stderr.print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, stage {loaded.header.stage})")
