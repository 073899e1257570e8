"""Every command, group, option and argument of `billfold` says what it is for."""

from __future__ import annotations

from typing import Any

import typer.main

from billfold.cli import app


def _walk(command: Any, path: str) -> list[tuple[str, Any]]:
    """`command` and every subcommand under it (typer carries its own copy of click)."""
    found = [(path, command)]
    if hasattr(command, "list_commands"):
        ctx = command.context_class(command, info_name=path)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            found += _walk(sub, f"{path} {name}")
    return found


def test_every_command_and_parameter_has_help() -> None:
    missing: list[str] = []
    commands = _walk(typer.main.get_command(app), "billfold")
    assert len(commands) > 25  # the walk reached the subcommands
    for path, command in commands:
        if not (command.help or "").strip():
            missing.append(path)
        for param in command.params:
            if param.name == "help":
                continue
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{path} {param.opts[0]}")
    assert missing == [], "no help text: " + ", ".join(missing)
