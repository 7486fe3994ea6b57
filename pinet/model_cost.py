"""Model cost figures: parameters and FLOPs per crop, computed on the meta device (no compute)."""

from __future__ import annotations

from pinet.config import ModelConfig


def count_parameters(model) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def flops_per_crop(config: ModelConfig) -> int:
    """Floating-point operations (2 x multiply-accumulates) of one stage-2 forward pass on one crop."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pinet.models import create_model

    with torch.device("meta"):
        model = create_model(config, stage=2).eval()
        crop = torch.empty(1, 3, config.input_size, config.input_size)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(crop)
    return int(counter.get_total_flops())
