"""Stage-2 reporting: which epoch is the model (validation's choice or the last), its one test scoring,
and the per-round / median results files."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from pinet_runtime.errors import PinetError
from pinet_runtime.files import write_json_atomic, write_text_atomic
from pinet_training.datasets import IQADataset
from pinet_training.checkpoint_evaluation import SPLIT_KEY, TEST_KEY, evaluate_checkpoint, finite_quality_metrics, \
    score_images
from pinet_training.seeding import step_rng

BEST_METRIC = "val_srcc"
JOINT_METRIC = "val_joint_srcc"        # --mix-val-refs: mean of the primary and the mix validation SRCC
STREAM_VAL_SUBSET = 7                  # seeding.step_rng stream of the --val-max-images draw


class FinetuneError(PinetError):
    """A problem with the user's input (data, options, init checkpoint, run folder)."""


def validation_metrics(model, dataset: IQADataset, indices, prep, batch_size: int, device) -> dict[str, float]:
    """Validation SRCC/PLCC etc. with the contract's fixed crops (the model is in eval mode)."""
    samples = dataset.subset(indices)
    scores, _ = score_images(model, [s.path for s in samples], prep, batch_size, device)
    metrics = finite_quality_metrics(scores, [s.score for s in samples])
    return {f"val_{k}": float(v) for k, v in metrics.items() if k in ("srcc", "krcc", "plcc", "rmse")}


def validation_subset(val: tuple[int, ...], settings) -> tuple[int, ...]:
    """The val images that choose the epoch: all, or a fixed seeded subset of --val-max-images."""
    if settings.val_max_images is None or len(val) <= settings.val_max_images:
        return tuple(val)
    chosen = step_rng(settings.seed, 0, STREAM_VAL_SUBSET).choice(len(val), settings.val_max_images, replace=False)
    return tuple(val[i] for i in sorted(chosen))


def mix_heldout_metrics(model, prepared, settings) -> dict | None:
    """The mix set's held-out images (a fixed seeded subset of --mix-eval-max-images), scored on ``model``."""
    if prepared.mix is None:
        return None
    held_out = prepared.mix_split.split.test
    if len(held_out) > settings.mix_eval_max_images:
        chosen = step_rng(0, 0, STREAM_VAL_SUBSET).choice(len(held_out), settings.mix_eval_max_images, replace=False)
        held_out = tuple(held_out[i] for i in sorted(chosen))
    from pinet_training.onnx_eval import scoring_model

    model.to(prepared.device).eval()
    samples = prepared.mix.subset(held_out)
    scorer = scoring_model(model, settings.eval_engine, prepared.run.info["threads"])
    scores, _ = score_images(scorer, [s.path for s in samples], prepared.run.preprocessing, settings.eval_batch_size,
                             prepared.device)
    metrics = finite_quality_metrics(scores, [s.score for s in samples])
    return {"dataset": prepared.mix.name, "rule": prepared.mix_split.rule, "n": len(samples),
            "engine": settings.eval_engine,
            **{k: float(metrics[k]) for k in ("srcc", "krcc", "plcc", "rmse")}}


def selection_metric(settings) -> str:
    """The validation key that chooses the epoch (best.safetensors)."""
    return JOINT_METRIC if settings.mix_val_refs else BEST_METRIC


def joint_srcc(primary_srcc: float, mix_srcc: float) -> float:
    """The mean of both validation SRCCs: equal say for agreeing with people and for keeping the
    synthetic ranking. NaN (a validation part without a defined SRCC) stays NaN: the worst value."""
    return (primary_srcc + mix_srcc) / 2


