"""Stage 2: fine-tune PINet into a quality scorer on a human-rated dataset (`pinet train finetune`).

Paper recipe as defaults (PINET.md section 4): L1 loss on the normalised score (0-1, higher is
better), Adam with weight decay 1e-7, lr 1e-5 for backbone/staircase/branches and 1e-4 for the
regressor MLP, batch 24, 30 epochs, random ``crop_size`` crops (the init checkpoint's contract,
224), 5 crops per training image per epoch, horizontal flips.

Protocol (``pinet_training.protocol``): each round gets its own seeded split by content group
(see ``finetune_data``); the epoch is chosen on the validation split by the engine's
best-checkpoint rule (highest val SRCC, ties: earliest; the same rule as ``protocol.choose_epoch``,
which is checked against it); the test split is scored ONCE, on ``best.safetensors``, with the
contract's fixed crops (``pinet_training.evaluate``). The test metrics and the split (test sample
ids + rule) go into best.safetensors' training metadata so `pinet eval --split test` redoes them.

Run folder (one round): ``log.jsonl``, ``last.safetensors`` (resumable), ``best.safetensors``,
``round.json``. With ``--rounds N > 1`` each round lives in ``round_01/`` ... and the run folder
holds the summary. Either way ``results.json`` + ``results.md`` hold per-round and median/mean
test metrics. Round r uses split seed ``split_seed + r`` and training seed ``seed + r``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from pinet_training.datasets import CsvScale, DatasetError, IQADataset, load_dataset
from pinet_training.evaluate import (
    DEFAULT_EVAL_BATCH, SPLIT_KEY, TEST_KEY, evaluate_checkpoint, quality_metrics, sample_id, score_images,
)
from pinet_training.finetune_data import FinetuneBatches, RoundSplit, round_split
from pinet_training.protocol import write_json_atomic

BEST_METRIC = "val_srcc"
LOSSES = ("l1", "mse")
STREAM_VAL_SUBSET = 7                  # engine.step_rng stream of the --val-max-images draw
HEAD_PREFIX = "regressor."            # trained at --lr-head; everything else at --lr-backbone


class FinetuneError(ValueError):
    """A problem with the user's input (data, options, init checkpoint, run folder)."""


@dataclass(frozen=True)
class FinetuneSettings:
    """Every option of `pinet train finetune` (see its --help)."""

    dataset: str
    root: Path
    out_dir: Path
    init: str = "none"                     # stage-1 (or stage-2) checkpoint path, or "none"
    variant: str | None = None             # required with --init none; must match the checkpoint otherwise
    backbone_init: str = "auto"            # with --init none: auto, imagenet, random
    csv_scale: CsvScale | None = None      # --dataset csv only
    epochs: int = 30
    batch_size: int = 24
    lr_backbone: float = 1e-5
    lr_head: float = 1e-4
    weight_decay: float = 1e-7
    crops_per_image: int = 5
    images_per_epoch: int | None = None    # None: every training image each epoch
    val_max_images: int | None = None      # None: validate (choose the epoch) on the whole val split
    flip: bool = True
    loss: str = "l1"
    crop_size: int | None = None           # None: the init checkpoint's (or the variant's) contract
    resize_short_side: str = "auto"        # auto, native or a number of pixels
    val_fraction: float = 0.15
    seed: int = 0
    split_seed: int = 0
    rounds: int = 1
    device: str = "auto"
    workers: int = 2
    threads: int | None = None
    checkpoint_every: int = 200
    eval_batch_size: int = DEFAULT_EVAL_BATCH
    resume: bool = False
    show_progress: bool = True


def dataset_fingerprint(dataset: IQADataset) -> str:
    """Hash of (sample id, score) pairs: a resume on different data is refused."""
    digest = hashlib.sha256()
    for sample in dataset.samples:
        digest.update(f"{sample_id(sample, dataset)}\t{sample.score!r}\n".encode())
    return digest.hexdigest()


