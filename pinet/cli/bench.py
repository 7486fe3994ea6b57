"""`pinet ...`: Benchmark PyTorch vs ONNX FP32/INT8 (issue 7). Placeholder until its issue lands."""

from pinet.cli.common import fail


def bench() -> None:
    """Benchmark PyTorch vs ONNX FP32/INT8 (issue 7): not implemented yet."""
    raise fail("not implemented yet")
