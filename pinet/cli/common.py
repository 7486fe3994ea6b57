"""Helpers shared by CLI modules: extras checks, consoles and exit codes."""

from __future__ import annotations

import importlib.util

import typer
from rich.console import Console
from rich.markup import escape

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
# soft_wrap: error messages stay on one line so file names and hints are never split.
stderr = Console(stderr=True, soft_wrap=True)

_EXTRA_MODULES = {"train": ("torch", "torchvision", "safetensors"),
                  "export": ("torch", "torchvision", "safetensors", "onnx", "onnxsim")}


def require_extra(extra: str, command: str) -> None:
    """Exit 2 with an install hint when a command's optional dependencies are missing."""
    missing = []
    for module in _EXTRA_MODULES[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
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
