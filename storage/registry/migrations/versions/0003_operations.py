"""issue 14: artifact signatures (search sketch, near-duplicate mark) and operations with their inputs (lineage)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('signatures',
    sa.Column('artifact_id', sa.Integer(), nullable=False),
    sa.Column('layout_sha256', sa.String(length=64), nullable=False),
    sa.Column('base_model', sa.String(length=512), nullable=False),
    sa.Column('d', sa.BigInteger(), nullable=False),
    sa.Column('kept', sa.BigInteger(), nullable=False),
    sa.Column('sketch_version', sa.Integer(), nullable=False),
    sa.Column('sketch', sa.LargeBinary(), nullable=False),
    sa.Column('duplicate_of', sa.Integer(), nullable=True),
    sa.Column('duplicate_cosine', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['artifact_id'], ['artifacts.id'], name=op.f('fk_signatures_artifact_id_artifacts')),
    sa.ForeignKeyConstraint(['duplicate_of'], ['artifacts.id'], name=op.f('fk_signatures_duplicate_of_artifacts')),
    sa.PrimaryKeyConstraint('artifact_id', name=op.f('pk_signatures'))
    )
    with op.batch_alter_table('signatures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signatures_layout_sha256_base_model'), ['layout_sha256', 'base_model'],
                              unique=False)

    op.create_table('operations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('method', sa.String(length=64), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('output_format', sa.String(length=16), nullable=False),
    sa.Column('output_uri', sa.String(length=2048), nullable=False),
    sa.Column('output_sha256', sa.String(length=64), nullable=False),
    sa.Column('artifact_id', sa.Integer(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('flow_run_id', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['artifact_id'], ['artifacts.id'], name=op.f('fk_operations_artifact_id_artifacts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_operations'))
    )
    op.create_table('operation_inputs',
    sa.Column('operation_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('artifact_id', sa.Integer(), nullable=True),
    sa.Column('address', sa.String(length=2048), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('weight', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['artifact_id'], ['artifacts.id'], name=op.f('fk_operation_inputs_artifact_id_artifacts')),
    sa.ForeignKeyConstraint(['operation_id'], ['operations.id'],
                            name=op.f('fk_operation_inputs_operation_id_operations')),
    sa.PrimaryKeyConstraint('operation_id', 'position', name=op.f('pk_operation_inputs'))
    )
    with op.batch_alter_table('operation_inputs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_operation_inputs_artifact_id'), ['artifact_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('operation_inputs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_operation_inputs_artifact_id'))
    op.drop_table('operation_inputs')
    op.drop_table('operations')
    with op.batch_alter_table('signatures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signatures_layout_sha256_base_model'))
    op.drop_table('signatures')
