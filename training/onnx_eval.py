"""``--eval-engine onnx``: score validation/test crops with onnxruntime instead of torch eager.

On this project's 2-core CPU torch eager runs a pinet_lite0 forward at ~5-7 crops/s while
onnxruntime FP32 runs the same weights at ~16-19 crops/s (measured 2026-11-28, shared machine;
max abs score difference 7e-6), and fine-tuning spends most of its time scoring validation and
test images. :func:`onnx_scorer` exports the model in eval mode to an in-memory ONNX graph
(TorchScript exporter, opset 17, dynamic batch) and returns a callable with the model's
``crops -> scores`` interface, so ``checkpoint_evaluation.score_images`` uses it unchanged. Training itself
stays in torch; the engine used is recorded next to every figure.
"""

from __future__ import annotations

import io
import warnings

ENGINES = ("torch", "onnx")


class OnnxScorer:
    """``scorer(crops)`` -> torch tensor of scores, computed by onnxruntime on the CPU."""

    def __init__(self, model, threads: int | None = None, output_names: tuple[str, ...] | list[str] = ("scores",)):
        import onnxruntime
        import torch

        was_training = model.training
        model.eval()
        example = torch.zeros(1, 3, 224, 224)
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["crops"],
                              output_names=list(output_names), opset_version=17,
                              dynamic_axes={"crops": {0: "n", 2: "h", 3: "w"}, **{n: {0: "n"} for n in output_names}})
        model.train(was_training)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def run(self, crops) -> list:
        """Every output (numpy arrays) for a numpy batch of crops."""
        import numpy as np

        return self.session.run(None, {"crops": np.ascontiguousarray(crops, dtype=np.float32)})

    def __call__(self, crops):
        import torch

        return torch.from_numpy(self.run(crops.detach().cpu().numpy())[0])


def scoring_model(model, engine: str, threads: int | None = None):
    """The model itself (torch) or its onnxruntime twin (onnx)."""
    if engine not in ENGINES:
        raise ValueError(f"eval engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return model if engine == "torch" else OnnxScorer(model, threads)
