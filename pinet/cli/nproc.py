"""`--nproc-per-node N` of `pinet train pretrain|finetune`: the same command in N processes.

The command's work is a module-level function of its settings; with N > 1 (and not already inside a
torchrun launch) it is run by torch's elastic launcher in N local processes (what `torchrun
--standalone --nproc-per-node N` does) and this process exits with their result. Under
`torchrun` itself (multi-node: `torchrun --nnodes ... -m pinet.cli train ...`) every process runs
the command directly and joins the group the launcher set up.
"""

from __future__ import annotations

import sys
from typing import Callable

import typer

from pinet.cli.common import EXIT_USAGE, fail

NPROC_OPTION = typer.Option(1, "--nproc-per-node", min=1, help="Training processes on this machine "
                            "(torch.distributed: gloo on CPU, nccl on CUDA, one GPU each); --batch-size stays "
                            "the global batch. Multi-node: run under torchrun instead (docs/scaling.md)")


def _worker(entrypoint: Callable, settings) -> None:
    """One launched process: the command's function, with typer's exit turned into the process's."""
    try:
        entrypoint(settings)
    except typer.Exit as done:
        sys.exit(done.exit_code)


def run_in_processes(nproc: int, entrypoint: Callable, settings) -> None:
    """``entrypoint(settings)`` here (one process, or inside torchrun), or in ``nproc`` processes."""
    from pinet_training.distributed import launch, launched_by_torchrun

    if nproc <= 1 or launched_by_torchrun():
        entrypoint(settings)
        return
    if settings.batch_size < nproc:      # checked again in each process (torchrun), but before any starts here
        raise fail(f"--batch-size {settings.batch_size} (the global batch) is smaller than the {nproc} processes "
                   "sharing it", EXIT_USAGE)
    code = launch(nproc, _worker, entrypoint, settings)
    if code:
        raise typer.Exit(code)
