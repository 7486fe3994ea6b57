"""`pinet bench`: latency, throughput, memory, size and cold start of PyTorch eager vs ONNX
FP32 / INT8 (/ FP16 on CUDA) against the machine's matmul peak.

settings.py: what to measure; models.py: the models and the file each precision runs from;
exports.py: those files for a checkpoint, by the `pinet export` pipeline; run.py: the
orchestration; probe.py: the child process that measures one row; report.py: rows, ratios,
targets and the report files; table.py: the markdown tables and the chart.
"""

from pinet_export.bench.run import run_benchmark
from pinet_export.bench.settings import PRECISIONS, PROVIDERS, BenchError, BenchSettings

__all__ = ["PRECISIONS", "PROVIDERS", "BenchError", "BenchSettings", "run_benchmark"]
