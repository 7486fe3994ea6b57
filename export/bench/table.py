"""`pinet bench` report rendering: the markdown tables and the optional PNG chart (matplotlib)."""

from __future__ import annotations

from pathlib import Path

from pinet_runtime.files import atomic_path


def _num(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mib(size) -> str:
    return "-" if size is None else f"{size / 2 ** 20:.1f}"


def render_markdown(report: dict) -> str:
    machine = report["machine_start"]
    settings = report["settings"]
    lines = [
        "# pinet bench results", "",
        f"- CPU: {machine['cpu_model']} ({machine['usable_cpus']} usable of {machine['logical_cpus']} logical CPUs); "
        f"flags: " + ", ".join(f for f, present in machine["cpu_flags_of_interest"].items() if present),
        f"- load average at start {machine['load_average']}, at end {report['machine_end']['load_average']}",
        f"- onnxruntime {machine['onnxruntime']}, torch {machine['torch'] or 'not installed'}, numpy {machine['numpy']}, "
        f"Python {machine['python']}; {machine['time']}",
        f"- provider {settings['provider']}, {settings['warmup']} warm-up + {settings['repeats']} timed runs per row; "
        "each row in its own fresh process",
        "", f"## Machine float32 matmul peak (numpy, {report['matmul_peak'][0]['size']} squared)", "",
        "| threads | best GFLOP/s (start) | median (start) | best (end) |", "|---|---|---|---|",
    ]
    for start, end in zip(report["matmul_peak"], report["matmul_peak_end"]):
        lines.append(f"| {start['threads']} | {start['best_gflops']:.1f} | {start['median_gflops']:.1f} | "
                     f"{end['best_gflops']:.1f} |")
    lines += ["", "## Models", ""]
    for model in report["models"]:
        flops = "-" if model["flops_per_crop"] is None else f"{model['flops_per_crop'] / 1e9:.2f} GFLOP"
        lines.append(f"- **{model['name']}** ({model['kind']} {model['source']}, variant {model['variant']}): "
                     f"{model['crops_per_image']} crops of {model['crop_size']} px per image, {flops} per crop"
                     + "".join(f"; {note}" for note in model["notes"]))
    lines += ["", "## Rows (latency p50 / p90 in ms)", "",
              "| model | precision | threads | batch | ms/image p50 | p90 | ms/crop p50 | images/s | GFLOP/s "
              "| % of peak | peak RSS MiB | file MiB | cold start ms | note |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        fraction = None if row["fraction_of_peak"] is None else 100 * row["fraction_of_peak"]
        lines.append(
            f"| {row['model']} | {row['precision']} | {row['threads']} | {row['batch_images']} | "
            f"{_num(row['image_ms_p50'])} | {_num(row['image_ms_p90'])} | {_num(row['crop_ms_p50'], 2)} | "
            f"{_num(row['images_per_s'], 2)} | {_num(row['achieved_gflops'])} | {_num(fraction)} | "
            f"{_num(row['peak_rss_mib'], 0)} | {_mib(row['model_file_bytes'])} | {_num(row['cold_start_ms'], 0)} | "
            f"{row['note'] or ''} |")
    lines += ["", "## Targets (ratios from this run)", "", "| target | case | value | threshold | met |",
              "|---|---|---|---|---|"]
    for target in report["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[target["met"]]
        lines.append(f"| {target['target']} | {target['case']} | {_num(target['value'], 2)} | "
                     f"{target['threshold']} | {met} |")
    from pinet_export.bench.camera import render_camera

    lines += render_camera(report.get("camera_rows", []))
    profiled = [r for r in report["rows"] if r.get("op_profile")]
    if profiled:
        lines += ["", "## onnxruntime time by operator type (top 6, ms per run)", ""]
        for row in profiled:
            top = ", ".join(f"{p['op_type']} {p['ms_per_run']:.1f} ({100 * p['share']:.0f}%)"
                            for p in row["op_profile"][:6])
            lines.append(f"- {row['model']} {row['precision']} threads {row['threads']} batch "
                         f"{row['batch_images']}: {top}")
    lines += ["", f"Chart: {report.get('chart', '-')}", ""]
    return "\n".join(lines)


def render_chart(report: dict, path: Path) -> str:
    """A bar chart of ms per image (p50) by row; returns the path, or why there is no chart."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "skipped: matplotlib is not installed (pip install 'pinet-iqa[plot]')"
    rows = [r for r in report["rows"] if r["status"] == "ok"]
    if not rows:
        return "skipped: no measured row"
    labels = [f"{r['model']}\n{r['precision']} t{r['threads']} b{r['batch_images']}" for r in rows]
    figure, axis = plt.subplots(figsize=(max(6, 0.6 * len(rows)), 4))
    axis.bar(range(len(rows)), [r["image_ms_p50"] for r in rows])
    axis.set_xticks(range(len(rows)), labels, rotation=90, fontsize=7)
    axis.set_ylabel("ms per image (p50)")
    axis.set_yscale("log")
    figure.tight_layout()
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=120, format="png")  # the temporary name has no .png to go by
    finally:
        plt.close(figure)
    return str(path)
