"""The `pinet` command: one typer app per module, joined here.

Only typer and the command modules (which import nothing heavy at module level) load at start,
so `pinet --help` stays instant and never imports torch.
"""

from __future__ import annotations

import typer

from pinet import __version__
from pinet.cli import info as info_cli
from pinet.cli import model as model_cli

app = typer.Typer(
    name="pinet",
    help="PINet blind image quality: train, export to ONNX and score images on the edge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(model_cli.app, name="model")
app.command("info")(info_cli.info)


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
