"""`pinet ...`: Stage-1 synthetic-distortion pre-training (issue 3). Placeholder until its issue lands."""

from pinet.cli.common import fail


def pretrain() -> None:
    """Stage-1 synthetic-distortion pre-training (issue 3): not implemented yet."""
    raise fail("not implemented yet")
