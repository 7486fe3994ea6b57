"""Data-parallel training over several processes with torch.distributed (`--nproc-per-node N`, torchrun).

The rules, so that N processes give the run 1 process gives, to floating-point rounding:

- ``--batch-size`` is the GLOBAL batch of a step. The step's entries and their augmentation draws
  are the single-process ones (``seeding.step_rng``); process r decodes only its contiguous shard
  (``seeding.shard_range``), so shards are disjoint and together are the batch.
- BatchNorm statistics are the global batch's (:class:`GlobalBatchNorm2d`, two all-reduces per
  layer, gloo or nccl; torch's own SyncBatchNorm refuses CPU tensors).
- Each process scales its mean loss by ``n_local * world / n_global`` and the gradients are
  averaged (:meth:`Collective.average_gradients`), which is the gradient of the global mean loss.
- Logs, checkpoints, validation and reports are rank 0's (:attr:`Collective.is_main`); a resume
  reads rank 0's ``last.safetensors`` on every process, so a run may resume with another N.

Launch: :func:`launch` runs a function in N local processes with torch's elastic launcher (what
``torchrun --standalone`` does); a process started by ``torchrun`` itself (multi-node) is detected
by :func:`context_from_env` through the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK...).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

import torch

from pinet_runtime.errors import PinetError

# Rank 0 validates alone while the others wait in their next all-reduce: allow long validations.
COLLECTIVE_TIMEOUT = timedelta(hours=2)
LAUNCHER_PID_ENV = "PINET_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1


class DistributedError(PinetError):
    """The multi-process setup cannot run (bad --nproc-per-node, an option it does not support...)."""


@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1


def context_from_env() -> ProcessInfo:
    """This process's place in a torchrun-style launch (defaults: a single process)."""
    def number(name: str, default: int) -> int:
        value = os.environ.get(name)
        return int(value) if value not in (None, "") else default

    world = number("WORLD_SIZE", 1)
    return ProcessInfo(rank=number("RANK", 0), world_size=world, local_rank=number("LOCAL_RANK", 0),
                       local_world_size=number("LOCAL_WORLD_SIZE", world))


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


