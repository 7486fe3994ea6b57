"""Gradients of one stage-2 step (L1 on a tiny Lite0, batch of 5) in 1 process and split over 2
gloo processes with pinet_training.distributed's rules; prints the largest difference and the
largest 1-process gradient as JSON. Run as a script: ``python two_process_gradients.py PORT``."""

from __future__ import annotations

import json
import os
import sys
import tempfile

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

BATCH = 5          # split 3 + 2: unequal shards exercise the loss scaling


def gradients(rank: int, world: int, port: int, out: str) -> None:
    from pinet.models import create_model, get_config
    from pinet_training import distributed
    from pinet_training.seeding import shard_range

    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    collective, _ = distributed.setup(torch.device("cpu"))
    torch.manual_seed(0)
    model = create_model(get_config("pinet_lite0"), stage=2, init="random")
    if collective.enabled:
        distributed.use_global_batchnorm(model)
    crops = torch.randn(BATCH, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    targets = torch.rand(BATCH, generator=torch.Generator().manual_seed(2))
    keep = shard_range(BATCH, rank, world)
    model.train()
    loss = F.l1_loss(model(crops[keep.start:keep.stop]), targets[keep.start:keep.stop])
    if collective.enabled:
        loss = loss * collective.loss_scale(len(keep), BATCH)
    loss.backward()
    collective.average_gradients(model)
    if rank == 0:
        torch.save({name: p.grad for name, p in model.named_parameters()}, out)
    collective.finish()


if __name__ == "__main__":
    port = int(sys.argv[1])
    with tempfile.TemporaryDirectory() as folder:
        one, two = os.path.join(folder, "one.pt"), os.path.join(folder, "two.pt")
        gradients(0, 1, port, one)
        mp.spawn(gradients, args=(2, port, two), nprocs=2)
        a, b = torch.load(one), torch.load(two)
    print(json.dumps({"max_difference": max(float((a[k] - b[k]).abs().max()) for k in a),
                      "max_gradient": max(float(a[k].abs().max()) for k in a)}))