def chosen_validation(prepared, metric: str = BEST_METRIC) -> dict:
    """The logged validation record of the epoch protocol.choose_epoch picks by ``metric``; the
    epoch must agree with best.safetensors."""
    from pinet_training.engine import MetricsLogger
    from pinet_training.protocol import EpochRecord, choose_epoch

    run = prepared.run
    records = MetricsLogger(Path(run.run_dir) / "log.jsonl").records("val")
    if not records or run.state.best_step is None:
        raise FinetuneError(f"{run.run_dir}: validation SRCC was undefined at every epoch (too few or constant "
                            "validation images?), so no best checkpoint exists")
    history = [EpochRecord(epoch=int(r["epoch"]), val_srcc=float(r[metric]) if r.get(metric) is not None
                           else float("nan")) for r in records]
    epoch = choose_epoch(history)
    best_epoch = run.state.best_step // prepared.batches.steps_per_epoch
    if epoch != best_epoch:
        raise RuntimeError(f"epoch choice disagrees: protocol says {epoch}, best.safetensors is epoch {best_epoch}")
    return next(r for r in reversed(records) if int(r["epoch"]) == epoch)


def last_validation(prepared, epoch: int) -> dict:
    """The logged validation record of the run's last epoch (``--epoch-choice last``)."""
    from pinet_training.engine import MetricsLogger

    records = [r for r in MetricsLogger(Path(prepared.run.run_dir) / "log.jsonl").records("val")
               if int(r["epoch"]) == epoch]
    if not records:
        raise FinetuneError(f"{prepared.run.run_dir}: no validation record of the last epoch ({epoch}) in log.jsonl")
    return records[-1]


def finish_round(prepared, settings) -> dict:
    """Score the test split once with best.safetensors, store metrics + split in it, write round.json.

    best.safetensors is the epoch validation chose or, with ``--epoch-choice last`` (and
    ``--train-on-all``), the weights validated after the last epoch (EMA/SWA included)."""
    from pinet.checkpoint import load_checkpoint, save_checkpoint

    run = prepared.run
    split_record = run.info[SPLIT_KEY]
    best_step = run.state.best_step
    rule = "last" if settings.train_on_all else settings.epoch_choice     # --train-on-all has no validation
    if rule == "last":
        with run.evaluated_weights():
            run.save(run.best_path, with_optimizer=False)
        epoch, best_step = settings.epochs, run.state.step
        validation = last_validation(prepared, settings.epochs) if settings.validates else {}
    else:
        validation = chosen_validation(prepared, selection_metric(settings))
        epoch = int(validation["epoch"])
    loaded = load_checkpoint(run.best_path, stage=2)
    loaded.model.eval()
    test_metrics, problems, engine = None, [], settings.eval_engine
    if not settings.train_on_all and prepared.cache is not None:
        test_metrics, engine = prepared.cache.metrics(loaded.model, prepared.dataset, prepared.split.split.test), \
            f"cached {prepared.cache.layout.level} (onnxruntime FP32 of the frozen part, torch above it)"
    elif not settings.train_on_all:
        evaluation = evaluate_checkpoint(run.best_path, prepared.dataset, "test", settings.eval_batch_size,
                                         str(prepared.device), test_ids=split_record["test_ids"],
                                         engine=settings.eval_engine, threads=run.info["threads"])
        test_metrics, problems = evaluation.metrics, evaluation.problems
    training = {**loaded.header.training, SPLIT_KEY: split_record, "chosen_epoch": epoch, "epoch_choice": rule}
    if test_metrics is not None:
        training[TEST_KEY] = {**test_metrics, "eval_batch_size": settings.eval_batch_size, "engine": engine,
                              "device": str(prepared.device), "skipped_images": problems}
    if prepared.cache is not None and prepared.mix is not None:
        m = prepared.cache.mix_metrics(loaded.model, prepared.mix)
        mix_test = {"dataset": prepared.mix.name, "rule": prepared.mix_split.rule, "n": len(prepared.cache.mix_heldout),
                    "engine": engine, **{k: float(m[k]) for k in ("srcc", "krcc", "plcc", "rmse")}}
    else:
        mix_test = mix_heldout_metrics(loaded.model, prepared, settings)
    if mix_test is not None:
        training["mix_test"] = mix_test
    save_checkpoint(run.best_path, loaded.model, loaded.header.preprocessing, training)
    result = {"round": prepared.round_index, "split_seed": split_record["seed"], "chosen_epoch": epoch,
              "best_step": best_step, "val_srcc": validation.get(BEST_METRIC),
              **({"selected_on": JOINT_METRIC, "val_mix_srcc": validation["val_mix_srcc"],
                  JOINT_METRIC: validation[JOINT_METRIC]} if settings.mix_val_refs else {}),
              "test": test_metrics, "mix_test": mix_test,
              "n_train": split_record["n_train"], "n_val": split_record["n_val"], "n_test": split_record["n_test"],
              "note": split_record["note"], "checkpoint": str(run.best_path)}
    write_json_atomic(Path(run.run_dir) / "round.json", result)
    return result


