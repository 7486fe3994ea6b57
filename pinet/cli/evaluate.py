"""`pinet ...`: Evaluate a checkpoint on a dataset (issue 4). Placeholder until its issue lands."""

from pinet.cli.common import fail


def evaluate() -> None:
    """Evaluate a checkpoint on a dataset (issue 4): not implemented yet."""
    raise fail("not implemented yet")