def load_data(settings: FinetuneSettings) -> IQADataset:
    try:
        return load_dataset(settings.dataset, settings.root, csv_scale=settings.csv_scale)
    except (DatasetError, ValueError) as err:
        raise FinetuneError(str(err)) from None


def round_dir(settings: FinetuneSettings, round_index: int) -> Path:
    out = Path(settings.out_dir)
    return out if settings.rounds == 1 else out / f"round_{round_index + 1:02d}"


def check_settings(settings: FinetuneSettings) -> None:
    for name in ("epochs", "batch_size", "crops_per_image", "rounds", "checkpoint_every", "eval_batch_size"):
        if getattr(settings, name) < 1:
            raise FinetuneError(f"--{name.replace('_', '-')} must be >= 1")
    if settings.loss not in LOSSES:
        raise FinetuneError(f"--loss must be one of {', '.join(LOSSES)}, got {settings.loss!r}")
    if min(settings.lr_backbone, settings.lr_head) <= 0 or settings.weight_decay < 0 or settings.workers < 0:
        raise FinetuneError("learning rates must be > 0, --weight-decay and --workers >= 0")
    if not 0 < settings.val_fraction < 1:
        raise FinetuneError("--val-fraction must be between 0 and 1")
    if settings.backbone_init not in ("auto", "imagenet", "random"):
        raise FinetuneError("--backbone-init must be auto, imagenet or random")


def _resize_choice(settings: FinetuneSettings, dataset: IQADataset, base_short_side: int | None) -> tuple[int | None, str]:
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


def build_model(settings: FinetuneSettings):
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
        init, note = resolve_init(config.backbone, settings.backbone_init)
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
    if loaded.header.stage == 1:
        copied = transfer_stage1_to_stage2(loaded.model, model)
        how = f"stage-1 transfer of {len(copied)} shared tensors; regressor freshly initialised"
    else:
        model.load_state_dict(loaded.model.state_dict(), strict=True)
        how = "all tensors of a stage-2 checkpoint"
    from pinet.checkpoint import file_sha256

    return model, loaded.header.preprocessing, {"init": str(path.resolve()), "init_sha256": file_sha256(path),
                                                "init_stage": loaded.header.stage, "note": how}


@dataclass
class PreparedRound:
    run: object                   # engine.TrainingRun
    dataset: IQADataset
    split: RoundSplit
    batches: FinetuneBatches
    total_steps: int
    device: object
    round_index: int
    notes: list[str]


