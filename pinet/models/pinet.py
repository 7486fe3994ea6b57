"""PINet networks, as the PINet paper specifies them (decisions it leaves open: docs/architecture.md).

Contract shared by both stages (timm style): ``forward_features(x)`` returns the fused
representation R (backbone taps + staircase); ``forward_head`` turns R into the stage's output.
"""

from __future__ import annotations

import torch
from torch import nn

from pinet.config import ModelConfig
from pinet.models.backbones import build_backbone


def _mlp(in_features: int, hidden: tuple[int, ...], out_features: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True)]
        in_features = width
    layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)


class PathBlock(nn.Sequential):
    """Carries one tap down to the next scale: convs with bias, no norm, no activation."""

    def __init__(self, cin: int, cout: int, bottleneck: int | None):
        if bottleneck is None:  # p1: same resolution
            super().__init__(nn.Conv2d(cin, cout, 1))
        else:
            super().__init__(nn.Conv2d(cin, bottleneck, 1),
                             nn.Conv2d(bottleneck, bottleneck, 3, stride=2, padding=1),
                             nn.Conv2d(bottleneck, cout, 1))


class Staircase(nn.Module):
    """Multi-scale fusion; each path block has ONE set of weights wherever it appears."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = config.tap_channels
        self.p1 = PathBlock(c[0], c[1], None)
        self.p2 = PathBlock(c[1], c[2], config.path_bottleneck(c[1]))
        self.p3 = PathBlock(c[2], c[3], config.path_bottleneck(c[2]))
        self.p4 = PathBlock(c[3], c[4], config.path_bottleneck(c[3]))

    def forward(self, taps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        f1, f2, f3, f4, f5 = taps
        p2, p3, p4 = self.p2, self.p3, self.p4
        s1 = p4(p3(p2(self.p1(f1) + f2) + f3) + f4)
        s2 = p4(p3(p2(f2) + f3) + f4)
        s3 = p4(p3(f3) + f4)
        s4 = p4(f4)
        return f5 + s1 + s2 + s3 + s4


class Branch(nn.Module):
    """Four 3x3 convs (padding 1) halving the channels; used straight (stage 1) or level by level."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int]):
        super().__init__()
        channels = (in_channels, *widths)
        self.convs = nn.ModuleList(nn.Conv2d(channels[i], channels[i + 1], 3, padding=1) for i in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Straight stack, then ReLU and global average pooling (stage 1)."""
        for conv in self.convs:
            x = conv(x)
        return torch.relu(x).mean(dim=(2, 3))


class _PINetBase(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone)
        if tuple(self.backbone.tap_channels) != tuple(config.tap_channels):
            raise ValueError(f"{config.variant}: config tap channels {config.tap_channels} do not match "
                             f"backbone {config.backbone} {self.backbone.tap_channels}")
        self.staircase = Staircase(config)
        self.quality_branch = Branch(config.tap_channels[4], config.branch_channels)
        self.distortion_branch = Branch(config.tap_channels[4], config.branch_channels)

    def forward_taps(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.backbone(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """R: the fused 7x7 representation (f5 channels) of a batch of crops."""
        return self.staircase(self.backbone(x))


class PINetStage1(_PINetBase):
    """Coarse-grained perception construction: a Siamese pair network.

    Outputs (rank_logits [B,2], distortion_logits_1 [B,C], distortion_logits_2 [B,C]); rank class 0
    means the first image is the better one, class 1 the second.
    """

    stage = 1

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        last = config.branch_channels[-1]
        self.rank_head = _mlp(last, config.head_hidden, 2)
        self.distortion_head = _mlp(last, config.head_hidden, config.num_distortion_classes)

    def forward_head(self, r1: torch.Tensor, r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rank = self.rank_head(self.quality_branch(r1 - r2))
        return rank, self.distortion_head(self.distortion_branch(r1)), self.distortion_head(self.distortion_branch(r2))

    def forward(self, image1: torch.Tensor, image2: torch.Tensor):
        # One backbone pass over both images keeps BatchNorm statistics shared, as a Siamese net should.
        both = self.forward_features(torch.cat([image1, image2]))
        r1, r2 = both.split(image1.shape[0])
        return self.forward_head(r1, r2)


class PINetStage2(_PINetBase):
    """Fine-grained interaction learning: cross-gated branches and a score regressor.

    Input [B,3,S,S] square crops; output [B], one score per crop.
    """

    stage = 2

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.regressor = _mlp(2 * config.branch_channels[-1], config.regressor_hidden, 1)

    def interact(self, r: torch.Tensor) -> torch.Tensor:
        """The cross-gating of the PINet specification (section 4); returns v before the regressor."""
        q, d = r, r
        for level, (q_conv, d_conv) in enumerate(zip(self.quality_branch.convs, self.distortion_branch.convs)):
            if level > 0:
                # Per-channel spatial matrix products (square maps), each gate built from the other branch.
                gate_q = torch.sigmoid(torch.matmul(d, q))
                gate_d = torch.sigmoid(torch.matmul(q, d))
                q, d = q * gate_q, d * gate_d
            q, d = q_conv(q), d_conv(d)
        return torch.relu(torch.cat([q, d], dim=1)).mean(dim=(2, 3))

    def forward_head(self, r: torch.Tensor) -> torch.Tensor:
        return self.regressor(self.interact(r)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
