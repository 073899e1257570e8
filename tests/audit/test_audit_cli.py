"""`billfold audit checkpoint | verify --checkpoint | seal`, as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import Cli, Template, add_an_entry, cli, template

__all__ = ["cli", "template"]  # the fixtures, shared with the CLI's own tests

HEAD = "SELECT seq, hash, keyed_from, mac FROM event_chain_heads"


def test_a_checkpoint_shows_a_log_cut_back_to_an_older_head(
    template: Template, cli: Cli, tmp_path: Path
) -> None:
    (older,) = cli.sql(HEAD)  # an attacker's copy of the head row, MAC and all
    add_an_entry(template, cli)
    path = tmp_path / "checkpoint.json"
    written = cli.run("audit", "checkpoint", "--out", path)
    assert written.returncode == 0, written.stderr
    assert written.stdout.strip() == f"checkpoint of 1 tenant(s) written to {path}"
    (head,) = json.loads(path.read_text())["heads"]
    assert (head["tenant"], head["seq"]) == ("default", 3)
    assert cli.run("audit", "verify", "--checkpoint", path).returncode == 0

    for trigger in ("event_log_no_delete", "event_chain_heads_forward_only"):
        cli.sql(f"DROP TRIGGER {trigger}")
    cli.sql("DELETE FROM event_log WHERE seq = 3")
    cli.sql("UPDATE event_chain_heads SET seq = ?, hash = ?, keyed_from = ?, mac = ?", *older)

    alone = cli.run("audit", "verify")
    assert alone.returncode == 0, alone.stdout  # the head alone cannot tell
    cut = cli.run("audit", "verify", "--checkpoint", path)
    assert cut.returncode == 1
    assert cut.stdout.strip() == (
        "BROKEN at entry seq 3: truncated: the checkpoint holds entry 3 but the log ends at 2"
    )


def test_a_head_rolled_back_without_the_key_is_named(template: Template, cli: Cli) -> None:
    add_an_entry(template, cli)
    cli.sql("DROP TRIGGER event_log_no_delete")
    cli.sql("DROP TRIGGER event_chain_heads_forward_only")
    (previous,) = cli.sql("SELECT hash FROM event_log WHERE seq = 2")
    cli.sql("DELETE FROM event_log WHERE seq = 3")
    cli.sql("UPDATE event_chain_heads SET seq = 2, hash = ?", previous[0])
    broken = cli.run("audit", "verify")
    assert broken.returncode == 1
    assert broken.stdout.startswith("BROKEN at entry seq 2: head: its MAC does not match")


def test_a_file_that_is_no_checkpoint_is_one_line(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "notes.json"
    path.write_text('{"heads": []}')
    refused = cli.run("audit", "verify", "--checkpoint", path)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"error: {path}: not a billfold-audit-checkpoint/1 file")


def test_seal_leaves_a_sealed_head_as_it_is(cli: Cli) -> None:
    before = cli.sql(HEAD)
    sealed = cli.run("audit", "seal")
    assert sealed.returncode == 0, sealed.stderr
    assert sealed.stdout.strip() == "default: sealed: ok: 2 entries, chain intact"
    assert cli.sql(HEAD) == before
