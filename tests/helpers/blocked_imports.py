"""Run Python code, or the `pinet` CLI, in a child process where chosen top-level packages cannot be
imported: a meta-path finder raises ImportError for them, as in an install without those extras.

At exit the child writes one line to stderr naming the blocked packages found in ``sys.modules``
(ones imported before the finder was installed, e.g. by a site hook); ``leaked_modules`` reads it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable

# Everything outside the torch-free scorer: the training/export stack and our packages built on it.
HEAVY_PACKAGES = ("torch", "torchvision", "onnx", "onnxsim", "onnxscript", "scipy", "safetensors", "piq",
                  "pinet_training", "pinet_export")

LEAK_REPORT_PREFIX = "BLOCKED_IMPORTS_LOADED="

# Wrapped in a function so its names cannot clash with the code that runs after it.
_PRELUDE = """
def _install_import_blocker(blocked):
    import atexit, importlib.abc, json, sys

    class BlockedImportFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ImportError(f"{{name}} is blocked in this test process")
            return None

    def report_loaded():
        loaded = sorted({{module.split(".")[0] for module in sys.modules}} & set(blocked))
        print({prefix!r} + json.dumps(loaded), file=sys.stderr)

    sys.meta_path.insert(0, BlockedImportFinder())
    atexit.register(report_loaded)

_install_import_blocker(frozenset({blocked!r}))
del _install_import_blocker
"""

_CLI = """
import sys
from pinet.cli.app import main
sys.argv = ["pinet", *sys.argv[1:]]
main()
"""


def run_python(code: str, *args: str, blocked: Iterable[str] = HEAVY_PACKAGES,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -c code args...`` with ``blocked`` unimportable; ``sys.argv[1:]`` holds ``args``."""
    prelude = _PRELUDE.format(prefix=LEAK_REPORT_PREFIX, blocked=tuple(sorted(set(blocked))))
    return subprocess.run([sys.executable, "-c", prelude + code, *args], capture_output=True, text=True,
                          timeout=timeout)


def run_cli(*argv: str, blocked: Iterable[str] = HEAVY_PACKAGES, timeout: float = 300) -> subprocess.CompletedProcess:
    """``pinet argv...`` with ``blocked`` unimportable."""
    return run_python(_CLI, *argv, blocked=blocked, timeout=timeout)


def leaked_modules(result: subprocess.CompletedProcess) -> list[str]:
    """The blocked top-level packages that were in the child's ``sys.modules`` when it exited."""
    reports = [line for line in result.stderr.splitlines() if line.startswith(LEAK_REPORT_PREFIX)]
    assert reports, f"the child wrote no import report (did it crash?):\n{result.stderr[-2000:]}"
    return json.loads(reports[-1].removeprefix(LEAK_REPORT_PREFIX))
