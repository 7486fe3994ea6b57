"""The measuring side of `pinet bench`: runs in a fresh child process, one per benchmark row.

Run as a script (``python .../bench/probe.py SPEC_JSON``), not with ``-m``: then nothing but the
standard library is imported before the clock starts, so the cold start really covers
``import pinet_runtime`` + Scorer creation + the first score, and the peak resident memory
(VmHWM) belongs to this one model at this one precision. The result is one JSON line on stdout.

Kinds of probe (``spec["kind"]``):
- ``onnx``: pinet_runtime Scorer on an exported file (fp32 / int8 / fp16);
- ``torch``: PyTorch eager on a checkpoint, or on the architecture stored in an ONNX file's
  metadata with random weights (latency does not depend on the weight values);
- ``matmul``: the machine's float32 matrix-multiply peak with numpy (thread count from the
  OPENBLAS/OMP/MKL environment variables the parent sets before numpy loads).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    # Run as a script, Python puts export/bench/ first on sys.path; its modules (models, report,
    # settings...) must not shadow anything the probed libraries import.
    sys.path.pop(0)

import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def _status_kib(field: str) -> int | None:
    """A /proc/self/status memory field (VmRSS, VmHWM) in KiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (VmHWM, else getrusage's ru_maxrss in KiB)."""
    kib = _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0


def current_rss_mib() -> float | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024.0


def _timed_runs(run, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def probe_onnx(spec: dict) -> dict:
    started = time.perf_counter()
    from pinet_runtime.scorer import Scorer
    libraries_rss = current_rss_mib()
    scorer = Scorer(spec["model_path"], providers=spec["provider"], threads=spec["threads"])
    scorer.score(spec["photo"])
    cold_start_ms = (time.perf_counter() - started) * 1000.0

    import numpy as np

    crops = np.load(spec["crops_path"])
    times = _timed_runs(lambda: scorer.score_crops(crops), spec["warmup"], spec["repeats"])
    result = {"run_ms": times, "cold_start_ms": cold_start_ms, "rss_libraries_mib": libraries_rss,
              "execution_providers": scorer.providers}
    if spec.get("profile_ops"):
        result["op_profile"] = profile_ops(spec, crops)
    return result


def profile_ops(spec: dict, crops) -> list[dict]:
    """onnxruntime's own per-node profile, summed by operator type (milliseconds per run)."""
    import tempfile

    import onnxruntime as ort

    from pinet_runtime.metadata import INPUT_NAME

    options = ort.SessionOptions()
    options.intra_op_num_threads = spec["threads"]
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(spec["model_path"], sess_options=options,
                                       providers=_ort_providers(spec["provider"]))
        runs = max(2, min(spec["repeats"], 5))
        for _ in range(runs):
            session.run(None, {INPUT_NAME: crops})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, list] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "op_name" in args and event.get("name", "").endswith("_kernel_time"):
            entry = totals.setdefault(args["op_name"], [0.0, 0])
            entry[0] += event.get("dur", 0) / 1000.0
            entry[1] += 1
    all_ms = sum(ms for ms, _ in totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda item: -item[1][0])
    return [{"op_type": op, "ms_per_run": round(ms / runs, 3), "share": round(ms / all_ms, 4),
             "nodes": count // runs} for op, (ms, count) in ranked]


def _ort_providers(provider: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]


def probe_torch(spec: dict) -> dict:
    started = time.perf_counter()
    import torch

    from pinet_runtime.preprocess import Preprocessing, preprocess
    libraries_rss = current_rss_mib()
    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    if spec.get("checkpoint"):
        from pinet.checkpoint import load_checkpoint

        loaded = load_checkpoint(spec["checkpoint"], stage=2, device=device)
        model, prep = loaded.model, loaded.header.preprocessing
    else:
        from pinet.config import ModelConfig
        from pinet.models import create_model

        model = create_model(ModelConfig.from_dict(spec["model_config"]), stage=2).to(device).eval()
        prep = Preprocessing.from_dict(spec["preprocessing"])

    def forward(crops):
        with torch.inference_mode():
            scores = model(crops.to(device))
            if device != "cpu":
                torch.cuda.synchronize()
            return scores

    forward(torch.from_numpy(preprocess(spec["photo"], prep))).mean().item()
    cold_start_ms = (time.perf_counter() - started) * 1000.0

    import numpy as np

    crops = torch.from_numpy(np.load(spec["crops_path"]))
    times = _timed_runs(lambda: forward(crops), spec["warmup"], spec["repeats"])
    return {"run_ms": times, "cold_start_ms": cold_start_ms, "rss_libraries_mib": libraries_rss,
            "execution_providers": [f"torch {torch.__version__} eager on {device}"]}


def probe_matmul(spec: dict) -> dict:
    import numpy as np

    size = spec["size"]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    times = _timed_runs(lambda: a @ b, spec["warmup"], spec["repeats"])
    flop = 2.0 * size ** 3
    gflops = sorted(flop / (ms / 1000.0) / 1e9 for ms in times)
    return {"best_gflops": gflops[-1], "median_gflops": gflops[len(gflops) // 2], "run_ms": times}


def probe_camera(spec: dict) -> dict:
    """A camera-size JPEG through the runtime vs the model alone, interleaved in one process so the
    ratios compare like with like on a busy machine: model only (score_crops on the photo's crops),
    decode + preprocess (crops), one photo end to end (score), and a stream of photos through
    score_many with batch 1 (decode of the next photo overlapped with the model, and without)."""
    from pinet_runtime.scorer import Scorer

    scorer = Scorer(spec["model_path"], providers=spec["provider"], threads=spec["threads"])
    photo, stream = spec["photo"], [spec["photo"]] * spec["stream_images"]
    crops = scorer.crops(photo)
    steps = {
        "model_ms": lambda: scorer.score_crops(crops),
        "preprocess_ms": lambda: scorer.crops(photo),
        "single_ms": lambda: scorer.score(photo),
        "stream_ms": lambda: list(scorer.score_many(stream, batch_size=1)),
        "stream_no_prefetch_ms": lambda: list(scorer.score_many(stream, batch_size=1, prefetch=False)),
    }
    times: dict[str, list] = {name: [] for name in steps}
    for round_index in range(spec["warmup"] + spec["repeats"]):
        for name, run in steps.items():
            started = time.perf_counter()
            run()
            if round_index >= spec["warmup"]:
                times[name].append((time.perf_counter() - started) * 1000.0)
    for name in ("stream_ms", "stream_no_prefetch_ms"):   # per photo
        times[name] = [ms / spec["stream_images"] for ms in times[name]]
    from pinet_runtime.decode import DECODE_PATH_KEY
    from pinet_runtime.preprocess import load_image

    return {"times": times, "decode_path": load_image(photo, scorer.preprocessing).info.get(DECODE_PATH_KEY),
            "execution_providers": scorer.providers}


PROBES = {"onnx": probe_onnx, "torch": probe_torch, "matmul": probe_matmul, "camera": probe_camera}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    result = PROBES[spec["kind"]](spec)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
