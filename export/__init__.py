"""PINet export: checkpoint -> ONNX (FP32/FP16/INT8) with embedded metadata and a validation report."""
