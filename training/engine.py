"""Shared training machinery for both stages: devices, seeding, resumable state, logs, progress.

The API is small on purpose (stage-1 pre-training and stage-2 fine-tuning both use it):

- :func:`select_device`, :func:`configure_threads`, :func:`make_deterministic` - where and how to run;
- the determinism scheme is :func:`pinet_training.seeding.step_rng`: every step's batch and
  augmentation are a pure function of ``(seed, step)``, so a resumed run sees the batches an
  uninterrupted one sees;
- :class:`StepBatches` - a torch Dataset whose item ``i`` is the whole batch of step
  ``first_step + i`` (use it with ``DataLoader(batch_size=None)``; workers stay deterministic);
- :class:`TrainingRun` - model + optimizer + preprocessing + settings + :class:`TrainingState`, with
  atomic save (``pinet.checkpoint.save_checkpoint``; optimizer state flattened into extra
  tensors, its structure as JSON) and :meth:`TrainingRun.resume`, which refuses a checkpoint whose
  model config or settings differ from this run's;
- :class:`MetricsLogger` - ``RUN/log.jsonl``, one JSON object per line, cut back to the resumed step;
- :func:`fit` - the loop: step function, periodic ``last`` checkpoints, validation at epoch ends
  and at the end, the best-by-validation checkpoint, progress bar and log.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from pinet.checkpoint import CheckpointError, load_checkpoint, read_header, save_checkpoint
from pinet_runtime.errors import PinetError
from pinet_runtime.files import write_text_atomic
from pinet_runtime.preprocess import Preprocessing
from pinet_training.weight_average import WeightAverage

STATE_KIND = "pinet-training-state"
_OPTIMIZER_PREFIX = "optimizer."


class ResumeError(PinetError):
    """A checkpoint cannot continue this run; the message names the file and what differs."""


class DeviceError(PinetError):
    """The asked torch device cannot be used on this machine."""


# ----------------------------------------------------------------------------------------------
# Where and how to run


def select_device(choice: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``; refuses CUDA that is absent."""
    if choice not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"device must be auto, cpu or cuda, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for, but torch sees no CUDA device "
                         f"(torch {torch.__version__}, built with CUDA: {torch.version.cuda is not None})")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (default: the CPUs this process may use); returns the count."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    return threads


def make_deterministic(seed: int) -> None:
    """Seed torch (model init) and ask for deterministic kernels (bit-equal CPU reruns).

    Batches and augmentation do not depend on these seeds: they come from
    :func:`pinet_training.seeding.step_rng`.
    """
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Filling fresh tensors with NaN only helps to catch bugs; it cost ~25% of a CPU step (profiled).
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    # Needed by deterministic cuBLAS; harmless on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


class StepBatches(torch.utils.data.Dataset):
    """Item ``i`` = ``make_batch(first_step + i)``: the batch of one training step.

    ``make_batch`` must be a pure function of the step (use :func:`pinet_training.seeding.step_rng`),
    which makes the batches independent of worker count, worker scheduling and interruptions.
    """

    def __init__(self, make_batch: Callable[[int], object], first_step: int, total_steps: int):
        self.make_batch = make_batch
        self.first_step = first_step
        self.total_steps = total_steps

    def __len__(self) -> int:
        return max(0, self.total_steps - self.first_step)

    def __getitem__(self, index: int):
        return self.make_batch(self.first_step + index)


