"""Stage 1: Siamese pair pre-training on the synth set (`pinet train pretrain`).

Loss = rank_weight * CE(rank) + distortion_weight * (CE(distortion of image 1) + CE(of image 2)),
the PINet specification (section 3) with the 1 : 0.5 : 0.5 start it suggests. Optimiser: AdamW
(decoupled weight decay, so the decay does not interact with Adam's per-parameter scaling) with a
linear warm-up to a constant learning rate; the rate is a pure function of the step, so no
scheduler state has to be saved and a resumed run may extend ``--steps``/``--epochs``.

Run folder: ``log.jsonl`` (train and val records), ``last.safetensors`` (weights + optimizer +
progress, every ``checkpoint_every`` steps and at the end), ``best.safetensors`` (best
validation pairwise ranking accuracy, weights only). Both are ordinary stage-1 checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pinet.checkpoint import file_sha256
from pinet.config import ModelConfig
from pinet_runtime.errors import PinetError
from pinet_training.pairs import (
    DEFAULT_MARGIN,
    STREAM_VAL_PAIRS,
    PairBatches,
    PairItem,
    PairSampler,
    check_files_exist,
    load_val_pair_batch,
    read_pair_items,
)
from pinet_training.synth_manifest import manifest_path

BEST_METRIC = "val_rank_accuracy"
DEFAULT_EPOCHS = 3                    # when neither --epochs nor --steps is given


@dataclass(frozen=True)
class PretrainSettings:
    """Every option of `pinet train pretrain` (see its --help for the meaning of each)."""

    data_dir: Path
    variant: str
    out_dir: Path
    init: str = "auto"
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    rank_weight: float = 1.0
    distortion_weight: float = 0.5
    margin: float = DEFAULT_MARGIN
    crop_size: int = 224
    resize_short_side: int | None = None      # None: the variant's default contract (384)
    device: str = "auto"
    workers: int = 2
    threads: int | None = None
    seed: int = 0
    checkpoint_every: int = 200
    resume: bool = False
    val_pairs: int = 512
    show_progress: bool = True
    nproc_per_node: int = 1                   # processes of this run (training.distributed); not compared

    def compared_on_resume(self, manifest_sha256: str) -> dict:
        """The settings that define the run: a resume must match them exactly."""
        return {"variant": self.variant, "manifest_sha256": manifest_sha256, "batch_size": self.batch_size,
                "lr": self.lr, "weight_decay": self.weight_decay, "warmup_steps": self.warmup_steps,
                "rank_weight": self.rank_weight, "distortion_weight": self.distortion_weight,
                "margin": self.margin, "crop_size": self.crop_size, "seed": self.seed, "val_pairs": self.val_pairs}


class PretrainError(PinetError):
    """A problem with the user's input (data, options, run folder); the message says which."""


def resolve_init(variant: str | ModelConfig, init: str) -> tuple[str, str]:
    """``auto`` -> ``imagenet`` when the variant's weights are on this machine (never downloads), else ``random``."""
    if init != "auto":
        return init, ""
    from pinet.models.registry import auto_init

    return auto_init(variant)


def learning_rate(step: int, settings: PretrainSettings) -> float:
    """Linear warm-up over ``warmup_steps``, then constant."""
    if settings.warmup_steps <= 0:
        return settings.lr
    return settings.lr * min(1.0, (step + 1) / settings.warmup_steps)


@dataclass
class PreparedPretraining:
    run: object                      # engine.TrainingRun
    items: list[PairItem]
    batches: PairBatches
    val_pairs: np.ndarray
    total_steps: int
    device: object                   # torch.device
    notes: list[str]
    collective: object = None        # distributed.Collective (one process: every method is the identity)


