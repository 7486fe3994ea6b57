"""``--freeze-backbone-stages K``: keep the backbone's first K stages fixed during fine-tuning.

Stages (stem first): EfficientNet-Lite0 = stem (conv_stem, bn0) then its 7 block stages
(1, 2, 2, 3, 3, 4, 1 blocks); ResNet = stem (conv1, bn1) then layer1..layer4. Frozen
parameters get ``requires_grad=False`` (left out of the optimizer, so no backward pass through
or into them: the early, high-resolution stages are the costliest part of backward) and frozen
modules stay in eval mode, so their BatchNorm running statistics do not move either.
"""

from __future__ import annotations

from torch import nn


def backbone_stages(backbone: nn.Module) -> list[list[nn.Module]]:
    """The backbone's stages in forward order, each a list of modules."""
    if hasattr(backbone, "blocks"):
        from pinet.models.backbones import _LITE0_STAGES

        stages, start = [[backbone.conv_stem, backbone.bn0]], 0
        for repeats, *_ in _LITE0_STAGES:
            stages.append(list(backbone.blocks[start:start + repeats]))
            start += repeats
        return stages
    if hasattr(backbone, "layer1"):
        return [[backbone.conv1, backbone.bn1], [backbone.layer1], [backbone.layer2], [backbone.layer3],
                [backbone.layer4]]
    raise ValueError(f"freezing stages: unknown backbone type {type(backbone).__name__}")


def freeze_backbone_stages(model: nn.Module, count: int) -> list[nn.Module]:
    """Freeze the first ``count`` stages; returns the frozen modules (to be kept in eval mode)."""
    if count <= 0:
        return []
    stages = backbone_stages(model.backbone)
    if count > len(stages):
        raise ValueError(f"--freeze-backbone-stages {count}: {model.config.backbone} has {len(stages)} stages "
                         "(stem included)")
    frozen = [module for stage in stages[:count] for module in stage]
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        module.eval()
    return frozen


def keep_frozen_in_eval(frozen: list[nn.Module]) -> None:
    """Call after ``model.train()``: frozen BatchNorms keep their running statistics."""
    for module in frozen:
        module.eval()
