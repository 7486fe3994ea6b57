"""Reading an exported PINet ONNX file: its metadata, its identity and the bundled defaults.

Only onnxruntime reads the file (no onnx package, no torch), so this works in the base install.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from pinet_runtime import metadata as keys
from pinet_runtime.errors import ModelFileError, NoDefaultModelError  # noqa: F401 (public here too)
from pinet_runtime.metadata import ModelMetadata
from pinet_runtime.preprocess import Preprocessing

_INPUT_TYPES = ("tensor(float)", "tensor(float16)")
_DEFAULT_MODEL_NAMES = {"fp32": "default.onnx", "int8": "default.int8.onnx"}


# onnxruntime's load failures are its own Exception subclasses (not RuntimeError); the names vary a
# little between releases, hence getattr.
ORT_ERRORS = tuple(getattr(_ort_state, name) for name in (
    "Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NoModel", "NotFound",
    "NotImplemented", "RuntimeException", "EPFail", "EngineError", "ModelRequiresCompilation")
    if isinstance(getattr(_ort_state, name, None), type)) + (RuntimeError, ValueError, OSError)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple  # ints for fixed axes, strings (symbolic names) or None for dynamic ones
    element_type: str  # onnxruntime's spelling, e.g. "tensor(float)"


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime knows about an exported model, all read from the file itself."""

    path: Path
    preprocessing: Preprocessing
    score_meaning: dict  # {"name", "range", "higher_is_better"}
    variant: str
    stage: int
    precision: str
    calibration: dict | None  # None for fp32/fp16 ("none" in the file)
    source_sha256: str
    pinet_version: str
    export_date: str
    format_version: int
    model_config: dict
    input: TensorInfo
    output: TensorInfo
    parameters: int | None = None
    extra_metadata: dict = field(default_factory=dict)  # keys outside REQUIRED_KEYS
    metadata: ModelMetadata | None = None  # the typed metadata all the fields above come from
    interface: str = keys.CROPS_INTERFACE  # "image": an end-to-end graph (pixels in, one score out)

    @property
    def higher_is_better(self) -> bool:
        return bool(self.score_meaning.get("higher_is_better", True))


def load_session(path: str | os.PathLike, options: ort.SessionOptions | None = None,
                 providers: list | None = None) -> ort.InferenceSession:
    """Open the file with onnxruntime, turning its failures into ModelFileError."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "no such file")
    if not path.is_file():
        raise ModelFileError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise ModelFileError(path, "empty file (0 bytes)")
    try:
        return ort.InferenceSession(str(path), sess_options=options,
                                    providers=providers or ["CPUExecutionProvider"])
    except ORT_ERRORS as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(path, f"not an ONNX model onnxruntime can load ({first_line})") from None


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Read and check a model's PINet metadata. Raises ModelFileError naming what is wrong."""
    options = ort.SessionOptions()
    # Only the metadata is wanted: skip the graph optimisation work.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return model_info_from_session(path, load_session(path, options))


def model_info_from_session(path: str | os.PathLike, session: ort.InferenceSession) -> ModelInfo:
    """The ModelInfo of an already opened session (the Scorer opens the file only once).

    Every model-side check happens here, when the model is opened: the metadata schema
    (ModelMetadata.from_props), input/output names, ranks and element types, and the fixed input
    size against the stored preprocessing. Nothing model-side is left to fail per image.
    """
    path = Path(path)
    meta = ModelMetadata.from_props(dict(session.get_modelmeta().custom_metadata_map), path)
    if meta.interface == keys.IMAGE_INTERFACE:
        model_input = _tensor(path, session.get_inputs(), keys.E2E_INPUT_NAME, "input")
        model_output = _tensor(path, session.get_outputs(), keys.E2E_OUTPUT_NAME, "output")
        _check_e2e_shapes(path, model_input, model_output)
    else:
        model_input = _tensor(path, session.get_inputs(), keys.INPUT_NAME, "input")
        model_output = _tensor(path, session.get_outputs(), keys.OUTPUT_NAME, "output")
        _check_input_shape(path, model_input, meta.preprocessing)
        _check_output_shape(path, model_output)
    return ModelInfo(
        path=path, preprocessing=meta.preprocessing, score_meaning=meta.score_meaning, variant=meta.variant,
        stage=meta.stage, precision=meta.precision, calibration=meta.calibration, source_sha256=meta.source_sha256,
        pinet_version=meta.pinet_version, export_date=meta.export_date, format_version=meta.format_version,
        model_config=meta.model_config, input=model_input, output=model_output, parameters=meta.parameters,
        extra_metadata={k: v for k, v in meta.to_props().items() if k not in keys.REQUIRED_KEYS}, metadata=meta,
        interface=meta.interface,
    )


