"""The PINet model family (needs the train or export extra: torch)."""

from pinet.models.registry import create_model, default_preprocessing, get_config, list_models, register_variant

__all__ = ["create_model", "default_preprocessing", "get_config", "list_models", "register_variant"]
