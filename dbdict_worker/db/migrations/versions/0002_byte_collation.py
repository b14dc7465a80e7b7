"""Byte-order collation (COLLATE "C") on the columns of the big indexes (PostgreSQL).

Every btree comparison on text under a locale collation is a strcoll() call; on the state
value index and the duplicate-detection index that was most of a bulk enqueue's time.
Equality is unchanged (deterministic collations compare equal exactly when the bytes are
equal); ordering by these columns becomes code point order. SQLite already compares bytes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""
from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = (("jobs", "experiment", "text"), ("jobs", "params_hash", "varchar(64)"),
            ("state", "key", "text"), ("state", "txt", "text"))


def _set(collation: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ("jobs", "state"):
        changes = ", ".join(f'ALTER COLUMN {column} TYPE {type_} COLLATE "{collation}"'
                            for t, column, type_ in _COLUMNS if t == table)
        # Rebuilds the indexes on these columns (the rows themselves are not rewritten).
        op.execute(f"ALTER TABLE {table} {changes}")


def upgrade() -> None:
    _set("C")


def downgrade() -> None:
    _set("default")
