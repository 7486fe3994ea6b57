"""Progress bars: drawn on a terminal during `pinet score` (photos and videos), `pinet best` and
`pinet report`; never with --no-progress, and never when stdout is not a terminal.

The CLI runs in a child process whose stdout and stderr are a pseudo-terminal (or stdout a pipe),
exactly as in a shell; the bar shows as its label and rich's bar characters in what the terminal
received.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

BAR = "━"
ROOT = Path(__file__).resolve().parents[1]


def _terminal_run(args: list[str], stdout_is_terminal: bool = True, timeout: float = 240) -> tuple[int, str, str]:
    """(exit code, what the terminal showed, what the stdout pipe got) for `pinet args...`."""
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR")}
    env.update(TERM="xterm-256color", COLUMNS="120", LINES="40")
    child = subprocess.Popen([sys.executable, "-m", "pinet.cli", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                             stdout=terminal if stdout_is_terminal else subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    shown = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        elif child.poll() is not None:
            break
    piped = child.stdout.read().decode() if child.stdout else ""
    code = child.wait(timeout=max(1.0, deadline - time.monotonic()))
    os.close(controller)
    return code, shown.decode("utf-8", "replace"), piped


@pytest.fixture(scope="module")
def photos(sample_photos) -> list[str]:
    return [str(p) for p in sample_photos]


@pytest.mark.slow
def test_score_shows_a_bar_on_a_terminal_only(photos):
    # CSV rows: the table's own borders would use the bar's character.
    code, shown, _ = _terminal_run(["score", *photos, "-f", "csv"])
    assert code == 0 and "scoring" in shown and BAR in shown
    assert "kodak_kodim03.jpg" in shown  # the rows still came out on the terminal

    code, shown, _ = _terminal_run(["score", *photos, "-f", "csv", "--no-progress"])
    assert code == 0 and "scoring" not in shown and BAR not in shown and "kodak_kodim03.jpg" in shown

    code, shown, piped = _terminal_run(["score", *photos, "-f", "csv"], stdout_is_terminal=False)
    assert code == 0 and "scoring" not in shown and BAR not in shown  # stdout into a pipe: no bar anywhere
    assert piped.startswith("path,score") and BAR not in piped


@pytest.mark.slow
@pytest.mark.parametrize("command", ["best", "report"])
def test_best_and_report_show_a_bar_unless_told_not_to(command, photos, tmp_path):
    extra = ["--out", str(tmp_path / "r.html")] if command == "report" else ["-f", "csv"]
    code, shown, _ = _terminal_run([command, *photos, *extra])
    assert code == 0 and "scoring" in shown and BAR in shown
    code, shown, _ = _terminal_run([command, *photos, *extra, "--no-progress"])
    assert code == 0 and "scoring" not in shown and BAR not in shown


@pytest.mark.slow
def test_a_video_shows_its_frame_bar(tmp_path, samples_dir):
    av = pytest.importorskip("av", reason="the video extra (PyAV) is part of .[all]")
    import numpy as np
    from PIL import Image

    clip = tmp_path / "walk.mp4"
    frame = np.asarray(Image.open(samples_dir / "kodak_kodim20.jpg").convert("RGB").resize((384, 256)))
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 384, 256, "yuv420p"
        for _ in range(12):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    code, shown, _ = _terminal_run(["score", str(clip), "--every", "1f", "-f", "csv"])
    assert code == 0 and "walk.mp4" in shown and BAR in shown
    code, shown, _ = _terminal_run(["score", str(clip), "--every", "1f", "-f", "csv", "--no-progress"])
    assert code == 0 and BAR not in shown
