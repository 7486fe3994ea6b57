"""The training recipes (training/recipes/*.sh) only pass options that their `pinet` commands have:
a renamed or removed option would otherwise surface hours into a run."""

import re
from pathlib import Path

import pytest
import typer

from pinet.cli.app import app

RECIPES = sorted((Path(__file__).resolve().parents[1] / "training" / "recipes").glob("*.sh"))


def _commands() -> dict:
    """Every leaf command of the CLI by its path ("train finetune", "export", ...)."""
    found, pending = {}, [("", typer.main.get_command(app))]
    while pending:
        path, command = pending.pop()
        if hasattr(command, "commands"):           # a group (typer's own click types)
            pending += [(f"{path} {name}".strip(), sub) for name, sub in command.commands.items()]
        else:
            found[path] = command
    return found


OTHER_TOOLS = ("sha256sum", "git ", "python ")   # lines running these pass their own options


def _code(script: Path) -> str:
    lines = (line.split("#", 1)[0] for line in script.read_text().splitlines())
    return "\n".join(line for line in lines if not any(tool in line for tool in OTHER_TOOLS))


def test_the_recipes_are_found():
    assert {p.name for p in RECIPES} >= {"clive_lite0.sh", "default_lite0.sh"}


def _unknown_options(script: Path) -> tuple[set[str], set[str]]:
    """(the pinet commands a script runs, the options it passes that none of them has)."""
    commands = _commands()
    code = _code(script)
    used = {path for path in commands if re.search(rf"\bpinet {path}\b", code)}
    known = {opt for path in used for param in commands[path].params for opt in param.opts + param.secondary_opts}
    return used, set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", code)) - known


@pytest.mark.parametrize("script", RECIPES, ids=lambda p: p.name)
def test_every_option_a_recipe_passes_exists(script):
    used, unknown = _unknown_options(script)
    assert used, f"{script.name} runs no pinet command"
    assert unknown == set(), f"{script.name}: options no command it runs ({sorted(used)}) has"


def test_a_misspelt_option_is_caught(tmp_path):
    script = tmp_path / "recipe.sh"
    script.write_text('COMMON=(--epochs 3 --lr-cosine-epoch 2)  # --not-checked\n'
                      'echo "$SUM  x" | sha256sum --check --quiet\n'
                      'pinet train finetune "${COMMON[@]}" --resume\npinet export x --quantize --no-such\n')
    used, unknown = _unknown_options(script)
    assert used == {"train finetune", "export"} and unknown == {"--lr-cosine-epoch", "--no-such"}
