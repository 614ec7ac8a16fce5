"""The README documents the command line as it is: every command and every option of every
command appears in it, and each has help text (the idea of sqlite-utils' tests/packaging/test_docs.py)."""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from storage_migrator import errors
from storage_migrator.cli.group import EXIT_CODES_HELP
from storage_migrator.cli.main import main

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found.extend(commands(command, f"{path} "))
    return found


COMMANDS = commands(main)
OPTIONS = sorted({option: path for path, command in reversed([("", main), *COMMANDS]) for parameter in command.params
                  if isinstance(parameter, click.Option)
                  for option in [*parameter.opts, *parameter.secondary_opts] if option.startswith("--")}.items(),
                 key=lambda item: item[0])


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[path for path, _ in COMMANDS])
def test_every_command_is_in_the_readme_with_help(path: str, command: click.Command) -> None:
    assert f"storage-migrate {path}" in README, f"`storage-migrate {path}` is not in the README"
    assert (command.help or "").strip(), f"{path} has no help text"


@pytest.mark.parametrize(("option", "path"), OPTIONS, ids=[option for option, _ in OPTIONS])
def test_every_option_is_in_the_readme(option: str, path: str) -> None:
    assert option in README, f"{option} (of `storage-migrate {path}`) is not in the README"


@pytest.mark.parametrize(("path", "command"), [("", main), *COMMANDS], ids=["main", *[p for p, _ in COMMANDS]])
def test_every_option_has_help(path: str, command: click.Command) -> None:
    for parameter in command.params:
        if isinstance(parameter, click.Option) and not parameter.hidden:
            assert (parameter.help or "").strip(), f"{parameter.opts} of `storage-migrate {path}` has no help"


EXIT_CODES = sorted((name, value) for name, value in vars(errors).items() if name.startswith("EXIT_"))


@pytest.mark.parametrize(("name", "code"), EXIT_CODES, ids=[name for name, _ in EXIT_CODES])
def test_every_exit_code_is_documented(name: str, code: int) -> None:
    """In the README's list and in the --help epilog, as `<code>` / "<code> <what>"."""
    readme_list = README[README.index("Exit codes:"):].split("\n\n", 1)[0]
    assert f"`{code}`" in readme_list, f"{name} ({code}) is not in the README's exit codes"
    assert re.search(rf"(?<!\d){code} [a-z]", EXIT_CODES_HELP), f"{name} ({code}) is not in --help's exit codes"
