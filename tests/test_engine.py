"""Training engine: atomic state saves, exact optimizer round trip, refused resumes, (seed, step) batches, fit."""

import json
import math

import numpy as np
import pytest
import torch

from pinet.checkpoint import read_header
from pinet.models import create_model
from pinet_runtime.preprocess import Preprocessing
from pinet_training.engine import (
    LoopPlan,
    MetricsLogger,
    ResumeError,
    StepBatches,
    TrainingRun,
    fit,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    select_device,
    steps_for,
)
from pinet_training.seeding import step_rng

PREP = Preprocessing(crop_size=32, resize_short_side=40)
SETTINGS = {"seed": 1, "batch_size": 2, "lr": 1e-3}


def _run(tmp_path, variant="pinet_lite0", settings=SETTINGS, seed=0) -> TrainingRun:
    torch.manual_seed(seed)
    model = create_model(variant, stage=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"])
    return TrainingRun(run_dir=tmp_path, model=model, optimizer=optimizer, preprocessing=PREP,
                       settings=dict(settings), info={"note": "test"})


def _train_steps(run: TrainingRun, first: int, count: int) -> None:
    for step in range(first, first + count):
        generator = torch.Generator().manual_seed(step)          # batch = function of the step
        x1, x2 = torch.randn(2, 2, 3, 32, 32, generator=generator)
        rank, d1, d2 = run.model(x1, x2)
        loss = rank.square().mean() + d1.abs().mean() + d2.abs().mean()
        run.optimizer.zero_grad()
        loss.backward()
        run.optimizer.step()
        run.state.step = step + 1


@pytest.mark.slow
def test_resume_restores_weights_and_optimizer_exactly(tmp_path):
    run = _run(tmp_path)
    run.model.train()
    _train_steps(run, 0, 2)
    run.state.best_metric, run.state.best_step = 0.25, 2
    run.save(run.last_path)
    header = read_header(run.last_path)
    assert header.training["kind"] == "pinet-training-state" and header.training["step"] == 2
    assert header.training["settings"] == SETTINGS and header.training["info"] == {"note": "test"}
    _train_steps(run, 2, 2)                                       # the uninterrupted continuation

    other = _run(tmp_path, seed=99)                               # different init, fresh optimizer
    other.resume()
    assert other.state.step == 2 and other.state.best_metric == 0.25 and other.state.best_step == 2
    other.model.train()
    _train_steps(other, 2, 2)
    for name, value in run.model.state_dict().items():
        assert torch.equal(value, other.model.state_dict()[name]), name
    a, _ = optimizer_state_to_tensors(run.optimizer)
    b, _ = optimizer_state_to_tensors(other.optimizer)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_optimizer_structure_is_json_and_types_survive(tmp_path):
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([param], lr=0.1, betas=(0.8, 0.9))
    param.grad = torch.full((3,), 2.0)
    optimizer.step()
    tensors, structure = optimizer_state_to_tensors(optimizer)
    assert set(tensors) == {"optimizer.0.step", "optimizer.0.exp_avg", "optimizer.0.exp_avg_sq"}
    structure = json.loads(json.dumps(structure))                 # must survive the checkpoint's JSON
    fresh = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.5, betas=(0.8, 0.9))
    optimizer_state_from_tensors(fresh, tensors, structure)
    group = fresh.param_groups[0]
    assert group["betas"] == (0.8, 0.9) and isinstance(group["betas"], tuple) and group["lr"] == 0.1
    assert torch.equal(fresh.state[group["params"][0]]["exp_avg"], torch.full((3,), 0.4))
    with pytest.raises(ValueError, match="AdamW"):
        optimizer_state_from_tensors(torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))]), tensors, structure)


