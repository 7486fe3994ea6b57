"""Stage 2: fine-tune PINet into a quality scorer on a human-rated dataset (`pinet train finetune`).

Paper recipe as defaults (PINet specification, section 4): L1 loss on the normalised score (0-1, higher is
better), Adam with weight decay 1e-7, lr 1e-5 for backbone/staircase/branches and 1e-4 for the
regressor MLP, batch 24, 30 epochs, random ``crop_size`` crops (the init checkpoint's contract,
224), 5 crops per training image per epoch, horizontal flips.

Protocol (``pinet_training.protocol``): each round gets its own seeded split by content group
(see ``finetune_data``); the epoch is chosen on the validation split by the engine's
best-checkpoint rule (highest val SRCC, ties: earliest; the same rule as ``protocol.choose_epoch``,
which is checked against it; with ``--mix-val-refs`` the mean of it and the SRCC of mix training
references moved out of training; ``--epoch-choice last``: the last epoch, validation only monitors);
the test split is scored ONCE, on ``best.safetensors``, with the
contract's fixed crops (``pinet_training.checkpoint_evaluation``). The test metrics and the split (test sample
ids + rule) go into best.safetensors' training metadata so `pinet eval --split test` redoes them.

Run folder (one round): ``log.jsonl``, ``last.safetensors`` (resumable), ``best.safetensors``,
``round.json``. With ``--rounds N > 1`` each round lives in ``round_01/`` ... and the run folder
holds the summary. Either way ``results.json`` + ``results.md`` hold per-round and median/mean
test metrics. Round r uses split seed ``split_seed + r`` and training seed ``seed + r``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from pinet_training.datasets import DatasetError, IQADataset
from pinet_training.checkpoint_evaluation import SPLIT_KEY, sample_id
from pinet_training.finetune_data import FinetuneBatches, RoundSplit, carve_mix_validation, round_split
from pinet_training.finetune_model import build_model, recentre_output, resize_choice
from pinet_training.finetune_report import (
    BEST_METRIC, JOINT_METRIC, FinetuneError, finish_round, joint_srcc, selection_metric, validation_metrics,
    validation_subset, write_all_data_results, write_results,
)
from pinet_training.onnx_eval import scoring_model
from pinet_training.mixed import LossWeights, MixedBatches, dataset_record, mix_batches, mixed_loss, \
    score_meaning_name
from pinet_training.finetune_settings import (  # noqa: F401 (re-exported: the module's public names)
    LOSSES, FinetuneSettings, check_settings, compared_settings, dataset_fingerprint, load_data, load_mix,
    lr_schedule, round_dir, trained_epochs,
)
from pinet_training.lr_schedule import group_lrs, parameter_groups
from pinet_training.protocol import Split


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
    mix: IQADataset | None = None
    mix_split: RoundSplit | None = None
    frozen: list = None           # backbone modules kept in eval mode (--freeze-backbone-stages)
    cache: object = None          # head_training.HeadCache (--train-head-only)
    collective: object = None     # distributed.Collective (one process: every method is the identity)


def primary_split(settings: FinetuneSettings, dataset: IQADataset, round_index: int) -> RoundSplit:
    if settings.train_on_all:
        every = tuple(range(len(dataset)))
        return RoundSplit(Split(dataset.name, dataset.name, -1, every, (), ()), "train on all images (no split)",
                          "--train-on-all: no validation or test images; the last epoch is the model")
    return round_split(dataset, round_index, settings.split_seed, settings.val_fraction)


def primary_loss_description(settings: FinetuneSettings) -> str:
    """The primary set's loss in words, as the checkpoint records it."""
    terms = [f"{settings.loss} on the normalised score"]
    if settings.rank_weight:
        targets = " (Thurstone targets from the raters' spread)" if settings.rank_targets == "thurstone" else ""
        terms.append(f"{settings.rank_weight:g} x fidelity ranking{targets}")
    return " + ".join(terms)


