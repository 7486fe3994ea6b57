"""The `pinet` command: one typer app per module, joined here.

Only typer and the command modules (which import nothing heavy at module level) load at start,
so `pinet --help` stays instant and never imports torch.
"""

from __future__ import annotations

import typer

from pinet import __version__
from pinet.cli import bench as bench_cli
from pinet.cli import best as best_cli
from pinet.cli import data as data_cli
from pinet.cli import eval_checkpoint as eval_checkpoint_cli
from pinet.cli import export as export_cli
from pinet.cli import fidelity as fidelity_cli
from pinet.cli import info as info_cli
from pinet.cli import model as model_cli
from pinet.cli import report as report_cli
from pinet.cli import score as score_cli
from pinet.cli import train as train_cli

app = typer.Typer(
    name="pinet",
    help="PINet blind image quality: train, export to ONNX and score images on the edge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("score")(score_cli.score)
app.command("best")(best_cli.best)
app.command("report")(report_cli.report)
app.command("export")(export_cli.export)
app.command("info")(info_cli.info)
app.command("eval")(eval_checkpoint_cli.eval_checkpoint)
app.command("bench")(bench_cli.bench)
app.command("fidelity")(fidelity_cli.fidelity)
app.add_typer(model_cli.app, name="model")
app.add_typer(data_cli.app, name="data")
app.add_typer(train_cli.app, name="train")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pinet-iqa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit")) -> None:
    """PINet blind image quality toolkit."""


def main() -> None:
    app()
