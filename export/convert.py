"""Checkpoint / model -> simplified single-file FP32 ONNX with PINet metadata.

Exporter choice, measured on this project's 2-core CPU (docs/export.md has the table): the dynamo
exporter (``torch.onnx.export(dynamo=True)``) and the TorchScript one give the same graph after
onnxsim (164-166 nodes for pinet_lite0, identical op set incl. MatMul for the gating), the same
parity (7e-9 max abs) and the same onnxruntime latency. TorchScript exports 3-4x faster but is
deprecated since torch 2.9 and warns on every export; dynamo is the maintained path, so we use
it and pay ~3 s more per export.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pinet_runtime.errors import PinetError
from pinet_runtime.files import atomic_path
from pinet_runtime.metadata import INPUT_NAME, OUTPUT_NAME
from pinet_runtime.preprocess import Preprocessing

from pinet_export.config import DEFAULT_OPSET
from pinet_export.onnx_metadata import build_metadata, drop_metadata_prefix, set_metadata

EXPORTER = "torch.onnx dynamo"


class ExportError(PinetError, RuntimeError):  # RuntimeError: what it was before the common base
    """An export step failed; the message names the file and the problem."""


@dataclass
class ConversionResult:
    path: Path
    nodes_exported: int          # before onnxsim
    nodes_simplified: int        # after onnxsim
    export_seconds: float
    opset: int
    exporter: str = EXPORTER


def convert_model(model, prep: Preprocessing, out_path: str | Path, source_sha256: str,
                  opset: int | None = None, batch: int | None = None) -> ConversionResult:
    """Export a stage-2 model (eval mode) to ``out_path`` as simplified FP32 ONNX with metadata.

    batch None gives a dynamic batch axis named "batch"; an integer fixes it. Writes ``out_path``
    directly: callers that need atomicity pass a temporary name (see :func:`export_fp32`).
    """
    import onnx
    import onnxsim
    import torch

    if getattr(model, "stage", None) != 2:
        raise ExportError(f"only stage-2 (scoring) models can be exported, got stage {getattr(model, 'stage', '?')}")
    opset = opset or DEFAULT_OPSET
    model = model.eval()
    size = prep.crop_size
    # A dummy batch of 2 keeps the exporter from specialising the dynamic axis to 1.
    example = torch.zeros(batch or 2, 3, size, size)
    dynamic = None if batch else {"x": {0: "batch"}}
    started = time.perf_counter()
    program = torch.onnx.export(model, (example,), None, dynamo=True, external_data=False,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                opset_version=opset, dynamic_shapes=dynamic, verbose=False)
    proto = program.model_proto
    nodes_exported = len(proto.graph.node)
    simplified, ok = onnxsim.simplify(proto)
    if not ok:
        raise ExportError(f"{out_path}: onnxsim could not verify the simplified graph")
    elapsed = time.perf_counter() - started
    # onnxsim records its own run statistics as metadata; they describe the tool, not the model.
    drop_metadata_prefix(simplified, "onnxsim.")
    set_metadata(simplified, build_metadata(model.config, prep, "fp32", source_sha256))
    onnx.checker.check_model(simplified)
    onnx.save_model(simplified, str(out_path), save_as_external_data=False)
    return ConversionResult(Path(out_path), nodes_exported, len(simplified.graph.node), elapsed,
                            simplified.opset_import[0].version if simplified.opset_import else opset)


def load_stage2_checkpoint(checkpoint_path: str | Path):
    """(model, preprocessing, sha256) of a stage-2 checkpoint; CheckpointError names the problem."""
    from pinet.checkpoint import file_sha256, load_checkpoint

    loaded = load_checkpoint(checkpoint_path, stage=2)
    return loaded.model, loaded.header.preprocessing, file_sha256(checkpoint_path)


def export_fp32(checkpoint_path: str | Path, out_path: str | Path, opset: int | None = None,
                batch: int | str = "dynamic") -> Path:
    """Checkpoint -> FP32 ONNX at ``out_path`` (atomic: written to a temp name, then renamed)."""
    from pinet_export.config import parse_batch

    fixed_batch = parse_batch(batch) if isinstance(batch, str) else batch
    model, prep, sha = load_stage2_checkpoint(checkpoint_path)
    final = Path(out_path)
    with atomic_path(final) as temporary:
        convert_model(model, prep, temporary, sha, opset=opset, batch=fixed_batch)
    return final