def test_atomic_save_leaves_the_previous_file_on_failure(tmp_path, monkeypatch):
    run = _run(tmp_path)
    run.state.step = 5
    run.save(run.last_path)
    before = run.last_path.read_bytes()

    import safetensors.torch

    def crash_half_way(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial write")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_half_way)
    run.state.step = 6
    with pytest.raises(OSError, match="simulated"):
        run.save(run.last_path)
    assert run.last_path.read_bytes() == before                   # old state intact
    assert read_header(run.last_path).training["step"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]   # no partial file left
    with pytest.raises(OSError):
        run.save(tmp_path / "new.safetensors")
    assert not (tmp_path / "new.safetensors").exists()


def test_resume_refuses_mismatched_runs(tmp_path):
    run = _run(tmp_path)
    run.save(run.last_path)
    with pytest.raises(ResumeError, match="variant pinet_lite0, this run asks for pinet_r18"):
        _run(tmp_path, variant="pinet_r18").resume()
    with pytest.raises(ResumeError, match=r"batch_size=2 \(this run: 8\)"):
        _run(tmp_path, settings={**SETTINGS, "batch_size": 8}).resume()
    weights_only = tmp_path / "weights.safetensors"
    run.save(weights_only, with_optimizer=False)
    with pytest.raises(ResumeError, match="not a resumable training state"):
        _run(tmp_path).resume(weights_only)
    with pytest.raises(ResumeError, match="no such checkpoint"):
        _run(tmp_path).resume(tmp_path / "absent.safetensors")


def test_step_batches_depend_only_on_seed_and_step():
    assert np.array_equal(step_rng(4, 10).integers(1000, size=5), step_rng(4, 10).integers(1000, size=5))
    draws = {tuple(step_rng(seed, step, stream).integers(1 << 30, size=3))
             for seed in (0, 1) for step in (0, 1) for stream in (0, 1)}
    assert len(draws) == 8                                        # seeds, steps and streams all differ

    batches = StepBatches(lambda step: int(step_rng(7, step).integers(1 << 30)), first_step=3, total_steps=6)
    assert len(batches) == 3
    resumed = [batches[i] for i in range(len(batches))]
    full = StepBatches(batches.make_batch, first_step=0, total_steps=6)
    assert resumed == [full[i] for i in range(6)][3:]


def test_metrics_logger_truncates_to_the_resumed_step(tmp_path):
    logger = MetricsLogger(tmp_path / "log.jsonl")
    for step in range(1, 6):
        logger.log({"kind": "train", "step": step, "loss": 1.0 / step})
    logger.log({"kind": "val", "step": 4, "acc": 0.5})
    logger.truncate_after(3)
    assert [row["step"] for row in logger.records()] == [1, 2, 3]
    assert logger.records("val") == []


def test_fit_checkpoints_validates_and_keeps_the_best(tmp_path):
    run = _run(tmp_path)
    scores = iter([0.2, 0.6, 0.4])                                # validation results at steps 2, 4, 5

    def step_fn(step, batch):
        assert batch == step * 10
        return {"loss": float(step)}

    plan = LoopPlan(total_steps=5, steps_per_epoch=2, checkpoint_every=3, best_metric="acc")
    state = fit(run, plan, [s * 10 for s in range(5)], step_fn, lambda: {"acc": next(scores)},
                MetricsLogger(tmp_path / "log.jsonl"), show_progress=False)
    assert state.step == 5 and state.epoch == 2
    assert state.best_metric == 0.6 and state.best_step == 4
    assert read_header(run.best_path).training["step"] == 4
    assert read_header(run.last_path).training["step"] == 5
    rows = MetricsLogger(tmp_path / "log.jsonl").records()
    assert [(r["kind"], r["step"]) for r in rows if r["kind"] == "val"] == [("val", 2), ("val", 4), ("val", 5)]
    assert [r["loss"] for r in rows if r["kind"] == "train"] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_small_helpers():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            select_device("cuda")
    assert steps_for(2, None, 7) == 14 and steps_for(None, 5, 7) == 5
    with pytest.raises(ValueError):
        steps_for(None, None, 7)
    assert math.isclose(steps_for(1, None, 3), 3)
