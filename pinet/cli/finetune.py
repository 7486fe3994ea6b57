"""`pinet ...`: Stage-2 fine-tuning (issue 4). Placeholder until its issue lands."""

from pinet.cli.common import fail


def finetune() -> None:
    """Stage-2 fine-tuning (issue 4): not implemented yet."""
    raise fail("not implemented yet")