def write_results(settings, dataset: IQADataset, rounds: list[dict]) -> tuple[Path, Path]:
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
    if settings.epoch_choice == "last":
        monitor = "validation only monitors" if settings.validates else "no validation part"
        description = replace(description, epoch_selection=(
            f"none: the last epoch ({settings.epochs}) is the model, a rule fixed before training ({monitor}); "
            "test evaluated once on it"))
    elif settings.mix_val_refs:
        description = replace(description, epoch_selection=(
            f"best mean of the validation SRCC and the SRCC of {settings.mix_val_refs} {settings.mix_dataset} "
            "references held out of training (ties: earliest); test evaluated once at that epoch"))
    description = replace(description, notes=notes + (
        "test split scored once per round on best.safetensors with the contract's fixed crops; "
        "`pinet eval ROUND/best.safetensors --split test` reproduces it",))
    out = Path(settings.out_dir)
    write_report(results, out, description)
    final_json, final_md = out / "results.json", out / "results.md"
    os.replace(out / REPORT_JSON, final_json)
    os.replace(out / REPORT_MARKDOWN, final_md)
    mixed = [r for r in rounds if r.get("mix_test")]
    if mixed:
        add_mix_results(final_json, final_md, mixed)
    return final_json, final_md


def add_mix_results(json_path: Path, md_path: Path, rounds: list[dict]) -> None:
    """The mix set's held-out figures of every round (and their median) in results.json/.md."""
    import json
    import statistics

    srcc = [r["mix_test"]["srcc"] for r in rounds]
    summary = json.loads(json_path.read_text())
    summary["mix_test"] = {"rounds": [{"round": r["round"], **r["mix_test"]} for r in rounds],
                           "median_srcc": statistics.median(srcc), "min_srcc": min(srcc), "max_srcc": max(srcc)}
    write_json_atomic(json_path, summary)
    first = rounds[0]["mix_test"]
    lines = ["", f"## Held-out {first['dataset']} (mixed in with a ranking loss; {first['rule']})", "",
             "| round | n | SRCC | PLCC | KRCC |", "|---|---|---|---|---|"]
    lines += [f"| {r['round']} | {r['mix_test']['n']} | {r['mix_test']['srcc']:.4f} | {r['mix_test']['plcc']:.4f} | "
              f"{r['mix_test']['krcc']:.4f} |" for r in rounds]
    lines += ["", f"Median SRCC {statistics.median(srcc):.4f} (min {min(srcc):.4f}, max {max(srcc):.4f})."]
    write_text_atomic(md_path, md_path.read_text().rstrip("\n") + "\n" + "\n".join(lines) + "\n")


def write_all_data_results(settings, dataset: IQADataset, result: dict) -> tuple[Path, Path]:
    """RUN/results.json + .md of a --train-on-all run: no test split exists, so no test figures."""
    out = Path(settings.out_dir)
    summary = {"mode": "train-on-all", "dataset": dataset.name, "n_train": result["n_train"],
               "epochs": settings.epochs, "checkpoint": result["checkpoint"], "mix_test": result.get("mix_test"),
               "note": "trained on every image of the dataset with settings chosen by an earlier split protocol; "
                       "no test split, so no test figures"}
    json_path, md_path = out / "results.json", out / "results.md"
    write_json_atomic(json_path, summary)
    lines = [f"# {dataset.name}: trained on all {result['n_train']} images ({settings.epochs} epochs)", "",
             summary["note"] + "."]
    if result.get("mix_test"):
        m = result["mix_test"]
        lines += ["", f"Held-out {m['dataset']} ({m['n']} images): SRCC {m['srcc']:.4f}, PLCC {m['plcc']:.4f}"]
    write_text_atomic(md_path, "\n".join(lines) + "\n")
    return json_path, md_path