def prepare(settings: PretrainSettings) -> PreparedPretraining:
    """Check the inputs, build model/optimizer/data and resume if asked. Raises PretrainError and
    engine.ResumeError for bad input (nothing is trained yet)."""
    import torch

    from pinet.models import create_model, default_preprocessing, get_config, list_models
    from pinet_training import distributed
    from pinet_training.engine import (
        TrainingRun,
        configure_threads,
        make_deterministic,
        select_device,
        steps_for,
    )
    from pinet_training.seeding import step_rng
    from pinet_training.pairs import ManifestError

    if settings.variant not in list_models():
        raise PretrainError(f"unknown variant {settings.variant!r}; valid: {', '.join(list_models())}")
    for name in ("batch_size", "checkpoint_every", "crop_size"):
        if getattr(settings, name) < 1:
            raise PretrainError(f"--{name.replace('_', '-')} must be >= 1")
    if settings.margin < 0 or settings.lr <= 0 or settings.workers < 0 or settings.val_pairs < 0:
        raise PretrainError("--margin, --workers and --val-pairs must be >= 0 and --lr > 0")
    if settings.epochs is not None and settings.steps is not None:
        raise PretrainError("give --epochs or --steps, not both")
    try:
        items = read_pair_items(settings.data_dir)
        check_files_exist(items)
    except ManifestError as err:
        raise PretrainError(str(err)) from None

    config = get_config(settings.variant)
    base = default_preprocessing(config)
    try:
        prep = replace(base, crop_size=settings.crop_size,
                       resize_short_side=settings.resize_short_side or base.resize_short_side)
    except ValueError as err:
        raise PretrainError(str(err)) from None
    try:
        device = select_device(settings.device)
    except ValueError as err:
        raise PretrainError(str(err)) from None
    collective, device = distributed.setup(device)
    if settings.batch_size < collective.world_size:
        raise PretrainError(f"--batch-size {settings.batch_size} (the global batch) is smaller than the "
                            f"{collective.world_size} processes sharing it")
    threads = configure_threads(distributed.default_threads(settings.threads))
    make_deterministic(settings.seed)

    out_dir = Path(settings.out_dir)
    last = out_dir / "last.safetensors"
    notes = []
    resuming = settings.resume and last.is_file()
    if settings.resume and not resuming:
        notes.append(f"--resume: {last} does not exist yet, starting a new run")
    if not settings.resume and last.exists():
        raise PretrainError(f"{out_dir} already holds a run ({last.name}); pass --resume to continue it "
                            "or choose another --out")
    init, note = ("random", "") if resuming else resolve_init(config, settings.init)
    if note:
        notes.append(note)
    try:
        model = create_model(config, stage=1, init=init)
    except (RuntimeError, FileNotFoundError) as err:
        raise PretrainError(f"--init {settings.init}: {err}") from None
    if collective.enabled:
        distributed.use_global_batchnorm(model)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)

    train_sampler = PairSampler(items, "train", settings.margin)
    val_sampler = PairSampler(items, "val", settings.margin)
    overlap = set(train_sampler.references) & set(val_sampler.references)
    if overlap:
        raise PretrainError(f"references in both splits of the manifest, e.g. {sorted(overlap)[:3]}")
    try:
        batches = PairBatches(train_sampler, prep, settings.batch_size, settings.seed)
    except ValueError as err:
        raise PretrainError(str(err)) from None
    batches.shard = collective.shard()
    if settings.steps is not None:
        total_steps = steps_for(None, settings.steps, batches.steps_per_epoch)
    else:
        total_steps = steps_for(settings.epochs or DEFAULT_EPOCHS, None, batches.steps_per_epoch)
    val_pairs = val_sampler.sample_pairs(settings.val_pairs, step_rng(settings.seed, 0, STREAM_VAL_PAIRS))
    if not len(val_pairs):
        notes.append("no validation pairs (no val references with pairs above the margin): "
                     "best.safetensors will not be written")

    manifest = manifest_path(settings.data_dir)
    info = {"data_dir": str(Path(settings.data_dir).resolve()), "init": init, "init_requested": settings.init,
            "device": str(device), "threads": threads, "workers": settings.workers, "total_steps": total_steps,
            "steps_per_epoch": batches.steps_per_epoch, "train_pairs_per_epoch": len(train_sampler),
            "train_references": len(train_sampler.references), "val_references": len(val_sampler.references),
            "val_pairs": int(len(val_pairs)), "optimizer": "AdamW", "loss": "rank_weight*CE(rank) + "
            "distortion_weight*(CE(dist1)+CE(dist2))", "lr_schedule": "linear warm-up, then constant"}
    if collective.enabled:
        info["distributed"] = collective.record(settings.batch_size)
    run = TrainingRun(run_dir=out_dir, model=model, optimizer=optimizer, preprocessing=prep,
                      settings=settings.compared_on_resume(file_sha256(manifest)), info=info)
    if resuming:
        run.resume(last)
        notes.append(f"resumed from {last} at step {run.state.step}")
    collective.broadcast_model(model)
    return PreparedPretraining(run=run, items=items, batches=batches, val_pairs=val_pairs,
                               total_steps=total_steps, device=device, notes=notes, collective=collective)


