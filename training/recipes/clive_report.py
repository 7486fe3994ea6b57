"""Figures for docs/experiments.md from a clive_lite0.sh run (all from the feature cache, so cheap):

- per finished split round: the init (shipped synthetic) model's and the fine-tuned model's test
  SRCC/PLCC/KRCC/RMSE, the chosen epoch, and their held-out synthetic SRCC;
- median / min / max over the rounds;
- for a snapshot of the all-930 run (``--final RUN/epoch_NN.safetensors``): held-out synthetic.

    python training/recipes/clive_report.py runs/clive/splits [more split folders] [--final runs/clive/final/epoch_08.safetensors]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

KEYS = ("srcc", "plcc", "krcc", "rmse")


def cache_of(checkpoint: Path):
    """The HeadCache a checkpoint's run used, rebuilt from its recorded options (loads, never computes)."""
    from pinet.checkpoint import load_checkpoint
    from pinet_training.datasets import load_dataset
    from pinet_training.finetune_data import round_split
    from pinet_training.head_cache import CacheLayout, fixed_subset, open_cache
    from pinet_training.head_training import HeadCache, STREAM_MIX_HELDOUT

    loaded = load_checkpoint(checkpoint, stage=2)
    info = loaded.header.training["info"]
    primary, mix = info["datasets"]
    files = info["feature_cache"]
    dataset = load_dataset(primary["name"], primary["root"])
    mix_set = load_dataset(mix["name"], mix["root"])
    heldout = fixed_subset(round_split(mix_set, 0, 0, 0.15).split.test, mix["heldout_images"], STREAM_MIX_HELDOUT)
    settings = loaded.header.training["settings"]
    stages = settings.get("train_last_stages", int(bool(settings.get("train_last_stage"))))   # older runs: a flag
    layout = CacheLayout(info.get("cache_level") or "features", train_last_stages=stages)
    cache = HeadCache(layout=layout, primary=open_cache(files[0]),
                      mix_heldout=heldout, mix_heldout_parts=open_cache(files[1]))
    return loaded, dataset, mix_set, cache


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.4f} ({min(values):.4f}-{max(values):.4f})"


def main() -> None:
    from pinet.checkpoint import load_checkpoint
    from pinet_training.checkpoint_evaluation import sample_id

    parser = argparse.ArgumentParser()
    parser.add_argument("splits", type=Path, nargs="+", help="split run folders (several: e.g. rounds run in parallel)")
    parser.add_argument("--final", type=Path)
    args = parser.parse_args()
    rounds = [p.parent for folder in args.splits for p in sorted(folder.glob("round_*/round.json"))]
    rows, init_model = [], None
    for folder in rounds:
        result = json.loads((folder / "round.json").read_text())
        loaded, dataset, mix_set, cache = cache_of(folder / "best.safetensors")
        if init_model is None:
            init_model = load_checkpoint(loaded.header.training["info"]["init"], stage=2).model.eval()
            init_mix = cache.mix_metrics(init_model, mix_set)
        ids = {sample_id(s, dataset): i for i, s in enumerate(dataset.samples)}
        test = [ids[i] for i in loaded.header.training["split"]["test_ids"]]
        base = cache.metrics(init_model, dataset, test)
        rows.append({"round": result["split_seed"] + 1, "epoch": result["chosen_epoch"], "val_srcc": result["val_srcc"],
                     "test": result["test"], "init_test": {k: float(base[k]) for k in KEYS},
                     "mix_srcc": result["mix_test"]["srcc"], "mix_val_srcc": result.get("val_mix_srcc")})
    rows.sort(key=lambda r: r["round"])
    joint = any(r["mix_val_srcc"] is not None for r in rows)     # --mix-val-refs: the synthetic val column
    print("| split | epoch | val SRCC |" + (" synthetic val SRCC |" if joint else "")
          + " test SRCC | PLCC | KRCC | RMSE | init SRCC | synthetic held-out SRCC |")
    print("|---|---|---|" + ("---|" if joint else "") + "---|---|---|---|---|---|")
    for r in rows:
        t = r["test"]
        synthetic_val = f" {r['mix_val_srcc']:.4f} |" if joint else ""
        print(f"| {r['round']} | {r['epoch']} | {r['val_srcc']:.4f} |{synthetic_val} {t['srcc']:.4f} | {t['plcc']:.4f} | "
              f"{t['krcc']:.4f} | {t['rmse']:.4f} | {r['init_test']['srcc']:.4f} | {r['mix_srcc']:.4f} |")
    if rows:
        print(f"\nmedian (min-max) over {len(rows)} splits: " + ", ".join(
            f"{k.upper()} {summary([r['test'][k] for r in rows])}" for k in KEYS)
            + f"; init SRCC {summary([r['init_test']['srcc'] for r in rows])}"
            + f"; synthetic held-out SRCC {summary([r['mix_srcc'] for r in rows])}"
            + f"; chosen epochs {[r['epoch'] for r in rows]}")
        print(f"init (shipped synthetic) model on the synthetic held-out set: SRCC {init_mix['srcc']:.4f} "
              f"PLCC {init_mix['plcc']:.4f} (n={len(cache.mix_heldout)})")
    if args.final:
        loaded, _, mix_set, cache = cache_of(args.final)
        m = cache.mix_metrics(loaded.model.eval(), mix_set)
        print(f"final {args.final}: synthetic held-out SRCC {m['srcc']:.4f} PLCC {m['plcc']:.4f} KRCC "
              f"{m['krcc']:.4f} (n={len(cache.mix_heldout)}); step {loaded.header.training['step']}")


if __name__ == "__main__":
    main()
