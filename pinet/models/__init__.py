"""The PINet model family. The registry is torch-free; building a network needs torch (train or export extra)."""

from pinet.models.pretrained import PretrainedWeights
from pinet.models.registry import (
    VariantSpec,
    auto_init,
    create_model,
    default_preprocessing,
    get_config,
    get_variant,
    list_models,
    register_variant,
)

__all__ = ["PretrainedWeights", "VariantSpec", "auto_init", "create_model", "default_preprocessing", "get_config",
           "get_variant", "list_models", "register_variant"]
