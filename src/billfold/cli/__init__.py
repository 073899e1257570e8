"""The `billfold` command: serve, migrate, init, tenants, keys, plans, grants,
subscriptions, invoices, claims, audit, the ledger, wallets and workers. One module per command
group; operators act directly on the database, recorded in the event log as actor kind
`operator`."""

from __future__ import annotations

import typer

from billfold.cli import (
    audit,
    claims,
    grants,
    invoices,
    ledger,
    plans,
    serve,
    subscriptions,
    tenants,
    wallets,
    workers,
)

# A bug still shows its traceback, but never the locals: they hold the settings, secret key
# included.
app = typer.Typer(
    help="Billfold: billing and entitlements.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command()(serve.serve)
app.command(name="migrate")(serve.migrate_command)
app.command()(serve.init)
for group, name in (
    (tenants.tenants_app, "tenants"),
    (tenants.keys_app, "keys"),
    (plans.app, "plans"),
    (grants.app, "grants"),
    (subscriptions.app, "subscriptions"),
    (invoices.app, "invoices"),
    (claims.app, "claims"),
    (audit.app, "audit"),
    (ledger.app, "ledger"),
    (wallets.app, "wallets"),
    (workers.app, "worker"),
):
    app.add_typer(group, name=name)


def main() -> None:
    app()
