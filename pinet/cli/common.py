"""Helpers shared by CLI modules: extras checks, consoles, exit codes and the one error handler."""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from typing import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from pinet.cli.choices import Device

EXIT_FAILURE, EXIT_USAGE = 1, 2
# soft_wrap: error messages stay on one line so file names and hints are never split.
stderr = Console(stderr=True, soft_wrap=True)

# Options every torch command (pretrain, finetune, eval) takes, declared once.
THREADS_OPTION = typer.Option(None, "--threads", help="torch CPU threads (default: all CPUs)")
WORKERS_OPTION = typer.Option(2, "--workers", help="Background processes decoding images (0: none)")
CHECKPOINT_EVERY_OPTION = typer.Option(200, "--checkpoint-every", help="Write last.safetensors every N steps")
PROGRESS_OPTION = typer.Option(True, "--progress/--no-progress", help="Show the progress bar")


def device_option(default: Device = Device.auto):
    return typer.Option(default, "--device", help="Where torch runs (auto: CUDA when available)")


_EXTRA_MODULES = {"train": ("torch", "torchvision", "safetensors"),
                  "export": ("torch", "torchvision", "safetensors", "onnx", "onnxsim")}


def require_extra(extra: str, command: str) -> None:
    """Exit 2 with an install hint when a command's optional dependencies are missing."""
    require_modules(command, _EXTRA_MODULES[extra], extra)


def require_modules(command: str, modules: tuple[str, ...], extra: str) -> None:
    """Exit 2 naming the missing ``modules`` and the extra that installs them."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):   # a broken or blocked install counts as missing
            found = False
        if not found:
            missing.append(module)
    if missing:
        stderr.print(f"[red]error:[/] `pinet {command}` needs {', '.join(missing)}, which this install lacks.\n"
                     + escape(f"Install the extra: pip install 'pinet-iqa[{extra}]'"))
        raise typer.Exit(EXIT_USAGE)


def fail(message: str, code: int = EXIT_FAILURE) -> "typer.Exit":
    """Print an error to stderr and return the Exit to raise."""
    stderr.print(f"[red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


@contextmanager
def reported_errors(code: int = EXIT_FAILURE) -> Iterator[None]:
    """The toolkit's own errors (PinetError: they name the file or option and the problem) become one
    red line and exit ``code``; any other exception is a bug and keeps its traceback."""
    from pinet_runtime.errors import PinetError

    try:
        yield
    except PinetError as err:
        raise fail(str(err), code) from None
