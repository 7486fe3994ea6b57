"""The default model's stage-2 checkpoint, rebuilt from the bundled FP32 ONNX file.

The wheel leaves ``pinet/assets/default.safetensors`` out: its 8.6 MB serve only `pinet export`
and training, while scoring reads the ONNX files. Where the checkpoint is absent, `pinet export`
rebuilds the same network from ``pinet_runtime/assets/default.onnx`` once and keeps it in the user
cache (``$PINET_CACHE_DIR``, else ``$XDG_CACHE_HOME/pinet``, else ``~/.cache/pinet``).

How: the ONNX metadata gives the variant's ``ModelConfig`` and the preprocessing contract, so the
torch model is built as usual. The exporter keeps parameter names as initializer names, and
onnxsim folded every BatchNorm into the convolution before it (scale into the weight, shift into a
new bias). So each Conv2d/Linear takes the weight (and bias) of the Conv/Gemm nodes that read
``<module>.weight``, and each BatchNorm becomes the identity (weight 1, mean 0, variance
``1 - eps``, so ``sqrt(var + eps)`` is 1) holding the folded bias. Exporting the result folds
nothing more and gives the same graph. Every shape is checked, every weight of the graph must
find its module, and the rebuilt model must score the bundled photos as the ONNX file does;
anything else is refused with a :class:`RebuildError` naming the file and the problem.

The rebuilt checkpoint is for export and evaluation only: with BatchNorm statistics folded away,
fine-tuning from it (batch statistics in train mode) is not fine-tuning the original model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from pinet.checkpoint import CheckpointError, file_sha256, read_header, save_checkpoint
from pinet_runtime.errors import ModelFileError
from pinet_runtime.model_file import NoDefaultModelError, default_model_path

CACHE_ENV = "PINET_CACHE_DIR"
# Scores are in [0, 1]; the rebuilt model differs from the ONNX file by float rounding only
# (about 1e-6 measured), so anything near this bound means a wrong weight.
SCORE_TOLERANCE = 1e-4
VERIFY_PHOTOS = 3
REBUILT_KIND = "rebuilt_from_onnx"
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


class RebuildError(CheckpointError):
    """The ONNX file cannot be turned back into a stage-2 checkpoint; names the file and the problem."""


def cache_dir() -> Path:
    """Where rebuilt checkpoints are kept: $PINET_CACHE_DIR, $XDG_CACHE_HOME/pinet or ~/.cache/pinet."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pinet"


def default_checkpoint_from_onnx(progress: Callable[[str], None] | None = None,
                                 onnx_path: str | Path | None = None, cache: Path | None = None) -> Path | None:
    """The cached checkpoint rebuilt from ``onnx_path`` (default: the bundled FP32 file), built on
    first use; None when this install bundles no default model either."""
    if onnx_path is None:
        try:
            onnx_path = default_model_path("fp32")
        except NoDefaultModelError:
            return None
    onnx_path = Path(onnx_path)
    sha256 = file_sha256(onnx_path)
    # Keyed by the ONNX file's hash: an upgraded package with a new default model rebuilds.
    target = (cache or cache_dir()) / f"default-{sha256[:16]}.safetensors"
    if _rebuilt_from(target) == sha256:
        return target
    if progress:
        progress(f"rebuilding the default checkpoint from {onnx_path.name} into {target.parent} (once)")
    model, prep, metadata = rebuild_model(onnx_path)
    difference, crops = score_difference(model, onnx_path)
    if difference > SCORE_TOLERANCE:
        raise RebuildError(onnx_path, f"the rebuilt model scores differ from the ONNX file by up to {difference:.2e} "
                                      f"(tolerance {SCORE_TOLERANCE:.0e}); the graph does not match the model")
    training = {"kind": REBUILT_KIND, "rebuilt_from_onnx": onnx_path.name, "rebuilt_from_onnx_sha256": sha256,
                "source_checkpoint_sha256": metadata.source_sha256, "max_score_difference": difference,
                "verified_crops": crops,
                "note": "BatchNorm folded into the convolutions: for export and evaluation, not for fine-tuning"}
    try:
        return save_checkpoint(target, model, prep, training=training)
    except OSError as err:
        raise RebuildError(target, f"cannot write the rebuilt default checkpoint ({err.strerror or err}); "
                                   f"set {CACHE_ENV} to a writable folder") from None


