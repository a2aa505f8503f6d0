"""Help output: flags read as flags (no `<bool>` as if they took a value), and the test fixtures stay hidden."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from layerlottery.cli import app

runner = CliRunner()
COMMANDS = sorted(command.name or command.callback.__name__ for command in app.registered_commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_show_no_value_placeholder(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert result.exit_code == 0, result.output
    # typer's own --help line shows <bool> (a typer rendering quirk); none of our flags may.
    offending = [line for line in result.output.splitlines() if "<bool>" in line and "--help" not in line]
    assert offending == []
    assert "--json" in result.output


def test_models_hides_the_fixtures_unless_all() -> None:
    shown = [row["name"] for row in json.loads(runner.invoke(app, ["models", "--json"]).stdout)]
    everything = [row["name"] for row in json.loads(runner.invoke(app, ["models", "--all", "--json"]).stdout)]
    assert "cifar_resnet32" in shown and not any(name.startswith("test_") for name in shown)
    assert set(everything) - set(shown) == {"test_resnet", "test_plain_cnn"}
