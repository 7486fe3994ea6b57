"""Stage-2 model set-up: the init checkpoint (or a fresh model) and the contract's resize choice."""

from __future__ import annotations

from pathlib import Path

from pinet_training.datasets import IQADataset
from pinet_training.finetune_report import FinetuneError


def resize_choice(settings, dataset: IQADataset, base_short_side: int | None) -> tuple[int | None, str]:
    """The contract's resize for this dataset and a sentence saying why."""
    choice = settings.resize_short_side.strip().lower()
    if choice == "native":
        return None, "native resolution (--resize-short-side native)"
    if choice != "auto":
        try:
            return int(choice), f"short side {int(choice)} px (--resize-short-side)"
        except ValueError:
            raise FinetuneError(f"--resize-short-side must be auto, native or a number, got {choice!r}") from None
    if dataset.resize_short_side is not None:
        how = (" (KonIQ-10k 1024x768 -> 512x384, the paper's resize)" if dataset.name == "koniq10k" else "")
        return dataset.resize_short_side, f"short side {dataset.resize_short_side} px, the dataset's suggestion{how}"
    if dataset.name == "synthetic":
        return base_short_side, f"the init contract's short side {base_short_side} (stage-1 data resolution)"
    return None, "native resolution (the paper crops these datasets at native size)"


def build_model(settings):
    """(stage-2 model, base Preprocessing, init description). Seeds must be set before (regressor init)."""
    from pinet.checkpoint import CheckpointError, load_checkpoint, transfer_stage1_to_stage2
    from pinet.models import create_model, default_preprocessing, get_config, list_models
    from pinet_training.pretrain import resolve_init

    if settings.init.strip().lower() in ("", "none"):
        if settings.variant is None:
            raise FinetuneError("--variant is needed with --init none")
        if settings.variant not in list_models():
            raise FinetuneError(f"unknown variant {settings.variant!r}; valid: {', '.join(list_models())}")
        config = get_config(settings.variant)
        init, note = resolve_init(config, settings.backbone_init)
        try:
            model = create_model(config, stage=2, init=init)
        except (RuntimeError, FileNotFoundError) as err:
            raise FinetuneError(f"--backbone-init {settings.backbone_init}: {err}") from None
        return model, default_preprocessing(config), {"init": "none", "backbone_init": init, "note": note}
    path = Path(settings.init)
    try:
        loaded = load_checkpoint(path)
    except CheckpointError as err:
        raise FinetuneError(f"--init: {err}") from None
    config = loaded.header.model_config
    if settings.variant is not None and settings.variant != config.variant:
        raise FinetuneError(f"--init {path} is a {config.variant} checkpoint but --variant {settings.variant} was asked")
    model = create_model(config, stage=2, init="random")
    if settings.fresh_head:
        # The seeded random staircase, branches and regressor stay; only the backbone comes from --init.
        model.backbone.load_state_dict(loaded.model.backbone.state_dict(), strict=True)
        how = "backbone of the init only (--fresh-head): staircase, branches and regressor freshly initialised"
    elif loaded.header.stage == 1:
        copied = transfer_stage1_to_stage2(loaded.model, model)
        how = f"stage-1 transfer of {len(copied)} shared tensors; regressor freshly initialised"
    else:
        model.load_state_dict(loaded.model.state_dict(), strict=True)
        how = "all tensors of a stage-2 checkpoint"
    from pinet.checkpoint import file_sha256

    return model, loaded.header.preprocessing, {"init": str(path.resolve()), "init_sha256": file_sha256(path),
                                                "init_stage": loaded.header.stage, "note": how,
                                                "fresh_head": settings.fresh_head}


def recentre_output(model, dataset: IQADataset, train: tuple[int, ...], prep, seed: int, device,
                    channels_last: bool) -> dict:
    """Add (mean training score - mean output on up to 24 seeded training crops) to the last bias."""
    import torch

    from pinet_training.finetune_data import FinetuneBatches

    batch = FinetuneBatches(dataset, train, prep, 24, 1, False, seed + 7919)(0)
    crops = batch["crops"].to(device)
    if channels_last:
        crops = crops.contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.no_grad():
        shift = sum(dataset.samples[i].score for i in train) / len(train) - float(model(crops).mean())
        model.regressor[-1].bias.add_(shift)
    model.train()
    return {"regressor_bias_shift": round(shift, 6)}