def _rebuilt_from(path: Path) -> str | None:
    """The ONNX hash a cached checkpoint was rebuilt from; None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        training = read_header(path).training
    except CheckpointError:
        return None  # a damaged cache entry is rebuilt over
    return training.get("rebuilt_from_onnx_sha256") if training.get("kind") == REBUILT_KIND else None


def rebuild_model(onnx_path: str | Path):
    """(stage-2 model in eval mode, Preprocessing, ModelMetadata) from an FP32 PINet ONNX file."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    from pinet.config import ModelConfig
    from pinet.models import create_model
    from pinet_export.onnx_metadata import read_typed_metadata

    onnx_path = Path(onnx_path)
    try:
        proto = onnx.load(str(onnx_path))
        metadata = read_typed_metadata(proto, onnx_path)
    except ModelFileError as err:
        raise RebuildError(onnx_path, err.problem) from None
    except (OSError, DecodeError) as err:
        raise RebuildError(onnx_path, f"not a readable ONNX file ({err})") from None
    if metadata.precision != "fp32":
        raise RebuildError(onnx_path, f"is a {metadata.precision} file; only FP32 weights give the checkpoint back")
    try:
        config = ModelConfig.from_json(json.dumps(metadata.model_config))
        model = create_model(config, stage=2).eval()
    except (KeyError, TypeError, ValueError) as err:
        raise RebuildError(onnx_path, f"metadata pinet.model_config does not build a model ({err})") from None
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in proto.graph.initializer}
    state = _state_from_graph(onnx_path, model, proto.graph, initializers, metadata.preprocessing.crop_size)
    model.load_state_dict(state, strict=True)
    return model, metadata.preprocessing, metadata


def _state_from_graph(path: Path, model, graph, initializers: dict, crop_size: int) -> dict:
    """The model's state_dict filled from the graph's weights (see the module docstring)."""
    import torch

    nodes_by_weight: dict[str, list] = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 1:
            nodes_by_weight.setdefault(node.input[1], []).append(node)
    state = model.state_dict()
    batchnorm_after = _batchnorm_after_layer(path, model, crop_size)
    used = set()
    for name, module in model.named_modules():
        nodes = nodes_by_weight.get(f"{name}.weight")
        # A layer absent from the graph is one the scorer never runs: it keeps its initial value.
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and nodes:
            norm = batchnorm_after.get(name)
            eps = model.get_submodule(norm).eps if norm else 0.0
            used |= _load_layer(path, state, name, nodes, initializers, norm, eps)
    unused = sorted({name for node in graph.node if node.op_type in WEIGHT_OPS for name in node.input[1:]
                     if name in initializers and initializers[name].ndim >= 1 and name not in used})
    if unused:
        raise RebuildError(path, f"{len(unused)} weight(s) of the graph match no layer of the "
                                 f"{model.config.variant} model (e.g. {', '.join(unused[:3])})")
    return state


def _load_layer(path: Path, state: dict, name: str, nodes: list, initializers: dict, norm: str | None,
                eps: float) -> set[str]:
    """Put layer ``name``'s weight, and its bias or its folded BatchNorm's, into ``state``;
    returns the initializer names used."""
    import torch

    weight_name = nodes[0].input[1]
    bias_names = {node.input[2] if len(node.input) > 2 else "" for node in nodes}
    if len(bias_names) > 1:
        raise RebuildError(path, f"nodes reading {weight_name} add different biases {sorted(bias_names)}")
    (bias_name,) = bias_names
    for stored in filter(None, (weight_name, bias_name)):
        if stored not in initializers:
            raise RebuildError(path, f"{stored} of layer {name} is computed in the graph, not stored")
    weight = _layer_weight(path, nodes[0], initializers[weight_name])
    _check_shape(path, weight_name, weight, state[f"{name}.weight"])
    state[f"{name}.weight"] = torch.from_numpy(weight.copy())
    bias_key = f"{norm}.bias" if norm else f"{name}.bias"
    if norm:
        _make_identity(state, norm, eps)
        if f"{name}.bias" in state:  # the folded bias already holds the layer's own
            state[f"{name}.bias"] = torch.zeros_like(state[f"{name}.bias"])
    if bias_key not in state:
        if bias_name:
            raise RebuildError(path, f"{weight_name} adds bias {bias_name}, but layer {name} has none")
    elif bias_name:
        _check_shape(path, bias_name, initializers[bias_name], state[bias_key])
        state[bias_key] = torch.from_numpy(initializers[bias_name].copy())
    else:
        state[bias_key] = torch.zeros_like(state[bias_key])  # the graph adds no bias: it is zero
    return {weight_name, bias_name} - {""}


