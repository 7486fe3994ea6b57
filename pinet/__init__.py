"""PINet blind image quality toolkit: models, checkpoints and the `pinet` CLI.

Importing `pinet` stays torch-free. ``pinet.create_model`` and ``pinet.list_models`` (as in timm)
load the variant registry on first use; building a network needs torch, listing does not.
"""

__version__ = "0.1.0"

# Loaded on first attribute access so that `import pinet` (the runtime CLI's entry) stays light.
_REGISTRY_NAMES = ("create_model", "list_models", "get_config", "get_variant")

__all__ = ["__version__", *_REGISTRY_NAMES]


def __getattr__(name: str):
    if name in _REGISTRY_NAMES:
        from pinet.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'pinet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_REGISTRY_NAMES])
