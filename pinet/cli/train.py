"""`pinet train ...`: stage-1 pre-training and stage-2 fine-tuning."""

import typer

from pinet.cli import finetune as finetune_cli
from pinet.cli import pretrain as pretrain_cli

app = typer.Typer(help="Train PINet: stage-1 pre-training, stage-2 fine-tuning.", no_args_is_help=True)
app.command("pretrain")(pretrain_cli.pretrain)
app.command("finetune")(finetune_cli.finetune)
