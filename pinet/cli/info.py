"""`pinet info FILE`: the card of a checkpoint or exported ONNX model (torch-free)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pinet.cli.common import reported_errors


def checkpoint_card(path: Path) -> dict:
    from pinet.checkpoint import read_header

    header = read_header(path)
    cost = header.cost
    return {
        "file": str(path), "kind": "checkpoint", "format_version": header.format_version,
        "variant": header.model_config.variant, "backbone": header.model_config.backbone,
        "paper_model": header.model_config.paper_model, "stage": header.stage,
        "parameters": cost.get("parameters"),
        "gflops_per_crop": round(cost["flops_per_crop"] / 1e9, 3) if "flops_per_crop" in cost else None,
        "preprocessing": header.preprocessing.to_dict(), "training": header.training,
        "pinet_version": header.pinet_version,
    }


def info(
    file: Path = typer.Argument(..., help="A .safetensors checkpoint or an exported .onnx (or .ort) model"),
    as_json: bool = typer.Option(False, "--json", help="Print the card as JSON"),
) -> None:
    """Print the card of a checkpoint or ONNX model: variant, cost, preprocessing, stage, metrics."""
    with reported_errors():
        if file.suffix in (".onnx", ".ort"):  # the ORT format keeps the metadata
            from pinet_runtime.model_file import onnx_card

            card = onnx_card(file)
        else:
            card = checkpoint_card(file)
    if as_json:
        typer.echo(json.dumps(card, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"PINet {card['kind']}: {file.name}", show_header=False)
    for key, value in card.items():
        text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
        table.add_row(key, text)
    Console().print(table)
