"""`pinet export --ort`: the ORT format files for onnxruntime Mobile and minimal builds.

onnxruntime's own converter (``onnxruntime.tools.convert_onnx_models_to_ort``, shipped in the
onnxruntime wheel) turns each published ``.onnx`` file into ``.ort`` and writes one
``required_operators.config`` listing the operators of all of them, the input of a minimal build
(``build.sh --minimal_build --include_ops_by_config required_operators.config``). Optimisation
style "Fixed" (graph optimisations applied before saving, as onnxruntime recommends without
NNAPI/CoreML) for the ARM target: the files are for phones, and an x86 onnxruntime loads them too.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from pinet_runtime.files import publish

REQUIRED_OPERATORS = "required_operators.config"
TARGET_PLATFORM = "arm"


def ort_file_name(onnx_file: str | Path) -> str:
    return Path(onnx_file).name[:-len(".onnx")] + ".ort"


def convert_to_ort(onnx_files: list[Path], out_dir: Path,
                   check: Callable[[dict[str, Path]], bool] = lambda _: True) -> dict[str, Path]:
    """Convert every file; returns {onnx file name: .ort path}, plus REQUIRED_OPERATORS: its path.
    The tool works in a temporary folder; ``check`` gets {onnx file name: converted .ort there} and
    the files appear in ``out_dir`` only when it returns True (else {} is returned)."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(prefix="pinet-ort-", dir=out_dir) as work:
        source, converted = Path(work) / "onnx", Path(work) / "ort"
        source.mkdir()
        for path in onnx_files:
            shutil.copy2(path, source / path.name)   # the tool converts a folder: only these files
        chatter = io.StringIO()   # the tool prints its progress; the report says what matters
        with contextlib.redirect_stdout(chatter):
            convert_onnx_models_to_ort(source, output_dir=converted, optimization_styles=[OptimizationStyle.Fixed],
                                       target_platform=TARGET_PLATFORM)
        written = {}
        for path in onnx_files:
            made = converted / ort_file_name(path)
            if not made.is_file():
                raise RuntimeError(f"{path.name}: onnxruntime's converter wrote no {made.name}")
            written[path.name] = out_dir / made.name
        if not check({name: converted / final.name for name, final in written.items()}):
            return {}
        config = converted / REQUIRED_OPERATORS
        if not config.is_file():
            raise RuntimeError(f"onnxruntime's converter wrote no {REQUIRED_OPERATORS}")
        for name, final in written.items():
            publish(converted / final.name, final)
        publish(config, out_dir / REQUIRED_OPERATORS)
        written[REQUIRED_OPERATORS] = out_dir / REQUIRED_OPERATORS
    return written


def ort_parity(onnx_path: Path, ort_path: Path, feeds: list[dict]) -> float:
    """Max |difference| between the outputs of the .onnx and the .ort file on the same inputs."""
    import onnxruntime as ort

    reference = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    mobile = ort.InferenceSession(str(ort_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for feed in feeds:
        expected = np.asarray(reference.run(None, feed)[0], dtype=np.float64)
        got = np.asarray(mobile.run(None, feed)[0], dtype=np.float64)
        worst = max(worst, float(np.abs(expected - got).max()))
    return worst


def required_operators(config: Path) -> list[str]:
    """The 'domain;opset;Op,Op' lines of the config, without comments."""
    return [line.strip() for line in config.read_text().splitlines() if line.strip() and not line.startswith("#")]