def step_loader(make_batch: Callable[[int], object], first_step: int, total_steps: int,
                workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader over :class:`StepBatches` in step order (``workers`` background processes)."""
    return torch.utils.data.DataLoader(
        StepBatches(make_batch, first_step, total_steps), batch_size=None, shuffle=False,
        num_workers=workers, persistent_workers=False, prefetch_factor=2 if workers > 0 else None)


# ----------------------------------------------------------------------------------------------
# Optimizer state <-> flat tensors


def optimizer_state_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into flat tensors and a JSON-able structure."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict] = {}
    for index, values in state_dict["state"].items():
        plain = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIMIZER_PREFIX}{index}.{key}"] = value
            else:
                plain[key] = value
        per_param[str(index)] = {"tensors": sorted(k for k, v in values.items() if isinstance(v, torch.Tensor)),
                                 "values": plain}
    structure = {"class": type(optimizer).__name__, "state": per_param,
                 "param_groups": json.loads(json.dumps(state_dict["param_groups"]))}
    return tensors, structure


def optimizer_state_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                                 structure: dict) -> None:
    """Inverse of :func:`optimizer_state_to_tensors`; loads into ``optimizer``."""
    if structure.get("class") != type(optimizer).__name__:
        raise ValueError(f"optimizer is {type(optimizer).__name__}, the saved state is {structure.get('class')}")
    current_groups = optimizer.state_dict()["param_groups"]
    saved_groups = structure["param_groups"]
    if len(saved_groups) != len(current_groups):
        raise ValueError(f"saved optimizer has {len(saved_groups)} parameter groups, this one {len(current_groups)}")
    groups = []
    for saved, current in zip(saved_groups, current_groups):
        # JSON turned tuples (Adam's betas) into lists: restore the optimizer's own types.
        groups.append({k: tuple(v) if isinstance(current.get(k), tuple) else v for k, v in saved.items()})
    state = {}
    for index, entry in structure["state"].items():
        values = dict(entry["values"])
        for key in entry["tensors"]:
            values[key] = tensors[f"{_OPTIMIZER_PREFIX}{index}.{key}"]
        state[int(index)] = values
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ----------------------------------------------------------------------------------------------
# Run state and checkpoints


@dataclass
class TrainingState:
    """Progress of a run; everything in it goes into the checkpoint's training metadata."""

    step: int = 0                         # optimizer steps completed
    epoch: int = 0                        # epochs completed
    best_metric: float | None = None
    best_step: int | None = None
    last_validation: dict = field(default_factory=dict)


@dataclass
class TrainingRun:
    """One training run's live objects and files.

    ``settings`` are the choices that define the run (seed, batch size, loss weights, data...):
    a resume refuses a checkpoint whose settings differ. ``info`` is recorded but not compared
    (device, workers, total steps - which a resume may extend).
    """

    run_dir: Path
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    preprocessing: Preprocessing
    settings: dict
    info: dict = field(default_factory=dict)
    state: TrainingState = field(default_factory=TrainingState)
    average: WeightAverage | None = None  # --ema-decay: validated and saved as best/snapshots instead

    def evaluated_weights(self):
        """Context in which ``model`` holds the weights that are validated and shipped."""
        return self.average.applied(self.model) if self.average is not None else nullcontext()

    @property
    def last_path(self) -> Path:
        return Path(self.run_dir) / "last.safetensors"

    @property
    def best_path(self) -> Path:
        return Path(self.run_dir) / "best.safetensors"

    def training_metadata(self) -> dict:
        return {"kind": STATE_KIND, "settings": self.settings, "info": self.info, **asdict(self.state)}

    def save(self, path: str | Path, with_optimizer: bool = True) -> Path:
        """Atomic write of weights (+ optimizer state) and metadata: a crash leaves the old file."""
        metadata = self.training_metadata()
        extra = None
        if with_optimizer:
            extra, metadata["optimizer"] = optimizer_state_to_tensors(self.optimizer)
            if self.average is not None:
                extra.update(self.average.state_tensors())
        return save_checkpoint(path, self.model, self.preprocessing, metadata, extra)

    def resume(self, path: str | Path | None = None) -> None:
        """Load weights, optimizer state and progress from ``path`` (default ``RUN/last.safetensors``)."""
        path = Path(path) if path is not None else self.last_path
        try:
            header = read_header(path)
        except CheckpointError as err:
            raise ResumeError(f"cannot resume: {err}") from None
        training = header.training
        if training.get("kind") != STATE_KIND or "optimizer" not in training:
            raise ResumeError(f"{path}: not a resumable training state (no optimizer state in it)")
        problems = []
        if header.stage != self.model.stage:
            problems.append(f"stage {header.stage} (this run trains stage {self.model.stage})")
        if header.model_config != self.model.config:
            saved, wanted = header.model_config, self.model.config
            what = (f"variant {saved.variant}, this run asks for {wanted.variant}" if saved.variant != wanted.variant
                    else "a different model config of the same variant")
            problems.append(what)
        if header.preprocessing != self.preprocessing:
            problems.append("a different preprocessing contract")
        saved_settings = training.get("settings", {})
        for key in sorted(set(saved_settings) | set(self.settings)):
            if saved_settings.get(key) != self.settings.get(key):
                problems.append(f"{key}={saved_settings.get(key)!r} (this run: {self.settings.get(key)!r})")
        if problems:
            raise ResumeError(f"{path} was written by a run with " + "; ".join(problems)
                              + ". Resume with the same settings, or start a new run in another --out folder.")
        loaded = load_checkpoint(path, stage=self.model.stage)
        self.model.load_state_dict(loaded.model.state_dict(), strict=True)
        try:
            optimizer_state_from_tensors(self.optimizer, loaded.extra_tensors, training["optimizer"])
        except (KeyError, ValueError) as err:
            raise ResumeError(f"{path}: optimizer state does not fit this run ({err})") from None
        if self.average is not None:
            try:
                self.average.load_state_tensors(loaded.extra_tensors)
            except ValueError as err:
                raise ResumeError(f"{path}: {err}") from None
        self.state = TrainingState(step=int(training["step"]), epoch=int(training["epoch"]),
                                   best_metric=training.get("best_metric"), best_step=training.get("best_step"),
                                   last_validation=training.get("last_validation", {}))


# ----------------------------------------------------------------------------------------------
# Log and progress


class MetricsLogger:
    """Appends one JSON object per line to ``path`` (each has ``kind`` and ``step``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a resumed run recomputes them); atomic rewrite."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))

    def log(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as out:
            out.write(json.dumps(record, sort_keys=True) + "\n")

    def records(self, kind: str | None = None) -> list[dict]:
        if not self.path.exists():
            return []
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [row for row in rows if kind is None or row.get("kind") == kind]


class StepProgress:
    """A rich progress bar over steps showing the latest metrics; silent when ``enabled`` is False."""

    def __init__(self, total: int, completed: int, description: str, enabled: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.enabled = enabled
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"),
                                  disable=not enabled, transient=False)
        self._task = self._progress.add_task(description, total=total, completed=completed, metrics="")

    def __enter__(self) -> "StepProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def update(self, step: int, metrics: dict[str, float]) -> None:
        text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        self._progress.update(self._task, completed=step, metrics=text)

    def note(self, message: str) -> None:
        if self.enabled:
            self._progress.console.print(message, highlight=False)


# ----------------------------------------------------------------------------------------------
# The loop


@dataclass(frozen=True)
class LoopPlan:
    total_steps: int
    steps_per_epoch: int
    checkpoint_every: int               # also saved at the last step
    best_metric: str                    # key of the validation dict that picks best.safetensors
    higher_is_better: bool = True
    save_best: bool = True              # False: the best step is tracked, the caller writes the model


def steps_for(epochs: int | None, steps: int | None, steps_per_epoch: int) -> int:
    """Total steps from ``--epochs`` or ``--steps`` (exactly one given)."""
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of --epochs and --steps")
    return steps if steps is not None else epochs * steps_per_epoch


def fit(run: TrainingRun, plan: LoopPlan, batches: Iterable, step_fn: Callable[[int, object], dict[str, float]],
        validate: Callable[[], dict[str, float]] | None, logger: MetricsLogger, show_progress: bool,
        is_main: bool = True, launch_record: dict | None = None) -> TrainingState:
    """Train from ``run.state.step`` to ``plan.total_steps``.

    ``batches`` yields the batch of each remaining step in order (see :func:`step_loader`);
    ``step_fn(step, batch)`` does one optimizer step and returns float metrics for the log;
    ``validate()`` returns validation metrics (the model is put back in train mode afterwards).
    The ``last`` checkpoint is written after validation, so a resume never repeats a finished
    epoch's validation and never misses a best checkpoint. With several processes
    (``pinet_training.distributed``) only the main one (``is_main``) logs, validates and writes
    checkpoints; ``launch_record`` (world size...) opens its log as a ``launch`` record.
    """
    state = run.state
    if is_main:
        logger.truncate_after(state.step)
        if launch_record is not None:
            logger.log({"kind": "launch", "step": state.step, **launch_record})
    with StepProgress(plan.total_steps, state.step, "train", show_progress and is_main) as progress:
        for batch in batches:
            if state.step >= plan.total_steps:
                break
            run.model.train()
            started = time.perf_counter()
            metrics = step_fn(state.step, batch)
            state.step += 1
            if run.average is not None:
                run.average.update(run.model, state.step)
            # Wall time of the optimizer step alone (data loading excluded); for speed reports only.
            if is_main:
                logger.log({"kind": "train", "step": state.step, **metrics,
                            "step_seconds": round(time.perf_counter() - started, 4)})
            progress.update(state.step, metrics)
            epoch_end = state.step % plan.steps_per_epoch == 0
            final = state.step == plan.total_steps
            if epoch_end:
                state.epoch = state.step // plan.steps_per_epoch
            if (epoch_end or final) and validate is not None and is_main:
                with run.evaluated_weights():
                    run.model.eval()
                    with torch.no_grad():
                        scores = validate()
                    run.model.train()
                    state.last_validation = {"step": state.step, **scores}
                    logger.log({"kind": "val", "step": state.step, "epoch": state.epoch, **scores})
                    progress.note(f"step {state.step} validation: "
                                  + ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
                    value = scores[plan.best_metric]
                    better = (state.best_metric is None or
                              (value > state.best_metric if plan.higher_is_better else value < state.best_metric))
                    if better and not math.isnan(value):
                        state.best_metric, state.best_step = float(value), state.step
                        if plan.save_best:
                            run.save(run.best_path, with_optimizer=False)
            if is_main and (final or state.step % plan.checkpoint_every == 0):
                run.save(run.last_path)
    return state
