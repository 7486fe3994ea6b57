"""`pinet ...`: Score images with an exported model (issue 6). Placeholder until its issue lands."""

from pinet.cli.common import fail


def score() -> None:
    """Score images with an exported model (issue 6): not implemented yet."""
    raise fail("not implemented yet")
