"""`pinet ...`: Export a checkpoint to ONNX (issue 5). Placeholder until its issue lands."""

from pinet.cli.common import fail


def export() -> None:
    """Export a checkpoint to ONNX (issue 5): not implemented yet."""
    raise fail("not implemented yet")