def prepare_round(settings: FinetuneSettings, dataset: IQADataset, round_index: int,
                  mix: IQADataset | None = None) -> PreparedRound:
    """Model, optimizer, split and batches of one round; resumes from its last.safetensors if asked."""
    import torch

    from pinet_training import distributed
    from pinet_training.engine import TrainingRun, configure_threads, make_deterministic, select_device
    from pinet_training.weight_average import weight_average_for

    try:
        device = select_device(settings.device)
    except ValueError as err:
        raise FinetuneError(str(err)) from None
    collective, device = distributed.setup(device)
    if collective.enabled:
        if settings.batch_size < collective.world_size:
            raise FinetuneError(f"--batch-size {settings.batch_size} (the global batch) is smaller than the "
                                f"{collective.world_size} processes sharing it")
    threads = configure_threads(distributed.default_threads(settings.threads))
    seed = settings.seed + round_index
    make_deterministic(seed)
    model, base_prep, init_info = build_model(settings)
    if collective.enabled:
        distributed.use_global_batchnorm(model)
    resize, resize_why = resize_choice(settings, dataset, base_prep.resize_short_side)
    try:
        # The output's meaning is the PRIMARY set's normalised score (a mix set only ranks).
        prep = replace(base_prep, crop_size=settings.crop_size or base_prep.crop_size, resize_short_side=resize,
                       score_name=score_meaning_name(dataset), score_range=(0.0, 1.0), higher_is_better=True)
    except ValueError as err:
        raise FinetuneError(str(err)) from None
    model.to(device)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    from pinet_training.freeze import freeze_backbone_stages
    from pinet_training.head_training import build_head_cache, cache_layout, freeze_untrained

    try:
        frozen = (freeze_untrained(model, cache_layout(settings)) if settings.train_head_only
                  else freeze_backbone_stages(model, settings.freeze_backbone_stages))
    except ValueError as err:
        raise FinetuneError(str(err)) from None
    optimizer = torch.optim.Adam(parameter_groups(model, lr_schedule(settings)), weight_decay=settings.weight_decay)

    split = primary_split(settings, dataset, round_index)
    if init_info.get("init_stage") != 2 or settings.fresh_head:
        # A fresh regressor starts at the mean training score: with an L1 loss, outputs far below
        # every target all get the same gradient sign, which carries no ranking signal.
        start = sum(dataset.samples[i].score for i in split.split.train) / max(len(split.split.train), 1)
        with torch.no_grad():
            model.regressor[-1].bias.fill_(start)
        init_info = {**init_info, "regressor_bias_start": round(start, 6)}
    elif base_prep.score_name != prep.score_name:
        # A stage-2 model trained on another scale (e.g. synthetic pseudo-MOS, mean ~0.78, vs CLIVE
        # MOS/100, mean ~0.55): shift the output so its mean on the first batch is the training
        # mean, for the same reason. Pure function of (seed, init), so a resume redoes it identically.
        init_info = {**init_info, **recentre_output(model, dataset, split.split.train, prep, seed, device,
                                                    settings.channels_last)}
    mix_split, cache = None, None
    try:
        if mix is not None:
            mix_split = carve_mix_validation(mix, round_split(mix, 0, settings.split_seed, settings.val_fraction),
                                             settings.mix_val_refs)
        if settings.train_head_only:
            # Rank 0 computes the cache; the others open it once written (never two writers).
            if not collective.is_main:
                collective.wait_for_all()
            cache = build_head_cache(settings, model, prep, dataset, mix, mix_split, threads)
            if collective.is_main:
                collective.wait_for_all()
            batches = cache.batches(dataset, split.split.train, mix, settings.batch_size, seed,
                                    settings.images_per_epoch, settings.mix_per_batch, settings.mix_pairs)
            batches.shard = collective.shard()
        else:
            batches = FinetuneBatches(dataset, split.split.train, prep, settings.batch_size - settings.mix_per_batch,
                                      settings.crops_per_image, settings.flip, seed, settings.images_per_epoch)
            if mix is not None:
                batches = MixedBatches(batches, mix_batches(mix, mix_split.split.train, prep, settings.mix_per_batch,
                                                            settings.flip, seed, settings.mix_pairs))
            batches.shard = collective.shard()
    except (ValueError, DatasetError) as err:
        raise FinetuneError(str(err)) from None
    total_steps = settings.epochs * batches.steps_per_epoch
    split_record = {"dataset": dataset.name, "rule": split.rule, "seed": split.split.seed, "round": round_index,
                    "note": split.note, "test_ids": [sample_id(dataset.samples[i], dataset) for i in split.split.test],
                    "n_train": len(split.split.train), "n_val": len(split.split.val), "n_test": len(split.split.test)}
    compared = compared_settings(settings, model.config.variant, dataset, mix, init_info, seed, round_index)
    datasets = [dataset_record(dataset, "primary", primary_loss_description(settings),
                               normalised_range=[0.0, 1.0], include_anchors=settings.include_anchors)]
    if mix is not None:
        datasets.append(dataset_record(mix, "mix", f"{settings.mix_weight:g} x fidelity ranking within this set only "
                                       "(its scale never meets the primary one)", per_batch=settings.mix_per_batch,
                                       train_images=len(mix_split.split.train), split_rule=mix_split.rule,
                                       **({"validation_references": settings.mix_val_refs,
                                           "validation_images": len(mix_split.split.val)}
                                          if settings.mix_val_refs else {})))
    info = {**init_info, "dataset_root": str(Path(dataset.root).resolve()), "resize": resize_why,
            "device": str(device), "threads": threads, "workers": settings.workers, "epochs": settings.epochs,
            "total_steps": total_steps, "steps_per_epoch": batches.steps_per_epoch, "optimizer": "Adam",
            "eval_batch_size": settings.eval_batch_size, SPLIT_KEY: split_record, "datasets": datasets,
            "frozen_backbone_stages": settings.freeze_backbone_stages, "eval_engine": settings.eval_engine,
            "channels_last": settings.channels_last, "train_head_only": settings.train_head_only,
            "cache_level": settings.cache_level if settings.train_head_only else None}
    if collective.enabled:
        info["distributed"] = collective.record(settings.batch_size)
    if cache is not None:
        info["feature_cache"] = list(cache.files)
        if mix is not None:
            datasets[1].update(train_images=len(cache.mix_train), heldout_images=len(cache.mix_heldout))
    directory = round_dir(settings, round_index)
    run = TrainingRun(run_dir=directory, model=model, optimizer=optimizer, preprocessing=prep,
                      settings=compared, info=info,
                      average=weight_average_for(model, settings.ema_decay, settings.swa_start_epoch,
                                                 batches.steps_per_epoch))
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
    collective.broadcast_model(model)
    return PreparedRound(run=run, dataset=dataset, split=split, batches=batches, total_steps=total_steps,
                         device=device, round_index=round_index, notes=notes, mix=mix, mix_split=mix_split,
                         frozen=frozen, cache=cache, collective=collective)


