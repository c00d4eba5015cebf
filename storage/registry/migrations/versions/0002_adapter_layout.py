"""adapters: the folder inside the repo, the layout and the dtype of each registered adapter

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:00:00

Adapters registered before this revision were all PEFT directories at a repo's root: their subfolder is ''
and their layout 'peft'; their dtype is unknown (NULL) until they are registered again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('adapters') as batch:
        batch.add_column(sa.Column('subfolder', sa.String(length=1024), nullable=False, server_default=''))
        batch.add_column(sa.Column('layout', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('dtype', sa.String(length=64), nullable=True))
    op.execute("UPDATE adapters SET layout = 'peft' WHERE layout IS NULL")


def downgrade() -> None:
    with op.batch_alter_table('adapters') as batch:
        batch.drop_column('dtype')
        batch.drop_column('layout')
        batch.drop_column('subfolder')
