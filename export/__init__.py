"""PINet export: checkpoint -> ONNX (FP32/FP16/INT8) with embedded metadata and a validation report.

Torch and onnx are imported inside the functions, so importing this package stays light.
"""

from pinet_export.convert import ConversionResult, ExportError, convert_model, export_fp32

__all__ = ["export_fp32", "convert_model", "ConversionResult", "ExportError"]
