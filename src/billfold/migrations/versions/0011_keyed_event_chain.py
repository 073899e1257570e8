"""The event log's chain is keyed: each head says from which entry on its entries are
keyed and carries a MAC, and triggers refuse deleting a head or moving it back.

Heads already there are left unsealed (keyed_from and mac null): a migration has no key.
Their next entries are keyed; `billfold audit seal` checks the unkeyed entries and gives
each head its MAC (decision 0025).

Downgrading drops `keyed_from`, the MACs and the triggers, and keeps every entry. The
entries written while the chain was keyed stay keyed, and the previous release's verifier,
which hashes them without the key, reports each of them as edited: its `billfold audit
verify` fails from the first keyed entry on. Downgrade only a log you can check with this
release, or that has no keyed entries yet.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 04:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What a head may never do: change tenant, move back, change its hash in place, forget
# where keying began, or lose its MAC. Appending moves it forward; sealing adds a MAC.
BACKWARDS = (
    "NEW.tenant_id <> OLD.tenant_id OR NEW.seq < OLD.seq "
    "OR (NEW.seq = OLD.seq AND NEW.hash <> OLD.hash) "
    "OR (OLD.keyed_from IS NOT NULL AND {distinct}) "
    "OR (OLD.mac IS NOT NULL AND NEW.mac IS NULL)"
)


def upgrade() -> None:
    with op.batch_alter_table("event_chain_heads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("keyed_from", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("mac", sa.String(length=64), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        backwards = BACKWARDS.format(distinct="NEW.keyed_from IS DISTINCT FROM OLD.keyed_from")
        op.execute(
            f"""
            CREATE FUNCTION billfold_event_chain_head_guard() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP <> 'UPDATE' THEN
                    RAISE EXCEPTION 'event_chain_heads: a chain head is never removed: % refused',
                        TG_OP USING ERRCODE = 'insufficient_privilege';
                END IF;
                IF {backwards} THEN
                    RAISE EXCEPTION 'event_chain_heads: a chain head only moves forward'
                        USING ERRCODE = 'insufficient_privilege';
                END IF;
                RETURN NEW;
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER event_chain_heads_guard BEFORE UPDATE OR DELETE "
            "ON event_chain_heads FOR EACH ROW EXECUTE FUNCTION billfold_event_chain_head_guard()"
        )
        op.execute(
            "CREATE TRIGGER event_chain_heads_no_truncate BEFORE TRUNCATE ON event_chain_heads "
            "FOR EACH STATEMENT EXECUTE FUNCTION billfold_event_chain_head_guard()"
        )
    else:
        backwards = BACKWARDS.format(distinct="NEW.keyed_from IS NOT OLD.keyed_from")
        op.execute(
            "CREATE TRIGGER event_chain_heads_no_delete BEFORE DELETE ON event_chain_heads "
            "BEGIN SELECT RAISE(ABORT, 'event_chain_heads: a chain head is never removed'); END"
        )
        op.execute(
            "CREATE TRIGGER event_chain_heads_forward_only BEFORE UPDATE ON event_chain_heads "
            f"WHEN {backwards} "
            "BEGIN SELECT RAISE(ABORT, 'event_chain_heads: a chain head only moves forward'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER event_chain_heads_no_truncate ON event_chain_heads")
        op.execute("DROP TRIGGER event_chain_heads_guard ON event_chain_heads")
        op.execute("DROP FUNCTION billfold_event_chain_head_guard()")
    else:
        op.execute("DROP TRIGGER event_chain_heads_forward_only")
        op.execute("DROP TRIGGER event_chain_heads_no_delete")
    with op.batch_alter_table("event_chain_heads", schema=None) as batch_op:
        batch_op.drop_column("mac")
        batch_op.drop_column("keyed_from")
