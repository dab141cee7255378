"""The voices table: one cloned-voice prompt per row, owned by an API-key hash.

Revision ID: 0001_voices
Revises:
Create Date: 2026-11-27

A voices.db written before migrations existed (the gateway's own ``CREATE TABLE IF NOT EXISTS``) already
has this table and index, column for column: it is adopted as it is, so its voices stay.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_voices"
down_revision = None
branch_labels = None
depends_on = None

_COLUMNS = {
    "id",
    "owner",
    "name",
    "ref_text",
    "x_vector_only",
    "duration_s",
    "speaker_embedding",
    "ref_codes",
    "ref_codes_frames",
    "created_at",
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if inspector.has_table("voices"):
        found = {column["name"] for column in inspector.get_columns("voices")}
        if found != _COLUMNS:
            raise RuntimeError(
                f"a table 'voices' exists with other columns ({', '.join(sorted(found))}); "
                "point voice_db_url/voice_db_path at the voice library or at an empty database"
            )
        if "voices_by_owner" not in {index["name"] for index in inspector.get_indexes("voices")}:
            op.create_index("voices_by_owner", "voices", ["owner", "created_at"])
        return
    op.create_table(
        "voices",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("ref_text", sa.Text(), nullable=True),
        sa.Column("x_vector_only", sa.Boolean(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("speaker_embedding", sa.LargeBinary(), nullable=False),
        sa.Column("ref_codes", sa.LargeBinary(), nullable=False),
        sa.Column("ref_codes_frames", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )
    op.create_index("voices_by_owner", "voices", ["owner", "created_at"])


def downgrade() -> None:
    op.drop_index("voices_by_owner", table_name="voices")
    op.drop_table("voices")
