"""Model configuration: plain data, importable without torch.

A :class:`ModelConfig` fully describes a PINet network's architecture. It is stored in every
checkpoint and ONNX file, so a model can be rebuilt from the file alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

NUM_DISTORTION_CLASSES = 6
DISTORTION_CLASSES = ("blur", "noise", "compression", "colour", "brightness_contrast", "spatial")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one PINet variant (the PINet paper's model and ours: docs/architecture.md).

    ``tap_channels`` are the channels of the five backbone taps f1..f5 at strides 4, 4, 8, 16, 32.
    Every other width derives from them unless given explicitly.
    """

    variant: str
    backbone: str
    tap_channels: tuple[int, int, int, int, int]
    branch_channels: tuple[int, int, int, int]
    path_bottleneck_divisor: int = 4
    path_bottleneck_min: int = 16
    num_distortion_classes: int = NUM_DISTORTION_CLASSES
    head_hidden: tuple[int, ...] = (64, 32)              # stage-1 ranking and distortion MLPs
    regressor_hidden: tuple[int, ...] = (128, 64, 32)    # stage-2 score MLP
    input_size: int = 224
    paper_model: bool = False                            # True only for the paper's ResNet-50 PINet

    @classmethod
    def derive(cls, variant: str, backbone: str, tap_channels: tuple[int, ...],
               paper_model: bool = False) -> "ModelConfig":
        """Branch widths halve from f5's channels at each of the four levels (2048 -> 1024..128)."""
        c5 = tap_channels[4]
        branch = tuple(max(c5 // 2 ** level, 8) for level in range(1, 5))
        return cls(variant=variant, backbone=backbone, tap_channels=tuple(tap_channels),
                   branch_channels=branch, paper_model=paper_model)

    def path_bottleneck(self, channels: int) -> int:
        return max(channels // self.path_bottleneck_divisor, self.path_bottleneck_min)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config fields {unknown} (written by a newer toolkit?)")
        tuples = {"tap_channels", "branch_channels", "head_hidden", "regressor_hidden"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))
