"""Gradients of one stage-2 step (tiny Lite0, batch of 5) in 1 process and split over 2 gloo
processes with pinet_training.distributed's rules; prints the largest difference and the largest
1-process gradient as JSON. Run as a script: ``python two_process_gradients.py PORT [LOSS]``,
LOSS ``l1`` (each shard's mean, scaled by its share) or ``ranked`` (L1 + fidelity ranking over
every pair of the batch, computed on the rows gathered from both processes; in float64, because
the ranking's temperature magnifies float32 rounding of the predictions to ~5e-6 of the gradient)."""

from __future__ import annotations

import json
import os
import sys
import tempfile

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

BATCH = 5          # split 3 + 2: unequal shards exercise the loss scaling


def gradients(rank: int, world: int, port: int, out: str, loss_kind: str) -> None:
    from pinet.models import create_model, get_config
    from pinet_training import distributed
    from pinet_training.mixed import LossWeights, mixed_loss
    from pinet_training.seeding import shard_range

    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    collective, _ = distributed.setup(torch.device("cpu"))
    torch.manual_seed(0)
    dtype = torch.float64 if loss_kind == "ranked" else torch.float32
    model = create_model(get_config("pinet_lite0"), stage=2, init="random").to(dtype)
    if collective.enabled:
        distributed.use_global_batchnorm(model)
    crops = torch.randn(BATCH, 3, 64, 64, generator=torch.Generator().manual_seed(1)).to(dtype)
    targets = torch.rand(BATCH, generator=torch.Generator().manual_seed(2)).to(dtype)
    keep = shard_range(BATCH, rank, world)
    model.train()
    predictions = model(crops[keep.start:keep.stop])
    if loss_kind == "l1":
        loss = F.l1_loss(predictions, targets[keep.start:keep.stop])
        if collective.enabled:
            loss = loss * collective.loss_scale(len(keep), BATCH)
    else:
        every, every_target = collective.gather_rows(predictions, targets[keep.start:keep.stop])
        assert every.shape == (BATCH,)
        loss, _ = mixed_loss(every, every_target, torch.zeros(BATCH, dtype=torch.int64),
                             LossWeights("l1", rank_weight=1.0))
        loss = loss * collective.world_size
    loss.backward()
    collective.average_gradients(model)
    if rank == 0:
        torch.save({name: p.grad for name, p in model.named_parameters()}, out)
    collective.finish()


if __name__ == "__main__":
    port, loss_kind = int(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else "l1")
    with tempfile.TemporaryDirectory() as folder:
        one, two = os.path.join(folder, "one.pt"), os.path.join(folder, "two.pt")
        gradients(0, 1, port, one, loss_kind)
        mp.spawn(gradients, args=(2, port, two, loss_kind), nprocs=2)
        a, b = torch.load(one), torch.load(two)
    print(json.dumps({"max_difference": max(float((a[k] - b[k]).abs().max()) for k in a),
                      "max_gradient": max(float(a[k].abs().max()) for k in a)}))
