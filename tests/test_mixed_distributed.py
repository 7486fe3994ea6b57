"""Mixed-dataset and head-only fine-tuning in 2 processes: the ranking losses pair items of
different shards, so the loss is computed on the gathered global batch and the first steps' losses
equal one process's; cached batches split into contiguous shards."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch


def _log_records(command: list[str], out: Path) -> list[dict]:
    """Run a training command to the end; the records of its log.jsonl in `out`."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _first_steps(logs: dict[str, list[dict]]) -> list[tuple[dict, dict]]:
    """The first two training steps' records of the 1- and 2-process runs, side by side, once the
    2-process run is shown to have launched 2 processes and both logged the same steps."""
    assert logs["2"][0]["kind"] == "launch" and logs["2"][0]["world_size"] == 2
    one, two = ([r for r in logs[n] if r["kind"] == "train"] for n in ("1", "2"))
    assert len(one) == len(two) >= 2 and [r["images"] for r in one] == [r["images"] for r in two]
    return list(zip(one[:2], two[:2]))


@pytest.mark.slow
def test_two_process_mixed_run_with_ranking_matches_one_process(clive_like, synthetic, mixed_sets, tmp_path):
    """--mix-dataset and --rank-weight pair items of different shards: with 2 processes the loss is
    computed on the gathered global batch, so the first steps' losses (each part) equal 1 process's
    (later steps drift by rounding through Adam, as in tests/test_distributed_training.py)."""
    common = ["--dataset", "clive", "--root", str(clive_like), "--mix-dataset", "synthetic", "--mix-root",
              str(synthetic), "--mix-per-batch", "3", "--mix-eval-max-images", "4", "--rank-weight", "1",
              "--epochs", "1", "--seed", "2", *mixed_sets.TINY]
    logs = {nproc: _log_records(mixed_sets.finetune_cli(*common, "--out", str(tmp_path / nproc),
                                                        "--nproc-per-node", nproc), tmp_path / nproc)
            for nproc in ("1", "2")}
    steps = _first_steps(logs)
    for a, b in steps:
        assert {"loss_primary", "loss_rank_primary", "loss_rank_mix"} <= set(a) and set(a) == set(b)
        for key in ("loss", "loss_primary", "loss_rank_primary", "loss_rank_mix"):
            assert abs(a[key] - b[key]) <= 2e-4, (key, a, b)
    assert abs(steps[0][0]["loss"] - steps[1][0]["loss"]) > 2e-4   # the steps themselves differ: a real comparison


def test_cached_batch_shards_make_up_the_whole_batch(batch_shards):
    """Each process takes a contiguous part of the cached batch (primary then mix rows)."""
    from pinet_training.head_cache import CachedBatches
    from pinet_training.seeding import shard_range

    rng = np.random.default_rng(0)
    parts = (rng.normal(size=(10, 2, 5, 4)).astype(np.float16), rng.normal(size=(10, 2, 5, 3, 2)).astype(np.float16))
    mix = (rng.normal(size=(6, 2, 5, 4)).astype(np.float16), rng.normal(size=(6, 2, 5, 3, 2)).astype(np.float16))
    batches = CachedBatches(parts, range(10), np.linspace(0, 1, 10), 7, seed=3, images_per_epoch=None,
                            mix_parts=mix, mix_rows=range(6), mix_targets=np.linspace(0, 1, 6), mix_per_batch=3,
                            mix_groups=["a", "a", "a", "b", "b", "b"])
    for step in (0, 2):
        whole = batches(step)
        shards = batch_shards.shards_of(batches, step, 2)
        expected = [len(shard_range(len(whole["targets"]), r, 2)) for r in range(2)]
        assert [len(s["targets"]) for s in shards] == expected == ([4, 3] if step == 0 else [3, 2])   # 10 rows: 4+4+2
        for key in ("targets", "source", "group"):
            assert torch.equal(torch.cat([s[key] for s in shards]), whole[key]), key
        for index in range(2):
            assert torch.equal(torch.cat([s["features"][index] for s in shards]), whole["features"][index])


@pytest.mark.slow
def test_two_process_head_only_run_matches_one_process(clive_like, synthetic, mixed_sets, tmp_path):
    """--train-head-only (taps cache, last stage trained, within-reference mix pairs, CLIVE ranking on
    Thurstone targets: the raters' spreads and the groups both travel through the gather) in 2
    processes: rank 0 builds the cache, the others open it; the first steps' losses equal 1 process's.
    --epoch-choice last: the tiny model's validation scores may all tie after one epoch."""
    from pinet_training.finetune import run_finetune

    init_settings = mixed_sets.settings(clive_like, synthetic, tmp_path / "init", epochs=1, train_on_all=True)
    run_finetune(init_settings, lambda _: None)
    tiny = [a for a in mixed_sets.TINY if a not in ("--variant", "pinet_lite0", "--backbone-init", "random")]
    common = ["--dataset", "clive", "--root", str(clive_like), "--mix-dataset", "synthetic", "--mix-root",
              str(synthetic), "--mix-per-batch", "3", "--mix-eval-max-images", "4", "--mix-train-images", "4",
              "--init", str(tmp_path / "init" / "best.safetensors"), "--fresh-head", "--train-head-only",
              "--cache-level", "taps", "--train-last-stage", "--mix-pairs", "within-reference", "--rank-weight", "1",
              "--rank-targets", "thurstone", "--epoch-choice", "last", "--epochs", "1", "--seed", "2", *tiny]
    logs = {}
    for nproc in ("1", "2"):
        command = mixed_sets.finetune_cli(*common, "--feature-cache", str(tmp_path / f"cache{nproc}"),
                                          "--out", str(tmp_path / nproc), "--nproc-per-node", nproc)
        logs[nproc] = _log_records(command, tmp_path / nproc)
        assert len(list((tmp_path / f"cache{nproc}").glob("*.json"))) == 3
    for a, b in _first_steps(logs):
        assert {"loss_primary", "loss_rank_primary"} <= set(a) and set(a) == set(b)
        for key in set(a) - {"step", "kind", "images", "step_seconds"}:
            assert abs(a[key] - b[key]) <= 2e-4, (key, a, b)