def train_round(prepared: PreparedRound, settings: FinetuneSettings):
    """Run the round to its last step; returns the engine's final TrainingState."""
    import torch

    from pinet_training.engine import LoopPlan, MetricsLogger, fit, step_loader
    from pinet_training.freeze import keep_frozen_in_eval

    run, device, collective = prepared.run, prepared.device, prepared.collective
    logger = MetricsLogger(Path(run.run_dir) / "log.jsonl")
    weights = LossWeights(settings.loss, settings.rank_weight, settings.mix_weight, settings.rank_targets)
    schedule = lr_schedule(settings)

    def step_fn(step: int, batch: dict) -> dict[str, float]:
        # With several processes: this process's shard; counts and messages are the global batch's.
        local = len(batch["targets"])
        total = collective.global_batch_size(local, batch["skipped"], logger, step)
        if not total:
            return {"images": 0}
        keep_frozen_in_eval(prepared.frozen or [])
        rates = group_lrs(schedule, step, prepared.batches.steps_per_epoch)
        for group, rate in zip(run.optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        if "features" in batch:                       # --train-head-only: cached representations
            predictions = prepared.cache.forward(run.model, [part.to(device) for part in batch["features"]])
        else:
            crops = batch["crops"].to(device)
            if settings.channels_last:
                crops = crops.contiguous(memory_format=torch.channels_last)
            predictions = run.model(crops)
        targets, spreads = batch["targets"].to(device), batch["spread"].to(device)
        source = batch.get("source", torch.zeros(len(targets), dtype=torch.int64)).to(device)
        groups = batch["group"].to(device) if "group" in batch else None
        if not collective.enabled:
            loss, parts = mixed_loss(predictions, targets, source, weights, groups, spreads)
            if loss is None:
                return {"images": len(targets), **parts}
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            return {"loss": float(loss.detach()), "images": len(targets), **parts}
        # The ranking losses pair items of different shards: every process computes the loss of the
        # whole gathered batch (an empty shard, its images unreadable, still joins with no rows).
        rows = collective.gather_rows(predictions, targets, source, spreads, *([] if groups is None else [groups]))
        loss, parts = mixed_loss(*rows[:3], weights, rows[4] if groups is not None else None, rows[3])
        if loss is None:
            return {"images": total, **parts}
        run.optimizer.zero_grad(set_to_none=True)
        (loss * collective.world_size).backward()
        collective.average_gradients(run.model)
        run.optimizer.step()
        return {"loss": float(loss.detach()), "images": total, **parts}

    def validate() -> dict[str, float]:
        indices = validation_subset(prepared.split.split.val, settings)
        if prepared.cache is not None:
            metrics = prepared.cache.metrics(run.model, prepared.dataset, indices)
            scores = {f"val_{k}": float(metrics[k]) for k in ("srcc", "krcc", "plcc", "rmse")}
            if settings.mix_val_refs:
                scores["val_mix_srcc"] = float(prepared.cache.mix_validation_metrics(run.model, prepared.mix)["srcc"])
        else:
            # One scorer for both parts (the onnx engine exports the weights to build it). validation_metrics
            # is looked up at call time so tests can plant a validation curve.
            scorer = scoring_model(run.model, settings.eval_engine, run.info["threads"])
            scores = validation_metrics(scorer, prepared.dataset, indices, run.preprocessing,
                                        settings.eval_batch_size, device)
            if settings.mix_val_refs:
                scores["val_mix_srcc"] = validation_metrics(scorer, prepared.mix, prepared.mix_split.split.val,
                                                            run.preprocessing, settings.eval_batch_size,
                                                            device)["val_srcc"]
        if settings.mix_val_refs:
            scores[JOINT_METRIC] = joint_srcc(scores[BEST_METRIC], scores["val_mix_srcc"])
        return scores

    def snapshot() -> dict[str, float]:
        # No validation (--train-on-all, --val-fraction 0): keep each epoch's weights (epoch_NN.safetensors). The lr
        # schedule and the batches are pure functions of the step, so epoch e of a longer run IS the
        # e-epoch model: a run started before the split rounds finish can ship their choice.
        run.save(Path(run.run_dir) / f"epoch_{run.state.epoch:02d}.safetensors", with_optimizer=False)
        return {BEST_METRIC: float("nan")}

    # --epoch-choice last: finish_round writes best.safetensors once, from the last epoch's weights
    plan = LoopPlan(total_steps=prepared.total_steps, steps_per_epoch=prepared.batches.steps_per_epoch,
                    checkpoint_every=settings.checkpoint_every, best_metric=selection_metric(settings),
                    save_best=settings.epoch_choice == "validation" and not settings.train_on_all)
    loader = step_loader(prepared.batches, run.state.step, prepared.total_steps, settings.workers)
    with torch.autograd.set_grad_enabled(True):
        return fit(run, plan, loader, step_fn, validate if settings.validates else snapshot, logger,
                   settings.show_progress, collective.is_main, run.info.get("distributed"))


def run_finetune(settings: FinetuneSettings, say: Callable[[str], None]) -> tuple[list[dict], Path]:
    """All rounds (on --resume finished rounds are skipped, or trained on when --epochs grew), then the
    results files."""
    check_settings(settings)
    dataset, mix = load_data(settings), load_mix(settings)
    if dataset.name == "synthetic" and settings.rounds > 1:
        raise FinetuneError("--rounds > 1 needs random splits, but the synthetic set's split is fixed by its "
                            "manifest; use --rounds 1")
    results, collective = [], None
    for round_index in range(settings.rounds):
        directory = round_dir(settings, round_index)
        done = directory / "round.json"
        if settings.resume and done.is_file():
            trained = trained_epochs(directory)
            if trained == settings.epochs:
                results.append(json.loads(done.read_text()))
                say(f"round {round_index + 1}/{settings.rounds}: already finished ({done})")
                continue
            if trained > settings.epochs:
                raise FinetuneError(f"{directory} has trained {trained} epochs; --epochs {settings.epochs} cannot "
                                    "shorten it (its epoch was chosen among all of them): pass --epochs "
                                    f"{trained} or more")
            # Batches and the lr schedule are pure functions of the step, so training on from
            # the last checkpoint equals a run started with the larger --epochs; the epoch is then
            # chosen again over all of them and the test split scored once more.
            say(f"round {round_index + 1}/{settings.rounds}: finished after {trained} epochs; training on to "
                f"{settings.epochs}")
        prepared = prepare_round(settings, dataset, round_index, mix)
        collective = prepared.collective
        if not collective.is_main:        # another process of a multi-process run: it trains, rank 0 reports
            train_round(prepared, settings)
            continue
        for note in prepared.notes:
            say(f"note: {note}")
        info, split = prepared.run.info, prepared.split.split
        say(f"round {round_index + 1}/{settings.rounds}: {info[SPLIT_KEY]['dataset']} train/val/test = "
            f"{len(split.train)}/{len(split.val)}/{len(split.test)} images, {info['steps_per_epoch']} steps/epoch x "
            f"{settings.epochs} epochs on {info['device']}")
        train_round(prepared, settings)
        result = finish_round(prepared, settings)
        if result["test"] is not None:
            joint = (f", {mix.name} validation references {result['val_mix_srcc']:.4f}" if settings.mix_val_refs
                     else "")
            how = ("chosen on validation" if settings.epoch_choice == "validation" else
                   "(the last: --epoch-choice last" + (")" if settings.validates else "; no validation part)"))
            validation = f" (val SRCC {result['val_srcc']:.4f}{joint})" if settings.validates else ""
            say(f"round {round_index + 1}: epoch {result['chosen_epoch']} {how}{validation}; "
                f"test SRCC {result['test']['srcc']:.4f}")
        if result["mix_test"] is not None:
            say(f"round {round_index + 1}: held-out {result['mix_test']['dataset']} "
                f"({result['mix_test']['n']} images) SRCC {result['mix_test']['srcc']:.4f}")
        results.append(result)
    if collective is not None and not collective.is_main:
        collective.finish()
        return results, None
    if settings.train_on_all:
        json_path, _ = write_all_data_results(settings, dataset, results[0])
    else:
        json_path, _ = write_results(settings, dataset, results)
    if collective is not None:
        collective.finish()      # the other processes wait here until the reports are written
    return results, json_path