def _validate(prepared: PreparedPretraining, batch_size: int):
    """Pairwise ranking accuracy and distortion-class accuracy on the fixed val pairs (centre crop)."""

    model, device = prepared.run.model, prepared.device
    rank_hits = class_hits = pairs = 0
    for start in range(0, len(prepared.val_pairs), batch_size):
        batch = load_val_pair_batch(prepared.items, prepared.val_pairs[start:start + batch_size],
                                    prepared.run.preprocessing)
        if not len(batch["rank"]):
            continue
        rank_logits, dist1, dist2 = model(batch["image1"].to(device), batch["image2"].to(device))
        rank_hits += int((rank_logits.argmax(1).cpu() == batch["rank"]).sum())
        class_hits += int((dist1.argmax(1).cpu() == batch["class1"]).sum())
        class_hits += int((dist2.argmax(1).cpu() == batch["class2"]).sum())
        pairs += len(batch["rank"])
    if not pairs:
        return {BEST_METRIC: math.nan, "val_distortion_accuracy": math.nan, "val_pairs_scored": 0}
    return {BEST_METRIC: rank_hits / pairs, "val_distortion_accuracy": class_hits / (2 * pairs),
            "val_pairs_scored": pairs}


def train(prepared: PreparedPretraining, settings: PretrainSettings):
    """Run the prepared training to ``prepared.total_steps``; returns the final engine.TrainingState."""
    import torch
    import torch.nn.functional as F

    from pinet_training.engine import LoopPlan, MetricsLogger, fit, step_loader

    run, device, collective = prepared.run, prepared.device, prepared.collective
    logger = MetricsLogger(Path(settings.out_dir) / "log.jsonl")

    def step_fn(step: int, batch: dict) -> dict[str, float]:
        lr = learning_rate(step, settings)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        # With several processes: this process's shard; counts and messages are the global batch's.
        local = len(batch["rank"])
        total = collective.global_batch_size(local, batch["skipped"], logger, step)
        if not total:
            return {"lr": lr, "pairs": 0}
        rank = batch["rank"].to(device)
        rank_logits, dist1, dist2 = run.model(batch["image1"].to(device), batch["image2"].to(device))
        if local:
            rank_loss = F.cross_entropy(rank_logits, rank)
            distortion_loss = (F.cross_entropy(dist1, batch["class1"].to(device))
                               + F.cross_entropy(dist2, batch["class2"].to(device)))
            loss = settings.rank_weight * rank_loss + settings.distortion_weight * distortion_loss
            metrics = {"loss": float(loss.detach()), "rank_loss": float(rank_loss.detach()),
                       "distortion_loss": float(distortion_loss.detach()),
                       "rank_accuracy": float((rank_logits.detach().argmax(1) == rank).float().mean())}
        else:   # an empty shard (its pairs were unreadable) still joins the collectives, adding nothing
            loss = (rank_logits.sum() + dist1.sum() + dist2.sum()) * 0.0
            metrics = {"loss": 0.0, "rank_loss": 0.0, "distortion_loss": 0.0, "rank_accuracy": 0.0}
        if collective.enabled:
            loss = loss * collective.loss_scale(local, total)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        collective.average_gradients(run.model)
        run.optimizer.step()
        return {**collective.weighted_means(metrics, local, total), "lr": lr, "pairs": total}

    validate = (lambda: _validate(prepared, settings.batch_size)) if len(prepared.val_pairs) else None
    plan = LoopPlan(total_steps=prepared.total_steps, steps_per_epoch=prepared.batches.steps_per_epoch,
                    checkpoint_every=settings.checkpoint_every, best_metric=BEST_METRIC)
    loader = step_loader(prepared.batches, run.state.step, prepared.total_steps, settings.workers)
    launch = run.info.get("distributed")
    with torch.autograd.set_grad_enabled(True):
        state = fit(run, plan, loader, step_fn, validate, logger, settings.show_progress, collective.is_main, launch)
    collective.finish()
    return state