def prepare_round(settings: FinetuneSettings, dataset: IQADataset, round_index: int) -> PreparedRound:
    """Model, optimizer, split and batches of one round; resumes from its last.safetensors if asked."""
    import torch

    from pinet_training.engine import TrainingRun, configure_threads, make_deterministic, select_device

    try:
        device = select_device(settings.device)
    except ValueError as err:
        raise FinetuneError(str(err)) from None
    threads = configure_threads(settings.threads)
    seed = settings.seed + round_index
    make_deterministic(seed)
    model, base_prep, init_info = build_model(settings)
    resize, resize_why = _resize_choice(settings, dataset, base_prep.resize_short_side)
    try:
        prep = replace(base_prep, crop_size=settings.crop_size or base_prep.crop_size, resize_short_side=resize,
                       score_name=f"{dataset.name} quality (normalised 0-1)", score_range=(0.0, 1.0),
                       higher_is_better=True)
    except ValueError as err:
        raise FinetuneError(str(err)) from None
    model.to(device)
    head = [p for n, p in model.named_parameters() if n.startswith(HEAD_PREFIX)]
    body = [p for n, p in model.named_parameters() if not n.startswith(HEAD_PREFIX)]
    optimizer = torch.optim.Adam([{"params": body, "lr": settings.lr_backbone},
                                  {"params": head, "lr": settings.lr_head}], weight_decay=settings.weight_decay)

    split = round_split(dataset, round_index, settings.split_seed, settings.val_fraction)
    if init_info.get("init_stage") != 2:
        # A fresh regressor starts at the mean training score: with an L1 loss, outputs far below
        # every target all get the same gradient sign, which carries no ranking signal.
        start = sum(dataset.samples[i].score for i in split.split.train) / max(len(split.split.train), 1)
        with torch.no_grad():
            model.regressor[-1].bias.fill_(start)
        init_info = {**init_info, "regressor_bias_start": round(start, 6)}
    try:
        batches = FinetuneBatches(dataset, split.split.train, prep, settings.batch_size, settings.crops_per_image,
                                  settings.flip, seed, settings.images_per_epoch)
    except ValueError as err:
        raise FinetuneError(str(err)) from None
    total_steps = settings.epochs * batches.steps_per_epoch
    split_record = {"dataset": dataset.name, "rule": split.rule, "seed": split.split.seed, "round": round_index,
                    "note": split.note, "test_ids": [sample_id(dataset.samples[i], dataset) for i in split.split.test],
                    "n_train": len(split.split.train), "n_val": len(split.split.val), "n_test": len(split.split.test)}
    compared = {"variant": model.config.variant, "dataset": dataset.name, "data_sha256": dataset_fingerprint(dataset),
                "init": init_info.get("init_sha256", f"none/{init_info.get('backbone_init')}"),
                "batch_size": settings.batch_size, "lr_backbone": settings.lr_backbone, "lr_head": settings.lr_head,
                "weight_decay": settings.weight_decay, "crops_per_image": settings.crops_per_image,
                "images_per_epoch": settings.images_per_epoch,
                "val_max_images": settings.val_max_images, "flip": settings.flip, "loss": settings.loss,
                "val_fraction": settings.val_fraction, "seed": seed,
                "split_seed": settings.split_seed, "round": round_index}
    info = {**init_info, "dataset_root": str(Path(dataset.root).resolve()), "resize": resize_why,
            "device": str(device), "threads": threads, "workers": settings.workers, "epochs": settings.epochs,
            "total_steps": total_steps, "steps_per_epoch": batches.steps_per_epoch, "optimizer": "Adam",
            "eval_batch_size": settings.eval_batch_size, SPLIT_KEY: split_record}
    directory = round_dir(settings, round_index)
    run = TrainingRun(run_dir=directory, model=model, optimizer=optimizer, preprocessing=prep,
                      settings=compared, info=info)
    notes = [init_info["note"]] if init_info.get("note") else []
    last = run.last_path
    if settings.resume and last.is_file():
        run.resume(last)
        notes.append(f"resumed from {last} at step {run.state.step}")
    elif settings.resume:
        notes.append(f"--resume: {last} does not exist yet, starting round {round_index + 1} afresh")
    elif last.exists():
        raise FinetuneError(f"{directory} already holds a run ({last.name}); pass --resume to continue it "
                            "or choose another --out")
    return PreparedRound(run=run, dataset=dataset, split=split, batches=batches, total_steps=total_steps,
                         device=device, round_index=round_index, notes=notes)


def validation_metrics(model, dataset: IQADataset, indices, prep, batch_size: int, device) -> dict[str, float]:
    """Validation SRCC/PLCC etc. with the contract's fixed crops (the model is in eval mode)."""
    samples = dataset.subset(indices)
    scores, _ = score_images(model, [s.path for s in samples], prep, batch_size, device)
    metrics = quality_metrics(scores, [s.score for s in samples])
    return {f"val_{k}": float(v) for k, v in metrics.items() if k in ("srcc", "krcc", "plcc", "rmse")}


