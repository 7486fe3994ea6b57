"""`pinet train ... --nproc-per-node 2` (torch.distributed, gloo on CPU) against one process.

Tolerance, stated once: with the same seed and global batch, 2 processes must log every step's
training loss within LOSS_TOLERANCE of 1 process, and the trained models' outputs on fixed inputs
must differ by at most OUTPUT_TOLERANCE of how far training moved them (max |f2 - f1| over
max |f1 - f0|). Measured on this tiny run: losses within 4e-5, outputs 0.02-0.3%; with
per-process BatchNorm statistics instead of global ones, outputs differed by 4.7% and losses by
1e-3, so the bounds separate a correct run from a plausible wrong one. The weights themselves are
not compared one by one: Adam turns rounding-level differences of near-zero gradients into
lr-sized steps (10% of the summed weight change here, with identical losses).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pinet.checkpoint import load_checkpoint, read_header
from pinet_training.seeding import shard_range

LOSS_TOLERANCE = 2e-4
OUTPUT_TOLERANCE = 0.01
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--variant", "pinet_lite0", "--init", "random", "--crop-size", "64", "--resize-short-side", "80",
        "--batch-size", "4", "--workers", "0", "--threads", "1", "--warmup-steps", "0", "--val-pairs", "4",
        "--no-progress"]


def _pretrain(*args: str) -> list[str]:
    return [sys.executable, "-m", "pinet.cli", "train", "pretrain", *args]


def test_shards_are_disjoint_contiguous_and_cover_the_batch():
    for count in range(0, 11):
        for world in (1, 2, 3, 4):
            parts = [shard_range(count, rank, world) for rank in range(world)]
            assert [i for part in parts for i in part] == list(range(count))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_pair_batch_shards_make_up_the_single_process_batch(sample_photos, tmp_path, tiny_synth_set, batch_shards):
    """Each process decodes only its shard, with the augmentation draws of the whole batch."""
    from pinet_runtime.preprocess import Preprocessing
    from pinet_training.pairs import PairBatches, PairSampler, read_pair_items

    data = tiny_synth_set.make(sample_photos[:4], tmp_path / "synth")
    prep = Preprocessing(crop_size=32, resize_short_side=80)
    batches = PairBatches(PairSampler(read_pair_items(data), "train", 0.05), prep, batch_size=5, seed=3)
    for step in (0, 1, 7):
        whole = batches(step)
        parts = batch_shards.shards_of(batches, step, 2)
        assert [len(p["rank"]) for p in parts] == [3, 2]
        for key in ("image1", "image2", "rank", "class1", "class2"):
            assert torch.equal(torch.cat([p[key] for p in parts]), whole[key]), (step, key)


def _launcher_children(pid: int) -> list[int]:
    """Live processes started by the launcher ``pid`` (they carry its id in their environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"PINET_LAUNCHER_PID={pid}".encode() in environ:
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sample_photos, interrupted_runs, tiny_synth_set):
    """A 1-process run, a 2-process run, and a 2-process run SIGKILLed after its first checkpoint."""
    root = tmp_path_factory.mktemp("distributed")
    data = tiny_synth_set.make(sample_photos[:5], root / "synth")
    common = ["--data", str(data), *TINY, "--steps", "6", "--checkpoint-every", "1", "--seed", "4"]
    one = subprocess.run(_pretrain(*common, "--out", str(root / "one")), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    killed_pid = interrupted_runs.run_straight_then_kill(
        lambda out: _pretrain(*common, "--nproc-per-node", "2", "--out", str(out)), root / "two", root / "killed")
    return {"root": root, "common": common, "killed_pid": killed_pid}


@pytest.mark.slow
def test_two_processes_match_one_process(runs):
    one, two = runs["root"] / "one", runs["root"] / "two"
    header = read_header(two / "last.safetensors")
    assert header.training["step"] == 6
    assert header.training["info"]["distributed"]["world_size"] == 2
    assert "distributed" not in read_header(one / "last.safetensors").training["info"]   # 1 process: as before
    assert load_checkpoint(two / "best.safetensors", stage=1).model is not None

    log_two = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    log_one = [json.loads(line) for line in (one / "log.jsonl").read_text().splitlines()]
    assert log_two[0] == {"kind": "launch", "step": 0, "world_size": 2, "backend": "gloo", "global_batch_size": 4,
                          "per_process_batch": "2-2"}
    assert not [r for r in log_one if r["kind"] == "launch"]
    train_two = [r for r in log_two if r["kind"] == "train"]
    train_one = [r for r in log_one if r["kind"] == "train"]
    assert [r["step"] for r in train_two] == list(range(1, 7)) == [r["step"] for r in train_one]
    for a, b in zip(train_one, train_two):
        assert a["pairs"] == b["pairs"] == 4            # the global batch, not a shard
        assert abs(a["loss"] - b["loss"]) <= LOSS_TOLERANCE, (a, b)

    # Eval mode: the outputs also reflect the BatchNorm running statistics, global in both runs.
    f0, f1, f2 = (_outputs(model) for model in (_initial_model(seed=4),
                                                load_checkpoint(one / "last.safetensors", stage=1).model,
                                                load_checkpoint(two / "last.safetensors", stage=1).model))
    moved, apart = float((f1 - f0).abs().max()), float((f2 - f1).abs().max())
    assert moved > 0 and apart <= OUTPUT_TOLERANCE * moved, (apart, moved)


def _initial_model(seed: int) -> torch.nn.Module:
    """The model a run with ``seed`` starts from (make_deterministic seeds torch, then create_model)."""
    from pinet.models import create_model, get_config

    torch.manual_seed(seed)
    return create_model(get_config("pinet_lite0"), stage=1, init="random")


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    """Rank and distortion logits of 8 fixed random pairs, flattened."""
    first = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    second = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.cat([out.flatten() for out in model.eval()(first, second)])


@pytest.mark.slow
def test_killed_two_process_run_resumes_to_the_uninterrupted_result(runs):
    root, killed = runs["root"], runs["root"] / "killed"
    deadline = time.monotonic() + 10
    while _launcher_children(runs["killed_pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _launcher_children(runs["killed_pid"]) == [], "workers outlived their killed launcher"
    killed_at = read_header(killed / "last.safetensors").training["step"]
    assert 0 < killed_at < 6

    resumed = subprocess.run(_pretrain(*runs["common"], "--nproc-per-node", "2", "--out", str(killed), "--resume"),
                             env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {killed / 'last.safetensors'} at step {killed_at}" in resumed.stderr.replace("\n", "")
    a = load_checkpoint(root / "two" / "last.safetensors", stage=1)
    b = load_checkpoint(killed / "last.safetensors", stage=1)
    assert b.header.training["step"] == 6
    for key, value in a.model.state_dict().items():
        assert torch.allclose(value.float(), b.model.state_dict()[key].float(), rtol=0, atol=1e-6), key
    records = [json.loads(line) for line in (killed / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 7))
    assert [r["step"] for r in records if r["kind"] == "launch"] == [0, killed_at]


def test_batch_smaller_than_the_processes_is_refused_before_launching(sample_photos, tmp_path, tiny_synth_set):
    from typer.testing import CliRunner

    from pinet.cli.app import app

    data = tiny_synth_set.make(sample_photos[:3], tmp_path / "synth")
    args = [a if a != "4" else "1" for a in TINY]          # --batch-size 1
    done = CliRunner().invoke(app, ["train", "pretrain", "--data", str(data), *args, "--steps", "1",
                                    "--nproc-per-node", "2", "--out", str(tmp_path / "run")])
    assert done.exit_code == 2, done.output
    assert "--batch-size 1 (the global batch) is smaller than the 2 processes sharing it" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("loss_kind", ["l1", "ranked"])
def test_two_process_gradients_equal_the_one_process_gradient(loss_kind):
    """One stage-2 step on a batch of 5 split 3 + 2: global BatchNorm statistics, and either the loss
    scaled by each shard's share (l1) or the whole batch's loss on gathered rows (ranked: pairs
    across shards, in float64), then averaged gradients give the full batch's gradient (measured:
    l1 1.7e-8 of the largest gradient, ranked 4e-16)."""
    port = 29500 + os.getpid() % 1000 + (7 if loss_kind == "ranked" else 0)
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "helpers" / "two_process_gradients.py"), str(port),
                           loss_kind], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["max_gradient"] > 0
    tolerance = 1e-6 if loss_kind == "l1" else 1e-12
    assert measured["max_difference"] <= tolerance * measured["max_gradient"], measured


@pytest.mark.slow
def test_two_process_finetune_writes_the_round_and_matches_one_process(replicas, sample_photos, tmp_path):
    """Stage 2 end to end in 2 processes: rank 0 validates, tests and writes results.json; the first
    steps' losses equal one process's (later ones drift by Adam's rounding, see the module doc)."""
    replica = replicas.make_blur_replica(tmp_path / "set", sample_photos[:6], "setA", with_reference=True)
    common = ["train", "finetune", "--dataset", "csv", "--csv-range", "0,11", "--root", str(replica), "--epochs", "2",
              "--seed", "5", "--lr-backbone", "1e-3", "--lr-head", "1e-3", "--variant", "pinet_lite0",
              "--backbone-init", "random", "--crop-size", "64",
              "--resize-short-side", "native", "--batch-size", "8", "--crops-per-image", "2", "--workers", "0",
              "--threads", "1", "--val-fraction", "0.25", "--no-progress"]
    logs = {}
    for nproc in ("1", "2"):
        out = tmp_path / f"run{nproc}"
        done = subprocess.run([sys.executable, "-m", "pinet.cli", *common, "--out", str(out), "--nproc-per-node",
                               nproc], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("done: ") == 1               # one process reports
        assert json.loads((out / "results.json").read_text())["rounds"][0]["chosen_epoch"] in (1, 2)
        logs[nproc] = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert logs["2"][0]["kind"] == "launch" and logs["2"][0]["world_size"] == 2
    one, two = ([r for r in logs[n] if r["kind"] == "train"] for n in ("1", "2"))
    assert [r["images"] for r in one] == [r["images"] for r in two] == [8] * 8
    for a, b in zip(one[:2], two[:2]):
        assert abs(a["loss"] - b["loss"]) <= LOSS_TOLERANCE, (a, b)


@pytest.mark.slow
def test_resuming_with_another_process_count_continues_the_same_run(runs):
    """Batches are a function of (seed, step) at the global batch, so a checkpoint of 2 processes
    resumes in 1 process (and the other way round) as the run it was: later steps' losses and the
    final outputs within the tolerances of 1 vs 2 processes (module docstring)."""
    import shutil

    root, common = runs["root"], list(runs["common"])
    common[common.index("--steps") + 1] = "8"     # a resumed run may extend --steps
    resumed = {}
    for name, source, nproc in (("one_more", "one", "1"), ("two_then_one", "two", "1"), ("one_then_two", "one", "2")):
        shutil.copytree(root / source, root / name)
        done = subprocess.run(_pretrain(*common, "--nproc-per-node", nproc, "--out", str(root / name), "--resume"),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "at step 6" in done.stderr.replace("\n", "")
        log = [json.loads(line) for line in (root / name / "log.jsonl").read_text().splitlines()]
        resumed[name] = ({r["step"]: r["loss"] for r in log if r["kind"] == "train"},
                         load_checkpoint(root / name / "last.safetensors", stage=1))
    reference_losses, reference = resumed["one_more"]
    assert reference.header.training["step"] == 8 and sorted(reference_losses) == list(range(1, 9))
    f0, f1 = _outputs(_initial_model(seed=4)), _outputs(reference.model)
    moved = float((f1 - f0).abs().max())
    for name in ("two_then_one", "one_then_two"):
        losses, checkpoint = resumed[name]
        assert checkpoint.header.training["step"] == 8
        for step in (7, 8):
            assert abs(losses[step] - reference_losses[step]) <= LOSS_TOLERANCE, (name, step)
        apart = float((_outputs(checkpoint.model) - f1).abs().max())
        assert apart <= OUTPUT_TOLERANCE * moved, (name, apart, moved)
    two_then_one = read_header(root / "two_then_one" / "last.safetensors").training["info"]
    assert "distributed" not in two_then_one                           # it now records 1 process
    assert read_header(root / "one_then_two" / "last.safetensors").training["info"]["distributed"]["world_size"] == 2
