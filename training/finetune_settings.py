"""The options of a fine-tuning run, their checks, and loading its datasets."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pinet_training.datasets import CsvScale, DatasetError, IQADataset, load_dataset
from pinet_training.checkpoint_evaluation import DEFAULT_EVAL_BATCH, sample_id
from pinet_training.finetune_report import FinetuneError
from pinet_training.head_cache import LEVELS, TRAINABLE_STAGES
from pinet_training.lr_schedule import LrSchedule
from pinet_training.mixed import RANK_TARGETS

LOSSES = ("l1", "mse")
EPOCH_CHOICES = ("validation", "last")    # --epoch-choice: which epoch of a split round is the model
MIX_PAIRS = ("any", "within-reference")   # which mix pairs the ranking loss compares (--mix-pairs)


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
    nproc_per_node: int = 1            # processes of this run (training.distributed); not compared
    include_anchors: bool = False          # keep a CSV's role=anchor rows (csv, clive)
    mix_dataset: str | None = None         # a second dataset trained on at once (ranking loss only)
    mix_root: Path | None = None
    mix_per_batch: int = 0                 # crops of the mix set in every batch of batch_size
    mix_weight: float = 1.0                # weight of the mix set's fidelity ranking loss
    rank_weight: float = 0.0               # fidelity ranking within the primary set, added to L1/MSE
    rank_targets: str = "hard"             # that ranking's targets: hard order, or thurstone (raters' spread)
    mix_eval_max_images: int = 300         # held-out mix images scored on best.safetensors (fixed subset)
    freeze_backbone_stages: int = 0        # keep the backbone's first K stages (stem = 1) fixed
    train_on_all: bool = False             # no val/test split: every image trains, the last epoch ships
    eval_engine: str = "torch"             # torch or onnx (onnxruntime FP32 of the same weights) for val/test
    channels_last: bool = False            # NHWC tensors in training: ~2x faster depthwise convs on CPU
    train_head_only: bool = False          # backbone + staircase fixed; head trained on cached representations
    feature_cache: Path | None = None      # where --train-head-only keeps them (default OUT/feature_cache)
    cache_level: str = "features"          # --train-head-only: cache R (staircase fixed) or the taps (it trains)
    cache_random_views: int = 0            # --train-head-only: views of random windows per primary image
    mix_pairs: str = "any"                 # any | within-reference: which mix pairs the ranking loss compares
    train_last_stages: int = 0             # --cache-level taps: the last N backbone stages train (N = 3: f2 -> f5)
    fresh_head: bool = False               # only the backbone from --init; staircase, branches, regressor random
    mix_train_images: int | None = None    # --train-head-only: a fixed subset of the mix set's training images
    ema_decay: float = 0.0                 # > 0: validate and ship a moving average of the weights (weight_average)
    swa_start_epoch: int = 0               # > 0: from this epoch on, the uniform mean of the weights instead
    lr_cosine_epochs: int = 0              # > 0: both lrs fall on a half cosine to 0 over this many epochs
    backbone_warmup_epochs: int = 0        # > 0: the backbone's lr rises linearly from 0 over this many epochs
    mix_val_refs: int = 0                  # > 0: mix training refs moved to validation; the epoch is chosen jointly
    epoch_choice: str = "validation"       # validation: its best epoch ships; last: the last (validation monitors)

    @property
    def validates(self) -> bool:
        """Whether each epoch is scored on a validation part (not with --train-on-all or --val-fraction 0)."""
        return not self.train_on_all and self.val_fraction > 0


def dataset_fingerprint(dataset: IQADataset) -> str:
    """Hash of (sample id, score) pairs: a resume on different data is refused."""
    digest = hashlib.sha256()
    for sample in dataset.samples:
        digest.update(f"{sample_id(sample, dataset)}\t{sample.score!r}\n".encode())
    return digest.hexdigest()


def load_data(settings: FinetuneSettings) -> IQADataset:
    try:
        dataset = load_dataset(settings.dataset, settings.root, csv_scale=settings.csv_scale,
                               include_anchors=settings.include_anchors)
    except (DatasetError, ValueError) as err:
        raise FinetuneError(str(err)) from None
    if settings.rank_targets == "thurstone":
        lacking = [sample.path for sample in dataset.samples if not (sample.score_spread or 0.0) > 0]
        if lacking:
            raise FinetuneError(f"--rank-targets thurstone needs the raters' standard deviation (> 0) of every "
                                f"image of {dataset.name} ({dataset.root}): {len(lacking)} of {len(dataset)} have "
                                f"none (first: {lacking[0]}); the generic CSV layout reads it from a score_std column")
    return dataset


def spread_fingerprint(dataset: IQADataset) -> str:
    """sha256 of every sample's raters' standard deviation (part of a Thurstone run's resume check)."""
    digest = hashlib.sha256()
    for sample in dataset.samples:
        digest.update(f"{sample.score_spread!r}\n".encode())
    return digest.hexdigest()


def load_mix(settings: FinetuneSettings) -> IQADataset | None:
    if settings.mix_dataset is None:
        return None
    if settings.mix_root is None:
        raise FinetuneError("--mix-dataset needs --mix-root")
    try:
        return load_dataset(settings.mix_dataset, settings.mix_root)
    except (DatasetError, ValueError) as err:
        raise FinetuneError(f"--mix-dataset {settings.mix_dataset}: {err}") from None


def compared_settings(settings: FinetuneSettings, variant: str, dataset: IQADataset, mix: IQADataset | None,
                      init_info: dict, seed: int, round_index: int) -> dict:
    """What a resume must find unchanged (stored in every checkpoint of the round); options at their
    default are left out, so runs from before an option existed still resume."""
    compared = {"variant": variant, "dataset": dataset.name, "data_sha256": dataset_fingerprint(dataset),
                "init": init_info.get("init_sha256", f"none/{init_info.get('backbone_init')}"),
                "batch_size": settings.batch_size, "lr_backbone": settings.lr_backbone, "lr_head": settings.lr_head,
                "weight_decay": settings.weight_decay, "crops_per_image": settings.crops_per_image,
                "images_per_epoch": settings.images_per_epoch,
                "val_max_images": settings.val_max_images, "flip": settings.flip, "loss": settings.loss,
                "val_fraction": settings.val_fraction, "seed": seed,
                "split_seed": settings.split_seed, "round": round_index}
    if mix is not None:
        compared.update(mix_dataset=mix.name, mix_data_sha256=dataset_fingerprint(mix), mix_weight=settings.mix_weight,
                        mix_per_batch=settings.mix_per_batch, rank_weight=settings.rank_weight)
    elif settings.rank_weight:
        compared["rank_weight"] = settings.rank_weight
    if settings.eval_engine != "torch":
        compared["eval_engine"] = settings.eval_engine
    for key in ("freeze_backbone_stages", "include_anchors", "train_on_all", "channels_last", "train_head_only",
                "mix_train_images", "fresh_head", "train_last_stages", "ema_decay", "swa_start_epoch",
                "lr_cosine_epochs", "backbone_warmup_epochs", "mix_val_refs", "cache_random_views"):
        if getattr(settings, key):
            compared[key] = getattr(settings, key)
    if settings.mix_pairs != "any":
        compared["mix_pairs"] = settings.mix_pairs
    if settings.epoch_choice != "validation":
        compared["epoch_choice"] = settings.epoch_choice
    if settings.rank_targets != "hard":
        compared.update(rank_targets=settings.rank_targets, data_spread_sha256=spread_fingerprint(dataset))
    if settings.train_head_only:
        compared["cache_level"] = settings.cache_level
    return compared


def round_dir(settings: FinetuneSettings, round_index: int) -> Path:
    out = Path(settings.out_dir)
    return out if settings.rounds == 1 else out / f"round_{round_index + 1:02d}"


def trained_epochs(directory: Path) -> int:
    """How many epochs the round in ``directory`` has trained, from its last.safetensors (an epoch
    that was started counts whole, so a round stopped part-way through an extension reads as longer)."""
    from pinet.checkpoint import read_header

    last = Path(directory) / "last.safetensors"
    if not last.is_file():
        raise FinetuneError(f"{directory}: round.json is there but {last.name} is not, so how far the round "
                            "trained is unknown; move the folder away to train it afresh")
    training = read_header(last).training
    return -(-int(training["step"]) // int(training["info"]["steps_per_epoch"]))


def lr_schedule(settings: FinetuneSettings) -> LrSchedule:
    return LrSchedule(settings.lr_backbone, settings.lr_head, settings.lr_cosine_epochs,
                      settings.backbone_warmup_epochs)


def check_settings(settings: FinetuneSettings) -> None:
    for name in ("epochs", "batch_size", "crops_per_image", "rounds", "checkpoint_every", "eval_batch_size"):
        if getattr(settings, name) < 1:
            raise FinetuneError(f"--{name.replace('_', '-')} must be >= 1")
    if settings.loss not in LOSSES:
        raise FinetuneError(f"--loss must be one of {', '.join(LOSSES)}, got {settings.loss!r}")
    if min(settings.lr_backbone, settings.lr_head) <= 0 or settings.weight_decay < 0 or settings.workers < 0:
        raise FinetuneError("learning rates must be > 0, --weight-decay and --workers >= 0")
    if not 0 <= settings.val_fraction < 1:
        raise FinetuneError(f"--val-fraction must be in [0, 1), got {settings.val_fraction}")
    if settings.val_fraction == 0 and not settings.train_on_all and settings.epoch_choice != "last":
        raise FinetuneError("--val-fraction 0 leaves no validation part to choose the epoch on: add "
                            "--epoch-choice last (the last epoch is the model, fixed before training)")
    if settings.backbone_init not in ("auto", "imagenet", "random"):
        raise FinetuneError("--backbone-init must be auto, imagenet or random")
    if (settings.mix_dataset is None) != (settings.mix_per_batch == 0):
        raise FinetuneError("--mix-dataset and --mix-per-batch N (N >= 1) go together")
    if settings.mix_dataset is not None and not settings.mix_per_batch < settings.batch_size:
        raise FinetuneError(f"--mix-per-batch {settings.mix_per_batch} must be below --batch-size "
                            f"{settings.batch_size} (the rest of each batch is the primary set)")
    if min(settings.mix_weight, settings.rank_weight, settings.freeze_backbone_stages) < 0:
        raise FinetuneError("--mix-weight, --rank-weight and --freeze-backbone-stages must be >= 0")
    if settings.lr_cosine_epochs < 0:
        raise FinetuneError(f"--lr-cosine-epochs must be >= 0 (0: constant learning rates), got {settings.lr_cosine_epochs}")
    if settings.backbone_warmup_epochs < 0:
        raise FinetuneError(f"--backbone-warmup-epochs must be >= 0 (0: no warm-up), got {settings.backbone_warmup_epochs}")
    if settings.backbone_warmup_epochs and settings.train_head_only and not settings.train_last_stages:
        raise FinetuneError("--backbone-warmup-epochs: the backbone does not train here (--train-head-only "
                            "without --train-last-stages), so it has no learning rate to warm up")
    if not 0.0 <= settings.ema_decay < 1.0:
        raise FinetuneError(f"--ema-decay must be in [0, 1) (0: off), got {settings.ema_decay}")
    if settings.swa_start_epoch < 0:
        raise FinetuneError(f"--swa-start-epoch must be >= 0 (0: off), got {settings.swa_start_epoch}")
    if settings.swa_start_epoch > settings.epochs:
        raise FinetuneError(f"--swa-start-epoch {settings.swa_start_epoch} is after the last epoch "
                            f"({settings.epochs}): nothing would be averaged")
    if settings.epoch_choice not in EPOCH_CHOICES:
        raise FinetuneError(f"--epoch-choice must be one of {', '.join(EPOCH_CHOICES)}, got {settings.epoch_choice!r}")
    if settings.rank_targets not in RANK_TARGETS:
        raise FinetuneError(f"--rank-targets must be one of {', '.join(RANK_TARGETS)}, got {settings.rank_targets!r}")
    if settings.rank_targets != "hard" and not settings.rank_weight:
        raise FinetuneError(f"--rank-targets {settings.rank_targets} sets the targets of the primary set's ranking "
                            "loss, which is off: add --rank-weight W (W > 0)")
    if settings.mix_val_refs < 0:
        raise FinetuneError(f"--mix-val-refs must be >= 0 (0: the epoch is chosen on the primary set alone), "
                            f"got {settings.mix_val_refs}")
    if settings.mix_val_refs and settings.mix_dataset is None:
        raise FinetuneError("--mix-val-refs holds out references of the --mix-dataset: it needs one")
    if settings.mix_val_refs and not settings.validates:
        raise FinetuneError("--mix-val-refs helps choose the epoch, and " + (
            "--train-on-all has no validation: train the final model with the epoch the split rounds chose"
            if settings.train_on_all else "--val-fraction 0 leaves no validation"))
    if settings.mix_eval_max_images < 1:
        raise FinetuneError("--mix-eval-max-images must be >= 1")
    if settings.eval_engine not in ("torch", "onnx"):
        raise FinetuneError(f"--eval-engine must be torch or onnx, got {settings.eval_engine!r}")
    if settings.train_head_only and (settings.freeze_backbone_stages or settings.channels_last):
        raise FinetuneError("--train-head-only already keeps the whole backbone fixed; drop "
                            "--freeze-backbone-stages and --channels-last")
    if settings.cache_level not in LEVELS:
        raise FinetuneError(f"--cache-level must be one of {', '.join(LEVELS)}, got {settings.cache_level!r}")
    if settings.cache_level != "features" and not settings.train_head_only:
        raise FinetuneError("--cache-level only applies with --train-head-only")
    if settings.train_last_stages not in TRAINABLE_STAGES:
        raise FinetuneError(f"--train-last-stages must be one of {TRAINABLE_STAGES}, got {settings.train_last_stages}")
    if settings.train_last_stages and not (settings.train_head_only and settings.cache_level == "taps"):
        raise FinetuneError("--train-last-stage(s) needs --train-head-only --cache-level taps (the stages' taps are "
                            "recomputed from the cached tap before them)")
    if settings.cache_random_views < 0:
        raise FinetuneError(f"--cache-random-views must be >= 0, got {settings.cache_random_views}")
    if settings.cache_random_views and not settings.train_head_only:
        raise FinetuneError("--cache-random-views adds cached views: it needs --train-head-only (the random-crop "
                            "path draws a fresh window at every step already)")
    if settings.mix_train_images is not None and not settings.train_head_only:
        raise FinetuneError("--mix-train-images only applies with --train-head-only")
    if settings.mix_pairs not in MIX_PAIRS:
        raise FinetuneError(f"--mix-pairs must be one of {', '.join(MIX_PAIRS)}, got {settings.mix_pairs!r}")
    if settings.mix_pairs != "any" and not settings.mix_dataset:
        raise FinetuneError("--mix-pairs within-reference compares images of one --mix-dataset reference: it "
                            "needs a --mix-dataset")
    if settings.fresh_head and settings.init.strip().lower() in ("", "none"):
        raise FinetuneError("--fresh-head takes the backbone of an --init checkpoint; with --init none every "
                            "module is fresh already")
    if settings.train_on_all and settings.rounds != 1:
        raise FinetuneError("--train-on-all makes one model from every image: use --rounds 1")