class Collective:
    """The collectives a training step needs; with one process every method is the identity."""

    def __init__(self, info: ProcessInfo, backend: str | None):
        self.info = info
        self.backend = backend

    @property
    def world_size(self) -> int:
        return self.info.world_size

    @property
    def rank(self) -> int:
        return self.info.rank

    @property
    def enabled(self) -> bool:
        return self.info.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.info.rank == 0

    def shard(self) -> tuple[int, int]:
        return self.info.rank, self.info.world_size

    def record(self, global_batch: int) -> dict:
        """What the log and the checkpoint info say about the launch."""
        return {"world_size": self.world_size, "backend": self.backend, "global_batch_size": global_batch,
                "per_process_batch": f"{global_batch // self.world_size}-{-(-global_batch // self.world_size)}"}

    def sum_ints(self, *values: int) -> list[int]:
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self._device())
        torch.distributed.all_reduce(tensor)
        return [int(round(v)) for v in tensor.tolist()]

    def gather_strings(self, items: list[str]) -> list[str]:
        """Every process's list, concatenated in rank order (rank 0's result is the one used)."""
        if not self.enabled:
            return list(items)
        gathered: list = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, list(items))
        return [item for part in gathered for item in part]

    def global_batch_size(self, local: int, skipped: list[str], logger, step: int) -> int:
        """The batch's size over every process; rank 0 logs each item any process had to skip."""
        total, skipped_count = self.sum_ints(local, len(skipped))
        for message in self.gather_strings(skipped) if skipped_count else []:
            if self.is_main:
                logger.log({"kind": "skipped", "step": step + 1, "problem": message})
        return total

    def loss_scale(self, local: int, total: int) -> float:
        """Multiplier of a process's mean loss so that averaged gradients are the global mean's."""
        return local * self.world_size / total

    def weighted_means(self, metrics: dict[str, float], local: int, total: int) -> dict[str, float]:
        """Batch means over all processes (each process's mean weighted by its entries)."""
        if not self.enabled or not metrics:
            return metrics
        keys = sorted(metrics)
        tensor = torch.tensor([metrics[k] * local for k in keys], dtype=torch.float64, device=self._device())
        torch.distributed.all_reduce(tensor)
        return {k: float(v) / total for k, v in zip(keys, tensor.tolist())}

    def gather_rows(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every process's rows of each tensor (first axis, the same count in each), concatenated
        in rank order: the global batch, since shards are contiguous in rank order. Differentiable:
        the gradient reaching this process is that of its own rows, so a loss every process computes
        alike on the gathered batch, multiplied by ``world_size``, gives the global gradient after
        average_gradients."""
        if not self.enabled:
            return tensors
        sizes = self._gather_sizes(len(tensors[0]))     # one exchange of the shard sizes for all
        return tuple(_GatherRows.apply(tensor, sizes, self.rank) for tensor in tensors)

    def _gather_sizes(self, local: int) -> list[int]:
        gathered = [torch.zeros(1, dtype=torch.int64, device=self._device()) for _ in range(self.world_size)]
        torch.distributed.all_gather(gathered, torch.tensor([local], dtype=torch.int64, device=self._device()))
        return [int(size.item()) for size in gathered]

    def average_gradients(self, model: torch.nn.Module) -> None:
        """All-reduce the gradients as one flat buffer and divide by the world size (DDP's averaging)."""
        if not self.enabled:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:      # unused here; the same on every process, kept as zeros for one buffer
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        torch.distributed.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            count = p.grad.numel()
            p.grad.copy_(flat[offset:offset + count].view_as(p.grad))
            offset += count

    def broadcast_model(self, model: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers everywhere (identical starts whatever the init)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                torch.distributed.broadcast(tensor, src=0)

    def wait_for_all(self) -> None:
        """A barrier (no-op with one process)."""
        if self.enabled:
            torch.distributed.barrier()

    def finish(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()

    def _device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


def setup(device: torch.device) -> tuple[Collective, torch.device]:
    """Join the process group when launched as one of several processes (gloo on CPU, nccl on CUDA);
    returns the collectives and this process's device (``cuda:LOCAL_RANK`` on CUDA)."""
    info = context_from_env()
    if info.world_size <= 1:
        return Collective(info, None), device
    _die_with_launcher()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend, rank=info.rank, world_size=info.world_size,
                                             timeout=COLLECTIVE_TIMEOUT)
    return Collective(info, backend), device


def default_threads(threads: int | None) -> int | None:
    """With several processes on a node, each takes its share of the CPUs unless --threads says."""
    info = context_from_env()
    if threads is not None or info.local_world_size <= 1:
        return threads
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // info.local_world_size)


def _die_with_launcher() -> None:
    """The launcher starts workers in sessions of their own: if it is killed (SIGKILL included),
    they must not run on and write checkpoints. Linux only (prctl); elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    expected = os.environ.get(LAUNCHER_PID_ENV)
    if expected is not None and os.getppid() != int(expected):   # it died before prctl took effect
        os._exit(1)


class _GatherRows(torch.autograd.Function):
    """all_gather of shards of unequal length (padded to the longest for the collective)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        ctx.start, ctx.stop = sum(sizes[:rank]), sum(sizes[:rank + 1])
        longest = max(sizes)
        padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[:len(tensor)] = tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        torch.distributed.all_gather(parts, padded.contiguous())
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Every process computed the same loss from the gathered rows: its own rows' gradient is exact.
        return grad[ctx.start:ctx.stop], None, None


# ----------------------------------------------------------------------------------------------
# BatchNorm over the global batch


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; its gradient is the sum of every process's gradient (each process's loss
    depends on the sum), so autograd through it gives the global batch's BatchNorm gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        torch.distributed.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        torch.distributed.all_reduce(total)
        return total


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are over every process's shard (any backend, CPU too).

    Same parameters and buffers as BatchNorm2d, so checkpoints do not change; in eval mode, and
    with one process, it is BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        channels = x.shape[1]
        local_count = torch.tensor([x.numel() / channels], dtype=x.dtype, device=x.device)
        first = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), local_count]))
        count = first[-1]
        mean = first[:channels] / count
        centred = x - mean.view(1, -1, 1, 1)
        # Two passes (mean, then squared deviations) as BatchNorm2d computes it: no E[x^2] - E[x]^2 loss.
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3))) / count
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                unbiased = var.detach() * count / torch.clamp(count - 1, min=1)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        return out


def use_global_batchnorm(model: torch.nn.Module) -> int:
    """Turn every BatchNorm2d of ``model`` into a GlobalBatchNorm2d in place; returns how many."""
    changed = 0
    for module in model.modules():
        if type(module) is torch.nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm2d
            changed += 1
    return changed


# ----------------------------------------------------------------------------------------------
# Launching N local processes


def launch(nproc: int, entrypoint: Callable, *args) -> int:
    """Run ``entrypoint(*args)`` in ``nproc`` processes on this machine with torch's elastic
    launcher (single node, a free rendezvous port, no restarts: torchrun --standalone semantics);
    returns the exit code (0, or the first failed process's)."""
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise DistributedError("--nproc-per-node", "must be >= 1")
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    # A failed process has printed its own one-line error; the launcher's traceback of it is noise.
    for name in ("torch.distributed.elastic", "torch.multiprocessing"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")
    try:
        elastic_launch(config, entrypoint)(*args)
    except ChildFailedError as err:
        codes = [failure.exitcode for failure in err.failures.values()]
        return next((code for code in codes if code and code > 0), 1)   # killed by a signal: 1
    return 0
