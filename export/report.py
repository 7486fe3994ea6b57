"""report.json (machine-readable) and report.md (for people), written atomically."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from pinet import __version__
from pinet_export.config import REPORT_JSON, REPORT_MD
from pinet_runtime.files import write_text_atomic

CROP_AVERAGING_NOTE = ("The ONNX model outputs one score per crop; the image score is the mean over the "
                       "contract's crops, computed by the runtime (pinet_runtime), not inside the graph.")
E2E_NOTE = ("The end-to-end files (model.e2e*.onnx) take image uint8 [H, W, 3] (upright RGB pixels, decoded by the "
            "app) and output score float32 (one value, the crop mean); resize, crops and normalisation run inside. "
            "Parity: against `pinet score` (the runtime, JPEGs DCT-scaled where jpeg_draft applies) with the same "
            "precision, on 5 shapes of each validation photo (file, portrait, panorama, tiny, 2.2x JPEG).")
ORT_NOTE = ("*.ort: ORT format for onnxruntime Mobile (optimisation style Fixed, target arm); "
            "required_operators.config lists their operators for a minimal build (--include_ops_by_config).")


def build_report(*, checkpoint, checkpoint_sha256, model_config, prep, settings, conversion, calibration,
                 validations, files, latency_ms, cpu_flags, photo_skips, skipped_steps, parity_photo_count,
                 machine, seconds) -> dict:
    import onnx
    import onnxruntime
    import torch

    return {
        "pinet_version": __version__,
        "date": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "checkpoint": {"path": str(checkpoint), "sha256": checkpoint_sha256, "variant": model_config.variant},
        "model": {"input": f"crops float32 [{settings.batch or 'batch'}, 3, {prep.crop_size}, {prep.crop_size}]",
                  "output": f"scores float32 [{settings.batch or 'batch'}]", "crops_per_image": prep.num_crops,
                  "crop_layout": prep.crop_layout, "note": CROP_AVERAGING_NOTE,
                  **({"end_to_end": E2E_NOTE} if any(k.startswith("e2e-") for k in files) else {}),
                  **({"ort": ORT_NOTE} if "required-operators" in files else {})},
        "passed": all(v.passed for v in validations) and not skipped_steps,
        "validated": settings.validate,
        "steps": [v.to_dict() for v in validations],
        "skipped_steps": [f"{step}: skipped because the FP32 export failed" for step in skipped_steps],
        "files": {precision: {"path": path, "bytes": Path(path).stat().st_size} for precision, path in files.items()},
        "conversion": conversion,
        "calibration": calibration,
        "latency_ms_per_image": {"batch": settings.batch or prep.num_crops, "runs": 5, "statistic": "median",
                                 "provider": "CPUExecutionProvider", **latency_ms},
        "parity_photos": parity_photo_count,
        "unreadable_photos": photo_skips,
        "environment": {"cpu_flags": cpu_flags, "machine": machine, "onnxruntime": onnxruntime.__version__,
                        "onnx": onnx.__version__, "torch": torch.__version__},
        "seconds": seconds,
    }


def _figure(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def render_markdown(report: dict) -> str:
    lines = [f"# PINet export report ({report['checkpoint']['variant']})", "",
             f"Result: **{'PASSED' if report['passed'] else 'FAILED'}**"
             + ("" if report["validated"] else " (validation skipped with --no-validate)"), "",
             f"- checkpoint: `{report['checkpoint']['path']}` (sha256 `{report['checkpoint']['sha256'][:16]}...`)",
             f"- input: {report['model']['input']}; output: {report['model']['output']}",
             f"- {report['model']['note']} ({report['model']['crops_per_image']} crops, "
             f"layout `{report['model']['crop_layout']}`)"]
    lines += [f"- {report['model'][key]}" for key in ("end_to_end", "ort") if key in report["model"]]
    conv = report["conversion"]
    if conv:
        lines.append(f"- exporter: {conv['exporter']}, opset {conv['opset']}, nodes {conv['nodes_exported']} "
                     f"exported -> {conv['nodes_simplified']} after onnxsim, {conv['export_seconds']} s")
    env = report["environment"]
    flags = ", ".join(name for name, present in env["cpu_flags"].items() if present) or "none detected"
    lines += [f"- onnxruntime {env['onnxruntime']}, onnx {env['onnx']}, torch {env['torch']}; CPU flags: {flags}",
              "", "## Files", "", "| file kind | file | size (MB) | CPU latency per image (ms) |", "|---|---|---|---|"]
    latency = report["latency_ms_per_image"]
    for precision, info in report["files"].items():
        lines.append(f"| {precision} | {Path(info['path']).name} | {info['bytes'] / 1e6:.2f} | "
                     f"{_figure(latency.get(precision))} |")
    lines += ["", f"Latency: median of {latency['runs']} runs, batch {latency['batch']} (one image's crops), "
                  f"{latency['provider']}.", "", "## Validation", ""]
    for step in report["steps"]:
        lines.append(f"### {step['step']}: {'passed' if step['passed'] else 'FAILED'}")
        lines += [f"- {name}: {_figure(value)}" for name, value in step["figures"].items()]
        lines += [f"- FAILURE ({failure['kind']}): {failure['file']}: {failure['problem']}"
                  for failure in step["failures"]]
        lines += [f"- note: {note}" for note in step["notes"]]
        lines.append("")
    lines += [f"- {note}" for note in report["skipped_steps"]]
    if report["calibration"]:
        summary = {k: v for k, v in report["calibration"].items() if k != "accuracy_search"}
        lines += ["## INT8 calibration", ""] + [f"- {k}: {_figure(v)}" for k, v in summary.items()]
        lines += accuracy_search_lines(report["calibration"].get("accuracy_search"))
    lines += [f"- note: {note}" for note in report.get("notes", [])]
    if report["unreadable_photos"]:
        lines += ["", "## Unreadable photos (skipped)", ""] + [f"- {p}" for p in report["unreadable_photos"]]
    return "\n".join(lines) + "\n"


def accuracy_search_lines(search: dict | None) -> list[str]:
    """The FP32 nodes the accuracy search kept, and why (their share of the all-INT8 score error)."""
    if not search:
        return ["", "Accuracy search: off (--no-accuracy-search); every quantizable node is INT8."]
    before, after = search["all_int8"], search["final"]
    lines = ["", "## INT8 accuracy search", "",
             f"On {search['images']} images (calibration photos, each at 4 qualities), INT8 vs FP32 per-image SRCC "
             f"{before['srcc']:.4f} with every node quantized, {after['srcc']:.4f} with "
             f"{len(search['fp32_nodes'])} node(s) kept in FP32 (target {search['target_srcc']}, "
             f"{'met' if search['target_met'] else 'NOT met'}; {search['evaluations']} models scored in "
             f"{search['seconds']} s).", ""]
    if search["fp32_nodes"]:
        # SRCC after each node: a user trading fidelity for speed can pick --max-fp32-nodes from it.
        lines += ["| node kept in FP32 (in order) | op | share of the all-INT8 crop error it removes alone | "
                  "search SRCC once kept |", "|---|---|---|---|"]
        lines += [f"| {n['name']} | {n['op_type']} | {n['error_share']:.1%} | {n.get('srcc_after', float('nan')):.4f} |"
                  for n in search["fp32_nodes"]]
    lines += strategy_lines(search)
    return lines


def strategy_lines(search: dict) -> list[str]:
    """Why these nodes: the first nodes of the graph (a prefix) or a searched set, and what the other cost."""
    if search.get("float_nodes") is None:
        return []
    chosen = (f"the first {len(search['fp32_nodes'])} quantizable nodes of the graph (one FP32 region, no islands)"
              if search.get("strategy") == "prefix" else "the nodes the search picked")
    lines = ["", f"Kept in FP32: {chosen}; the file computes {search['float_nodes']} node(s) in float "
                 f"(kept nodes, and producers whose only reader is a kept node)."]
    other = search.get("alternative")
    if other:
        lines.append(f"Not chosen: {other['strategy']} ({', '.join(other['fp32_nodes']) or 'none'}): "
                     f"{other['float_nodes']} node(s) in float, search SRCC {other['srcc']:.4f}.")
    elif search.get("prefix_srcc"):
        tried = ", ".join(f"{value:.4f}" for value in search["prefix_srcc"])
        lines.append(f"Prefixes tried (the first 1, 2, ... nodes in FP32; none met the target within as many "
                     f"float nodes): search SRCC {tried}.")
    return lines


def write_reports(report: dict, out_dir: Path) -> None:
    write_text_atomic(out_dir / REPORT_JSON, json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_text_atomic(out_dir / REPORT_MD, render_markdown(report))
