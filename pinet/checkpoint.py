"""Self-describing, pickle-free checkpoints (safetensors).

One ``.safetensors`` file holds the weights and, in its string metadata, everything needed to
rebuild and use the model: format name and version, stage, model config, preprocessing contract,
training metadata and the toolkit version. Loading validates all of it and names the file and
the problem on any refusal. Writes are atomic (temporary file + fsync + rename).

The header can be read without torch (:func:`read_header`), which `pinet info` uses.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from pinet import __version__
from pinet.config import ModelConfig
from pinet_runtime.errors import PinetError
from pinet_runtime.files import atomic_path
from pinet_runtime.preprocess import Preprocessing

FORMAT_NAME = "pinet-checkpoint"
FORMAT_VERSION = 1
# Tensors the two stages share: stage-1 -> stage-2 transfer copies exactly these.
SHARED_PREFIXES = ("backbone.", "staircase.", "quality_branch.", "distortion_branch.")


class CheckpointError(PinetError):
    """A checkpoint cannot be read or used; ``path`` names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        super().__init__(self.path, problem)


@dataclass
class CheckpointHeader:
    """Everything in a checkpoint but the tensors."""

    path: str
    stage: int
    model_config: ModelConfig
    preprocessing: Preprocessing
    training: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    pinet_version: str = __version__
    tensor_shapes: dict[str, list[int]] = field(default_factory=dict)
    cost: dict = field(default_factory=dict)      # {"parameters", "flops_per_crop"} at save time


def read_header(path: str | Path) -> CheckpointHeader:
    """Parse and validate a checkpoint's metadata without torch."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > min(path.stat().st_size - 8, 100_000_000):
                raise ValueError("header length exceeds the file")
            raw = json.loads(handle.read(length))
    except (struct.error, ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(path, f"not a safetensors file or corrupt header ({err})") from None
    except OSError as err:
        raise CheckpointError(path, f"cannot be read ({err.strerror or err})") from None
    meta = raw.pop("__metadata__", None) or {}
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(path, f"not a PINet checkpoint (format={meta.get('format')!r})")
    try:
        version = int(meta["format_version"])
    except (KeyError, ValueError):
        raise CheckpointError(path, "missing or invalid format_version") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(path, f"checkpoint format {version} is newer than this toolkit supports "
                                    f"({FORMAT_VERSION}); upgrade pinet-iqa")
    try:
        return CheckpointHeader(
            path=str(path), stage=int(meta["stage"]),
            model_config=ModelConfig.from_json(meta["model_config"]),
            preprocessing=Preprocessing.from_json(meta["preprocessing"]),
            training=json.loads(meta.get("training", "{}")),
            format_version=version, pinet_version=meta.get("pinet_version", "unknown"),
            tensor_shapes={name: info["shape"] for name, info in raw.items()},
            cost=json.loads(meta.get("cost", "{}")),
        )
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(path, f"invalid checkpoint metadata ({err})") from None


def save_checkpoint(path: str | Path, model, preprocessing: Preprocessing, training: dict | None = None,
                    extra_tensors: dict | None = None, half_precision_storage: bool = False) -> Path:
    """Write ``model`` (a PINetStage1/2) atomically. ``extra_tensors`` are stored under ``extra/``.

    ``half_precision_storage`` stores floating-point weights as float16 (half the file size, for
    shipping a model); loading casts them back to the model's float32.
    """
    from safetensors.torch import save_file

    from pinet.model_cost import count_parameters, flops_per_crop

    path = Path(path)

    def stored(tensor):
        tensor = tensor.detach().contiguous().cpu()
        return tensor.half() if half_precision_storage and tensor.is_floating_point() else tensor

    tensors = {name: stored(tensor) for name, tensor in model.state_dict().items()}
    for name, tensor in (extra_tensors or {}).items():
        tensors[f"extra/{name}"] = tensor.detach().contiguous().cpu()
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "stage": str(model.stage),
        "model_config": model.config.to_json(),
        "preprocessing": preprocessing.to_json(),
        "training": json.dumps(training or {}, sort_keys=True),
        "pinet_version": __version__,
        "cost": json.dumps({"parameters": count_parameters(model),
                            "flops_per_crop": flops_per_crop(model.config)}),
    }
    with atomic_path(path, durable=True) as temporary:  # a run's checkpoint must survive a power cut
        save_file(tensors, str(temporary), metadata=metadata)
    return path


@dataclass
class LoadedCheckpoint:
    header: CheckpointHeader
    model: object                     # PINetStage1 | PINetStage2, in eval mode
    extra_tensors: dict


def load_checkpoint(path: str | Path, stage: int | None = None, device: str = "cpu") -> LoadedCheckpoint:
    """Rebuild the model from a checkpoint; refuses a wrong stage, missing or unexpected tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from pinet.models import create_model

    header = read_header(path)
    if stage is not None and header.stage != stage:
        raise CheckpointError(path, f"is a stage-{header.stage} checkpoint, a stage-{stage} one is needed"
                              + (" (run `pinet train finetune` on it first)" if stage == 2 else ""))
    try:
        tensors = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(path, f"corrupt tensor data ({err})") from None
    extra = {k[len("extra/"):]: v for k, v in tensors.items() if k.startswith("extra/")}
    weights = {k: v for k, v in tensors.items() if not k.startswith("extra/")}
    model = create_model(header.model_config, stage=header.stage)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(path, "weights do not match the model config: " + "; ".join(parts))
    for name, value in model.state_dict().items():
        if tuple(value.shape) != tuple(weights[name].shape):
            raise CheckpointError(path, f"tensor {name} has shape {tuple(weights[name].shape)}, "
                                        f"the config expects {tuple(value.shape)}")
    model.load_state_dict(weights, strict=True)
    model.to(device).eval()
    return LoadedCheckpoint(header=header, model=model, extra_tensors=extra)


def transfer_stage1_to_stage2(stage1_model, stage2_model) -> list[str]:
    """Copy every shared tensor (backbone, staircase, both branches); returns the names copied."""
    if stage1_model.config.to_dict() != stage2_model.config.to_dict():
        raise ValueError("stage-1 and stage-2 models have different configs")
    source = stage1_model.state_dict()
    target = stage2_model.state_dict()
    shared = sorted(name for name in target if name.startswith(SHARED_PREFIXES))
    missing = [name for name in shared if name not in source]
    if missing:
        raise ValueError(f"stage-1 model lacks shared tensors: {missing[:3]}")
    stage2_model.load_state_dict({**target, **{name: source[name] for name in shared}}, strict=True)
    return shared


def file_sha256(path: str | Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