def _tensor(path: Path, nodes: list, wanted: str, kind: str) -> TensorInfo:
    names = [node.name for node in nodes]
    for node in nodes:
        if node.name == wanted:
            return TensorInfo(node.name, tuple(node.shape), node.type)
    raise ModelFileError(path, f"the model has no {kind} named {wanted!r} (its {kind}s: {names})")


def _check_input_shape(path: Path, model_input: TensorInfo, prep: Preprocessing) -> None:
    shape = model_input.shape
    if len(shape) != 4:
        raise ModelFileError(path, f"input {model_input.name!r} should be [batch, 3, S, S], got {list(shape)}")
    if model_input.element_type not in _INPUT_TYPES:
        raise ModelFileError(path, f"input {model_input.name!r} is {model_input.element_type}, expected one of "
                                   f"{list(_INPUT_TYPES)}")
    expected = (3, prep.crop_size, prep.crop_size)
    for axis, (actual, wanted) in enumerate(zip(shape[1:], expected), start=1):
        if isinstance(actual, int) and actual != wanted:
            raise ModelFileError(path, f"input {model_input.name!r} axis {axis} is {actual} but the stored "
                                       f"preprocessing makes {list(expected)} crops")


def _check_e2e_shapes(path: Path, model_input: TensorInfo, model_output: TensorInfo) -> None:
    """The end-to-end interface: uint8 [H, W, 3] pixels in, one float32 score out."""
    shape = model_input.shape
    if model_input.element_type != "tensor(uint8)" or len(shape) != 3 or shape[2] != 3:
        raise ModelFileError(path, f"end-to-end input {model_input.name!r} should be uint8 [H, W, 3], got "
                                   f"{model_input.element_type} {list(shape)}")
    if model_output.element_type != "tensor(float)" or len(model_output.shape) != 0:
        raise ModelFileError(path, f"end-to-end output {model_output.name!r} should be one float32 value, got "
                                   f"{model_output.element_type} {list(model_output.shape)}")


def _check_output_shape(path: Path, model_output: TensorInfo) -> None:
    """One score per crop: [batch] or [batch, 1]."""
    shape = model_output.shape
    per_crop = shape[1] if len(shape) == 2 else 1
    if len(shape) not in (1, 2) or (isinstance(per_crop, int) and per_crop != 1):
        raise ModelFileError(path, f"output {model_output.name!r} should be [batch] (one score per crop), "
                                   f"got {list(shape)}")


def default_model_path(precision: str = "int8") -> Path:
    """The bundled default model of this precision ("int8" for CPUs, "fp32" for CUDA)."""
    if precision not in _DEFAULT_MODEL_NAMES:
        raise ValueError(f"no bundled default for precision {precision!r}; choose one of {sorted(_DEFAULT_MODEL_NAMES)}")
    resource = resources.files("pinet_runtime").joinpath("assets", _DEFAULT_MODEL_NAMES[precision])
    path = Path(str(resource))
    if not resource.is_file():
        raise NoDefaultModelError(path, "no bundled default model in this install; pass --model FILE")
    return path


def int8_is_safe_here(info: ModelInfo, kernels_saturate: bool) -> bool:
    """An INT8 file quantized with the full 8-bit weight range (no reduce_range) can give wrong
    scores where onnxruntime's U8S8 kernels saturate (x86 without VNNI: `int8_probe`); a portable
    file (7-bit weights) and every file on a machine whose kernels do not saturate are safe."""
    full_range = bool(info.calibration) and info.calibration.get("reduce_range") is False
    return not (full_range and kernels_saturate)


def onnx_card(path: str | os.PathLike) -> dict:
    """The card `pinet info FILE.onnx` prints: identity, preprocessing, meaning and shapes."""
    info = read_model_info(path)
    return {
        "file": str(info.path), "kind": "onnx", "interface": info.interface, "variant": info.variant, "stage": info.stage,
        "precision": info.precision, "parameters": info.parameters,
        "preprocessing": info.preprocessing.to_dict(), "score_meaning": info.score_meaning,
        "calibration": info.calibration if info.calibration is not None else "none",
        "source_checkpoint_sha256": info.source_sha256, "pinet_version": info.pinet_version,
        "export_date": info.export_date, "onnx_format_version": info.format_version,
        "file_size_bytes": info.path.stat().st_size,
        "input": {"name": info.input.name, "shape": list(info.input.shape), "type": info.input.element_type},
        "output": {"name": info.output.name, "shape": list(info.output.shape), "type": info.output.element_type},
    }