def _batchnorm_after_layer(path: Path, model, crop_size: int) -> dict[str, str]:
    """{conv module name: name of the BatchNorm2d that normalises its output}, traced on one
    dummy crop; a BatchNorm fed by anything else cannot have been folded and is refused."""
    import torch

    producers: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: dict[str, str] = {}
    orphans: list[str] = []

    def remember(name):
        def hook(module, inputs, output):
            # The output stays referenced, so its id() is unique for the whole trace.
            producers[id(output)] = (name, output)
        return hook

    def pair(name):
        def hook(module, inputs):
            producer = producers.get(id(inputs[0]))
            if producer:
                pairs[producer[0]] = name
            else:
                orphans.append(name)
        return hook

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            handles.append(module.register_forward_hook(remember(name)))
        elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_pre_hook(pair(name)))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, crop_size, crop_size))
    finally:
        for handle in handles:
            handle.remove()
    if orphans:
        raise RebuildError(path, f"BatchNorm {orphans[0]} does not follow a convolution, so the ONNX "
                                 "graph cannot hold it folded; this model cannot be rebuilt")
    return pairs


def _layer_weight(path: Path, node, weight: np.ndarray) -> np.ndarray:
    """The torch layout of a node's weight (Gemm may store it transposed)."""
    if node.op_type != "Gemm":
        return weight
    attributes = {a.name: a for a in node.attribute}
    if "transA" in attributes and attributes["transA"].i:
        raise RebuildError(path, f"Gemm reading {node.input[1]} transposes its input; not a Linear layer")
    for scale in ("alpha", "beta"):
        if scale in attributes and attributes[scale].f != 1.0:
            raise RebuildError(path, f"Gemm reading {node.input[1]} has {scale}={attributes[scale].f}; "
                                     "not a Linear layer")
    transposed = "transB" in attributes and attributes["transB"].i
    return weight if transposed else weight.T


def _check_shape(path: Path, onnx_name: str, value: np.ndarray, expected) -> None:
    if tuple(value.shape) != tuple(expected.shape):
        raise RebuildError(path, f"initializer {onnx_name} has shape {tuple(value.shape)}, the model "
                                 f"expects {tuple(expected.shape)}")
    if value.dtype != np.float32:
        raise RebuildError(path, f"initializer {onnx_name} is {value.dtype}, not float32")


def _make_identity(state: dict, norm: str, eps: float) -> None:
    import torch

    channels = state[f"{norm}.weight"].shape[0]
    state[f"{norm}.weight"] = torch.ones(channels)
    state[f"{norm}.running_mean"] = torch.zeros(channels)
    state[f"{norm}.running_var"] = torch.full((channels,), 1.0 - eps)


def score_difference(model, onnx_path: Path, photos: int = VERIFY_PHOTOS) -> tuple[float, int]:
    """(largest per-crop |torch - onnxruntime| score difference, crops compared) on bundled photos."""
    import torch

    from pinet_export.photos import bundled_samples_dir, list_photos
    from pinet_runtime import Scorer

    scorer = Scorer(onnx_path, providers="cpu")
    crops = np.concatenate([scorer.crops(path) for path in list_photos(bundled_samples_dir())[:photos]])
    with torch.no_grad():
        rebuilt = model(torch.from_numpy(crops)).double().numpy().reshape(-1)
    return float(np.max(np.abs(rebuilt - scorer.score_crops(crops)))), len(crops)
