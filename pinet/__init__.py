"""PINet blind image quality toolkit: models, checkpoints and the `pinet` CLI.

Importing `pinet` stays torch-free; `pinet.models` and `pinet.checkpoint` need torch.
"""

__version__ = "0.1.0"