def train_round(prepared: PreparedRound, settings: FinetuneSettings):
    """Run the round to its last step; returns the engine's final TrainingState."""
    import torch
    import torch.nn.functional as F

    from pinet_training.engine import LoopPlan, MetricsLogger, fit, step_loader

    run, device = prepared.run, prepared.device
    logger = MetricsLogger(Path(run.run_dir) / "log.jsonl")
    loss_fn = F.l1_loss if settings.loss == "l1" else F.mse_loss

    def step_fn(step: int, batch: dict) -> dict[str, float]:
        for message in batch["skipped"]:
            logger.log({"kind": "skipped", "step": step + 1, "problem": message})
        if not len(batch["targets"]):
            return {"images": 0}
        predictions = run.model(batch["crops"].to(device))
        loss = loss_fn(predictions, batch["targets"].to(device))
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        return {"loss": float(loss.detach()), "images": len(batch["targets"])}

    def validate() -> dict[str, float]:
        # Looked up at call time so tests can plant a validation curve.
        return validation_metrics(run.model, prepared.dataset, validation_subset(prepared.split.split.val, settings),
                                  run.preprocessing, settings.eval_batch_size, device)

    plan = LoopPlan(total_steps=prepared.total_steps, steps_per_epoch=prepared.batches.steps_per_epoch,
                    checkpoint_every=settings.checkpoint_every, best_metric=BEST_METRIC)
    loader = step_loader(prepared.batches, run.state.step, prepared.total_steps, settings.workers)
    with torch.autograd.set_grad_enabled(True):
        return fit(run, plan, loader, step_fn, validate, logger, settings.show_progress)


def validation_subset(val: tuple[int, ...], settings: FinetuneSettings) -> tuple[int, ...]:
    """The val images that choose the epoch: all, or a fixed seeded subset of --val-max-images."""
    if settings.val_max_images is None or len(val) <= settings.val_max_images:
        return tuple(val)
    from pinet_training.engine import step_rng

    chosen = step_rng(settings.seed, 0, STREAM_VAL_SUBSET).choice(len(val), settings.val_max_images, replace=False)
    return tuple(val[i] for i in sorted(chosen))


def chosen_epoch(prepared: PreparedRound) -> int:
    """protocol.choose_epoch over the logged validation SRCC; must agree with best.safetensors."""
    from pinet_training.engine import MetricsLogger
    from pinet_training.protocol import EpochRecord, choose_epoch

    run = prepared.run
    records = MetricsLogger(Path(run.run_dir) / "log.jsonl").records("val")
    if not records or run.state.best_step is None:
        raise FinetuneError(f"{run.run_dir}: validation SRCC was undefined at every epoch (too few or constant "
                            "validation images?), so no best checkpoint exists")
    history = [EpochRecord(epoch=int(r["epoch"]), val_srcc=float(r[BEST_METRIC]) if r[BEST_METRIC] is not None
                           else float("nan")) for r in records]
    epoch = choose_epoch(history)
    best_epoch = run.state.best_step // prepared.batches.steps_per_epoch
    if epoch != best_epoch:
        raise RuntimeError(f"epoch choice disagrees: protocol says {epoch}, best.safetensors is epoch {best_epoch}")
    return epoch


def finish_round(prepared: PreparedRound, settings: FinetuneSettings) -> dict:
    """Score the test split once with best.safetensors, store metrics + split in it, write round.json."""
    from pinet.checkpoint import load_checkpoint, save_checkpoint

    epoch = chosen_epoch(prepared)
    run = prepared.run
    split_record = run.info[SPLIT_KEY]
    evaluation = evaluate_checkpoint(run.best_path, prepared.dataset, "test", settings.eval_batch_size,
                                     str(prepared.device), test_ids=split_record["test_ids"])
    loaded = load_checkpoint(run.best_path, stage=2)
    training = {**loaded.header.training, SPLIT_KEY: split_record, "chosen_epoch": epoch,
                TEST_KEY: {**evaluation.metrics, "eval_batch_size": settings.eval_batch_size,
                           "device": str(prepared.device), "skipped_images": evaluation.problems}}
    save_checkpoint(run.best_path, loaded.model, loaded.header.preprocessing, training)
    result = {"round": prepared.round_index, "split_seed": split_record["seed"], "chosen_epoch": epoch,
              "best_step": run.state.best_step, "val_srcc": run.state.best_metric, "test": evaluation.metrics,
              "n_train": split_record["n_train"], "n_val": split_record["n_val"], "n_test": split_record["n_test"],
              "note": split_record["note"], "checkpoint": str(run.best_path)}
    write_json_atomic(Path(run.run_dir) / "round.json", result)
    return result


