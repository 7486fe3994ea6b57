"""Run a training command to the end, then run it again and SIGKILL it after its first checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable


def run_straight_then_kill(command_for: Callable[[Path], list[str]], straight: Path, interrupted: Path) -> int:
    """``command_for(out_dir)`` is the command line; both runs share one hash seed. Returns the
    killed process's id."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    finished = subprocess.run(command_for(straight), env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    process = subprocess.Popen(command_for(interrupted), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (interrupted / "last.safetensors").exists():
        assert process.poll() is None and time.monotonic() < deadline, "run ended before its first checkpoint"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    return process.pid
