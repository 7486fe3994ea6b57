"""`pinet data ...`: build training data. (Being written: issue 3.)"""

import typer

app = typer.Typer(help="Build training data (synthetic distortions, pseudo-subjective scores).", no_args_is_help=True)