def write_results(settings: FinetuneSettings, dataset: IQADataset, rounds: list[dict]) -> tuple[Path, Path]:
    """RUN/results.json + RUN/results.md via protocol.write_report (per round, median/mean)."""
    import math

    from pinet_training.metrics import QualityMetrics
    from pinet_training.protocol import REPORT_JSON, REPORT_MARKDOWN, RoundResult, within_dataset_description, \
        write_report

    results = []
    for r in rounds:
        values = {k: (math.nan if r["test"][k] is None else r["test"][k]) for k in
                  ("srcc", "krcc", "plcc", "rmse", "plcc_raw", "rmse_raw")}
        results.append(RoundResult(round_index=r["round"], seed=r["split_seed"], train_dataset=dataset.name,
                                   test_dataset=dataset.name, chosen_epoch=r["chosen_epoch"],
                                   metrics=QualityMetrics(n=r["test"]["n"], fit=r["test"]["fit"], **values),
                                   n_train=r["n_train"], n_val=r["n_val"], n_test=r["n_test"]))
    description = within_dataset_description(dataset, len(rounds), val_fraction=settings.val_fraction)
    notes = tuple(dict.fromkeys(r["note"] for r in rounds if r["note"]))
    description = replace(description, notes=notes + (
        "test split scored once per round on best.safetensors with the contract's fixed crops; "
        "`pinet eval ROUND/best.safetensors --split test` reproduces it",))
    out = Path(settings.out_dir)
    write_report(results, out, description)
    final_json, final_md = out / "results.json", out / "results.md"
    os.replace(out / REPORT_JSON, final_json)
    os.replace(out / REPORT_MARKDOWN, final_md)
    return final_json, final_md


def run_finetune(settings: FinetuneSettings, say: Callable[[str], None]) -> tuple[list[dict], Path]:
    """All rounds (finished rounds are skipped on --resume), then the results files."""
    check_settings(settings)
    dataset = load_data(settings)
    if dataset.name == "synthetic" and settings.rounds > 1:
        raise FinetuneError("--rounds > 1 needs random splits, but the synthetic set's split is fixed by its "
                            "manifest; use --rounds 1")
    results = []
    for round_index in range(settings.rounds):
        directory = round_dir(settings, round_index)
        done = directory / "round.json"
        if settings.resume and done.is_file():
            results.append(json.loads(done.read_text()))
            say(f"round {round_index + 1}/{settings.rounds}: already finished ({done})")
            continue
        prepared = prepare_round(settings, dataset, round_index)
        for note in prepared.notes:
            say(f"note: {note}")
        info, split = prepared.run.info, prepared.split.split
        say(f"round {round_index + 1}/{settings.rounds}: {info[SPLIT_KEY]['dataset']} train/val/test = "
            f"{len(split.train)}/{len(split.val)}/{len(split.test)} images, {info['steps_per_epoch']} steps/epoch x "
            f"{settings.epochs} epochs on {info['device']}")
        train_round(prepared, settings)
        result = finish_round(prepared, settings)
        say(f"round {round_index + 1}: epoch {result['chosen_epoch']} chosen on validation "
            f"(val SRCC {result['val_srcc']:.4f}); test SRCC {result['test']['srcc']:.4f}")
        results.append(result)
    json_path, _ = write_results(settings, dataset, results)
    return results, json_path
